"""``replytrack scan imap://...`` against a real Dovecot on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import imapclient  # type: ignore[import-untyped]  # no py.typed, no stubs
import pytest

from replytrack.cli import IMAP_PASSWORD_ENV, IMAP_TOKEN_ENV, SECRET_ENV, main
from replytrack.msgid import MessageIdGenerator
from replytrack.testing import build_reply
from servers import Dovecot

KEY = "k" * 43


def test_scan_reads_an_imap_folder_once_and_marks_nothing_read(
    dovecot: Dovecot,
    imap_user: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, KEY)
    monkeypatch.setenv(IMAP_PASSWORD_ENV, dovecot.password)
    monkeypatch.delenv(IMAP_TOKEN_ENV, raising=False)
    sent_id = MessageIdGenerator("sales.example", KEY).generate(ref="c42:p7")
    with imapclient.IMAPClient(dovecot.host, port=dovecot.port, ssl=False) as client:
        client.login(imap_user, dovecot.password)
        client.create_folder("Replies")
        client.append("Replies", build_reply(in_reply_to=sent_id))
        client.append("Replies", build_reply(in_reply_to="<other@elsewhere.example>"))
        url = f"imap://{imap_user}@{dovecot.host}:{dovecot.port}/INBOX,Replies?tls=none"
        store = str(tmp_path / "scan.db")

        assert main(["scan", url, "--store", store, "--json"]) == 0
        out, err = capsys.readouterr()
        events = [json.loads(line) for line in out.splitlines()]
        assert [(e["ref"], e["kind"], e["method"]) for e in events] == [
            ("c42:p7", "reply", "token")
        ]
        assert "2 messages scanned: 1 new events" in err

        client.append("Replies", build_reply(in_reply_to=sent_id, from_="sam@customer.example"))
        assert main(["scan", url, "--store", store, "--json"]) == 0
        out, _ = capsys.readouterr()
        assert [json.loads(line)["responder"]["addr"] for line in out.splitlines()] == [
            "sam@customer.example"
        ]

        client.select_folder("Replies", readonly=True)
        flags = client.get_flags(client.search("ALL"))
        assert all(b"\\Seen" not in f for f in flags.values())


def test_scan_reports_a_refused_login_cleanly(
    dovecot: Dovecot,
    imap_user: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(IMAP_PASSWORD_ENV, "wrong password")
    monkeypatch.delenv(IMAP_TOKEN_ENV, raising=False)
    url = f"imap://{imap_user}@{dovecot.host}:{dovecot.port}/INBOX?tls=none"
    status = main(["scan", url, "--store", str(tmp_path / "scan.db")])
    _, err = capsys.readouterr()
    assert status == 1
    assert "login" in err.lower()
    assert "wrong password" not in err
