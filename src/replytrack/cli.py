r"""The ``replytrack`` command: a demo, mailbox scans, Message-IDs, message inspection.

A thin shell over the library for people at a terminal and for shell scripts::

    replytrack demo [--keep DIR] [--json]
    replytrack scan SOURCE --store PATH [--json] [--own ADDRESS ...] [--since DATE]
                    (SOURCE: maildir:PATH, mbox:PATH, imaps://USER@HOST/FOLDER, imap://...)
    replytrack worker --store STORE [--processes N] [--interval S] [--lease S]
                      [--own ADDRESS ...] [--once] SOURCE...
    replytrack prune --store STORE [--older-than DAYS]
    replytrack msgid --domain mail.example.com [--ref REF] [--count N]
    replytrack verify MSGID
    replytrack inspect [--json] FILE...

Rule 1: the signing secret is read from the environment (`SECRET_ENV`), never from the command
line, where it would show in ``ps`` output and in shell history; so are the IMAP password
(`IMAP_PASSWORD_ENV`) and access token (`IMAP_TOKEN_ENV`). It holds one key, or several
separated by commas for rotation, oldest first: ids are signed with the last key and verified
with all of them, exactly like ``MessageIdGenerator(secret=[...])``.
Rule 2: exit status 0 means success; 1 means a negative answer or a partial failure (``verify``
did not recognise the id, ``inspect`` could not read one of its files); 2 means the command was
used wrongly: a usage error, a missing secret, or a `ReplytrackError` from the library, printed
as ``replytrack: error: ...`` without a traceback. ``scan`` exits 1 when the source failed
part-way: what was scanned before is committed, and the next scan resumes there. ``worker``
exits 0 when it was stopped (SIGTERM, Ctrl-C), and with ``--once`` 1 when a source failed.
Rule 3: text from mail is untrusted. Human-readable output escapes every non-printable
character (``\x1b``, ``\u202e`` ...), so a crafted header cannot drive the terminal with escape
sequences or reorder what is shown with bidi controls. ``--json`` output is plain ASCII JSON.
Rule 4: stdout carries results only (tables, JSON lines); progress, notes and summaries go to
stderr, so ``scan --json | jq`` sees nothing but events.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import email.policy
import email.utils
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from email.message import EmailMessage
from importlib.metadata import PackageNotFoundError, version
from typing import Any, BinaryIO, Final, TextIO

import attrs

from replytrack.classify import classify
from replytrack.errors import ReplytrackError
from replytrack.events import Action, ReplyEvent
from replytrack.headers import Address, Headers, normalize_subject, parse_headers
from replytrack.msgid import MessageIdGenerator
from replytrack.sources import BaseSource, MailboxSource, MaildirSource, MboxSource
from replytrack.sources.base import DEFAULT_RESCAN_WINDOW
from replytrack.store import SentMessage, SQLiteStore, Store
from replytrack.testing import build_bounce, build_out_of_office, build_reply
from replytrack.threadindex import ThreadIndex
from replytrack.tracker import PollResult, ReplyTracker
from replytrack.worker import DEFAULT_LEASE, DEFAULT_RETAIN, RoundResult, Worker

__all__ = ["IMAP_PASSWORD_ENV", "IMAP_TOKEN_ENV", "SECRET_ENV", "main"]

#: The environment variable that holds the signing key(s).
SECRET_ENV: Final = "REPLYTRACK_SECRET"  # noqa: S105 (the name of a variable, no secret)
IMAP_PASSWORD_ENV: Final = "REPLYTRACK_IMAP_PASSWORD"  # noqa: S105 (idem)
IMAP_TOKEN_ENV: Final = "REPLYTRACK_IMAP_TOKEN"  # noqa: S105 (idem)

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
Email reply tracking for sales platforms. Start with 'replytrack demo'.
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
Print what reply tracking reads from each message: ids, addresses, subject,
date and what was malformed; the classification (reply, out-of-office,
bounce ...) with its evidence, the bounced recipients and the return date; and
Outlook's Thread-Index decoded. At most the first 2 MiB of a file are read.
"""

_INSPECT_EPILOG: Final = """\
output:
  Text output shows ids in <>, dates in ISO 8601, and escapes non-printable
  characters. --json prints one JSON object per file and line, ASCII only,
  with the keys file, message_id, in_reply_to, references, from, sender,
  reply_to, to, cc, subject, normalized_subject, date, defects, kind, reasons,
  return_date, bounce and thread_index. Ids are in replytrack's normalised form
  (no <>), addresses are {"name": ..., "addr": ...}, lists are empty and single
  values null when the header is absent, and the date is ISO 8601 (null when
  absent or unparsable). bounce is null or {"original_message_id",
  "recipients": [{"address", "status", "reason", "permanent", "hard"}]};
  thread_index is null or {"guid" (hex), "time", "child_count", "layout"}.

  A file that cannot be read is reported on stderr; the others are still
  inspected, and the exit status is 1.
"""


_DEMO_DESCRIPTION: Final = """\
Run a small campaign end to end, offline, in a temporary directory: stamp four
sends (three prospects at two companies, one Cc'd colleague, one follow-up
step), drop seven realistic messages into a Maildir (replies from the
prospect, from another address and from the Cc'd colleague, a German
out-of-office, a hard bounce, the rep's own follow-up and a newsletter), poll
it into an SQLite store, and show each verdict and the hooks that fired.
"""

_DEMO_EPILOG: Final = """\
output:
  Text for people. --json prints one JSON object per message ("type":
  "message", with the event's canonical payload under "event") and a last
  "type": "summary" object. Ids, times and the return date change per run.
"""

_SCAN_DESCRIPTION: Final = f"""\
Read new mail from a Maildir, an mbox or an IMAP mailbox, recognise replies, out-of-offices and
bounces to the sends recorded in the store (and, with {SECRET_ENV}, to any
id signed with it), and print one line per event. The store remembers how far
the source was read and which messages were processed: a second scan prints
only what is new.
"""

