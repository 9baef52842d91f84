r"""The ``replytrack`` command: mint and check Message-IDs, inspect threading headers.

A thin shell over the library for people at a terminal and for shell scripts::

    replytrack msgid --domain mail.example.com [--ref REF] [--count N]
    replytrack verify MSGID
    replytrack inspect [--json] FILE...

Rule 1: the signing secret is read from the environment (`SECRET_ENV`), never from the command
line, where it would show in ``ps`` output and in shell history. It holds one key, or several
separated by commas for rotation, oldest first: ids are signed with the last key and verified
with all of them, exactly like ``MessageIdGenerator(secret=[...])``.
Rule 2: exit status 0 means success; 1 means a negative answer or a partial failure (``verify``
did not recognise the id, ``inspect`` could not read one of its files); 2 means the command was
used wrongly: a usage error, a missing secret, or a `ReplytrackError` from the library, printed
as ``replytrack: error: ...`` without a traceback.
Rule 3: text from mail is untrusted. Human-readable output escapes every non-printable
character (``\x1b``, ``\u202e`` ...), so a crafted header cannot drive the terminal with escape
sequences or reorder what is shown with bidi controls. ``--json`` output is plain ASCII JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, BinaryIO, Final

from replytrack.errors import ReplytrackError
from replytrack.headers import Address, Headers, normalize_subject, parse_headers
from replytrack.msgid import MessageIdGenerator

__all__ = ["SECRET_ENV", "main"]

#: The environment variable that holds the signing key(s).
SECRET_ENV: Final = "REPLYTRACK_SECRET"  # noqa: S105 (the name of a variable, no secret)

_PROG: Final = "replytrack"
# `verify` does not look at the domain (it is not signed), but a generator needs one. The
# ".invalid" TLD is reserved (RFC 2606 §2) and can never name a real sending domain.
_VERIFY_DOMAIN: Final = "replytrack.invalid"
# The header block is at most MAX_HEADER_BYTES (1 MiB) long; reading twice that is always
# enough to find its end (or to see that it is too long), without loading a whole mbox.
_READ_LIMIT: Final = 2 * 1024 * 1024
_NONE: Final = "(none)"
_LABEL_WIDTH: Final = 22
_INDENT: Final = " " * 4

# Help texts are wrapped by hand (RawDescriptionHelpFormatter) to stay under 80 columns.
_MAIN_DESCRIPTION: Final = """\
Email reply tracking: mint and check Message-IDs, and inspect the threading
headers of messages.
"""

_SECRET_HELP: Final = f"""\
secret:
  Signed ids need a key, read from the environment variable {SECRET_ENV}
  (never from the command line, where it would show in 'ps' and in the shell
  history). For key rotation, list several keys separated by commas, oldest
  first: new ids are signed with the last key, and ids signed with any listed
  key verify. Keys are taken as UTF-8 text, white space around each is ignored,
  and a key cannot contain a comma. Use at least 32 random bytes, for example:
    export {SECRET_ENV}="$(python3 -c \\
      'import secrets; print(secrets.token_urlsafe(32))')"
"""

_EXIT_HELP: Final = """\
exit status:
  0 success; 1 a negative answer or a partial failure (verify did not
  recognise the id, inspect could not read a file); 2 wrong usage or a
  configuration error.
"""

_MSGID_DESCRIPTION: Final = f"""\
Print new RFC 5322 Message-IDs, one per line, angle brackets included. With
--ref the ids are signed and carry REF, which needs {SECRET_ENV}.
"""

_MSGID_EPILOG: Final = f"""\
{_SECRET_HELP}
The ref is encoded, not encrypted: anyone who sees the id can read it. Put an
opaque identifier in it, never personal data.
"""

_VERIFY_DESCRIPTION: Final = f"""\
Check that MSGID was signed with one of the keys in {SECRET_ENV}, and
print the ref and the issue time it carries. Exit status 0 if it verifies, 1 if not.
The domain is not checked: it is not signed.
"""

_VERIFY_EPILOG: Final = f"""\
{_SECRET_HELP}
example (quote the id: the shell reads '<' and '>' as redirections):
  replytrack verify '<r1.abc...@mail.example.com>'
"""

_INSPECT_DESCRIPTION: Final = """\
Print the headers that reply tracking reads from each message: ids, addresses,
subject, date, and what was malformed. Only the header block is read.
"""

_INSPECT_EPILOG: Final = """\
output:
  Text output shows ids in <>, dates in ISO 8601, and escapes non-printable
  characters. --json prints one JSON object per file and line, ASCII only,
  with the keys file, message_id, in_reply_to, references, from, sender,
  reply_to, to, cc, subject, normalized_subject, date and defects. Ids are in
  replytrack's normalised form (no <>), addresses are {"name": ..., "addr":
  ...}, lists are empty and single values null when the header is absent, and
  the date is ISO 8601 (null when absent or unparsable).

  A file that cannot be read is reported on stderr; the others are still
  inspected, and the exit status is 1.
