"""Benchmark `ReplyTracker.process` on a store of a million sends, hooks doing nothing.

Run from the repository root::

    python benchmarks/bench_process.py [--quick] [--sends N] [--messages M] [--batch-size B]
                                       [--output FILE]

Issue 5's benchmark: "`process` throughput on SQLite with 1,000,000 sends, events dispatched
to no-op hooks (target >= 5,000 messages/s, peak memory independent of the number of
messages)". The store and the mail are bench_correlate.py's, imported from it: the fixture of
bench_store.py (N sends, default 1,000,000, built once into ``--data-dir``) and the same
generated inbox (35 % replies, 5 % out-of-office, 3 % bounces, 57 % unrelated mail).

``process`` writes (the processed ledger, the reply's tie to its send, the outbox and its
delivery marks), so the shared fixture is never opened: each run copies it once with SQLite's
backup API into a private directory under ``--data-dir``, works on the copy, and deletes it.

The tracker is ``ReplyTracker(SQLiteStore(copy, synchronous=...), generator=None,
campaign_stop=hook, crm_log=hook, own_addresses=<the 50 reps>, clock=<running>)``, each hook a
callable that only counts its calls (not `CapturingHook`, which keeps every event).

Passes, each over its own messages (the stream is rotated through the template pool, so no
Message-ID repeats between passes and no message is skipped as a duplicate):

1. warm-up, untimed;
2. timed: every ``tracker.process(raw)`` timed alone with ``perf_counter_ns``, the garbage
   collector enabled; every result checked; ``ru_maxrss`` read at M/4 and M;
3. batched: ``tracker.process_many(raws, batch_size=--batch-size)`` over M other messages,
   timed as a whole (one durable commit per batch instead of one per message, as ``poll``
   commits a source's batch); the number of events checked;
4. memory: the same number of messages under ``tracemalloc`` (bench_correlate's
   ``memory_pass``), traced peak at M/4 and M;
5. profile: a short run under ``cProfile``; the report lists the top functions by cumulative
   and by own time.

The JSON report goes to stdout, and to ``--output`` as well when given. The exit status is 1
when a correctness check failed (the numbers are still reported), else 0, targets met or not.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import gc
import hashlib
import json
import pstats
import shutil
import sqlite3
import sys
import tempfile
import time
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from replytrack import ReplyTracker
from replytrack.events import Action, ReplyEvent
from replytrack.store import SQLiteStore

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # the sibling bench_correlate.py, also when loaded by a test

import _common  # noqa: E402 (found through the sys.path line above)
import bench_correlate as bc  # noqa: E402
import bench_store  # noqa: E402 (the same module bench_correlate imports)

SCHEMA_VERSION = 1
FULL = {"sends": 1_000_000, "messages": 20_000, "profile": 2_000}
QUICK = {"sends": 20_000, "messages": 2_000, "profile": 300}
MAX_GROWTH = bc.MAX_GROWTH
OWN_ADDRESSES = tuple(f"rep{r}@vendor.example" for r in range(50))  # bench_store's reps
CLOCK = bc.T_REPLY  # when the tracker's clock starts: decisions (pause lengths) are reproducible
TOP = 10  # profile rows reported
HOOKS = ("campaign_stop", "crm_log")
# The steps of process() whose cumulative time the profile also reports, whatever their rank:
# (file, function) as `where` names them, without the line number.
PHASES: tuple[tuple[str, str], ...] = (
    ("replytrack/tracker.py", "_decide_batch"),
    ("replytrack/headers.py", "parse_headers"),
    ("replytrack/store/sqlite.py", "find_processed"),
    ("replytrack/correlate.py", "prefetched"),
    ("replytrack/correlate.py", "examine"),
    ("replytrack/classify.py", "classify"),
    ("replytrack/tracker.py", "_event"),
    ("replytrack/tracker.py", "_plain_text"),
    ("replytrack/tracker.py", "_commit"),
    ("replytrack/tracker.py", "_dispatch"),
    ("replytrack/tracker.py", "_record"),
)

# (name, comparison, limit), from issue 5: "target >= 5,000 messages/s, peak memory
# independent of the number of messages".
TARGETS: tuple[tuple[str, str, float], ...] = (
    ("messages_per_second", ">=", 5_000.0),
    ("tracemalloc_peak_growth", "<=", MAX_GROWTH),
    ("max_rss_growth", "<=", MAX_GROWTH),
)

# What an answer must become: its event's kind, and the actions the default policy may take.
EXPECTED_KIND = {"reply": "reply", "out_of_office": "out_of_office", "bounce": "bounce"}
EXPECTED_ACTIONS = {
    "reply": {"stop"},
    "out_of_office": {"pause", "log_only"},  # pause with a return date, log_only without
    "bounce": {"stop"},  # build_bounce's 5.1.1 is a hard bounce
}
CAMPAIGN_ACTIONS = (Action.STOP, Action.PAUSE)  # what the campaign_stop hook receives


class RunningClock:
    """The tracker's clock: `CLOCK` when created, then running in real time.

    Not a fixed time: the ledger's and the outbox's time indexes would then take every row
    at one value, ordered by key, and each batch would write into pages all over them,
    where a real clock appends: a fifth more pages written per commit than in production.
    The day stays `CLOCK`'s for any run shorter than 14 hours, so decisions do not change.
    """

    __slots__ = ("_start",)

    def __init__(self) -> None:
        self._start = time.perf_counter()

    def __call__(self) -> dt.datetime:
        return CLOCK + dt.timedelta(seconds=time.perf_counter() - self._start)


class NoOpHook:
    """A hook that does nothing but count its calls: it keeps no event."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, event: ReplyEvent) -> None:
        self.calls += 1


