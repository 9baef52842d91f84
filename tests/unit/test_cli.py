"""The ``replytrack`` command line: msgid, verify, inspect, exit statuses and error output."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone
from email.message import EmailMessage
from importlib.metadata import version
from pathlib import Path

import pytest

from replytrack import ReplyTracker, SQLiteStore
from replytrack.cli import IMAP_PASSWORD_ENV, IMAP_TOKEN_ENV, SECRET_ENV, main
from replytrack.events import ReplyEvent
from replytrack.headers import parse_headers
from replytrack.msgid import MessageIdGenerator
from replytrack.store import SentMessage
from replytrack.testing import build_bounce, build_out_of_office, build_reply
from replytrack.threadindex import ThreadIndex

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "corpus"
APPLE_REPLY = CORPUS / "talon" / "standard_replies" / "apple_mail_2.eml"
GMAIL_REPLY = ROOT / "benchmarks" / "data" / "reply-3k.eml"
DOMAIN = "mail.example.com"
OLD_KEY = "old-key-0123456789abcdef0123456789"
NEW_KEY = "new-key-0123456789abcdef0123456789"
PLAIN_ID = re.compile(r"<[a-z2-7]{24}@example\.com>")
JSON_KEYS = [
    "file",
    "message_id",
    "in_reply_to",
    "references",
    "from",
    "sender",
    "reply_to",
    "to",
    "cc",
    "subject",
    "normalized_subject",
    "date",
    "defects",
    "kind",
    "reasons",
    "return_date",
    "bounce",
    "thread_index",
]


@pytest.fixture(autouse=True)
def _no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts without a secret, whatever the developer's shell exports."""
    monkeypatch.delenv(SECRET_ENV, raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def assert_clean_error(err: str) -> None:
    """One ``replytrack: error:`` line, no traceback."""
    assert err.startswith("replytrack: error: ")
    assert "Traceback" not in err
    assert err.count("\n") == 1


def field(out: str, label: str) -> str:
    """The value printed on the line of `label` in text output."""
    match = re.search(rf"^{re.escape(label)}:\s+(.*)$", out, re.MULTILINE)
    assert match is not None, f"no {label!r} line in:\n{out}"
    return match.group(1)


# --------------------------------------------------------------------------------------------
# msgid
# --------------------------------------------------------------------------------------------


def test_msgid_prints_one_plain_id(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "msgid", "--domain", "example.com")
    assert (status, err) == (0, "")
    assert PLAIN_ID.fullmatch(out.rstrip("\n"))
    assert out.count("\n") == 1


def test_msgid_count_prints_distinct_ids_one_per_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run(capsys, "msgid", "--domain", "example.com", "--count", "5")
    ids = out.splitlines()
    assert status == 0
    assert len(ids) == len(set(ids)) == 5
    assert all(PLAIN_ID.fullmatch(i) for i in ids)


def test_msgid_converts_an_idna_domain(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "msgid", "--domain", "Bücher.example")
    assert status == 0
    assert out.rstrip().endswith("@xn--bcher-kva.example>")


@pytest.mark.parametrize("count", ["0", "-1", "two"])
def test_msgid_rejects_a_bad_count(capsys: pytest.CaptureFixture[str], count: str) -> None:
    status, out, err = run(capsys, "msgid", "--domain", "example.com", "--count", count)
    assert (status, out) == (2, "")
    assert "argument --count" in err


def test_msgid_requires_a_domain(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "msgid")
    assert status == 2
    assert "--domain" in err


def test_msgid_invalid_domain_is_a_clean_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A ConfigError from the library: one error line and status 2, no traceback."""
    status, out, err = run(capsys, "msgid", "--domain", "not a domain")
    assert (status, out) == (2, "")
    assert_clean_error(err)
    assert "domain" in err


def test_msgid_ref_without_secret_fails_and_names_the_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = run(capsys, "msgid", "--domain", DOMAIN, "--ref", "c42:p7")
    assert (status, out) == (2, "")
    assert_clean_error(err)
    assert SECRET_ENV in err


def test_msgid_ref_with_an_empty_secret_fails(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, "  ")
    status, out, err = run(capsys, "msgid", "--domain", DOMAIN, "--ref", "c42:p7")
    assert (status, out) == (2, "")
    assert SECRET_ENV in err


def test_msgid_ref_is_signed_with_the_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, NEW_KEY)
    status, out, err = run(capsys, "msgid", "--domain", DOMAIN, "--ref", "c42:p7")
    assert (status, err) == (0, "")
    token = MessageIdGenerator(DOMAIN, NEW_KEY).verify(out.strip())
    assert token is not None
    assert token.ref == "c42:p7"


def test_msgid_signs_with_the_last_key_of_a_comma_separated_list(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, f"{OLD_KEY}, {NEW_KEY}")
    status, out, _ = run(capsys, "msgid", "--domain", DOMAIN, "--ref", "c1")
    assert status == 0
    mid = out.strip()
    assert MessageIdGenerator(DOMAIN, NEW_KEY).verify(mid) is not None
    assert MessageIdGenerator(DOMAIN, OLD_KEY).verify(mid) is None


@pytest.mark.parametrize("value", [f"{OLD_KEY},,{NEW_KEY}", f"{NEW_KEY},", f",{NEW_KEY}"])
def test_secret_list_with_an_empty_key_is_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(SECRET_ENV, value)
    status, out, err = run(capsys, "msgid", "--domain", DOMAIN, "--ref", "c1")
    assert (status, out) == (2, "")
    assert_clean_error(err)
    assert "empty key" in err


def test_msgid_without_ref_ignores_a_broken_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain ids need no secret, so a bad one in the environment does not matter."""
    monkeypatch.setenv(SECRET_ENV, ",")
    status, out, _ = run(capsys, "msgid", "--domain", "example.com")
    assert status == 0
    assert PLAIN_ID.fullmatch(out.strip())


def test_msgid_ref_too_long_is_a_clean_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, NEW_KEY)
    status, out, err = run(capsys, "msgid", "--domain", DOMAIN, "--ref", "x" * 65)
    assert (status, out) == (2, "")
    assert_clean_error(err)