"""


class _UsageError(Exception):
    """The command line or the environment is unusable; the message says how to fix it."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``replytrack`` command line.

    Args:
        argv: the arguments after the program name; ``None`` reads ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success, 1 for a negative answer or a partial failure, 2 for
        wrong usage or a configuration error (see the module docstring).
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits on --help, --version and usage errors; return the status instead,
        # so main() is callable from Python without catching SystemExit.
        return _exit_status(exc.code)
    _tolerate_unencodable_output()
    try:
        status: int = args.run(args)
    except (_UsageError, ReplytrackError) as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130  # 128 + SIGINT, as shells report it; no traceback for a Ctrl-C
    except BrokenPipeError:
        # The reader went away (`replytrack msgid --count 100000 | head`). Point stdout at
        # devnull so the interpreter's final flush does not fail again, as the Python docs
        # advise (library/signal.html, "Note on SIGPIPE").
        _silence_stdout()
        return 1
    return status


# --------------------------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    common: dict[str, Any] = {"formatter_class": argparse.RawDescriptionHelpFormatter}
    if sys.version_info >= (3, 14):
        # Plain output (no colours in help and errors) and "did you mean" for subcommands.
        common.update(color=False, suggest_on_error=True)

    parser = argparse.ArgumentParser(
        prog=_PROG,
        description=_MAIN_DESCRIPTION,
        epilog=_SECRET_HELP + "\n" + _EXIT_HELP,
        **common,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    msgid = commands.add_parser(
        "msgid",
        help="print new Message-IDs",
        description=_MSGID_DESCRIPTION,
        epilog=_MSGID_EPILOG,
        **common,
    )
    msgid.add_argument(
        "--domain",
        required=True,
        help="the right-hand side of the ids, e.g. mail.example.com (IDNA names are converted)",
    )
    msgid.add_argument(
        "--ref",
        help=f"embed this host-chosen ref (at most 64 bytes in UTF-8), signed with {SECRET_ENV}",
    )
    msgid.add_argument(
        "--count",
        type=_positive_int,
        default=1,
        metavar="N",
        help="how many ids to print (default: 1)",
    )
    msgid.set_defaults(run=_run_msgid)

    verify = commands.add_parser(
        "verify",
        help="check a signed Message-ID and print its ref and issue time",
        description=_VERIFY_DESCRIPTION,
        epilog=_VERIFY_EPILOG,
        **common,
    )
    verify.add_argument("msgid", metavar="MSGID", help="the Message-ID, with or without <>")
    verify.set_defaults(run=_run_verify)

    inspect = commands.add_parser(
        "inspect",
        help="print the threading headers of messages",
        description=_INSPECT_DESCRIPTION,
        epilog=_INSPECT_EPILOG,
        **common,
    )
    inspect.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="a message file (.eml, RFC 5322); '-' reads standard input",
    )
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.set_defaults(run=_run_inspect)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _version() -> str:
    try:
        return version("replytrack")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "(unknown version)"


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    return code if isinstance(code, int) else 2


def _tolerate_unencodable_output() -> None:
    """Escape what the output encoding cannot show instead of failing half-way.

    Mail holds any Unicode text; a stdout in cp1252 (Windows, redirected) or ASCII
    (``PYTHONIOENCODING=ascii``) cannot encode all of it, and one CJK subject must not abort
    the listing. This changes the process's stdout, which is what a command line owns.
    """
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # stdout is not a real file (tests, embedding): nothing will flush to a pipe


# --------------------------------------------------------------------------------------------
# msgid and verify
# --------------------------------------------------------------------------------------------


def _secret_from_env() -> list[str] | None:
    """The rotation list from `SECRET_ENV`, oldest first, or ``None`` when it is not set."""
    raw = os.environ.get(SECRET_ENV)
    if raw is None or not raw.strip():
        return None
    keys = [key.strip() for key in raw.split(",")]
    if not all(keys):
        raise _UsageError(
            f"{SECRET_ENV} has an empty key: separate keys with single commas, "
            "with no comma at the start or the end"
        )
    return keys


def _generator(domain: str, *, purpose: str | None) -> MessageIdGenerator:
    """A generator for `domain`; with the secret from the environment when `purpose` needs it."""
    secret = None
    if purpose is not None:
        secret = _secret_from_env()
        if secret is None:
            raise _UsageError(
                f"{purpose} needs a secret: set the environment variable {SECRET_ENV} "
                "(see 'replytrack --help')"
            )
    return MessageIdGenerator(domain, secret)