_SCAN_EPILOG: Final = f"""\
source:
  maildir:PATH or mbox:PATH; a bare PATH is a Maildir when it is a directory
  and an mbox when it is a file. An mbox's last message counts once the file
  has been left alone for 2 seconds (it may still be being written).

  imaps://USER@HOST[:PORT][/FOLDER[,FOLDER...]] reads an IMAP mailbox over TLS
  (port 993), imap://... over STARTTLS (port 143); add ?tls=none for a server
  on this machine without TLS. FOLDER defaults to INBOX; %5CAll names the
  folder with that SPECIAL-USE flag (Gmail's All Mail). Percent-encode an "@"
  or "/" in USER or FOLDER. The password comes from {IMAP_PASSWORD_ENV},
  or an OAuth 2.0 access token (XOAUTH2) from {IMAP_TOKEN_ENV}. Needs the
  extra: pip install 'replytrack[imap]'. Nothing is marked read.

output:
  A table, or with --json one event per line: the canonical payload of
  ReplyEvent.to_json, the same bytes the hooks' outbox holds. A summary, and
  progress on long scans, go to stderr.

  The events are recorded in the store as delivered to this command: use a
  store of its own, not the one your application's tracker uses.

{_SECRET_HELP}"""


_LEASE_SECONDS: Final = int(DEFAULT_LEASE.total_seconds())

_WORKER_DESCRIPTION: Final = f"""\
Poll mailboxes into a shared store, for as long as it runs, and print one JSON
line per event. Run as many workers as you like, on one machine or many, over
the same sources and the same store: each source is polled by one worker at a
time (the worker holding its lease in the store), so the work is shared out,
and a worker that dies leaves its sources to the others once its leases run
out. Hook deliveries that failed are retried, and the store is pruned once a
day (ledger keys and delivered events older than {DEFAULT_RETAIN.days} days).
"""

_WORKER_EPILOG: Final = f"""\
store:
  A path: an SQLite file (created when missing), for workers on one machine.
  postgresql://USER@HOST[:PORT]/DBNAME[?...]: PostgreSQL, for workers on many
  machines (needs the extra: pip install 'replytrack[postgres]'). The password
  comes from PGPASSWORD or ~/.pgpass, never from the command line.

source:
  As for 'replytrack scan': maildir:PATH, mbox:PATH, a path, or an
  imap(s)://USER@HOST/FOLDER URL ({IMAP_PASSWORD_ENV} or
  {IMAP_TOKEN_ENV} for its credential). Give every worker the same
  spelling of a source: its name is the key of its cursor and of its lease.

processes:
  --processes N starts N worker processes over the same sources (the same
  command, run again with one process each); their events come out on this
  command's stdout, one whole line at a time. Their own progress and errors go
  to stderr.

leases:
  A worker renews a source's lease before each batch of 100 messages, and a
  batch must take less than half the lease (--lease, default {_LEASE_SECONDS} s; a
  slower one is logged). A worker killed with SIGKILL holds its sources until
  their leases run out; the events it had not delivered are delivered by
  another worker 5 minutes later.

stopping:
  SIGTERM or Ctrl-C stops cleanly: the current batch finishes, leases are
  released, and the exit status is 0. A second signal exits at once; nothing
  is lost (the unfinished batch comes again), an event may be printed twice.
  --once runs until every source it could lease is caught up, then exits: 1 if
  a source failed, else 0.

output:
  One event per line, the canonical payload of ReplyEvent.to_json (as 'scan
  --json' prints it), in no particular order across sources and processes.
  Delivery is at least once: deduplicate on "event_id". The events are
  recorded in the store as delivered to this command: give it a store of its
  own, not the one your application's tracker uses.

{_SECRET_HELP}"""

_PRUNE_DESCRIPTION: Final = """\
Delete what a store no longer needs: the keys of messages processed, and the
events delivered, before DAYS days ago. Sends, cursors, leases and events
that could not be delivered are kept. A worker does this once a day; run it
by hand (or from cron) for stores that no worker serves.
"""