def test_msgid_stops_quietly_when_the_reader_goes_away(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``replytrack msgid --count 1000 | head -1``: status 1, no traceback."""

    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["msgid", "--domain", "example.com", "--count", "1000"]) == 1
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------------------------
# verify
# --------------------------------------------------------------------------------------------


def signed_id(ref: str = "c42:p7", key: str = NEW_KEY) -> str:
    return MessageIdGenerator(DOMAIN, key).generate(ref=ref)


def tampered(mid: str) -> str:
    """`mid` with the last character of its tag changed, still well-formed."""
    left, _, domain = mid.partition("@")
    last = "a" if left[-1] != "a" else "b"
    return f"{left[:-1]}{last}@{domain}"


def test_verify_prints_ref_and_issue_time(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, NEW_KEY)
    mid = signed_id()
    status, out, err = run(capsys, "verify", mid)
    assert (status, err) == (0, "")
    assert field(out, "Ref") == "c42:p7"
    issued = datetime.fromisoformat(field(out, "Issued at"))
    assert issued.tzinfo is not None
    assert abs(datetime.now(timezone.utc) - issued) < timedelta(minutes=1)


def test_verify_accepts_an_id_without_brackets(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, NEW_KEY)
    status, out, _ = run(capsys, "verify", signed_id()[1:-1])
    assert status == 0
    assert field(out, "Ref") == "c42:p7"


def test_verify_accepts_ids_signed_with_an_older_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, f"{OLD_KEY},{NEW_KEY}")
    status, out, _ = run(capsys, "verify", signed_id(key=OLD_KEY))
    assert status == 0
    assert field(out, "Ref") == "c42:p7"


def test_verify_shows_an_empty_ref(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, NEW_KEY)
    status, out, _ = run(capsys, "verify", signed_id(ref=""))
    assert status == 0
    assert field(out, "Ref") == "(empty)"


@pytest.mark.parametrize(
    "mid",
    [
        "<CAHx8Vq3rT5nK2pLw9mZ1cB7dF4gJ6hX0sQeYuIoP@mail.gmail.com>",  # foreign
        MessageIdGenerator(DOMAIN).generate(),  # ours, but plain
        signed_id(key=OLD_KEY),  # signed with a key that was dropped
        tampered(signed_id()),
        "",
    ],
    ids=["foreign", "plain", "unknown-key", "tampered", "empty"],
)
def test_verify_rejects_what_is_not_our_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, mid: str
) -> None:
    monkeypatch.setenv(SECRET_ENV, NEW_KEY)
    status, out, err = run(capsys, "verify", mid)
    assert (status, err) == (1, "")
    assert out.startswith("not a replytrack token")


def test_verify_without_secret_fails_and_names_the_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = run(capsys, "verify", signed_id())
    assert (status, out) == (2, "")
    assert_clean_error(err)
    assert SECRET_ENV in err


# --------------------------------------------------------------------------------------------
# inspect
# --------------------------------------------------------------------------------------------


def test_inspect_prints_the_threading_headers(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "inspect", str(APPLE_REPLY))
    assert (status, err) == (0, "")
    gmail_id = "<CABzQGhkMXDxUt_tSVQcg=43aniUhtsVfCZVzu-PG0kwS_uzqMw@mail.gmail.com>"
    assert field(out, "File") == str(APPLE_REPLY)
    assert field(out, "Message-ID") == "<68001B29-8EA4-444C-A894-0537D2CA5208@tictail.com>"
    assert field(out, "In-Reply-To") == gmail_id
    assert field(out, "References") == "1 id, oldest first"
    assert f"\n    {gmail_id}\n" in out  # one id per line, indented
    assert field(out, "From") == "Adam Renberg <adam@tictail.com>"
    assert field(out, "Sender") == "(none)"
    assert field(out, "Reply-To") == "(none)"
    assert field(out, "To") == "Adam Renberg <tgwizard@gmail.com>"
    assert field(out, "Cc") == "(none)"
    assert field(out, "Subject") == "Re: Hello there"
    assert field(out, "Normalised subject") == "Hello there"
    assert field(out, "Date") == "2015-08-22T19:22:20+02:00"
    assert field(out, "Defects") == "(none)"


def test_inspect_lists_references_oldest_first_and_addresses_one_per_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run(capsys, "inspect", str(GMAIL_REPLY))
    assert status == 0
    refs = parse_headers(GMAIL_REPLY.read_bytes()).references
    assert field(out, "References") == f"{len(refs)} ids, oldest first"
    block = "".join(f"    <{ref}>\n" for ref in refs)
    assert block in out
    cc_lines = out[out.index("Cc:") :].splitlines()[:2]
    assert cc_lines[0].endswith('"Ops, Revenue" <revops@customer.example.org>')
    assert cc_lines[1].strip() == "cfo@customer.example.org"


def test_inspect_shows_decoded_names_and_subjects(capsys: pytest.CaptureFixture[str]) -> None:
    """RFC 2047 words are shown decoded, not re-encoded as header syntax."""
    _, out, _ = run(capsys, "inspect", str(GMAIL_REPLY))
    assert field(out, "From") == "Dana Müller <dana.prospect@customer.example.org>"
    assert field(out, "Subject") == "Re: Quick question about your Q1 pipeline — 15 minutes"
    assert field(out, "Normalised subject") == "Quick question about your Q1 pipeline — 15 minutes"


def test_inspect_json_has_stable_keys_and_values(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "inspect", "--json", str(GMAIL_REPLY))
    assert (status, err) == (0, "")
    assert out.count("\n") == 1  # one object, one line
    report = json.loads(out)
    assert list(report) == JSON_KEYS
    assert report["file"] == str(GMAIL_REPLY)
    assert report["message_id"] == "CAHx8Vq3rT5nK2pLw9mZ1cB7dF4gJ6hX0sQeYuIoP@mail.gmail.com"
    assert report["in_reply_to"] == [
        "rt1.onsxg4dfoqqgs4ztobsxe3lb.mfzwgztmnfsgk3dz@mail.sales.example.com"
    ]
    assert len(report["references"]) == 4
    assert report["from"] == [
        {"name": "Dana Müller", "addr": "dana.prospect@customer.example.org"}
    ]
    assert report["cc"] == [
        {"name": "Ops, Revenue", "addr": "revops@customer.example.org"},
        {"name": "", "addr": "cfo@customer.example.org"},
    ]
    assert report["sender"] == report["reply_to"] == []
    assert report["subject"] == "Re: Quick question about your Q1 pipeline — 15 minutes"
    assert report["normalized_subject"] == "Quick question about your Q1 pipeline — 15 minutes"
    assert datetime.fromisoformat(report["date"]) == datetime(
        2026, 11, 24, 16, 13, 52, tzinfo=timezone.utc
    )
    assert report["defects"] == []


def test_inspect_json_is_ascii(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "inspect", "--json", str(GMAIL_REPLY))
    assert out.isascii()


def test_inspect_json_absent_headers_are_null_or_empty(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "bare.eml"
    path.write_bytes(b"X-Nothing: here\r\n\r\nbody\r\n")
    _, out, _ = run(capsys, "inspect", "--json", str(path))
    report = json.loads(out)
    assert report["message_id"] is report["subject"] is report["date"] is None
    assert report["normalized_subject"] is None
    assert report["references"] == report["from"] == report["to"] == []


def test_inspect_json_prints_one_line_per_file(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "inspect", "--json", str(APPLE_REPLY), str(GMAIL_REPLY))
    lines = out.splitlines()
    assert status == 0
    assert [json.loads(line)["file"] for line in lines] == [str(APPLE_REPLY), str(GMAIL_REPLY)]


def test_inspect_reports_an_unreadable_file_and_goes_on(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.eml"
    status, out, err = run(capsys, "inspect", str(missing), str(APPLE_REPLY), str(tmp_path))
    assert status == 1
    assert f"replytrack: cannot read {missing}:" in err
    assert f"replytrack: cannot read {tmp_path}:" in err  # a directory
    assert "Traceback" not in err
    assert field(out, "File") == str(APPLE_REPLY)


def test_inspect_json_reports_an_unreadable_file_on_stderr_only(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, out, err = run(capsys, "inspect", "--json", str(tmp_path / "nope"), str(APPLE_REPLY))
    assert status == 1
    assert "cannot read" in err
    assert [json.loads(line)["file"] for line in out.splitlines()] == [str(APPLE_REPLY)]


def test_inspect_reads_standard_input(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(APPLE_REPLY.read_bytes()), encoding="ascii")
    monkeypatch.setattr(sys, "stdin", stdin)
    status, out, _ = run(capsys, "inspect", "--json", "-")
    report = json.loads(out)
    assert status == 0
    assert report["file"] == "-"
    assert report["message_id"] == "68001B29-8EA4-444C-A894-0537D2CA5208@tictail.com"


def test_inspect_lists_defects(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "bad-date.eml"
    path.write_bytes(b"Date: not a date\nSubject: hi\n\n")
    _, out, _ = run(capsys, "inspect", str(path))
    assert field(out, "Date") == "(unparsable, see Defects)"
    assert field(out, "Defects") == "1"
    assert "\n    date: unparsable date: 'not a date'\n" in out


def test_inspect_escapes_terminal_control_characters(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """An encoded ESC or bidi override in a header must not reach the terminal raw."""
    path = tmp_path / "hostile.eml"
    # ESC [ 2 J clears the screen; U+202E reverses what follows.
    path.write_bytes(
        b"Subject: =?utf-8?q?a=1B[2Jb=E2=80=AEc?=\nFrom: =?utf-8?q?x=07y?= <x@y.z>\n\n"
    )
    _, out, _ = run(capsys, "inspect", str(path))
    assert "\x1b" not in out
    assert "\u202e" not in out
    assert "\x07" not in out
    assert field(out, "Subject") == r"a\x1b[2Jb\u202ec"
    assert field(out, "From") == r"x\x07y <x@y.z>"


def test_inspect_survives_an_output_encoding_that_cannot_show_the_text(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``PYTHONIOENCODING=ascii`` or a cp1252 console: escape, do not crash half-way."""
    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="ascii"))
    assert main(["inspect", str(GMAIL_REPLY)]) == 0
    sys.stdout.flush()
    assert "From:                 Dana M\\xfcller <" in raw.getvalue().decode("ascii")