class Checker:
    """Events by category, kind and action, and the failed checks (a few kept)."""

    def __init__(self) -> None:
        self.by_category: dict[str, dict[str, Counter[str]]] = defaultdict(
            lambda: defaultdict(Counter)
        )
        self.failures = 0
        self.examples: list[str] = []

    def add(
        self, incoming: bc.Incoming, events: list[ReplyEvent], stop_calls: int, crm_calls: int
    ) -> None:
        variant = incoming.variant
        counts = self.by_category[variant.category]
        counts["messages"][variant.name] += 1
        for event in events:
            counts["by_kind"][event.kind.value] += 1
            counts["by_action"][event.action.value] += 1
        problem = self.problem(incoming, events, stop_calls, crm_calls)
        if problem is None:
            counts["as_expected"][variant.name] += 1
            return
        self.failures += 1
        if len(self.examples) < 5:
            self.examples.append(f"{variant.name} (send {incoming.send}): {problem}")

    @staticmethod
    def problem(
        incoming: bc.Incoming, events: list[ReplyEvent], stop_calls: int, crm_calls: int
    ) -> str | None:
        variant = incoming.variant
        if variant.method is None:  # unrelated mail: no event, no hook call
            if events or stop_calls or crm_calls:
                return f"{len(events)} events, {stop_calls + crm_calls} hook calls"
            return None
        if len(events) != 1:
            return f"{len(events)} events"
        event = events[0]
        send = bench_store.make_send(incoming.send)
        if event.sent is None or event.sent.message_id != send.message_id:
            return f"event for {event.sent and event.sent.message_id}"
        if event.ref != send.ref:
            return f"ref {event.ref}"
        if (event.method.value, event.role.value) != (variant.method, variant.role):
            return f"method {event.method.value}, role {event.role.value}"
        if event.kind.value != EXPECTED_KIND[variant.category]:
            return f"kind {event.kind.value}"
        if event.action.value not in EXPECTED_ACTIONS[variant.category]:
            return f"action {event.action.value}"
        expected_calls = (int(event.action in CAMPAIGN_ACTIONS), 1)
        if (stop_calls, crm_calls) != expected_calls:
            return f"hook calls campaign_stop {stop_calls}, crm_log {crm_calls}"
        return None

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for category in bc.MIX:
            counts = self.by_category.get(category, {})
            messages = sum(counts.get("messages", Counter()).values())
            out[category] = {
                "messages": messages,
                "events": sum(counts.get("by_kind", Counter()).values()),
                "as_expected": sum(counts.get("as_expected", Counter()).values()),
                "by_kind": dict(sorted(counts.get("by_kind", Counter()).items())),
                "by_action": dict(sorted(counts.get("by_action", Counter()).items())),
            }
        return out

    def variants(self) -> dict[str, int]:
        return dict(
            sorted(
                (name, n)
                for counts in self.by_category.values()
                for name, n in counts["messages"].items()
            )
        )