_PRUNE_EPILOG: Final = """\
horizon:
  A message whose key was pruned and that a source delivers again (a mailbox
  rescanned after its cursor became invalid, 7 days back by default) is
  processed again and its event comes again, with the same event_id. Keep DAYS
  well above the sources' rescan window.
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

    demo = commands.add_parser(
        "demo",
        help="run a campaign end to end, offline, and show the verdicts",
        description=_DEMO_DESCRIPTION,
        epilog=_DEMO_EPILOG,
        **common,
    )
    demo.add_argument(
        "--keep",
        metavar="DIR",
        help="build the store and the Maildir in DIR (new or empty) and keep them",
    )
    demo.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    demo.set_defaults(run=_run_demo)

    scan = commands.add_parser(
        "scan",
        help="poll a Maildir or an mbox into a store and print the events",
        description=_SCAN_DESCRIPTION,
        epilog=_SCAN_EPILOG,
        **common,
    )
    scan.add_argument(
        "source", metavar="SOURCE", help="maildir:PATH, mbox:PATH, a path, or an imap(s):// URL"
    )
    scan.add_argument(
        "--store",
        required=True,
        metavar="PATH",
        help="the SQLite store (created when missing)",
    )
    scan.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    scan.add_argument(
        "--own",
        nargs="+",
        action="extend",
        metavar="ADDRESS",
        help="the reps' own addresses: their mail is never a reply (repeatable)",
    )
    scan.add_argument(
        "--since",
        type=_parse_since,
        metavar="DATE",
        help="on the first scan of SOURCE, skip mail received before DATE "
        "(ISO 8601, UTC unless an offset is given)",
    )
    scan.set_defaults(run=_run_scan)

    work = commands.add_parser(
        "worker",
        help="poll mailboxes with other workers into one store, printing the events",
        description=_WORKER_DESCRIPTION,
        epilog=_WORKER_EPILOG,
        **common,
    )
    work.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="maildir:PATH, mbox:PATH, a path, or an imap(s):// URL",
    )
    work.add_argument(
        "--store",
        required=True,
        metavar="STORE",
        help="an SQLite file (created when missing) or a postgresql:// URL",
    )
    work.add_argument(
        "--processes",
        type=_positive_int,
        default=1,
        metavar="N",
        help="run N worker processes (default: 1, this one)",
    )
    work.add_argument(
        "--interval",
        type=_positive_seconds,
        default=30.0,
        metavar="S",
        help="seconds to wait between rounds once caught up (default: 30)",
    )
    work.add_argument(
        "--lease",
        type=_positive_seconds,
        default=DEFAULT_LEASE.total_seconds(),
        metavar="S",
        help=f"seconds a source's lease lasts unless renewed (default: {_LEASE_SECONDS})",
    )
    work.add_argument(
        "--own",
        nargs="+",
        action="extend",
        metavar="ADDRESS",
        help="the reps' own addresses: their mail is never a reply (repeatable)",
    )
    work.add_argument(
        "--once", action="store_true", help="poll until caught up, then exit (for cron)"
    )
    # Set by --processes on the processes it starts: Ctrl-C reaches them through it.
    work.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    work.set_defaults(run=_run_worker)

    prune = commands.add_parser(
        "prune",
        help="delete old ledger keys and delivered events from a store",
        description=_PRUNE_DESCRIPTION,
        epilog=_PRUNE_EPILOG,
        **common,
    )
    prune.add_argument(
        "--store",
        required=True,
        metavar="STORE",
        help="an SQLite file or a postgresql:// URL",
    )
    prune.add_argument(
        "--older-than",
        type=_positive_int,
        default=DEFAULT_RETAIN.days,
        metavar="DAYS",
        help=f"what to delete, in days (default: {DEFAULT_RETAIN.days})",
    )
    prune.set_defaults(run=_run_prune)

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


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
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
            print(json.dumps({**_as_json(name, headers), **_analysis_json(data, headers)}))
        else:
            if not first:
                print()
            _print_headers(name, headers)
            _print_analysis(data, headers)
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


def _print_analysis(data: bytes, headers: Headers) -> None:
    """The classification and the decoded Thread-Index, below the headers."""
    c = classify(data)
    _print_field("Kind", c.kind.value)
    _print_field("Reasons", str(len(c.reasons)) if c.reasons else _NONE)
    for reason in c.reasons:
        print(f"{_INDENT}{_display(reason)}")
    _print_field("Return date", c.return_date.isoformat() if c.return_date else _NONE)
    bounce = c.bounce
    if bounce is None:
        _print_field("Bounced", _NONE)
    else:
        count = len(bounce.recipients)
        _print_field("Bounced", f"{count} recipient{'s' if count != 1 else ''}")
        for r in bounce.recipients:
            severity = "hard" if r.hard else "permanent" if r.permanent else "temporary"
            print(f"{_INDENT}{_display(r.address)}  {r.status or '-'}  {r.reason}  {severity}")
        original = bounce.original_message_id
        _print_field("Bounced Message-ID", _display_id(original) if original else _NONE)
    raw_index = headers.get("thread-index")
    index = ThreadIndex.decode(raw_index)
    if index is not None:
        children = index.child_count
        _print_field("Thread-Index", f"GUID {index.guid.hex()}")
        print(
            f"{'':<{_LABEL_WIDTH}}started {index.header_time.isoformat()} ({index.layout.value})"
        )
        print(f"{'':<{_LABEL_WIDTH}}{children} child block{'s' if children != 1 else ''}")
    elif raw_index is not None:
        _print_field("Thread-Index", f"(not a Thread-Index: {_display(raw_index[:60])})")
    else:
        _print_field("Thread-Index", _NONE)


def _analysis_json(data: bytes, headers: Headers) -> dict[str, Any]:
    c = classify(data)
    bounce = c.bounce
    index = ThreadIndex.decode(headers.get("thread-index"))
    return {
        "kind": c.kind.value,
        "reasons": list(c.reasons),
        "return_date": c.return_date.isoformat() if c.return_date else None,
        "bounce": None
        if bounce is None
        else {
            "original_message_id": bounce.original_message_id,
            "recipients": [
                {
                    "address": r.address,
                    "status": r.status,
                    "reason": r.reason,
                    "permanent": r.permanent,
                    "hard": r.hard,
                }
                for r in bounce.recipients
            ],
        },
        "thread_index": None
        if index is None
        else {
            "guid": index.guid.hex(),
            "time": index.header_time.isoformat(),
            "child_count": index.child_count,
            "layout": index.layout.value,
        },
    }


# --------------------------------------------------------------------------------------------
# Shared by scan and demo: sources, events as table rows
# --------------------------------------------------------------------------------------------


def _open_source(spec: str) -> BaseSource:
    """The source `spec` names: ``maildir:PATH``, ``mbox:PATH``, a bare path, or an IMAP URL.

    A bare directory is a Maildir and a bare file an mbox: the two formats cannot be mistaken
    for each other on disk, so guessing is safe and saves typing.

    Raises:
        _UsageError: the path does not exist or is not of the kind asked for, or the URL is
            unusable.
    """
    if spec.lower().startswith(("imap://", "imaps://")):
        return _open_imap(spec)
    kind, sep, path = spec.partition(":")
    if not sep or kind not in ("maildir", "mbox"):
        # Not a prefix we know: the whole argument is a path (it may hold a colon itself).
        kind, path = "", spec
    if not path:
        raise _UsageError(f"no path in source {_display(spec)!r}")
    if kind == "" and os.path.isdir(path):
        kind = "maildir"
    elif kind == "" and os.path.isfile(path):
        kind = "mbox"
    if kind == "maildir":
        if not os.path.isdir(os.path.join(path, "new")) or not os.path.isdir(
            os.path.join(path, "cur")
        ):
            raise _UsageError(f"not a Maildir (no new/ and cur/ inside): {_display(path)}")
        return MaildirSource(path)
    if kind == "mbox":
        if not os.path.isfile(path):
            raise _UsageError(f"not an mbox file: {_display(path)}")
        return MboxSource(path)
    raise _UsageError(f"no such file or directory: {_display(path)}")


def _open_imap(url: str) -> BaseSource:
    """The `IMAPSource` an ``imap://`` or ``imaps://`` URL names (see the scan epilog).

    Raises:
        _UsageError: the URL is unusable, no credential is in the environment, or the
            ``imap`` extra is not installed.
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
    tls = query.pop("tls", ["starttls" if scheme == "imap" else "implicit"])[-1].lower()
    if (
        query
        or tls not in ("none", "starttls", "implicit")
        or (scheme == "imaps") != (tls == "implicit")
    ):
        raise _UsageError(
            f"unusable IMAP URL {_display(url)!r}: the only option is ?tls=none (imap:// only)"
        )
    try:
        port = parts.port
    except ValueError:
        raise _UsageError(f"bad port in {_display(url)!r}") from None
    if not parts.hostname or not parts.username:
        raise _UsageError(f"an IMAP URL needs USER@HOST: {_display(url)!r}")
    if parts.password is not None:
        raise _UsageError(
            f"put the IMAP password in {IMAP_PASSWORD_ENV}, not in the URL "
            "(it would show in ps output and shell history)"
        )
    folders = [
        urllib.parse.unquote(folder) for folder in parts.path.lstrip("/").split(",") if folder
    ]
    password = os.environ.get(IMAP_PASSWORD_ENV) or None
    token = os.environ.get(IMAP_TOKEN_ENV) or None
    if (password is None) == (token is None):
        raise _UsageError(
            f"set exactly one of {IMAP_PASSWORD_ENV} (a password) or {IMAP_TOKEN_ENV} "
            "(an OAuth 2.0 access token) for an IMAP source"
        )
    try:
        from replytrack.sources.imap import IMAPSource  # noqa: PLC0415 (an optional extra)
    except ImportError as exc:
        raise _UsageError(str(exc)) from None
    return IMAPSource(
        parts.hostname,
        port=port,
        username=urllib.parse.unquote(parts.username),
        password=password,
        oauth2_token=None if token is None else (lambda: token),
        ssl=tls == "implicit",
        starttls=tls == "starttls",
        folders=folders or None,
    )


