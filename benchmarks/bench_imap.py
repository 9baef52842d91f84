"""IMAPSource on a real Dovecot: the initial sync of a big folder, and the polls that follow.

Starts its own Dovecot (``tests/servers.py``, loaded by path), fills one folder with N copies
of ``data/reply-3k.eml`` (each with its own Message-ID) by writing the files straight into the
Maildir, lets Dovecot index them (untimed), then times:

* ``initial_sync``: ``IMAPSource.fetch`` from ``None`` until ``more`` is False, `--limit`
  messages per batch (header fields only, as the tracker reads them first);
* ``incremental_poll``: ``fetch`` from the caught-up cursor with no new mail, `--polls` times;
* ``incremental_poll_one_new``: the same after one APPEND each time;
* ``tracker_poll``: ``ReplyTracker.poll`` (on a ``SQLiteStore`` in a temporary file, hooks that
  only count) of a second folder, until caught up, `--limit` messages per batch, on an
  ``IMAPSource`` of its own. The tracker holds `--sends` stamped sends; the folder holds
  `--tracker-messages` messages (written into the Maildir and indexed untimed like the first):
  35 % replies to a send, 5 % out-of-office notices to a send, the rest unrelated (a reply to an
  unknown id, or no In-Reply-To). The tracker reads header fields first and then asks for the
  bodies of the messages that matched: the commands per batch are what this pass is about.

Commands are counted at imaplib's tag generator (every command takes a tag: IMAPClient's own
SEARCH too; IDLE's DONE takes none and is not used here), bytes at imaplib's ``readline`` /
``read`` (received) and ``send``. Every message must come exactly once, in UID order; the
tracker must match as many messages as there are replies and out-of-office notices, with a
``reply`` event carrying a ``body_text`` for each reply, and call ``crm_log`` once per event
and ``campaign_stop`` once per STOP or PAUSE event. The exit status is 1 when a check failed
(the report is still printed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import email.message
import hashlib
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import imapclient

from replytrack import ReplyTracker
from replytrack.events import Action, ReplyEvent
from replytrack.headers import parse_headers
from replytrack.sources.imap import DEFAULT_HEADER_FIELDS, DEFAULT_WINDOW, IMAPSource
from replytrack.sources.memory import header_block
from replytrack.store import SentMessage, SQLiteStore
from replytrack.testing import build_out_of_office, build_reply

# 2: results.tracker_poll; settings.tracker_messages and settings.sends.
SCHEMA_VERSION = 2
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # the sibling _common.py, also when loaded by a test

import _common  # noqa: E402 (found through the sys.path line above)

SAMPLE = HERE / "data" / "reply-3k.eml"
SERVERS = HERE.parent / "tests" / "servers.py"
USER = "bench"
FOLDER = "Bench"
TRACKER_FOLDER = "Tracked"
REP = "rep@sales.example"

FULL = {"messages": 10_000, "polls": 50, "tracker_messages": 5_000, "sends": 300}
QUICK = {"messages": 2_000, "polls": 10, "tracker_messages": 2_000, "sends": 300}
# The tracker folder's mix, by message number modulo 20: 7 replies (35 %), 1 out-of-office
# notice (5 %), 6 replies to an id that is not ours and 6 messages that answer nothing (60 %).
MIX_CYCLE = 20
REPLY_SLOTS = range(7)
OOO_SLOTS = range(7, 8)
UNKNOWN_SLOTS = range(8, 14)
SEND_TEXT = (
    "Hi {name},\n\n"
    "I noticed your team has been growing fast this year, and I wondered whether the way you\n"
    "track replies to your outbound mail still keeps up. We help sales teams of your size see\n"
    "every answer, out-of-office notice and bounce the moment it arrives, and stop or pause\n"
    "the sequence on their own, so nobody gets a follow-up after saying no.\n\n"
    "Would you have 15 minutes this week or next for a short call? Tuesday or Thursday\n"
    "afternoon would suit me, but I am happy to fit in with you.\n\n"
    "Best regards,\nAlex Rep\nSales, Example Inc."
)


def load_servers() -> ModuleType:
    """``tests/servers.py``: the Dovecot the tests use (needs pytest, a test dependency)."""
    spec = importlib.util.spec_from_file_location("replytrack_bench_servers", SERVERS)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Meter:
    """Counts the commands and bytes of every connection a factory opens."""

    def __init__(self) -> None:
        self.commands = 0
        self.received = 0
        self.sent = 0
        self.connections = 0

    def snapshot(self) -> tuple[int, int, int]:
        return self.commands, self.received, self.sent

    def factory(self, host: str, port: int) -> Callable[[], Any]:
        def connect() -> Any:
            client = imapclient.IMAPClient(host, port=port, ssl=False, timeout=30)
            imap = client._imap
            new_tag, readline, read, send = imap._new_tag, imap.readline, imap.read, imap.send

            def counted_tag() -> Any:
                self.commands += 1
                return new_tag()

            def counted_readline() -> bytes:
                line: bytes = readline()
                self.received += len(line)
                return line

            def counted_read(size: int) -> bytes:
                data: bytes = read(size)
                self.received += len(data)
                return data

            def counted_send(data: bytes) -> None:
                self.sent += len(data)
                send(data)

            imap._new_tag, imap.readline, imap.read, imap.send = (
                counted_tag,
                counted_readline,
                counted_read,
                counted_send,
            )
            self.connections += 1
            return client

        return connect


def dovecot_version(binary: str) -> str:
    # The binary tests/servers.py runs, with a fixed argument.
    command = [binary, "--version"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    return done.stdout.strip()


def message(template: bytes, n: int) -> bytes:
    return template.replace(b"<CAHx8Vq3rT5nK2pLw9mZ1cB7dF4gJ6hX0sQeYuIoP@", b"<bench%d@" % n)


def number(data: bytes) -> int:
    mid = parse_headers(data).message_id
    assert mid is not None
    assert mid.startswith("bench"), mid
    return int(mid[len("bench") : mid.index("@")])


def summary_ms(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    p95 = statistics.quantiles(ordered, n=20, method="inclusive")[18] if len(ordered) > 1 else 0
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round((p95 or ordered[-1]) * 1000, 3),
        "min_ms": round(ordered[0] * 1000, 3),
    }


class CountingHooks:
    """The tracker's hooks: they only count (calls, kinds, replies' missing body text)."""

    def __init__(self) -> None:
        self.crm_log_calls = 0
        self.campaign_stop_calls = 0
        self.stop_or_pause = 0
        self.kinds: Counter[str] = Counter()
        self.without_text: Counter[str] = Counter()

    def crm_log(self, event: ReplyEvent) -> None:
        self.crm_log_calls += 1
        self.kinds[event.kind.value] += 1
        if event.action in (Action.STOP, Action.PAUSE):
            self.stop_or_pause += 1
        if event.body_text is None:
            self.without_text[event.kind.value] += 1

    def campaign_stop(self, event: ReplyEvent) -> None:
        self.campaign_stop_calls += 1


def stamp_sends(tracker: ReplyTracker, count: int) -> list[SentMessage]:
    """`count` sends, each to its own prospect, stamped (and so recorded) by `tracker`."""
    sends = []
    for k in range(count):
        outgoing = email.message.EmailMessage()
        outgoing["From"] = f"Alex Rep <{REP}>"
        outgoing["To"] = f"Prospect {k} <prospect{k}@customer{k % 50}.example>"
        outgoing["Subject"] = f"Quick question about reply tracking ({k})"
        outgoing.set_content(SEND_TEXT.format(name=f"Prospect {k}"))
        sends.append(tracker.stamp(outgoing, ref=f"campaign-1/prospect-{k}/step-1"))
    return sends


def tracker_mail(
    sends: Sequence[SentMessage], total: int, now: dt.datetime
) -> tuple[list[bytes], dict[str, int]]:
    """The tracker folder's messages, and how many of each sort (see MIX_CYCLE)."""
    messages: list[bytes] = []
    mix = {"replies": 0, "out_of_office": 0, "unrelated": 0}
    for n in range(total):
        slot = n % MIX_CYCLE
        sent = sends[n % len(sends)]
        prospect = f"Prospect <{sent.to[0]}>"
        subject = sent.subject or ""
        date = now - dt.timedelta(minutes=total - n)
        mid = f"<tracked{n}@mail.customer.example>"
        if slot in REPLY_SLOTS:
            mix["replies"] += 1
            data = build_reply(
                in_reply_to=f"<{sent.message_id}>",
                from_=prospect,
                to=f"Alex Rep <{REP}>",
                subject=f"Re: {subject}",
                body=f"Thanks, Tuesday at 3 pm works for me ({n}).\n\nBest,\nProspect",
                quote=SEND_TEXT.format(name="Prospect"),
                date=date,
                message_id=mid,
            )
        elif slot in OOO_SLOTS:
            mix["out_of_office"] += 1
            data = build_out_of_office(
                in_reply_to=f"<{sent.message_id}>",
                return_date=(now + dt.timedelta(days=10)).date(),
                original_subject=subject,
                from_=prospect,
                to=f"Alex Rep <{REP}>",
                date=date,
                message_id=mid,
            )
        else:
            mix["unrelated"] += 1
            unknown = slot in UNKNOWN_SLOTS
            data = build_reply(
                in_reply_to=f"<thread{n}@mail.partner.example>" if unknown else None,
                from_=f"Sam Partner <sam{n}@partner.example>",
                to=f"Alex Rep <{REP}>",
                subject="Re: Our meeting notes" if unknown else f"Newsletter {n}",
                body=f"Here are the notes from this morning ({n}).\n\nSam",
                quote=SEND_TEXT.format(name="Sam") if unknown else None,
                date=date,
                message_id=mid,
            )
        messages.append(data)
    return messages, mix


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time IMAPSource on a Dovecot it starts; print a JSON report."
    )
    parser.add_argument(
        "--quick", action="store_true", help="2,000 messages, 10 polls, 2,000 tracked"
    )
    parser.add_argument("--messages", type=int, help="messages in the folder (default 10,000)")
    parser.add_argument("--polls", type=int, help="incremental polls timed (default 50)")
    parser.add_argument(
        "--tracker-messages",
        type=int,
        help="messages in the tracker_poll folder (default 5,000, with --quick 2,000; at most"
        " --messages when that is given)",
    )
    parser.add_argument("--sends", type=int, help="sends the tracker holds (default 300)")
    parser.add_argument("--limit", type=int, default=500, help="messages per fetch or batch")
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="UIDs per FETCH")
    parser.add_argument("--output", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    for name in ("messages", "polls", "tracker_messages", "sends", "limit", "window"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its JSON report; return the exit status."""
    args = parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    if args.messages is not None:  # a smaller folder to sync: no bigger one for the tracker
        settings["tracker_messages"] = min(settings["tracker_messages"], args.messages)
    for name in ("messages", "polls", "tracker_messages", "sends"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    total, polls = settings["messages"], settings["polls"]
    log = _common.stderr_logger("bench_imap")
    servers = load_servers()
    started = dt.datetime.now(dt.timezone.utc)
    try:
        server = servers.Dovecot()
    except BaseException as exc:  # servers.server_missing raises pytest's skip or fail
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        log(f"cannot start Dovecot: {exc}")
        return 2
    failures: list[str] = []
    try:
        template = SAMPLE.read_bytes()
        results, server_info = run(
            server,
            template,
            args,
            total=total,
            polls=polls,
            tracker_total=settings["tracker_messages"],
            sends=settings["sends"],
            failures=failures,
            log=log,
        )
        server_info["version"] = dovecot_version(servers.DOVECOT_BINARY)
    finally:
        server.close()
    report = {
        "benchmark": "bench_imap",
        "schema": SCHEMA_VERSION,
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1),
        "mode": "quick" if args.quick else "full",
        "settings": {
            "messages": total,
            "polls": polls,
            "tracker_messages": settings["tracker_messages"],
            "sends": settings["sends"],
            "limit": args.limit,
            "window": args.window,
            "header_fields": len(DEFAULT_HEADER_FIELDS),
            "transport": "plain text on loopback",
        },
        "sample": {
            "file": "benchmarks/data/reply-3k.eml",
            "bytes": len(template),
            "header_block_bytes": len(header_block(template)),
            "sha256": hashlib.sha256(template).hexdigest(),
        },
        "server": server_info,
        "environment": _common.environment(
            imapclient=_common.installed("IMAPClient"), dovecot=server_info["version"]
        ),
        "load_average": _common.load_average(),
        "results": results,
        "sanity": {"ok": not failures, "failures": len(failures), "examples": failures[:5]},
    }
    human(results, log)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
    return 1 if failures else 0


def fill(
    server: Any,
    admin: Any,
    folder: str,
    messages: Iterable[bytes],
    total: int,
    *,
    received: dt.datetime,
    step: dt.timedelta,
    failures: list[str],
) -> tuple[float, float]:
    """Create `folder`, write `messages` into its Maildir, let Dovecot index them.

    Returns:
        The seconds spent writing and indexing (neither is part of what is timed).
    """
    admin.create_folder(folder)
    clock = time.perf_counter()
    server.write_messages(USER, messages, folder=folder, received=received, step=step)
    populate = time.perf_counter() - clock
    clock = time.perf_counter()
    exists = admin.select_folder(folder, readonly=True)[b"EXISTS"]
    admin.unselect_folder()
    index = time.perf_counter() - clock
    if exists != total:
        failures.append(f"{folder}: Dovecot sees {exists} messages, not {total}")
    return populate, index


def metered_source(server: Any, folder: str, args: argparse.Namespace) -> tuple[IMAPSource, Meter]:
    """An `IMAPSource` of `folder` whose commands and bytes its `Meter` counts."""
    meter = Meter()
    source = IMAPSource(
        server.host,
        port=server.port,
        ssl=False,
        username=USER,
        password=server.password,
        folders=(folder,),
        window=args.window,
        client_factory=meter.factory(server.host, server.port),
    )
    return source, meter


def run(
    server: Any,
    template: bytes,
    args: argparse.Namespace,
    *,
    total: int,
    polls: int,
    tracker_total: int,
    sends: int,
    failures: list[str],
    log: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any]]:
    admin = imapclient.IMAPClient(server.host, port=server.port, ssl=False, timeout=60)
    try:
        admin.login(USER, server.password)
        log(f"writing {total:,} messages into the Maildir")
        populate, index = fill(
            server,
            admin,
            FOLDER,
            (message(template, n) for n in range(1, total + 1)),
            total,
            received=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1),
            step=dt.timedelta(0),
            failures=failures,
        )
        source, meter = metered_source(server, FOLDER, args)
        results: dict[str, Any] = {}
        with source:
            results["initial_sync"] = initial_sync(
                source, meter, total=total, limit=args.limit, failures=failures, log=log
            )
            cursor = results["initial_sync"].pop("cursor")
            results["incremental_poll"] = incremental(source, meter, cursor, polls, failures)
            results["incremental_poll_one_new"] = incremental(
                source, meter, cursor, polls, failures, admin=admin, template=template, total=total
            )
            results["connections"] = meter.connections
        with tempfile.TemporaryDirectory(prefix="bench_imap-") as scratch:
            results["tracker_poll"] = tracker_poll(
                server,
                admin,
                Path(scratch) / "tracker.sqlite3",
                args,
                total=tracker_total,
                sends=sends,
                failures=failures,
                log=log,
            )
    finally:
        admin.logout()
    info = {
        "populate_seconds": round(populate, 2),
        "index_seconds": round(index, 2),
        "tracker_populate_seconds": results["tracker_poll"].pop("populate_seconds"),
        "tracker_index_seconds": results["tracker_poll"].pop("index_seconds"),
    }
    return results, info


def initial_sync(
    source: IMAPSource,
    meter: Meter,
    *,
    total: int,
    limit: int,
    failures: list[str],
    log: Callable[[str], None],
) -> dict[str, Any]:
    log(f"initial sync of {total:,} messages, {limit} per fetch")
    rss_before = _common.max_rss_mb()
    before = meter.snapshot()
    seen: list[int] = []
    data_bytes = 0
    cursor = None
    batches = 0
    clock = time.perf_counter()
    while True:
        batch = source.fetch(cursor, limit)
        batches += 1
        for incoming in batch.messages:
            seen.append(number(incoming.data))
            data_bytes += len(incoming.data)
        cursor = batch.cursor
        if not batch.more:
            break
    seconds = time.perf_counter() - clock
    commands, received, sent = (b - a for a, b in zip(before, meter.snapshot(), strict=True))
    if seen != list(range(1, total + 1)):
        failures.append(
            f"initial sync: {len(seen)} messages, {len(set(seen))} distinct, "
            f"in order: {seen == sorted(seen)}"
        )
    count = max(len(seen), 1)
    return {
        "what": "IMAPSource.fetch from None until caught up (header fields, INTERNALDATE, FLAGS)",
        "messages": len(seen),
        "batches": batches,
        "seconds": round(seconds, 3),
        "messages_per_second": round(len(seen) / seconds),
        "commands": commands,
        "bytes_received": received,
        "bytes_received_per_message": round(received / count),
        "bytes_sent": sent,
        "header_data_bytes_per_message": round(data_bytes / count),
        "cursor_bytes": len(cursor),
        "max_rss_mb_before": rss_before,
        "max_rss_mb_after": _common.max_rss_mb(),
        "cursor": cursor,
    }


def incremental(
    source: IMAPSource,
    meter: Meter,
    cursor: str,
    polls: int,
    failures: list[str],
    *,
    admin: Any = None,
    template: bytes = b"",
    total: int = 0,
) -> dict[str, Any]:
    times: list[float] = []
    before = meter.snapshot()
    for poll in range(polls):
        if admin is not None:
            admin.append(FOLDER, message(template, total + 1 + poll))
        clock = time.perf_counter()
        batch = source.fetch(cursor, 100)
        times.append(time.perf_counter() - clock)
        expected = [] if admin is None else [total + 1 + poll]
        got = [number(m.data) for m in batch.messages]
        if got != expected or batch.more:
            failures.append(f"incremental poll {poll}: got {got}, expected {expected}")
        cursor = batch.cursor
    commands, received, sent = (b - a for a, b in zip(before, meter.snapshot(), strict=True))
    what = "fetch from a caught-up cursor, " + (
        "one message APPENDed before each" if admin is not None else "no new mail"
    )
    return {
        "what": what,
        "polls": polls,
        "commands_per_poll": round(commands / polls, 2),
        "bytes_received_per_poll": round(received / polls),
        "bytes_sent_per_poll": round(sent / polls),
        **summary_ms(times),
    }


def tracker_poll(
    server: Any,
    admin: Any,
    database: Path,
    args: argparse.Namespace,
    *,
    total: int,
    sends: int,
    failures: list[str],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """``ReplyTracker.poll`` of a folder of replies, notices and unrelated mail, until done."""
    hooks = CountingHooks()
    store = SQLiteStore(database)
    try:
        tracker = ReplyTracker(
            store,
            None,
            crm_log=hooks.crm_log,
            campaign_stop=hooks.campaign_stop,
            own_addresses=[REP],
        )
        now = dt.datetime.now(dt.timezone.utc)
        sent = stamp_sends(tracker, sends)
        mail, mix = tracker_mail(sent, total, now)
        log(f"writing {total:,} messages for the tracker ({sends} sends) into the Maildir")
        populate, index = fill(
            server,
            admin,
            TRACKER_FOLDER,
            mail,
            total,
            received=now - dt.timedelta(minutes=total),
            step=dt.timedelta(minutes=1),
            failures=failures,
        )
        source, meter = metered_source(server, TRACKER_FOLDER, args)
        log(f"tracker poll of {total:,} messages, {args.limit} per batch")
        with source:
            clock = time.perf_counter()
            result = tracker.poll(source, limit=args.limit)
            seconds = time.perf_counter() - clock
    finally:
        store.close()
    commands, received, sent_bytes = meter.snapshot()
    expected = mix["replies"] + mix["out_of_office"]
    checks = [
        (result.errors == (), f"errors {list(result.errors)[:3]}"),
        (not result.more, "stopped with more to read"),
        (result.seen == total, f"saw {result.seen} of {total} messages"),
        (result.matched == expected, f"matched {result.matched}, expected {expected}"),
        (result.events == result.matched, f"{result.events} events, {result.matched} matched"),
        (
            hooks.kinds["reply"] == mix["replies"],
            f"{hooks.kinds['reply']} reply events for {mix['replies']} replies",
        ),
        (
            hooks.without_text["reply"] == 0,
            f"{hooks.without_text['reply']} reply events without body_text",
        ),
        (
            hooks.crm_log_calls == result.events,
            f"crm_log called {hooks.crm_log_calls} times for {result.events} events",
        ),
        (
            hooks.campaign_stop_calls == hooks.stop_or_pause,
            f"campaign_stop called {hooks.campaign_stop_calls} times for"
            f" {hooks.stop_or_pause} STOP or PAUSE events",
        ),
    ]
    failures.extend(f"tracker poll: {what}" for ok, what in checks if not ok)
    batches = max(result.batches, 1)
    return {
        "what": "ReplyTracker.poll until caught up: header fields first, then the bodies of"
        " the messages that matched",
        "messages": result.seen,
        "sends": sends,
        "mix": mix,
        "matched": result.matched,
        "events": result.events,
        "kinds": dict(sorted(hooks.kinds.items())),
        "hook_calls": {
            "crm_log": hooks.crm_log_calls,
            "campaign_stop": hooks.campaign_stop_calls,
        },
        "batches": result.batches,
        "seconds": round(seconds, 3),
        "messages_per_second": round(result.seen / seconds),
        "commands": commands,
        "commands_per_batch": round(commands / batches, 2),
        "commands_per_matched_message": round(commands / max(result.matched, 1), 3),
        "bytes_received": received,
        "bytes_received_per_message": round(received / max(result.seen, 1)),
        "bytes_sent": sent_bytes,
        "message_bytes_mean": round(sum(map(len, mail)) / max(len(mail), 1)),
        "connections": meter.connections,
        "populate_seconds": round(populate, 2),
        "index_seconds": round(index, 2),
    }


def human(results: dict[str, Any], log: Callable[[str], None]) -> None:
    """The numbers a reader wants first, on stderr (stdout is the JSON report)."""
    sync = results["initial_sync"]
    log(
        f"initial sync: {sync['messages']:,} messages in {sync['seconds']} s = "
        f"{sync['messages_per_second']:,} messages/s; {sync['bytes_received_per_message']:,} "
        f"bytes received per message ({sync['header_data_bytes_per_message']:,} of header "
        f"fields); {sync['commands']} commands in {sync['batches']} batches"
    )
    for name in ("incremental_poll", "incremental_poll_one_new"):
        poll = results[name]
        log(
            f"{poll['what']}: {poll['commands_per_poll']} commands, "
            f"{poll['bytes_received_per_poll']:,} bytes received, median {poll['median_ms']} ms, "
            f"p95 {poll['p95_ms']} ms"
        )
    track = results["tracker_poll"]
    log(
        f"tracker poll: {track['messages']:,} messages ({track['matched']:,} matched, "
        f"{track['events']:,} events) in {track['seconds']} s = "
        f"{track['messages_per_second']:,} messages/s; {track['commands']:,} commands in "
        f"{track['batches']} batches = {track['commands_per_batch']} per batch, "
        f"{track['commands_per_matched_message']} per matched message; "
        f"{track['bytes_received_per_message']:,} bytes received per message"
    )


if __name__ == "__main__":
    raise SystemExit(main())
