"""Benchmark SQLiteStore lookups on a store holding a million sends.

Run from the repository root::

    python benchmarks/bench_store.py [--quick] [--sends N] [--output FILE]

The fixture (N sends recorded through the public API, default 1,000,000) is generated once
into ``--data-dir`` (default: ``$TMPDIR/replytrack-bench``) and reused by later runs; it is
built under a temporary name and renamed when complete, so an interrupted build is never
mistaken for a fixture. Building a million sends takes about a minute and 500 MB of disk.

Each case times one store call the correlator makes, with arguments drawn from a shuffled
pool so the page cache, not a single hot row, is what is measured. Cases are interleaved
round by round (as in ``bench_parse.py``); the report gives, per case, the median, p95 and
minimum time per call over the rounds, and calls per second from the median.

The JSON report goes to stdout, and to ``--output`` as well when given.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from replytrack.store import SentMessage, SQLiteStore

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # the sibling _common.py, also when loaded by a test

import _common  # noqa: E402 (found through the sys.path line above)

SCHEMA_VERSION = 1
T0 = dt.datetime(2026, 1, 5, 8, tzinfo=dt.timezone.utc)
BATCH = 10_000  # sends per transaction while building the fixture
POOL = 4096  # distinct arguments cycled through by each case

FULL = {"rounds": 15, "min_seconds": 0.2}
QUICK = {"rounds": 5, "min_seconds": 0.02}

# (name, case, comparison, limit): the correlator's per-message store work must leave room
# for its target of 5,000 correlations/s including parsing (issue 4).
TARGETS: tuple[tuple[str, str, str, float], ...] = (
    ("reply_lookups_per_second", "find_sent_reply", ">=", 20_000.0),
    ("miss_lookups_per_second", "find_sent_miss", ">=", 20_000.0),
)


def send_id(i: int) -> str:
    return f"{i:08x}.bench@mail.example.com"


def make_send(i: int) -> SentMessage:
    """The i-th send of the fixture: 1,000 campaigns, 50 reps, one prospect each."""
    return SentMessage(
        send_id(i),
        f"c{i % 1000}:p{i}",
        f"rep{i % 50}@vendor.example",
        (f"p{i}@prospect{i % 5000}.example",),
        (f"cc{i}@prospect{i % 5000}.example",) if i % 4 == 0 else (),
        subject=f"Quick question {i % 1000}",
        sent_at=T0 + dt.timedelta(seconds=i),
        provider_thread_id=f"thr-{i:x}" if i % 2 else None,
        thread_index=i.to_bytes(16, "big"),
    )


def ensure_fixture(
    data_dir: Path, sends: int, log: Callable[[str], None]
) -> tuple[Path, float | None]:
    """The fixture of `sends` sends in `data_dir`, built on first use (all scripts share it).

    Returns:
        Its path, and the seconds building it took (``None`` when it was already there).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    fixture = data_dir / f"store-{sends}-bench{SCHEMA_VERSION}.db"
    if fixture.exists():
        return fixture, None
    log(f"building {fixture} with {sends:,} sends (once)")
    return fixture, round(build_fixture(fixture, sends, log), 1)