def _parse_since(text: str) -> _dt.datetime:
    """An ISO 8601 date or date-time for ``--since``; without a UTC offset it is UTC."""
    try:
        if len(text) == 10:
            day = _dt.date.fromisoformat(text)
            return _dt.datetime(day.year, day.month, day.day, tzinfo=_dt.timezone.utc)
        moment = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 date or date-time: {text!r} (e.g. 2026-03-01)"
        ) from None
    if moment.utcoffset() is None:
        moment = moment.replace(tzinfo=_dt.timezone.utc)
    return moment


def _action_text(event: ReplyEvent) -> str:
    if event.action is Action.PAUSE and event.resume_on is not None:
        return f"pause until {event.resume_on.isoformat()}"
    return event.action.value.replace("_", " ")


def _fit(text: str, width: int) -> str:
    """`text` cut to `width` characters, marked with ``...`` when cut."""
    return text if len(text) <= width else text[: width - 3] + "..."


def _print_table(rows: Sequence[Sequence[str]], *, indent: str = "") -> None:
    """Print `rows` (the first is the header) in columns as wide as their widest cell."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        print((indent + "  ".join(cells)).rstrip())


# --------------------------------------------------------------------------------------------
# scan
# --------------------------------------------------------------------------------------------

# Columns of scan's table: fixed widths, because rows are printed batch by batch as a long scan
# goes, before the widest value is known. The widths fit every value of the enums shown.
_SCAN_COLUMNS: Final = (
    ("RECEIVED", 16),
    ("KIND", 13),
    ("ACTION", 22),
    ("ROLE", 9),
    ("MATCHED BY", 20),
    ("REF", 16),
    ("FROM", 32),
    ("SUBJECT", 0),  # the rest of the line
)
_SCAN_BATCH: Final = 200
# Progress goes to stderr once a scan has run this long: short scans stay quiet.
_PROGRESS_AFTER: Final = 1.0


def _scan_cells(event: ReplyEvent) -> list[str]:
    received = event.received_at
    cells = [
        received.astimezone(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M") if received else "",
        event.kind.value,
        _action_text(event),
        event.role.value,
        event.method.value,
        _display(event.ref),
        _display(event.responder.addr) if event.responder else "",
        _display(event.subject or ""),
    ]
    return [
        _fit(cell, width) if width else cell
        for cell, (_, width) in zip(cells, _SCAN_COLUMNS, strict=True)
    ]


def _scan_line(cells: Sequence[str]) -> str:
    padded = [
        cell.ljust(width) if width else cell
        for cell, (_, width) in zip(cells, _SCAN_COLUMNS, strict=True)
    ]
    return "  ".join(padded).rstrip()


class _Collector:
    """The scan's CRM hook: keeps the events of the current batch for printing.

    It never raises, so no event is left failed in the outbox because of the command line;
    printing happens outside the hook, where a closed pipe stops the scan cleanly.
    """

    def __init__(self) -> None:
        self.events: list[ReplyEvent] = []

    def __call__(self, event: ReplyEvent) -> None:
        self.events.append(event)

    def take(self) -> list[ReplyEvent]:
        events, self.events = self.events, []
        return events


def _run_scan(args: argparse.Namespace) -> int:
    secret = _secret_from_env()
    generator = MessageIdGenerator(_VERIFY_DOMAIN, secret) if secret is not None else None
    collector = _Collector()
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(_open_source(args.source))
        store = SQLiteStore(args.store)
        stack.callback(store.close)
        tracker = ReplyTracker(
            store, generator, crm_log=collector, own_addresses=tuple(args.own or ())
        )
        if args.since is not None:
            # --since bounds the first scan only: a saved cursor already says where to resume,
            # and restarting it at a date could only skip or repeat mail.
            if store.load_cursor(source.name) is None:
                store.save_cursor(source.name, source.initial_cursor(args.since))
            else:
                print(
                    f"{_PROG}: note: --since ignored: resuming {source.name} from its saved "
                    "cursor",
                    file=sys.stderr,
                )
        return _scan(tracker, source, collector, as_json=args.json)
    raise AssertionError("unreachable")  # pragma: no cover - for mypy: the with returns


def _scan(
    tracker: ReplyTracker,
    source: MailboxSource,
    collector: _Collector,
    *,
    as_json: bool,
) -> int:
    """Poll `source` batch by batch, printing events as they come; return the exit status."""
    seen = events = own = duplicates = 0
    header_done = False
    started = time.monotonic()
    while True:
        # One batch per poll, so events print as the scan goes instead of at its end.
        result = tracker.poll(source, limit=_SCAN_BATCH, max_batches=1)
        seen += result.seen
        events += result.events
        own += result.own
        duplicates += result.duplicates
        for event in collector.take():
            if as_json:
                print(event.to_json().decode("ascii"))
                continue
            if not header_done:
                print(_scan_line([name for name, _ in _SCAN_COLUMNS]))
                header_done = True
            print(_scan_line(_scan_cells(event)))
        sys.stdout.flush()
        for error in result.errors:
            print(f"{_PROG}: {_display(source.name)}: {_display(error)}", file=sys.stderr)
        # A short batch means the source is caught up; a full one may be followed by more
        # (an exactly full last batch costs one empty poll).
        if result.errors or result.seen < _SCAN_BATCH:
            break
        if time.monotonic() - started >= _PROGRESS_AFTER:
            print(f"{_PROG}: {seen} messages scanned, {events} events so far", file=sys.stderr)
    print(
        f"{_PROG}: {seen} messages scanned: {events} new events, {own} own mail, "
        f"{duplicates} already processed",
        file=sys.stderr,
    )
    return 1 if result.errors else 0


# --------------------------------------------------------------------------------------------
# worker and prune
# --------------------------------------------------------------------------------------------


def _open_store(spec: str) -> Store:
    """The store `spec` names: a ``postgresql://`` URL, or else the path of an SQLite file.

    Raises:
        _UsageError: the URL holds a password, or the ``postgres`` extra is not installed.
        StoreError: the store could not be opened.
    """
    if not spec.lower().startswith(("postgresql://", "postgres://")):
        return SQLiteStore(spec)
    # --- PostgreSQL: the optional extra, imported only when asked for ---
    try:
        password = urllib.parse.urlsplit(spec).password
    except ValueError:
        raise _UsageError(f"unusable PostgreSQL URL {_display(spec)!r}") from None
    if password is not None:
        raise _UsageError(
            "put the PostgreSQL password in PGPASSWORD or ~/.pgpass, not in the URL "
            "(it would show in ps output and shell history)"
        )
    try:
        from replytrack.store.postgres import PostgresStore  # noqa: PLC0415 (an optional extra)
    except ImportError as exc:
        raise _UsageError(
            f"a postgresql:// store needs the extra: pip install 'replytrack[postgres]' ({exc})"
        ) from None
    return PostgresStore(spec)


class _EventPrinter:
    """The worker's CRM hook: prints each event as one JSON line on stdout, at once.

    Unlike scan's collector it prints inside the hook, so that an event is marked delivered
    only once its line was written: when stdout is gone the hook raises, the event stays in
    the outbox for another worker, and this one stops (`on_broken`).
    """

    def __init__(self, out: TextIO, on_broken: Callable[[], None]) -> None:
        self.out = out
        self.on_broken = on_broken
        self.broken = False

    def __call__(self, event: ReplyEvent) -> None:
        try:
            self.out.write(event.to_json().decode("ascii") + "\n")
            self.out.flush()
        except (BrokenPipeError, ValueError):  # ValueError: stdout was closed
            self.broken = True
            self.on_broken()
            raise


def _on_signals(handler: Callable[[int], None]) -> Callable[[], None]:
    """Call `handler(signum)` on SIGTERM and SIGINT; return what restores the old handlers.

    Outside the main thread (main() embedded in a host's thread) signals cannot be caught:
    nothing is installed, and the host stops the process its own way.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {
        signum: signal.signal(signum, lambda signum, frame: handler(signum))
        for signum in (signal.SIGTERM, signal.SIGINT)
    }

    def restore() -> None:
        for signum, old in previous.items():
            signal.signal(signum, old)

    return restore


def _run_worker(args: argparse.Namespace) -> int:
    if args.processes > 1 and not args.child:
        return _run_worker_processes(args)
    secret = _secret_from_env()
    generator = MessageIdGenerator(_VERIFY_DOMAIN, secret) if secret is not None else None
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(_open_source(spec)) for spec in args.sources]
        store = _open_store(args.store)
        stack.callback(store.close)
        worker: Worker | None = None

        def stop() -> None:
            if worker is not None:
                worker.stop()

        printer = _EventPrinter(sys.stdout, stop)
        tracker = ReplyTracker(
            store, generator, crm_log=printer, own_addresses=tuple(args.own or ())
        )
        worker = Worker(tracker, sources, lease=_dt.timedelta(seconds=args.lease))
        if args.child:
            # The parent relays Ctrl-C as SIGTERM; the terminal's SIGINT to the whole process
            # group would otherwise count as a second signal here and cut the batch short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        restore = _on_signals(lambda signum: _first_stop(worker))
        stack.callback(restore)
        status = _work(worker, once=args.once, interval=args.interval)
        if printer.broken:
            _silence_stdout()
            return 1
        return status
    raise AssertionError("unreachable")  # pragma: no cover - for mypy: the with returns