def rotated(pool: Sequence[bc.Template], shift: int) -> list[bc.Template]:
    """The pool shifted by `shift`: at stream position s the template is another one, so the
    Message-IDs (template number and position) differ from every other pass's."""
    shift %= len(pool)
    return [*pool[shift:], *pool[:shift]]


def copy_store(fixture: Path, target: Path) -> float:
    """Copy the fixture with SQLite's backup API (consistent even if a reader has it open)."""
    started = time.perf_counter()
    with (
        contextlib.closing(sqlite3.connect(fixture)) as source,
        contextlib.closing(sqlite3.connect(target)) as copy,
    ):
        source.backup(copy)
    return time.perf_counter() - started


def store_contents(path: Path) -> dict[str, Any]:
    """Rows the passes wrote: the processed ledger and the outbox entries by state."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        ledger = conn.execute("SELECT COUNT(*) FROM processed").fetchone()[0]
        incoming = conn.execute("SELECT COUNT(*) FROM incoming").fetchone()[0]
        outbox = dict(conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state"))
    return {"ledger_rows": ledger, "incoming_rows": incoming, "outbox_by_state": outbox}


def timed_pass(
    tracker: ReplyTracker,
    hooks: tuple[NoOpHook, NoOpHook],
    messages: Iterator[bc.Incoming],
    total: int,
    checker: Checker,
) -> tuple[dict[str, array[float]], list[float], float]:
    """Process every message; return per-category latencies (µs), max RSS at M/4 and M."""
    quarter = max(1, total // 4)
    latencies: dict[str, array[float]] = defaultdict(lambda: array("d"))
    rss: list[float] = []
    stop, crm = hooks
    clock = time.perf_counter_ns
    process = tracker.process
    started = time.perf_counter()
    for seq, incoming in enumerate(messages, 1):
        stop_before, crm_before = stop.calls, crm.calls
        t0 = clock()
        events = process(incoming.raw)
        t1 = clock()
        latencies[incoming.variant.category].append((t1 - t0) / 1000)
        checker.add(incoming, events, stop.calls - stop_before, crm.calls - crm_before)
        if seq in (quarter, total):
            rss.append(_common.max_rss_mb())
    return latencies, rss, time.perf_counter() - started


def batched_pass(
    tracker: ReplyTracker, messages: Iterator[bc.Incoming], batch_size: int
) -> dict[str, Any]:
    """`process_many` over the messages, `batch_size` per transaction; wall time and checks."""
    incoming = list(messages)  # generated before timing: only process_many is timed
    expected = sum(m.variant.method is not None for m in incoming)
    started = time.perf_counter()
    events = tracker.process_many([m.raw for m in incoming], batch_size=batch_size)
    seconds = time.perf_counter() - started
    return {
        "what": f"ReplyTracker.process_many(raws, batch_size={batch_size}): the same work, "
        "one write transaction per batch (holding the previous batch's delivery marks)",
        "messages": len(incoming),
        "batch_size": batch_size,
        "events": len(events),
        "events_expected": expected,
        "per_second": round(len(incoming) / seconds),
        "mean_us": round(seconds / len(incoming) * 1e6, 1),
    }


def where(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    if filename == "~":
        return name  # a built-in: "<method 'execute' of 'sqlite3.Connection' objects>"
    path = Path(filename)
    parts = path.parts
    # replytrack/... for the package, else the last two parts (email/feedparser.py).
    start = parts.index("replytrack") if "replytrack" in parts else len(parts) - 2
    short = "/".join(parts[start:])
    return f"{short}:{line}({name})"


def profile_pass(tracker: ReplyTracker, messages: Iterator[bc.Incoming]) -> dict[str, Any]:
    """Process the messages under cProfile (enabled around each call only)."""
    profiler = cProfile.Profile()
    count = 0
    for incoming in messages:
        profiler.enable()
        tracker.process(incoming.raw)
        profiler.disable()
        count += 1
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    rows = [
        (func, nc, tt, ct)
        for func, (_cc, nc, tt, ct, _callers) in stats.items()
        if "_lsprof.Profiler" not in func[2]  # profiler.disable itself
    ]
    process_total = max(ct for _f, _n, _t, ct in rows)  # process() contains everything else

    def table(key: int) -> list[dict[str, Any]]:
        top = sorted(rows, key=lambda r: r[key], reverse=True)[:TOP]
        return [
            {
                "function": where(func),
                "calls": nc,
                "calls_per_message": round(nc / count, 2),
                "cumulative_s": round(ct, 3),
                "own_s": round(tt, 3),
                "cumulative_share": round(ct / process_total, 3),
                "cumulative_us_per_message": round(ct / count * 1e6, 1),
            }
            for func, nc, tt, ct in top
        ]

    phases = {}
    for func, nc, _tt, ct in rows:
        filename, _line, name = func
        label = where(func).partition(":")[0]
        if (label, name) in PHASES and filename != "~":
            phases[f"{label}:{name}"] = {
                "calls_per_message": round(nc / count, 2),
                "cumulative_share": round(ct / process_total, 3),
                "cumulative_us_per_message": round(ct / count * 1e6, 1),
            }
    return {
        "messages": count,
        "note": "under cProfile every Python call costs more: read shares, not times",
        "process_seconds": round(process_total, 3),
        "phases": {f"{f}:{n}": phases.get(f"{f}:{n}") for f, n in PHASES},
        "top_cumulative": table(3),
        "top_own": table(2),
    }


def run(
    args: argparse.Namespace,
    fixture: Path,
    pool: list[bc.Template],
    warmup: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Copy the fixture, run the four passes on the copy, delete it; return what was measured."""
    m: dict[str, Any] = {"checker": Checker()}
    hooks = (NoOpHook(), NoOpHook())
    workdir = Path(tempfile.mkdtemp(prefix="bench_process-", dir=args.data_dir))
    copy = workdir / fixture.name
    try:
        log(f"copying {fixture.name} (process() writes; the fixture stays untouched)")
        m["copy_seconds"] = round(copy_store(fixture, copy), 1)
        if args.prewarm:
            bc.prewarm(copy)
        m["load_start"] = _common.load_average()
        m["rss_before"] = _common.max_rss_mb()
        with SQLiteStore(copy, synchronous=args.synchronous) as store:
            last = bench_store.send_id(args.sends - 1)
            if store.find_sent([last]).get(last) != bench_store.make_send(args.sends - 1):
                raise AssertionError(f"{fixture} does not hold the expected sends")
            tracker = ReplyTracker(
                store,
                None,
                campaign_stop=hooks[0],
                crm_log=hooks[1],
                own_addresses=OWN_ADDRESSES,
                clock=RunningClock(),
            )
            for incoming in bc.stream(rotated(pool, 1), args.sends, warmup, args.seed + 1):
                tracker.process(incoming.raw)
            log(f"timing {args.messages:,} messages")
            calls_before = [h.calls for h in hooks]
            m["latencies"], m["rss"], m["wall"] = timed_pass(
                tracker,
                hooks,
                bc.stream(pool, args.sends, args.messages, args.seed + 2),
                args.messages,
                m["checker"],
            )
            m["hook_calls"] = {
                name: hook.calls - before
                for name, hook, before in zip(HOOKS, hooks, calls_before, strict=True)
            }
            log(f"timing process_many over {args.messages:,} messages")
            m["batched"] = batched_pass(
                tracker,
                bc.stream(rotated(pool, 4), args.sends, args.messages, args.seed + 4),
                args.batch_size,
            )
            log("measuring memory under tracemalloc")
            # bench_correlate's memory pass calls `.correlate(raw)`: hand it process instead.
            m["traced"] = bc.memory_pass(
                SimpleNamespace(correlate=tracker.process),  # type: ignore[arg-type]
                bc.stream(rotated(pool, 2), args.sends, args.messages, args.seed + 2),
                args.messages,
            )
            log(f"profiling {args.profile_messages:,} messages")
            m["profile"] = profile_pass(
                tracker,
                bc.stream(rotated(pool, 3), args.sends, args.profile_messages, args.seed + 3),
            )
        m["load_end"] = _common.load_average()
        m["contents"] = store_contents(copy)
        m["copy_bytes"] = copy.stat().st_size
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    m["total_calls"] = sum(h.calls for h in hooks)
    return m


