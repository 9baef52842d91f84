"""IMAPSource on a real Dovecot: the initial sync of a big folder, and the polls that follow.

Starts its own Dovecot (``tests/servers.py``, loaded by path), fills one folder with N copies
of ``data/reply-3k.eml`` (each with its own Message-ID) by writing the files straight into the
Maildir, lets Dovecot index them (untimed), then times:

* ``initial_sync``: ``IMAPSource.fetch`` from ``None`` until ``more`` is False, `--limit`
  messages per batch (header fields only, as the tracker reads them first);
* ``incremental_poll``: ``fetch`` from the caught-up cursor with no new mail, `--polls` times;
* ``incremental_poll_one_new``: the same after one APPEND each time.

Commands are counted at imaplib's tag generator (every command takes a tag: IMAPClient's own
SEARCH too; IDLE's DONE takes none and is not used here), bytes at imaplib's ``readline`` /
``read`` (received) and ``send``. Every message must come exactly once, in UID order; the exit
status is 1 when a check failed (the report is still printed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import imapclient

from replytrack.headers import parse_headers
from replytrack.sources.imap import DEFAULT_HEADER_FIELDS, DEFAULT_WINDOW, IMAPSource
from replytrack.sources.memory import header_block

SCHEMA_VERSION = 1
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # the sibling _common.py, also when loaded by a test

import _common  # noqa: E402 (found through the sys.path line above)

SAMPLE = HERE / "data" / "reply-3k.eml"
SERVERS = HERE.parent / "tests" / "servers.py"
USER = "bench"
FOLDER = "Bench"

FULL = {"messages": 10_000, "polls": 50}
QUICK = {"messages": 2_000, "polls": 10}


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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time IMAPSource on a Dovecot it starts; print a JSON report."
    )
    parser.add_argument("--quick", action="store_true", help="2,000 messages, 10 polls")
    parser.add_argument("--messages", type=int, help="messages in the folder (default 10,000)")
    parser.add_argument("--polls", type=int, help="incremental polls timed (default 50)")
    parser.add_argument("--limit", type=int, default=500, help="messages per fetch")
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="UIDs per FETCH")
    parser.add_argument("--output", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    for name in ("messages", "polls", "limit", "window"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its JSON report; return the exit status."""
    args = parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    for name in ("messages", "polls"):
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
            server, template, args, total=total, polls=polls, failures=failures, log=log
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


def run(
    server: Any,
    template: bytes,
    args: argparse.Namespace,
    *,
    total: int,
    polls: int,
    failures: list[str],
    log: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any]]:
    admin = imapclient.IMAPClient(server.host, port=server.port, ssl=False, timeout=60)
    try:
        admin.login(USER, server.password)
        admin.create_folder(FOLDER)
        log(f"writing {total:,} messages into the Maildir")
        clock = time.perf_counter()
        server.write_messages(
            USER,
            (message(template, n) for n in range(1, total + 1)),
            folder=FOLDER,
            received=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1),
            step=dt.timedelta(0),
        )
        populate = time.perf_counter() - clock
        clock = time.perf_counter()
        exists = admin.select_folder(FOLDER, readonly=True)[b"EXISTS"]
        admin.unselect_folder()
        index = time.perf_counter() - clock
        if exists != total:
            failures.append(f"Dovecot sees {exists} messages, not {total}")
        meter = Meter()
        source = IMAPSource(
            server.host,
            port=server.port,
            ssl=False,
            username=USER,
            password=server.password,
            folders=(FOLDER,),
            window=args.window,
            client_factory=meter.factory(server.host, server.port),
        )
        with source:
            results = {
                "initial_sync": initial_sync(
                    source, meter, total=total, limit=args.limit, failures=failures, log=log
                ),
            }
            cursor = results["initial_sync"].pop("cursor")
            results["incremental_poll"] = incremental(source, meter, cursor, polls, failures)
            results["incremental_poll_one_new"] = incremental(
                source, meter, cursor, polls, failures, admin=admin, template=template, total=total
            )
            results["connections"] = meter.connections
    finally:
        admin.logout()
    info = {
        "populate_seconds": round(populate, 2),
        "index_seconds": round(index, 2),
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


if __name__ == "__main__":
    raise SystemExit(main())