def _run_worker_processes(args: argparse.Namespace) -> int:
    """Run ``args.processes`` worker processes and relay their events, line by line."""
    # Check what the children will open, so that a mistake is reported once, not N times.
    for spec in args.sources:
        with _open_source(spec):
            pass
    with _open_store(args.store):
        pass
    argv = [sys.executable, "-m", "replytrack", "worker", "--child", "--store", args.store]
    argv += ["--interval", repr(args.interval), "--lease", repr(args.lease)]
    argv += ["--once"] if args.once else []
    argv += ["--own", *args.own] if args.own else []
    argv += ["--", *args.sources]
    return _WorkerProcesses(argv, args.processes).run()


class _WorkerProcesses:
    """Worker processes running `argv` (this command, one process each), relayed to stdout.

    Each child's stdout is a pipe read by a thread of its own, which copies whole lines to
    this process's stdout under a lock, so lines of different children never interleave.
    Children inherit stderr (their progress and errors) and the environment (the secrets).
    """

    def __init__(self, argv: list[str], count: int) -> None:
        self.argv = argv
        self.count = count
        self.children: list[subprocess.Popen[str]] = []
        self.lock = threading.Lock()
        self.broken = threading.Event()
        self.stopping = threading.Event()
        self.signals = 0

    def run(self) -> int:
        """Start the children, wait for all of them; the exit status."""
        restore = _on_signals(self.on_signal)
        relays = []
        try:
            for _ in range(self.count):
                child = self._start()
                thread = threading.Thread(target=self._relay, args=(child,), daemon=True)
                thread.start()
                relays.append(thread)
            codes = [child.wait() for child in self.children]
            for thread in relays:
                thread.join()
        finally:
            for child in self.children:
                if child.poll() is None:  # only when this process was interrupted itself
                    child.kill()
                    child.wait()
                if child.stdout is not None:
                    child.stdout.close()
            restore()
        if self.broken.is_set():
            _silence_stdout()
            return 1
        if self.signals == 1:
            # A child that SIGTERM ended at the first signal had not installed its handler
            # yet: it was still starting, with nothing to finish. That is a clean stop.
            codes = [0 if code == -signal.SIGTERM else code for code in codes]
        if 2 in codes:
            return 2
        return 0 if all(code == 0 for code in codes) else 1

    def on_signal(self, signum: int) -> None:
        """Relay a signal as SIGTERM: the first stops the children cleanly, the next at once."""
        self.signals += 1
        self.stopping.set()
        for child in self.children:
            _terminate(child)

    def _stop(self) -> None:
        """Stop the children cleanly (once), for a reason of this process's own."""
        if not self.stopping.is_set():
            self.on_signal(signal.SIGTERM)

    def _start(self) -> subprocess.Popen[str]:
        try:
            child = subprocess.Popen(  # noqa: S603 (this interpreter and this command)
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                text=True,
                encoding="ascii",
                errors="backslashreplace",
            )
        except OSError as exc:
            self._stop()
            raise _UsageError(f"cannot start a worker process: {exc}") from None
        self.children.append(child)
        if self.stopping.is_set():
            _terminate(child)  # a signal came while it was starting
        return child

    def _relay(self, child: subprocess.Popen[str]) -> None:
        assert child.stdout is not None  # noqa: S101 (started with stdout=PIPE)
        for line in child.stdout:
            if self.broken.is_set() or not line.endswith("\n"):
                # Draining after stdout broke, so that the child never blocks on a full pipe;
                # or the cut last line of a child that was killed: its event was not marked
                # delivered, so it comes again.
                continue
            try:
                with self.lock:
                    sys.stdout.write(line)
                    sys.stdout.flush()
            except (BrokenPipeError, ValueError):  # the reader went away
                self.broken.set()
                self._stop()


