"""Benchmark `thread_messages` on synthetic mailboxes, against flanker's JWZ threading.

Run from the repository root::

    python benchmarks/bench_threading.py [--quick] [--messages N] [--output FILE]
        [--flanker-path SITE_PACKAGES]

The mailbox is generated deterministically from a seed (``--seed``, default 2026): threads of
realistic shapes (most are one or two messages, a few run to hundreds; replies mostly answer
the latest message, sometimes an earlier one), ``References`` as clients write them (the
parent's list plus the parent, sometimes truncated to the root and the newest few, as RFC
5322 §3.6.4 allows), ``In-Reply-To`` with the parent's id (sometimes with a ``(message
of ...)`` comment, sometimes missing), a few percent of messages dropped so that their replies
point at missing parents, a few duplicate Message-IDs and messages without one, and the whole
mailbox shuffled, as a folder lists mail by arrival rather than by thread.

Cases, interleaved round by round with the garbage collector disabled while timing (as
``timeit`` does), so load from another process hits them alike:

* ``replytrack``: ``thread_messages(headers)`` on `Headers` already parsed, with the fields it
  reads (ids and date) already cached: threading alone.
* ``replytrack_from_bytes``: ``thread_messages(raw)`` on the raw header blocks: parsing
  included.
* ``flanker``: ``flanker.mime.message.threading.build_thread(wrappers)`` on objects holding
  ``message_id`` and ``references`` exactly as flanker's own message objects compute them
  (References, else the In-Reply-To id), taken from the same parsed headers: threading alone.
  Runs only when flanker imports; it is not a dependency of replytrack. ``--flanker-path``
  appends a directory (the site-packages of a virtual environment where flanker is
  installed) to ``sys.path``.

Peak memory is measured with `tracemalloc` in one extra, untimed call per case (tracemalloc
slows allocation down, so it never runs while timing).

The JSON report goes to stdout, and to ``--output`` as well when given. See README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import hashlib
import json
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from replytrack.conversation import Thread, thread_messages
from replytrack.headers import Headers, parse_headers

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # the sibling _common.py, also when loaded by a test

import _common  # noqa: E402 (found through the sys.path line above)

SCHEMA_VERSION = 1
DEFAULT_MESSAGES = 50_000
DEFAULT_SEED = 2026
FULL = {"rounds": 7}
QUICK = {"rounds": 3}
TARGET_SPEEDUP = 5.0
DOMAIN_POOL = ("mail.example.com", "example.org", "corp.example.net", "mx.example.io")
START = dt.datetime(2025, 1, 6, 9, 0, tzinfo=dt.timezone.utc)


# --------------------------------------------------------------------------------------------
# The synthetic mailbox
# --------------------------------------------------------------------------------------------


def _thread_size(rng: random.Random) -> int:
    # Mailboxes are mostly singletons and short exchanges, with a long tail.
    roll = rng.random()
    if roll < 0.40:
        return 1
    if roll < 0.70:
        return rng.randint(2, 3)
    if roll < 0.92:
        return rng.randint(4, 12)
    if roll < 0.995:
        return rng.randint(13, 60)
    return rng.randint(61, 400)


def generate_mailbox(count: int, seed: int) -> tuple[list[bytes], dict[str, int]]:
    """Return `count` raw header blocks, shuffled, and counts of what was generated."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not a secret
    messages: list[tuple[float, bytes]] = []
    stats = {
        "threads": 0,
        "dropped_parents": 0,
        "duplicate_ids": 0,
        "missing_ids": 0,
        "truncated_references": 0,
        "no_in_reply_to": 0,
        "in_reply_to_comment": 0,
        "max_thread_size": 0,
    }
    serial = 0
    while len(messages) < count:
        size = min(_thread_size(rng), count - len(messages))
        stats["threads"] += 1
        stats["max_thread_size"] = max(stats["max_thread_size"], size)
        start = START + dt.timedelta(seconds=rng.randint(0, 180 * 86400))
        subject = f"Proposal {rng.randint(1, 10**6)} for {rng.choice(('Q1', 'Q2', 'ACME'))}"
        # (id, references, date) of every message of this thread so far.
        posted: list[tuple[str, tuple[str, ...], dt.datetime]] = []
        for _ in range(size):
            serial += 1
            own = f"{serial:x}.{rng.getrandbits(48):012x}@{rng.choice(DOMAIN_POOL)}"
            if not posted:
                references: tuple[str, ...] = ()
                date = start
                parent = None
            else:
                # Mostly the latest message; sometimes an earlier one (a side discussion).
                parent = posted[-1] if rng.random() < 0.75 else rng.choice(posted)
                references = (*parent[1], parent[0])
                if len(references) > 12 and rng.random() < 0.5:
                    references = (references[0], *references[-5:])
                    stats["truncated_references"] += 1
                date = parent[2] + dt.timedelta(minutes=rng.randint(1, 3 * 1440))
            posted.append((own, references, date))
            if parent is not None and rng.random() < 0.04:
                stats["dropped_parents"] += 1
                continue  # never delivered to this mailbox: its replies find a ghost
            lines = []
            roll = rng.random()
            if roll < 0.002:
                stats["missing_ids"] += 1
            elif roll < 0.004 and messages:
                stats["duplicate_ids"] += 1
                lines.append(f"Message-ID: <{own}>")
                messages.append((rng.random(), _block(lines, (), date, subject)))
            else:
                lines.append(f"Message-ID: <{own}>")
            lines += _reply_lines(rng, references, date, stats)
            messages.append((rng.random(), _block(lines, references, date, subject)))
    messages.sort()  # shuffled by the random key drawn with each message: arrival order
    return [raw for _, raw in messages[:count]], stats