def _run_msgid(args: argparse.Namespace) -> int:
    gen = _generator(args.domain, purpose="--ref" if args.ref is not None else None)
    out = sys.stdout
    for _ in range(args.count):
        out.write(gen.generate(args.ref) + "\n")
    out.flush()
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    gen = _generator(_VERIFY_DOMAIN, purpose="verify")
    token = gen.verify(args.msgid)
    if token is None:
        print(
            "not a replytrack token (a foreign or unsigned id, tampered with, "
            f"or signed with a key that is not in {SECRET_ENV})"
        )
        return 1
    _print_field("Ref", _display(token.ref) if token.ref else "(empty)")
    _print_field("Issued at", token.issued_at.isoformat())
    return 0


# --------------------------------------------------------------------------------------------
# inspect
# --------------------------------------------------------------------------------------------


def _run_inspect(args: argparse.Namespace) -> int:
    status = 0
    first = True
    for name in args.files:
        try:
            data = _read_message(name)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            print(f"{_PROG}: cannot read {_display(name)}: {reason}", file=sys.stderr)
            status = 1
            continue
        headers = parse_headers(data)
        if args.json:
            print(json.dumps(_as_json(name, headers)))
        else:
            if not first:
                print()
            _print_headers(name, headers)
        sys.stdout.flush()  # keep stdout in step with the stderr messages of unreadable files
        first = False
    return status


def _read_message(name: str) -> bytes:
    if name == "-":
        stdin: BinaryIO = sys.stdin.buffer
        return stdin.read(_READ_LIMIT)
    with open(name, "rb") as file:
        return file.read(_READ_LIMIT)


def _print_headers(name: str, headers: Headers) -> None:
    _print_field("File", _display(name))
    msg_id = headers.message_id
    if msg_id is not None:
        shown = _display_id(msg_id)
    elif "message-id" in headers:
        shown = f"(no id found in: {_display(headers.get('message-id') or '')})"
    else:
        shown = _NONE
    _print_field("Message-ID", shown)
    _print_list("In-Reply-To", [_display_id(i) for i in headers.in_reply_to])
    # References always go one per line: it is the list one reads to follow a thread.
    refs = headers.references
    count = f"{len(refs)} id{'s' if len(refs) > 1 else ''}, oldest first"
    _print_field("References", count if refs else _NONE)
    for ref in refs:
        print(f"{_INDENT}{_display_id(ref)}")
    _print_list("From", [_display_address(a) for a in headers.from_])
    _print_list("Sender", [_display_address(a) for a in headers.sender])
    _print_list("Reply-To", [_display_address(a) for a in headers.reply_to])
    _print_list("To", [_display_address(a) for a in headers.to])
    _print_list("Cc", [_display_address(a) for a in headers.cc])
    subject = headers.subject
    _print_field("Subject", _NONE if subject is None else _display(subject))
    _print_field(
        "Normalised subject", _NONE if subject is None else _display(normalize_subject(subject))
    )
    date = headers.date
    if date is not None:
        shown = date.isoformat()
    elif "date" in headers:
        shown = "(unparsable, see Defects)"
    else:
        shown = _NONE
    _print_field("Date", shown)
    defects = headers.defects
    _print_field("Defects", str(len(defects)) if defects else _NONE)
    for defect in defects:
        print(f"{_INDENT}{_display(defect)}")


def _print_field(label: str, value: str) -> None:
    print(f"{label + ':':<{_LABEL_WIDTH}}{value}")


def _print_list(label: str, values: list[str]) -> None:
    """One value on the label's line; more go below it, aligned with the first."""
    _print_field(label, values[0] if values else _NONE)
    for value in values[1:]:
        print(f"{'':<{_LABEL_WIDTH}}{value}")


def _display(text: str) -> str:
    """`text` safe to print on a terminal: non-printable characters escaped (Rule 3)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _display_id(msg_id: str) -> str:
    return f"<{_display(msg_id)}>"


def _display_address(address: Address) -> str:
    return _display(str(address))


def _as_json(name: str, headers: Headers) -> dict[str, Any]:
    subject = headers.subject
    date = headers.date
    return {
        "file": name,
        "message_id": headers.message_id,
        "in_reply_to": list(headers.in_reply_to),
        "references": list(headers.references),
        "from": _json_addresses(headers.from_),
        "sender": _json_addresses(headers.sender),
        "reply_to": _json_addresses(headers.reply_to),
        "to": _json_addresses(headers.to),
        "cc": _json_addresses(headers.cc),
        "subject": subject,
        "normalized_subject": None if subject is None else normalize_subject(subject),
        "date": None if date is None else date.isoformat(),
        "defects": list(headers.defects),
    }


def _json_addresses(addresses: tuple[Address, ...]) -> list[dict[str, str]]:
    return [{"name": a.name, "addr": a.addr} for a in addresses]