def _terminate(child: subprocess.Popen[str]) -> None:
    if child.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # it has just exited
            child.send_signal(signal.SIGTERM)


def _first_stop(worker: Worker) -> None:
    """The first SIGTERM or SIGINT: stop cleanly; the next one exits at once."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # Not worker.stop() here: setting its threading.Event inside a signal handler can
    # deadlock with the interrupted code's own use of that Event (its lock is not reentrant).
    threading.Thread(target=worker.stop, daemon=True).start()


def _work(worker: Worker, *, once: bool, interval: float) -> int:
    """Run `worker` (one pass with `once`), reporting rounds on stderr; the exit status."""
    totals = {"rounds": 0, "seen": 0, "events": 0, "retried": 0, "errors": 0}
    name = _display(worker.worker_id)
    print(f"{_PROG}: worker {name} started on {len(worker.sources)} sources", file=sys.stderr)

    def report(result: RoundResult) -> None:
        totals["rounds"] += 1
        totals["seen"] += result.seen
        totals["events"] += result.events
        totals["retried"] += result.retried.delivered
        totals["errors"] += len(result.errors)
        for error in result.errors:
            print(f"{_PROG}: {_display(error)}", file=sys.stderr)
        if result.seen or result.retried.delivered or result.pruned:
            pruned = (
                f", pruned {result.pruned.ledger} keys and {result.pruned.outbox} events"
                if result.pruned
                else ""
            )
            print(
                f"{_PROG}: worker {name}: {result.seen} messages, {result.events} events, "
                f"{result.retried.delivered} retried from {result.polled} sources "
                f"({result.held} held by other workers){pruned}",
                file=sys.stderr,
            )

    if once:
        while not worker.stopping:
            result = worker.run_once()
            report(result)
            if not result.more:
                break
    else:
        worker.run(interval=interval, on_round=report)
    print(
        f"{_PROG}: worker {name} stopped after {_plural(totals['rounds'], 'round')}: "
        f"{totals['seen']} messages, {totals['events']} events, {totals['retried']} retried, "
        f"{totals['errors']} errors",
        file=sys.stderr,
    )
    return 1 if once and totals["errors"] else 0


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _run_prune(args: argparse.Namespace) -> int:
    before = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(days=args.older_than)
    if args.older_than <= DEFAULT_RESCAN_WINDOW.days:
        print(
            f"{_PROG}: note: {args.older_than} days is within the sources' default rescan "
            f"window ({DEFAULT_RESCAN_WINDOW.days} days): a rescan would bring back events "
            "already delivered (see 'replytrack prune --help')",
            file=sys.stderr,
        )
    with _open_store(args.store) as store:
        pruned = store.prune(before)
    print(
        f"pruned {pruned.ledger} ledger keys and {pruned.outbox} delivered events "
        f"from before {before.isoformat(timespec='seconds')}"
    )
    return 0


# --------------------------------------------------------------------------------------------
# demo
# --------------------------------------------------------------------------------------------

_REP: Final = "Alex Rivera <alex@acme-sales.example>"
_REP_ADDR: Final = "alex@acme-sales.example"
_DANA: Final = "Dana Park <dana.park@northwind.example>"
_SAM: Final = "Sam Lee <sam.lee@northwind.example>"
_PRIYA: Final = "Priya Shah <priya.shah@northwind.example>"
_JONAS: Final = "Jonas Weber <jonas.weber@bergmann-logistik.example>"
_SUBJECT: Final = "Cutting freight costs at Northwind"
_SUBJECT_DE: Final = "Frachtkosten bei Bergmann Logistik"


@attrs.frozen
class _Scenario:
    """One incoming message of the demo and what it shows."""

    title: str
    data: bytes

    @property
    def message_id(self) -> str | None:
        return parse_headers(self.data).message_id


@attrs.frozen
class _Outcome:
    """What became of one scenario: its event, or why there is none, and the hooks it reached."""

    scenario: _Scenario
    event: ReplyEvent | None
    verdict: str  # "event", "own" or "unmatched"
    detail: str
    hooks: tuple[str, ...]


class _DemoHook:
    """A host's hook, as a demo: prints what it receives and notes that it fired.

    A real host would stop the sequence or create a CRM activity here, idempotently on
    ``event.event_id``.
    """

    def __init__(self, name: str, fired: dict[str, list[str]], *, echo: bool) -> None:
        self.name = name
        self.fired = fired
        self.echo = echo

    def __call__(self, event: ReplyEvent) -> None:
        self.fired.setdefault(event.event_id, []).append(self.name)
        if self.echo:
            if self.name == "campaign_stop":
                what = f"{_action_text(event)}: {event.ref}"
            else:
                who = event.responder.addr if event.responder else "?"
                what = f"log {event.kind.value} from {who} on {event.ref}"
            print(f"  {self.name:<15}{_display(what)}")


def _demo_message(to: str, subject: str, body: str, cc: str | None = None) -> EmailMessage:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = _REP
    message["To"] = to
    if cc is not None:
        message["Cc"] = cc
    message["Subject"] = subject
    message["Date"] = email.utils.format_datetime(_dt.datetime.now(_dt.timezone.utc))
    message.set_content(body)
    return message


def _demo_sends(tracker: ReplyTracker) -> tuple[dict[str, SentMessage], bytes]:
    """Stamp the campaign; return the sends by ref and the bytes of the follow-up as sent."""
    first = _demo_message(
        _DANA,
        _SUBJECT,
        "Hi Dana,\n\nteams like yours cut freight spend by 12% with us. 15 minutes next week?\n"
        "\nAlex",
        cc=_SAM,
    )
    dana = tracker.stamp(first, ref="c1:dana")
    follow_up = _demo_message(
        _DANA, f"Re: {_SUBJECT}", "Hi Dana,\n\nbumping this up your inbox.\n\nAlex"
    )
    dana2 = tracker.stamp(follow_up, ref="c1:dana:s2", follow_up_of=dana)
    priya = tracker.stamp(
        _demo_message(_PRIYA, _SUBJECT, "Hi Priya,\n\nsame question as to Dana...\n\nAlex"),
        ref="c1:priya",
    )
    jonas = tracker.stamp(
        _demo_message(
            _JONAS, _SUBJECT_DE, "Hallo Herr Weber,\n\nhaben Sie 15 Minuten?\n\nAlex Rivera"
        ),
        ref="c1:jonas",
    )
    sends = {s.ref: s for s in (dana, dana2, priya, jonas)}
    return sends, follow_up.as_bytes()


def _demo_scenarios(sends: Mapping[str, SentMessage], follow_up: bytes) -> list[_Scenario]:
    """The incoming mail, in the order it lands in the Maildir."""
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    back = now.date() + _dt.timedelta(days=10)

    def mid(ref: str) -> str:
        return f"<{sends[ref].message_id}>"

    newsletter = EmailMessage(policy=email.policy.SMTP)
    newsletter["From"] = "Freight Weekly <news@freight-weekly.example>"
    newsletter["To"] = _REP_ADDR
    newsletter["Subject"] = "Freight Weekly: diesel prices, port delays, and more"
    newsletter["Date"] = email.utils.format_datetime(now)
    newsletter["Message-ID"] = "<fw-2291.8812@freight-weekly.example>"
    newsletter["List-Id"] = "Freight Weekly <weekly.freight-weekly.example>"
    newsletter["List-Unsubscribe"] = "<https://freight-weekly.example/u/8812>"
    newsletter["Precedence"] = "list"
    newsletter.set_content("This week: diesel prices fall for the third week running ...")
    return [
        _Scenario(
            "Out-of-office in German, with a return date",
            build_out_of_office(
                language="de",
                return_date=back,
                in_reply_to=mid("c1:jonas"),
                original_subject=_SUBJECT_DE,
                from_=_JONAS,
                to=_REP,
                date=now,
            ),
        ),
        _Scenario(
            "Hard bounce (RFC 3464 DSN): the address is gone",
            build_bounce(
                recipients=["priya.shah@northwind.example"],
                original_message_id=mid("c1:priya"),
                original_from=_REP,
                original_subject=_SUBJECT,
                reporting_mta="mx.acme-sales.example",
                remote_mta="mx.northwind.example",
                to=_REP_ADDR,
                date=now,
            ),
        ),
        _Scenario("The rep's own follow-up, synced into the inbox", follow_up),
        _Scenario(
            "Reply from the prospect, to the follow-up",
            build_reply(
                in_reply_to=mid("c1:dana:s2"),
                references=[mid("c1:dana")],
                from_=_DANA,
                to=_REP,
                subject=f"Re: {_SUBJECT}",
                body="Hi Alex,\n\ngood timing - Thursday 10:00 works for me.\n\nDana",
                quote="bumping this up your inbox.",
                date=now,
                html=True,
            ),
        ),
        _Scenario(
            "Reply from the colleague who was on Cc",
            build_reply(
                in_reply_to=mid("c1:dana"),
                from_=_SAM,
                to=_REP,
                cc=_DANA,
                subject=f"RE: {_SUBJECT}",
                body="Alex, I own the freight budget - please send me the numbers.\n\nSam",
                quote="teams like yours cut freight spend by 12% with us.",
                date=now,
            ),
        ),
        _Scenario(
            "Reply from another address of the prospect",
            build_reply(
                in_reply_to=mid("c1:jonas"),
                from_="Jonas Weber <jonas.weber.privat@gmail.com>",
                to=_REP,
                subject=f"AW: {_SUBJECT_DE}",
                body="Hallo Herr Rivera,\n\nich bin im Urlaub, melde mich am Montag.\n\nJ. Weber",
                quote="haben Sie 15 Minuten?",
                date=now,
            ),
        ),
        _Scenario("A newsletter, answering nothing", newsletter.as_bytes()),
    ]


def _write_maildir(path: str, scenarios: Sequence[_Scenario]) -> None:
    """Deliver `scenarios` into a new Maildir the way an MDA does: write in tmp/, rename."""
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    base = int(time.time())
    for number, scenario in enumerate(scenarios, start=1):
        name = f"{base}.M{number:02d}P{os.getpid()}.replytrack-demo"
        tmp = os.path.join(path, "tmp", name)
        with open(tmp, "wb") as file:
            file.write(scenario.data)
        os.rename(tmp, os.path.join(path, "new", name))


def _run_demo(args: argparse.Namespace) -> int:
    if args.keep is not None:
        workdir = os.path.abspath(args.keep)
        if os.path.exists(workdir) and os.listdir(workdir):
            raise _UsageError(f"--keep needs a new or empty directory: {_display(workdir)}")
        os.makedirs(workdir, exist_ok=True)
        return _demo(workdir, keep=True, as_json=args.json)
    with tempfile.TemporaryDirectory(prefix="replytrack-demo-") as workdir:
        return _demo(workdir, keep=False, as_json=args.json)


def _demo(workdir: str, *, keep: bool, as_json: bool) -> int:
    store_path = os.path.join(workdir, "replytrack.sqlite3")
    maildir = os.path.join(workdir, "Maildir")
    fired: dict[str, list[str]] = {}
    echo = not as_json
    with contextlib.ExitStack() as stack:
        store = SQLiteStore(store_path)
        stack.callback(store.close)
        tracker = ReplyTracker(
            store,
            # A random key per run: the demo shows signed tokens without asking for a secret.
            MessageIdGenerator("mail.acme-sales.example", secret=secrets.token_bytes(32)),
            campaign_stop=_DemoHook("campaign_stop", fired, echo=echo),
            crm_log=_DemoHook("crm_log", fired, echo=echo),
            own_addresses=(_REP_ADDR,),
        )
        sends, follow_up = _demo_sends(tracker)
        scenarios = _demo_scenarios(sends, follow_up)
        _write_maildir(maildir, scenarios)
        if echo:
            _demo_intro(workdir, keep, sends)
        source = stack.enter_context(MaildirSource(maildir))
        result = tracker.poll(source)
        again = tracker.poll(source)
        outcomes = _demo_outcomes(tracker, scenarios, fired)
    if as_json:
        _demo_json(outcomes, result, again, workdir if keep else None)
    else:
        _demo_report(outcomes, result, again, workdir if keep else None)
    return 0 if not result.errors else 1


def _demo_outcomes(
    tracker: ReplyTracker, scenarios: Sequence[_Scenario], fired: Mapping[str, list[str]]
) -> list[_Outcome]:
    # The events come back from the store's outbox, as a host's retry worker would read them.
    by_message: dict[str | None, ReplyEvent] = {}
    for event_id in fired:
        for entry in tracker.store.find_outbox(event_id):
            stored = ReplyEvent.from_json(entry.payload)
            by_message[stored.message_id] = stored
    outcomes = []
    for scenario in scenarios:
        event = by_message.get(scenario.message_id)
        if event is not None:
            hooks = tuple(fired[event.event_id])
            outcomes.append(_Outcome(scenario, event, "event", "", hooks))
            continue
        own = tracker.correlator.is_own_mail(parse_headers(scenario.data))
        if own is not None:
            outcomes.append(_Outcome(scenario, None, "own", f"skipped: own mail ({own})", ()))
        else:
            detail = "no match: answers none of our sends"
            outcomes.append(_Outcome(scenario, None, "unmatched", detail, ()))
    return outcomes


def _demo_intro(workdir: str, keep: bool, sends: Mapping[str, SentMessage]) -> None:
    print("replytrack demo: a sales campaign, its replies, and what the tracker makes of them")
    print()
    note = "" if keep else "  (removed at exit; --keep DIR keeps it)"
    print(f"Workspace  {_display(workdir)}{note}")
    print("           replytrack.sqlite3 (SQLiteStore) and Maildir/ (MaildirSource)")
    print()
    print(f"1. Stamped and recorded {len(sends)} sends from {_REP}")
    print("   (signed Message-IDs: the ref can be read back from any reply's headers)")
    print()
    rows = [["REF", "TO", "SUBJECT"]]
    for ref, sent in sends.items():
        rows.append([ref, ", ".join(sent.to), sent.subject or ""])
        rows.extend(["", f"cc {cc}", ""] for cc in sent.cc)
    _print_table(rows, indent="   ")
    print()
    print("2. Delivered 7 messages to the Maildir, and polled it: the hooks print as called")
    print()


def _demo_report(
    outcomes: Sequence[_Outcome], result: PollResult, again: PollResult, kept: str | None
) -> None:
    print()
    print("3. Verdicts, message by message")
    print()
    header = ["KIND", "ACTION", "ROLE", "MATCHED BY", "HOOKS FIRED"]
    cells = {
        id(o): [
            o.event.kind.value,
            _action_text(o.event),
            o.event.role.value,
            o.event.method.value,
            " ".join(o.hooks) or "-",
        ]
        for o in outcomes
        if o.event is not None
    }
    widths = [max(len(row[i]) for row in (header, *cells.values())) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "     " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    print(line(header))
    for number, outcome in enumerate(outcomes, start=1):
        sender = parse_headers(outcome.scenario.data).from_
        who = f"  <{_display(sender[0].addr)}>" if sender else ""
        ref = f"  -> {_display(outcome.event.ref)}" if outcome.event else ""
        print(f"  {number}. {outcome.scenario.title}{who}{ref}")
        row = cells.get(id(outcome))
        print(line(row) if row is not None else f"     {outcome.detail}")
    print()
    stops = sum(o.event is not None and o.event.action is Action.STOP for o in outcomes)
    pauses = sum(o.event is not None and o.event.action is Action.PAUSE for o in outcomes)
    unmatched = result.seen - result.matched - result.own - result.duplicates
    print(
        f"Summary: {result.seen} messages polled, {result.events} events "
        f"({stops} stop, {pauses} pause), {result.own} own mail skipped, {unmatched} unmatched."
    )
    print(
        f"Polling again: {again.seen} new messages, {again.events} events "
        "(the cursor and the processed ledger are in the store)."
    )
    if kept is not None:
        print(f"Kept in {_display(kept)}; look inside a message with:")
        print(f"  replytrack inspect {_display(os.path.join(kept, 'Maildir', 'new'))}/*")


def _demo_json(
    outcomes: Sequence[_Outcome], result: PollResult, again: PollResult, kept: str | None
) -> None:
    """One JSON object per message (``"type": "message"``), then a ``"summary"`` object."""
    for number, outcome in enumerate(outcomes, start=1):
        event = outcome.event
        print(
            json.dumps(
                {
                    "type": "message",
                    "number": number,
                    "scenario": outcome.scenario.title,
                    "message_id": outcome.scenario.message_id,
                    "verdict": outcome.verdict,
                    "detail": outcome.detail or None,
                    "hooks": list(outcome.hooks),
                    # The canonical payload, as the hooks and the outbox have it.
                    "event": json.loads(event.to_json()) if event else None,
                }
            )
        )
    summary = attrs.asdict(result)
    summary["errors"] = list(result.errors)
    print(
        json.dumps(
            {
                "type": "summary",
                "poll": summary,
                "second_poll_events": again.events,
                "kept": kept,
            }
        )
    )