def build_fixture(path: Path, sends: int, log: Callable[[str], None]) -> float:
    """Record `sends` sends into a new store at `path`; return the seconds it took."""
    partial = path.with_name(path.name + ".partial")
    for leftover in path.parent.glob(partial.name + "*"):
        leftover.unlink()
    started = time.perf_counter()
    with SQLiteStore(partial, synchronous="NORMAL") as store:
        for start in range(0, sends, BATCH):
            with store.transaction() as tx:
                for i in range(start, min(start + BATCH, sends)):
                    tx.record_sent(make_send(i))
            if (start // BATCH) % 10 == 9:
                log(f"built {start + BATCH:,} sends")
    partial.rename(path)  # closing checkpointed the WAL into the file
    return time.perf_counter() - started


class Case:
    def __init__(self, name: str, what: str, call: Callable[[], object]) -> None:
        self.name = name
        self.what = what
        self.timer = timeit.Timer(call)
        self.loops = 0
        self.per_call_us: list[float] = []


def build_cases(store: SQLiteStore, sends: int) -> list[Case]:
    rng = random.Random(20260105)  # noqa: S311 (reproducible test data, not secrets)
    hits = [rng.randrange(sends) for _ in range(POOL)]
    unknown = [f"{rng.getrandbits(64):016x}@mx.prospect.example" for _ in range(POOL * 5)]

    def cycle(items: list[Any]) -> Callable[[], Any]:
        return itertools.cycle(items).__next__

    one_hit = cycle([[send_id(i)] for i in hits])
    # A reply: its In-Reply-To hits, and References carry five ids we do not know
    # (earlier messages of the prospect's side of the thread).
    reply = cycle([[send_id(i), *unknown[k * 5 : k * 5 + 5]] for k, i in enumerate(hits)])
    miss = cycle([[*unknown[k * 5 : k * 5 + 5], unknown[-k - 1]] for k in range(POOL)])
    guid = cycle([i.to_bytes(16, "big") for i in hits])
    ref = cycle([f"c{i % 1000}:p{i}" for i in hits])
    subject = cycle(
        [(f"RE: Quick question {i % 1000}", [f"p{i}@prospect{i % 5000}.example"]) for i in hits]
    )

    def by_subject() -> object:
        text, parties = subject()
        return store.find_sent_by_subject(text, parties, T0)

    return [
        Case("find_sent_hit", "find_sent([one recorded id])", lambda: store.find_sent(one_hit())),
        Case(
            "find_sent_reply",
            "find_sent([In-Reply-To hit, 5 unknown References]): a typical reply",
            lambda: store.find_sent(reply()),
        ),
        Case(
            "find_sent_miss",
            "find_sent([6 unknown ids]): mail that answers none of our sends",
            lambda: store.find_sent(miss()),
        ),
        Case(
            "find_incoming_miss",
            "find_incoming([6 unknown ids]): the THREAD method's lookup",
            lambda: store.find_incoming(miss()),
        ),
        Case(
            "find_sent_by_thread_index",
            "find_sent_by_thread_index(recorded GUID)",
            lambda: store.find_sent_by_thread_index(guid()),
        ),
        Case(
            "find_sent_by_ref",
            "find_sent_by_ref(recorded ref)",
            lambda: store.find_sent_by_ref(ref()),
        ),
        Case(
            "find_sent_by_subject",
            "find_sent_by_subject('RE: <campaign subject>', [prospect], since)",
            by_subject,
        ),
        Case("is_processed", "is_processed(unknown key)", lambda: store.is_processed(miss()[0])),
    ]


def summary(case: Case) -> dict[str, Any]:
    times = sorted(case.per_call_us)
    median = statistics.median(times)
    return {
        "what": case.what,
        "per_second": round(1e6 / median),
        "median_us": round(median, 3),
        "p95_us": round(statistics.quantiles(times, n=20, method="inclusive")[18], 3),
        "min_us": round(times[0], 3),
        "loops": case.loops,
        "rounds": len(times),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time SQLiteStore lookups on a store of N sends; print a JSON report."
    )
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--sends", type=int, default=1_000_000, help="sends in the fixture")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "replytrack-bench",
        help="where the fixture is built once and kept",
    )
    parser.add_argument("--output", type=Path, help="also write the JSON report to this file")
    parser.add_argument("--rounds", type=int, help="override the number of rounds (at least 2)")
    parser.add_argument("--loops", type=int, help=argparse.SUPPRESS)  # smoke test: no calibration
    args = parser.parse_args(argv)
    if args.sends < 1:
        parser.error("--sends must be at least 1")
    if args.rounds is not None and args.rounds < 2:
        parser.error("--rounds must be at least 2")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its JSON report; return the exit status."""
    args = parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    if args.rounds is not None:
        settings["rounds"] = args.rounds

    log = _common.stderr_logger("bench_store")

    started = dt.datetime.now(dt.timezone.utc)
    fixture, build_seconds = ensure_fixture(args.data_dir, args.sends, log)
    rss_before = _common.max_rss_mb()
    with SQLiteStore(fixture) as store:
        # Sanity: the fixture holds what the cases look up, so a broken lookup cannot look fast.
        last = args.sends - 1
        assert store.find_sent([send_id(last)])[send_id(last)] == make_send(last)
        cases = build_cases(store, args.sends)
        for case in cases:
            case.loops = args.loops or _common.autorange(case.timer, settings["min_seconds"])
        for _ in range(int(settings["rounds"])):
            for case in cases:
                case.per_call_us.append(case.timer.timeit(case.loops) / case.loops * 1e6)
        results = {case.name: summary(case) for case in cases}

    targets: dict[str, Any] = {}
    for name, source, op, limit in TARGETS:
        value = results[source]["per_second"]
        met = value >= limit if op == ">=" else value <= limit
        targets[name] = {"value": value, "op": op, "limit": limit, "met": met}
    report = {
        "benchmark": "bench_store",
        "schema": SCHEMA_VERSION,
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1),
        "mode": "fixed-loops" if args.loops else ("quick" if args.quick else "full"),
        "settings": {"rounds": settings["rounds"], "fixed_loops": args.loops, "pool": POOL},
        "fixture": {
            "sends": args.sends,
            "path": str(fixture),
            "bytes": fixture.stat().st_size,
            "build_seconds": build_seconds,
        },
        "memory": {
            "max_rss_mb_before_lookups": rss_before,
            "max_rss_mb_after": _common.max_rss_mb(),
        },
        "environment": _common.environment(),
        "load_average": _common.load_average(),
        "results": results,
        "targets": targets,
        "all_targets_met": all(t["met"] for t in targets.values()),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
