"""The ``replytrack`` command line: msgid, verify, inspect, exit statuses and error output."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from importlib.metadata import version
from pathlib import Path

import pytest

from replytrack.cli import SECRET_ENV, main
from replytrack.headers import parse_headers
from replytrack.msgid import MessageIdGenerator

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