def store_problems(m: dict[str, Any], processed: int) -> list[str]:
    """The store's view: every message processed once, every hook call delivered."""
    problems = []
    contents, total_calls = m["contents"], m["total_calls"]
    if contents["ledger_rows"] != processed:
        problems.append(f"ledger has {contents['ledger_rows']} rows, not {processed}")
    if contents["outbox_by_state"] != {"delivered": total_calls}:
        problems.append(f"outbox {contents['outbox_by_state']}, expected {total_calls} delivered")
    return problems


def memory_report(args: argparse.Namespace, m: dict[str, Any]) -> dict[str, Any]:
    traced, rss = m["traced"], m["rss"]
    return {
        "checkpoints": [max(1, args.messages // 4), args.messages],
        "tracemalloc": {
            **traced,
            **{
                f"{name.removesuffix('_kib')}_growth": bc.growth(values[0], values[-1])
                for name, values in traced.items()
            },
        },
        "max_rss_mb": {
            "before": m["rss_before"],
            "at_checkpoints": rss,
            "growth": bc.growth(rss[0], rss[-1]),
        },
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time ReplyTracker.process on a generated inbox against a copy of an "
        "SQLite store of N sends, hooks doing nothing; print a JSON report."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a short run: {QUICK['sends']:,} sends, {QUICK['messages']:,} messages "
        f"(default: {FULL['sends']:,} and {FULL['messages']:,})",
    )
    parser.add_argument("--sends", type=int, help="sends in the store (the fixture)")
    parser.add_argument("--messages", type=int, help="incoming messages to process")
    parser.add_argument(
        "--profile-messages",
        type=int,
        help=f"messages of the cProfile run (default {FULL['profile']:,}, "
        f"{QUICK['profile']:,} with --quick; at most --messages)",
    )
    parser.add_argument("--seed", type=int, default=bc.SEED, help="seed of the generated mail")
    parser.add_argument(
        "--synchronous",
        choices=("FULL", "NORMAL"),
        default="FULL",
        help="SQLiteStore's synchronous setting (default FULL, the store's default: an fsync "
        "per commit)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "replytrack-bench",
        help="where the fixture is built once and kept (shared with bench_store.py and "
        "bench_correlate.py); the run's copy is made and deleted there",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=100,
        help="messages per transaction in the process_many pass (default 100, poll's batch)",
    )
    parser.add_argument(
        "--no-prewarm",
        dest="prewarm",
        action="store_false",
        help="do not read the store copy once before timing",
    )
    parser.add_argument("--output", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    args.sends = sizes["sends"] if args.sends is None else args.sends
    args.messages = sizes["messages"] if args.messages is None else args.messages
    if args.profile_messages is None:
        args.profile_messages = sizes["profile"]
    args.profile_messages = min(args.profile_messages, args.messages)
    if args.sends < 1:
        parser.error("--sends must be at least 1")
    if args.messages < 4:
        parser.error("--messages must be at least 4 (memory is read at M/4 and M)")
    if args.profile_messages < 1:
        parser.error("--profile-messages must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its JSON report; return the exit status."""
    args = parse_args(argv)

    log = _common.stderr_logger("bench_process")

    started = dt.datetime.now(dt.timezone.utc)
    # bench_store.py's fixture: the scripts build it once between them.
    fixture, build_seconds = bench_store.ensure_fixture(args.data_dir, args.sends, log)

    pool_size = min(bc.POOL, max(len(bc.VARIANTS), args.messages // 4))  # all seen by M/4
    pool = bc.build_pool(pool_size, args.seed)
    digest = hashlib.sha256()
    for template in pool:
        digest.update(template.raw)
    pool_bytes = sum(len(t.raw) for t in pool)
    warmup = min(bc.WARMUP, args.messages // 10)
    log(f"{len(pool):,} templates, {pool_bytes / len(pool) / 1024:.1f} KiB on average")

    m = run(args, fixture, pool, warmup, log)
    checker: Checker = m["checker"]
    latencies = m["latencies"]
    processed = warmup + 3 * args.messages + args.profile_messages
    problems = store_problems(m, processed)
    batched = m["batched"]
    if batched["events"] != batched["events_expected"]:
        problems.append(
            f"process_many gave {batched['events']} events, not {batched['events_expected']}"
        )
    failures = checker.failures + len(problems)

    every = [x for values in latencies.values() for x in values]
    busy_seconds = sum(every) / 1e6
    process = {
        "what": "ReplyTracker.process(raw_bytes): ledger check, parse, correlate, classify, "
        "policy, one write transaction, no-op hooks and their delivery marks",
        "messages": len(every),
        "per_second": round(len(every) / busy_seconds),
        "wall_per_second": round(len(every) / m["wall"]),
        **bc.latency_summary(every),
    }
    by_category = {
        category: {"messages": len(latencies[category]), **bc.latency_summary(latencies[category])}
        for category in bc.MIX
        if latencies.get(category)
    }
    events = checker.report()
    by_kind: Counter[str] = Counter()
    for counts in checker.by_category.values():
        for kind, n in counts["by_kind"].items():
            by_kind[kind] += n
    memory = memory_report(args, m)
    measured = {
        "messages_per_second": process["per_second"],
        "tracemalloc_peak_growth": memory["tracemalloc"]["peak_growth"],
        "max_rss_growth": memory["max_rss_mb"]["growth"],
    }
    targets: dict[str, Any] = {}
    for name, op, limit in TARGETS:
        value = measured[name]
        met = value >= limit if op == ">=" else value <= limit
        targets[name] = {"value": value, "op": op, "limit": limit, "met": met}

    all_actions: Counter[str] = Counter()
    for category in events.values():
        all_actions.update(category["by_action"])
    report = {
        "benchmark": "bench_process",
        "schema": SCHEMA_VERSION,
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1),
        "mode": "quick" if args.quick else "full",
        "settings": {
            "sends": args.sends,
            "messages": args.messages,
            "warmup": warmup,
            "profile_messages": args.profile_messages,
            "seed": args.seed,
            "synchronous": args.synchronous,
            "own_addresses": len(OWN_ADDRESSES),
            "clock": f"from {CLOCK.isoformat()}, running in real time",
            "hooks": "campaign_stop and crm_log: callables counting their calls",
            "gc_enabled_while_timing": gc.isenabled(),
            "timer": "perf_counter_ns around each process() call",
        },
        "fixture": {
            "sends": args.sends,
            "path": str(fixture),
            "bytes": fixture.stat().st_size,
            "build_seconds": build_seconds,
            "copy_seconds": m["copy_seconds"],
            "copy_bytes_after": m["copy_bytes"],
            "prewarmed": args.prewarm,
        },
        "sample": {
            "mix": bc.MIX,
            "templates": len(pool),
            "template_bytes_mean": round(pool_bytes / len(pool)),
            "template_bytes_max": max(len(t.raw) for t in pool),
            "templates_sha256": digest.hexdigest(),
            "variants": checker.variants(),
        },
        "environment": _common.environment(),
        "load_average": {"start": m["load_start"], "end": m["load_end"]},
        "results": {"process": process, "by_category": by_category, "process_many": batched},
        "events": {
            "total": sum(c["events"] for c in events.values()),
            "by_kind": dict(sorted(by_kind.items())),
            "by_action": dict(sorted(all_actions.items())),
            "by_category": events,
        },
        "hook_calls": m["hook_calls"],
        "store_after": {"messages_processed": processed, **m["contents"]},
        "sanity": {
            "ok": failures == 0,
            "failures": failures,
            "examples": [*problems, *checker.examples],
        },
        "memory": memory,
        "profile": m["profile"],
        "targets": targets,
        "all_targets_met": all(t["met"] for t in targets.values()),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