def _reply_lines(
    rng: random.Random, references: tuple[str, ...], date: dt.datetime, stats: dict[str, int]
) -> list[str]:
    """In-Reply-To (mostly clean, sometimes with a comment, sometimes absent), References."""
    if not references:
        return []
    lines = []
    roll = rng.random()
    if roll < 0.05:
        stats["no_in_reply_to"] += 1
    elif roll < 0.10:
        stats["in_reply_to_comment"] += 1
        lines.append(f"In-Reply-To: <{references[-1]}> (message from Alex of {date:%a, %d %b %Y})")
    else:
        lines.append(f"In-Reply-To: <{references[-1]}>")
    lines.append("References: " + "\r\n ".join(f"<{r}>" for r in references))
    return lines


def _block(
    lines: list[str], references: tuple[str, ...], date: dt.datetime, subject: str
) -> bytes:
    head = [
        "Return-Path: <alex@example.com>",
        f"Received: from mx.example.com by mail.example.com; {date:%a, %d %b %Y %H:%M:%S} +0000",
        "From: Alex Example <alex@example.com>",
        "To: Sam Prospect <sam@prospect.example>",
        f"Subject: {'Re: ' if references else ''}{subject}",
        f"Date: {date:%a, %d %b %Y %H:%M:%S} +0000",
        *lines,
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode()


# --------------------------------------------------------------------------------------------
# The reference
# --------------------------------------------------------------------------------------------


class FlankerMessage:
    """What flanker's threading reads from a message: ``message_id`` and ``references``."""

    __slots__ = ("message_id", "references")

    def __init__(self, headers: Headers) -> None:
        self.message_id = headers.message_id
        # As flanker's MimePart.references: the References ids, else the In-Reply-To id.
        refs = list(headers.references)
        if not refs and headers.in_reply_to:
            refs.append(headers.in_reply_to[0])
        self.references = refs


def flanker_mime() -> ModuleType:
    from flanker import mime  # noqa: PLC0415 - optional, at run time

    return mime


def load_flanker(path: str | None) -> ModuleType | None:
    if path:
        sys.path.append(path)
    try:
        from flanker.mime.message import threading  # noqa: PLC0415 - optional, at run time
    except ImportError:
        return None
    return threading


# --------------------------------------------------------------------------------------------
# Sanity
# --------------------------------------------------------------------------------------------


def check_threads(roots: list[Thread[Any]], expected_messages: int) -> dict[str, int]:
    """Every message appears exactly once; return counts for the report."""
    seen: set[int] = set()
    ghosts = nodes = 0
    for root in roots:
        for node in root.walk():
            nodes += 1
            if node.is_ghost:
                ghosts += 1
            else:
                if id(node.message) in seen:
                    raise AssertionError("a message appears twice in the threads")
                seen.add(id(node.message))
    if len(seen) != expected_messages:
        raise AssertionError(f"{len(seen)} messages in the threads, {expected_messages} given")
    return {"roots": len(roots), "ghosts": ghosts, "nodes": nodes}


def flanker_roots(tree: Any) -> int:
    return sum(1 for _ in tree.iter_children())


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


class Case:
    def __init__(self, name: str, what: str, run: Callable[[], object]) -> None:
        self.name = name
        self.what = what
        self.run = run
        self.seconds: list[float] = []
        self.peak_bytes = 0


def time_once(run: Callable[[], object]) -> float:
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        result = run()
        elapsed = time.perf_counter() - started
    finally:
        gc.enable()
    del result
    return elapsed


def peak_memory(run: Callable[[], object]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        result = run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del result
    return peak


def summary(case: Case, messages: int) -> dict[str, Any]:
    times = sorted(case.seconds)
    median = statistics.median(times)
    return {
        "what": case.what,
        "median_s": round(median, 4),
        "min_s": round(times[0], 4),
        "max_s": round(times[-1], 4),
        "rounds": len(times),
        "messages_per_s": round(messages / median),
        "peak_memory_bytes": case.peak_bytes,
        "peak_memory_per_message_bytes": round(case.peak_bytes / messages, 1),
    }


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def environment(flanker: ModuleType | None) -> dict[str, Any]:
    flanker_version = _common.installed("flanker")
    if flanker is not None and flanker_version is None:
        flanker_version = "imported, version unknown"
    return _common.environment(flanker=flanker_version)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time thread_messages on a synthetic mailbox against flanker's JWZ "
        "threading; print a JSON report."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK['rounds']} rounds instead of {FULL['rounds']}",
    )
    parser.add_argument("--messages", type=int, default=DEFAULT_MESSAGES)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument(
        "--flanker-path",
        help="a directory to append to sys.path so that flanker imports (e.g. the "
        "site-packages of a throwaway virtual environment)",
    )
    parser.add_argument("--no-flanker", action="store_true", help="skip the reference")
    parser.add_argument("--output", help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    if args.messages < 1:
        parser.error("--messages must be at least 1")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its JSON report; return the exit status."""
    args = parse_args(argv)
    rounds = args.rounds or (QUICK if args.quick else FULL)["rounds"]

    log = _common.stderr_logger("bench_threading")

    flanker = None if args.no_flanker else load_flanker(args.flanker_path)
    log("flanker not importable: reference skipped" if flanker is None else "flanker found")

    raw, generated = generate_mailbox(args.messages, args.seed)
    digest = hashlib.sha256(b"".join(raw)).hexdigest()
    headers = [parse_headers(data) for data in raw]
    for h in headers:  # warm the caches: the timed case is threading, not parsing
        _ = (h.message_id, h.in_reply_to, h.references, h.date)
    shape = check_threads(thread_messages(headers), len(headers))
    log(f"{len(raw)} messages, {shape['roots']} threads, {shape['ghosts']} ghosts")

    cases = [
        Case(
            "replytrack",
            "thread_messages(headers), Headers parsed beforehand (ids and date cached)",
            lambda: thread_messages(headers),
        ),
        Case(
            "replytrack_from_bytes",
            "thread_messages(raw header blocks): parsing included",
            lambda: thread_messages(raw),
        ),
    ]
    reference: dict[str, Any] | None = None
    if flanker is not None:
        wrapped = [FlankerMessage(h) for h in headers]
        build_thread = flanker.build_thread
        from_string = flanker_mime().from_string
        reference = {"roots": flanker_roots(build_thread(wrapped))}
        cases += [
            Case(
                "flanker",
                "flanker.mime.message.threading.build_thread(messages), message_id and "
                "references precomputed as flanker's MimePart computes them",
                lambda: build_thread(wrapped),
            ),
            Case(
                "flanker_from_bytes",
                "build_thread([flanker.mime.from_string(m) for m in raw header blocks])",
                lambda: build_thread([from_string(data) for data in raw]),
            ),
        ]

    load_start = _common.load_average()
    started = dt.datetime.now(dt.timezone.utc)
    for case in cases:
        case.peak_bytes = peak_memory(case.run)
    for round_no in range(1, rounds + 1):
        for case in cases:
            case.seconds.append(time_once(case.run))
        log(f"round {round_no}/{rounds}")
    results = {case.name: summary(case, len(raw)) for case in cases}

    ratios: dict[str, float] = {}
    targets: dict[str, Any] = {}
    # Two comparisons, both reported, neither hidden: threading alone (both sides handed
    # the ids already extracted), and raw header blocks in, trees out (each library parsing
    # with its own parser, as its users would call it).
    for target, ours, theirs in (
        ("threading_only_speedup_vs_flanker", "replytrack", "flanker"),
        ("end_to_end_speedup_vs_flanker", "replytrack_from_bytes", "flanker_from_bytes"),
    ):
        if theirs in results:
            speedup = results[theirs]["median_s"] / results[ours]["median_s"]
            ratios[f"{theirs}/{ours}"] = round(speedup, 2)
            targets[target] = {
                "value": round(speedup, 2),
                "op": ">=",
                "limit": TARGET_SPEEDUP,
                "met": speedup >= TARGET_SPEEDUP,
            }

    report = {
        "benchmark": "bench_threading",
        "schema": SCHEMA_VERSION,
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1),
        "mode": "quick" if args.quick else "full",
        "settings": {"rounds": rounds, "gc_disabled_while_timing": True, "interleaved": True},
        "sample": {
            "messages": len(raw),
            "seed": args.seed,
            "sha256": digest,
            "generated": generated,
            "replytrack_threads": shape,
            "flanker_threads": reference,
        },
        "environment": environment(flanker),
        "load_average": {"start": load_start, "end": _common.load_average()},
        "results": results,
        "ratios": ratios,
        "targets": targets,
        "all_targets_met": bool(targets) and all(t["met"] for t in targets.values()),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