# --------------------------------------------------------------------------------------------
# The program as a whole
# --------------------------------------------------------------------------------------------


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "--version")
    assert status == 0
    assert out == f"replytrack {version('replytrack')}\n"


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys)
    assert (status, out) == (2, "")
    assert err.startswith("usage: replytrack")


def test_help_documents_the_secret_variable(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, "msgid", "--help")
    assert status == 0
    assert SECRET_ENV in out
    assert "comma" in out


def test_python_dash_m_runs_the_readme_commands(tmp_path: Path) -> None:
    """The two commands of the README, through ``python -m replytrack`` in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    msgid = subprocess.run(
        [sys.executable, "-m", "replytrack", "msgid", "--domain", "example.com"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert (msgid.returncode, msgid.stderr) == (0, "")
    assert PLAIN_ID.fullmatch(msgid.stdout.strip())

    inspect = subprocess.run(
        [sys.executable, "-m", "replytrack", "inspect", str(APPLE_REPLY)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert (inspect.returncode, inspect.stderr) == (0, "")
    assert field(inspect.stdout, "Normalised subject") == "Hello there"


# --------------------------------------------------------------------------------------------
# inspect: classification and Thread-Index
# --------------------------------------------------------------------------------------------


def test_inspect_shows_the_classification_of_a_bounce(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "bounce.eml"
    path.write_bytes(build_bounce(recipients=["gone@customer.example"]))
    status, out, _ = run(capsys, "inspect", str(path))
    assert status == 0
    assert field(out, "Kind") == "bounce"
    assert "\n    multipart/report; report-type=delivery-status (RFC 3464)\n" in out
    assert field(out, "Bounced") == "1 recipient"
    assert "\n    gone@customer.example  5.1.1  userunknown  hard\n" in out
    assert field(out, "Bounced Message-ID") == "<send-1@mail.sales.example>"


def test_inspect_json_has_the_classification_and_return_date(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "ooo.eml"
    path.write_bytes(build_out_of_office(language="de", return_date=date(2027, 3, 15)))
    _, out, _ = run(capsys, "inspect", "--json", str(path))
    report = json.loads(out)
    assert report["kind"] == "out_of_office"
    assert report["return_date"] == "2027-03-15"
    assert report["bounce"] is None
    assert any("(de)" in reason for reason in report["reasons"])


def test_inspect_json_bounce_recipients(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "bounce.eml"
    path.write_bytes(build_bounce(recipients=["gone@customer.example"]))
    _, out, _ = run(capsys, "inspect", "--json", str(path))
    bounce = json.loads(out)["bounce"]
    assert bounce == {
        "original_message_id": "send-1@mail.sales.example",
        "recipients": [
            {
                "address": "gone@customer.example",
                "status": "5.1.1",
                "reason": "userunknown",
                "permanent": True,
                "hard": True,
            }
        ],
    }


def test_inspect_decodes_the_thread_index(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = ThreadIndex.new(now=datetime(2027, 3, 1, 9, 30, tzinfo=timezone.utc))
    index = root.child(now=datetime(2027, 3, 2, tzinfo=timezone.utc))
    path = tmp_path / "outlook.eml"
    path.write_bytes(build_reply(headers={"Thread-Index": index.encode()}))
    _, out, _ = run(capsys, "inspect", str(path))
    assert field(out, "Thread-Index") == f"GUID {root.guid.hex()}"
    assert "started 2027-03-01T09:29:59" in out or "started 2027-03-01T09:30" in out
    assert "\n" + " " * 22 + "1 child block\n" in out
    _, out, _ = run(capsys, "inspect", "--json", str(path))
    decoded = json.loads(out)["thread_index"]
    assert decoded["guid"] == root.guid.hex()
    assert decoded["child_count"] == 1
    assert datetime.fromisoformat(decoded["time"]) - root.header_time == timedelta(0)


def test_inspect_without_thread_index_says_none(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "inspect", str(APPLE_REPLY))
    assert field(out, "Thread-Index") == "(none)"
    assert field(out, "Kind") == "reply"
    _, out, _ = run(capsys, "inspect", "--json", str(APPLE_REPLY))
    assert json.loads(out)["thread_index"] is None


# --------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------


def demo_lines(out: str) -> dict[str, list[str]]:
    """Scenario title → the verdict line printed below it."""
    lines = out.splitlines()
    verdicts: dict[str, list[str]] = {}
    for i, line in enumerate(lines):
        match = re.match(r"  \d\. (.+?)  <", line)
        if match:
            verdicts[match.group(1)] = lines[i + 1].split()
    return verdicts


def test_demo_prints_every_scenario_with_its_verdict(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = run(capsys, "demo")
    assert (status, err) == (0, "")
    v = demo_lines(out)
    ooo = v["Out-of-office in German, with a return date"]
    assert ooo[:4] == ["out_of_office", "pause", "until", ooo[3]]
    assert date.fromisoformat(ooo[3]) > date.today()
    assert ooo[4:] == ["recipient", "token", "campaign_stop", "crm_log"]
    assert v["Hard bounce (RFC 3464 DSN): the address is gone"] == [
        "bounce",
        "stop",
        "other",
        "bounce_original",
        "campaign_stop",
        "crm_log",
    ]
    assert v["The rep's own follow-up, synced into the inbox"][:3] == ["skipped:", "own", "mail"]
    assert v["Reply from the prospect, to the follow-up"] == [
        "reply",
        "stop",
        "recipient",
        "token",
        "campaign_stop",
        "crm_log",
    ]
    assert v["Reply from the colleague who was on Cc"][:3] == ["reply", "stop", "cc"]
    assert v["Reply from another address of the prospect"][:3] == ["reply", "stop", "other"]
    assert v["A newsletter, answering nothing"][:2] == ["no", "match:"]
    assert (
        "Summary: 7 messages polled, 5 events (4 stop, 1 pause), 1 own mail skipped, "
        "1 unmatched." in out
    )
    assert "Polling again: 0 new messages, 0 events" in out


def test_demo_removes_its_workspace(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "demo")
    workspace = re.search(r"^Workspace  (\S+)", out, re.MULTILINE)
    assert workspace is not None
    assert not Path(workspace.group(1)).exists()


def test_demo_keep_leaves_a_store_and_maildir_that_scan_reads(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    keep = tmp_path / "demo"
    status, out, _ = run(capsys, "demo", "--keep", str(keep))
    assert status == 0
    assert len(list((keep / "Maildir" / "new").iterdir())) == 7
    # The demo's store already processed every message: a scan finds nothing new.
    status, out, _ = run(
        capsys, "scan", str(keep / "Maildir"), "--store", str(keep / "replytrack.sqlite3")
    )
    assert (status, out) == (0, "")


def test_demo_keep_refuses_a_directory_with_files(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "precious.txt").write_text("x")
    status, out, err = run(capsys, "demo", "--keep", str(tmp_path))
    assert (status, out) == (2, "")
    assert_clean_error(err)


def test_demo_json_has_one_object_per_message_and_a_summary(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run(capsys, "demo", "--json")
    objects = [json.loads(line) for line in out.splitlines()]
    assert status == 0
    assert [o["type"] for o in objects] == ["message"] * 7 + ["summary"]
    assert [o["verdict"] for o in objects[:7]] == [
        "event",
        "event",
        "own",
        "event",
        "event",
        "event",
        "unmatched",
    ]
    assert objects[0]["event"]["kind"] == "out_of_office"
    assert objects[-1]["poll"]["seen"] == 7
    assert objects[-1]["second_poll_events"] == 0


def test_python_dash_m_demo_runs_quickly(tmp_path: Path) -> None:
    """The README's first command, in a fresh process, without network."""
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    started = time.monotonic()
    demo = subprocess.run(
        [sys.executable, "-W", "error", "-m", "replytrack", "demo"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert (demo.returncode, demo.stderr) == (0, "")
    assert time.monotonic() - started < 10
    assert "Summary: 7 messages polled" in demo.stdout


# --------------------------------------------------------------------------------------------
# scan
# --------------------------------------------------------------------------------------------


def campaign(store_path: Path, generator: MessageIdGenerator | None = None) -> SentMessage:
    """Record one send in a store file, as a host would have."""
    store = SQLiteStore(store_path)
    try:
        message = EmailMessage()
        message["From"] = "Rep <rep@sales.example>"
        message["To"] = "jo@customer.example"
        message["Subject"] = "Quick question"
        message.set_content("Hi")
        tracker = ReplyTracker(store, generator or MessageIdGenerator("sales.example"))
        return tracker.stamp(message, ref="c42:p7")
    finally:
        store.close()


def incoming(sent: SentMessage) -> list[bytes]:
    return [
        build_reply(in_reply_to=sent.message_id),
        build_bounce(recipients=["jo@customer.example"], original_message_id=sent.message_id),
        build_reply(in_reply_to="<unrelated@elsewhere.example>", body="Not for you"),
        build_reply(in_reply_to=sent.message_id, from_="Rep <rep@sales.example>", body="mine"),
    ]


def make_maildir(path: Path, messages: list[bytes]) -> Path:
    for sub in ("new", "cur", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(messages):
        (path / "new" / f"{i}.test").write_bytes(data)
    return path


def make_mbox(path: Path, messages: list[bytes]) -> Path:
    with path.open("wb") as f:
        for data in messages:
            f.write(b"From MAILER-DAEMON Mon Mar  2 09:30:00 2020\n")
            f.write(data.replace(b"\r\n", b"\n") + b"\n")
    # Settled: the mbox source leaves a last message alone while the file is fresh.
    old = time.time() - 60
    os.utime(path, (old, old))
    return path


@pytest.mark.parametrize("kind", ["maildir", "mbox"])
def test_scan_prints_a_table_of_events(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, kind: str
) -> None:
    store = tmp_path / "s.db"
    sent = campaign(store)
    if kind == "maildir":
        source = f"maildir:{make_maildir(tmp_path / 'md', incoming(sent))}"
    else:
        source = f"mbox:{make_mbox(tmp_path / 'mbox', incoming(sent))}"
    status, out, err = run(
        capsys, "scan", source, "--store", str(store), "--own", "rep@sales.example"
    )
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["RECEIVED", "KIND", "ACTION", "ROLE", "MATCHED"]
    rows = sorted(line.split()[2:6] for line in lines[1:])
    assert rows == [
        ["bounce", "stop", "other", "bounce_original"],
        ["reply", "stop", "recipient", "in_reply_to"],
    ]
    assert "4 messages scanned: 2 new events, 1 own mail" in err


def test_scan_json_prints_the_canonical_payload_and_is_idempotent(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store = tmp_path / "s.db"
    sent = campaign(store)
    maildir = make_maildir(tmp_path / "md", incoming(sent))
    own = ("--own", "rep@sales.example")
    status, out, _ = run(capsys, "scan", str(maildir), "--store", str(store), "--json", *own)
    events = [ReplyEvent.from_json(line) for line in out.splitlines()]
    assert status == 0
    assert sorted(e.kind.value for e in events) == ["bounce", "reply"]
    assert {e.ref for e in events} == {"c42:p7"}
    assert out.isascii()
    status, out, err = run(capsys, "scan", str(maildir), "--store", str(store), "--json", *own)
    assert (status, out) == (0, "")
    assert "0 new events" in err


def test_scan_bare_file_is_an_mbox_and_new_mail_is_picked_up(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store = tmp_path / "s.db"
    sent = campaign(store)
    mbox = make_mbox(tmp_path / "mbox", incoming(sent)[:1])
    _, out, _ = run(capsys, "scan", str(mbox), "--store", str(store), "--json")
    assert len(out.splitlines()) == 1
    make_mbox(tmp_path / "mbox", incoming(sent)[:2])  # rewritten with one more: rescanned
    _, out, _ = run(capsys, "scan", str(mbox), "--store", str(store), "--json")
    assert [json.loads(line)["kind"] for line in out.splitlines()] == ["bounce"]


def test_scan_matches_signed_tokens_with_the_secret_and_an_empty_store(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = campaign(tmp_path / "host.db", MessageIdGenerator("sales.example", NEW_KEY))
    maildir = make_maildir(tmp_path / "md", incoming(sent)[:1])
    status, out, _ = run(capsys, "scan", str(maildir), "--store", str(tmp_path / "a.db"))
    assert (status, out) == (0, "")  # no secret, no send: nothing to match
    monkeypatch.setenv(SECRET_ENV, f"{OLD_KEY},{NEW_KEY}")
    status, out, _ = run(capsys, "scan", str(maildir), "--store", str(tmp_path / "b.db"), "--json")
    event = json.loads(out)
    assert (status, event["ref"], event["method"], event["sent"]) == (0, "c42:p7", "token", None)


def test_scan_since_skips_older_mail_on_the_first_scan(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store = tmp_path / "s.db"
    sent = campaign(store)
    mbox = make_mbox(tmp_path / "mbox", incoming(sent))  # envelope dates in 2020
    status, out, _ = run(
        capsys, "scan", f"mbox:{mbox}", "--store", str(store), "--since", "2021-01-01"
    )
    assert (status, out) == (0, "")


@pytest.mark.parametrize(
    "source", ["maildir:{tmp}/nothing", "{tmp}/nothing", "mbox:{tmp}", "maildir:{tmp}"]
)
def test_scan_of_a_missing_or_wrong_source_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, source: str
) -> None:
    status, out, err = run(
        capsys, "scan", source.format(tmp=tmp_path), "--store", str(tmp_path / "s.db")
    )
    assert (status, out) == (2, "")
    assert_clean_error(err)


def test_scan_rejects_a_malformed_since(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, _, err = run(capsys, "scan", str(tmp_path), "--store", "x.db", "--since", "yesterday")
    assert status == 2
    assert "ISO 8601" in err


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("imap://127.0.0.1/INBOX", "USER@HOST"),
        ("imaps://rep@/INBOX", "USER@HOST"),
        ("imap://rep:secret@127.0.0.1/INBOX", IMAP_PASSWORD_ENV),
        ("imap://rep@127.0.0.1:99999/INBOX", "bad port"),
        ("imaps://rep@127.0.0.1/INBOX?tls=none", "tls=none"),
        ("imap://rep@127.0.0.1/INBOX?folder=x", "tls=none"),
    ],
)
def test_scan_refuses_an_unusable_imap_url(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    message: str,
) -> None:
    monkeypatch.setenv(IMAP_PASSWORD_ENV, "pw")
    status, _, err = run(capsys, "scan", url, "--store", str(tmp_path / "s.db"))
    assert status == 2
    assert_clean_error(err)
    assert message in err
    assert "secret" not in err  # a password given in the URL is never echoed


@pytest.mark.parametrize("variables", [(), (IMAP_PASSWORD_ENV, IMAP_TOKEN_ENV)])
def test_scan_imap_needs_exactly_one_credential(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    variables: tuple[str, ...],
) -> None:
    monkeypatch.delenv(IMAP_PASSWORD_ENV, raising=False)
    monkeypatch.delenv(IMAP_TOKEN_ENV, raising=False)
    for name in variables:
        monkeypatch.setenv(name, "x")
    url = "imap://rep@127.0.0.1/INBOX?tls=none"
    status, _, err = run(capsys, "scan", url, "--store", str(tmp_path / "s.db"))
    assert status == 2
    assert_clean_error(err)
    assert IMAP_PASSWORD_ENV in err
    assert IMAP_TOKEN_ENV in err
