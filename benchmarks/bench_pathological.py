"""Benchmark the pure core on pathological input: time per 64 KB of headers, and peak memory.

Run from the repository root::

    python benchmarks/bench_pathological.py [--quick] [--cases NAME,...] [--output FILE]

Issue 8's cases - header blocks over 1 MiB, 10,000 References, deeply nested multiparts, a
50 MB attachment, long runs of ``;``, ``(``, ``=?`` and ``<`` - plus the inputs fuzzing found
(``docs/robustness.md``). Each case is one input, built deterministically, and three
operations are timed on it:

* ``parse``: `parse_headers`, then every field a correlator reads (ids, addresses, subject,
  date) and ``defects``;
* ``classify``: `classify` on the raw bytes;
* ``correlate``: ``Correlator(store).correlate`` on the raw bytes, the store holding one send.

Each operation is calibrated like ``timeit``'s autorange (the first loop count taking at least
``min_seconds_per_round``), then timed for ``rounds`` rounds with the garbage collector off;
the report gives the median and the worst round's time per call in milliseconds, and, for the
cases that are about headers, the median per 64 KB of header block (``ms_per_64k_headers``).
Peak memory comes from one more, untimed call under `tracemalloc` (beyond the input itself,
which is built before). Targets: at most 50 ms per 64 KB of headers for every header case
and operation, and a peak of at most 32 MiB for every case and operation.

The JSON report goes to stdout, and to ``--output`` as well when given. See README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import hashlib
import json
import statistics
import sys
import timeit
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from replytrack.classify import classify
from replytrack.correlate import Correlator
from replytrack.headers import MAX_HEADER_BYTES, parse_headers
from replytrack.store import MemoryStore, SentMessage

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # the sibling _common.py, also when loaded by a test

import _common  # noqa: E402 (found through the sys.path line above)

SCHEMA_VERSION = 1
FULL = {"rounds": 5, "min_seconds": 0.05}
QUICK = {"rounds": 2, "min_seconds": 0.005}
KB64 = 64 * 1024
MiB = 1024 * 1024
TARGET_MS_PER_64K_HEADERS = 50.0
TARGET_PEAK_MIB = 32.0

SEND = SentMessage(
    message_id="<send-1@mail.sales.example>",
    ref="c1:p1",
    sender="rep@sales.example",
    to=("jo@customer.example",),
)


# --------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------


@attrs.define
class Case:
    """One pathological input, and whether its size is in its headers (or its body)."""

    name: str
    what: str
    data: bytes
    headers: bool


def _field(name: str, value: str, *, sender: str = "jo@customer.example") -> bytes:
    return (
        f"From: {sender}\nMessage-ID: <own@customer.example>\n{name}: {value}\n\nbody\n"
    ).encode()


def nested(depth: int, *, body: bytes = b"", sender: str = "MAILER-DAEMON@mx.example") -> bytes:
    """`depth` nested multiparts around an out-of-office text (also the guard tests' input)."""
    out = [f"From: {sender}\nSubject: nested\nMIME-Version: 1.0\n".encode()]
    out += [
        b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i) for i in range(depth)
    ]
    out.append(b"Content-Type: text/plain\n\nI am out of the office until Monday.\n" + body)
    out += [b"--b%d--\n" % i for i in reversed(range(depth))]
    return b"".join(out)


def attachment(megabytes: int, sender: str) -> bytes:
    """An auto-reply carrying a PDF of `megabytes` MiB (also the guard tests' input)."""
    line = b"JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFIvRmlsdGVyIC9GbGF0ZUR\n"
    return (
        (
            f"From: {sender}\nTo: rep@sales.example\nSubject: Automatic reply: Quick question\n"
            "In-Reply-To: <send-1@mail.sales.example>\nAuto-Submitted: auto-replied\n"
            "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\n"
            "Content-Type: text/plain\n\nI am out of the office until Monday.\n--b\n"
            "Content-Type: application/pdf\nContent-Transfer-Encoding: base64\n\n"
        ).encode()
        + line * (megabytes * MiB // len(line))
        + b"--b--\n"
    )


def _bounce(text: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example\nTo: rep@sales.example\n"
        f"Subject: Delivery failure\n\n{text}\n"
    ).encode()


def _long_diagnostic(chars: int) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example\nSubject: Undelivered Mail Returned to Sender\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n"
        "--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example\n\n"
        "Final-Recipient: rfc822; jo@customer.example\nAction: failed\nStatus: 5.0.0\n"
        "Diagnostic-Code: smtp; 550 " + "lorem ipsum dolor " * (chars // 18) + "\n--b--\n"
    ).encode()


def build_cases() -> list[Case]:
    """Every case, in report order."""
    line = b"X-Trace: " + b"t" * 54 + b"\n"
    ids = "\n ".join(f"<{i}.abcdef@thread.example>" for i in range(10_000))
    cases = [
        Case(
            "header_block_2mib",
            "2 MiB of 64-byte fields: read up to MAX_HEADER_BYTES (1 MiB)",
            b"From: jo@customer.example\n" + line * (2 * MiB // len(line)) + b"\nbody\n",
            True,
        ),
        Case(
            "folded_subject_1mib",
            "a Subject of 1 MiB folded every 5 bytes",
            b"From: jo@customer.example\nSubject: " + b"word\n " * (MiB // 6) + b"end\n\nbody\n",
            True,
        ),
        Case(
            "references_10000",
            "10,000 ids in References, folded one per line",
            _field("References", ids),
            True,
        ),
    ]
    for run, label in ((";", "semicolon"), ("(", "paren"), ("=?", "encoded_word"), ("<", "lt")):
        for field in ("From", "To", "References", "Subject", "Content-Type"):
            cases.append(
                Case(
                    f"run_{label}_{field.lower().replace('-', '_')}_64k",
                    f"{field}: 64 KB of {run!r}",
                    _field(field, run * (KB64 // len(run))),
                    True,
                )
            )
    cases += [
        Case(
            "address_word_64k",
            "From: one 64 KB word (no '@'): the plain-list pattern fails on it",
            _field("From", "a" * KB64),
            True,
        ),
        Case(
            "lt_run_1mib",
            "References: 1 MiB of '<'",
            _field("References", "<" * (MiB - 200)),
            True,
        ),
        Case(
            "lt_word_run_1mib",
            "References: 1 MiB of '<a' (an unterminated id per two bytes)",
            _field("References", "<a" * ((MiB - 200) // 2)),
            True,
        ),
        Case(
            "id_run_1mib",
            "References: 1 MiB of '<a>' (the shortest bracketed ids, 350,000 of them)",
            _field("References", "<a>" * ((MiB - 200) // 3)),
            True,
        ),
        Case(
            "address_list_1mib",
            "To: 1 MiB of 'a@b.example, ' (80,000 addresses)",
            _field("To", "a@b.example, " * ((MiB - 200) // 13)),
            True,
        ),
        Case(
            "parameter_list_256k",
            "Content-Type with 256 KB of ';' from a mail system (the stdlib parses it)",
            _field(
                "Content-Type",
                "multipart/report" + ";" * (256 * 1024) + "; boundary=b",
                sender="MAILER-DAEMON@mx.example",
            ),
            True,
        ),
        Case("nested_10000", "10,000 nested multiparts", nested(10_000), False),
        Case(
            "nested_200_long_body",
            "200 nested multiparts, then 400 KB of empty lines",
            nested(200, body=b"\n" * 400_000),
            False,
        ),
        Case(
            "attachment_50mb_person",
            "an out-of-office with a 50 MB attachment (replytrack.mime reads it)",
            attachment(50, "jo@customer.example"),
            False,
        ),
        Case(
            "attachment_50mb_daemon",
            "the same from MAILER-DAEMON (the stdlib parses it)",
            attachment(50, "MAILER-DAEMON@mx.example"),
            False,
        ),
        Case(
            "bounce_dash_line_64k",
            "a plain-text bounce with a 64 KB line of '-'",
            _bounce("Delivery failed.\n" + "-" * KB64 + "\njo@customer.example"),
            False,
        ),
        Case(
            "bounce_address_line_64k",
            "a plain-text bounce with a 64 KB line of 'a@b.'",
            _bounce("Delivery to the following recipients failed:\n" + "a@b." * (KB64 // 4)),
            False,
        ),
        Case(
            "bounce_distinct_addresses_480k",
            "a plain-text bounce with a 480 KB line of distinct addresses (100 recipients kept)",
            _bounce(
                "Delivery to the following recipients failed:\n"
                + " ".join(f"u{i}@b.example" for i in range(480_000 // 14))
            ),
            False,
        ),
        Case(
            "bounce_diagnostic_110k",
            "a DSN whose Diagnostic-Code is 110 KB",
            _long_diagnostic(110_000),
            False,
        ),
    ]
    return cases


def header_bytes(data: bytes) -> int:
    """The size of the header block: up to the first empty line, at most MAX_HEADER_BYTES."""
    ends = [i for i in (data.find(b"\n\n"), data.find(b"\r\n\r\n")) if i >= 0]
    return min(min(ends) + 1 if ends else len(data), MAX_HEADER_BYTES)


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def operations() -> dict[str, Callable[[bytes], object]]:
    """The three operations timed on every case."""
    store = MemoryStore()
    store.record_sent(SEND)
    correlator = Correlator(store)

    def parse(data: bytes) -> object:
        h = parse_headers(data)
        ids = (h.message_id, h.in_reply_to, h.references)
        return (ids, h.from_, h.sender, h.reply_to, h.to, h.cc, h.subject, h.date, h.defects)

    return {"parse": parse, "classify": classify, "correlate": correlator.correlate}


def time_per_call(call: Callable[[], object], *, rounds: int, min_seconds: float) -> list[float]:
    """Seconds per call, one figure per round, the garbage collector off (as timeit does)."""
    timer = timeit.Timer(call)
    loops = _common.autorange(timer, min_seconds)
    return [timer.timeit(loops) / loops for _ in range(rounds)]


def peak_memory(call: Callable[[], object]) -> int:
    """Bytes allocated at the peak of one call, beyond what existed before it."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        call()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def measure(case: Case, op: Callable[[bytes], object], mode: dict[str, Any]) -> dict[str, Any]:
    """The report entry of one operation on one case."""
    data = case.data
    seconds = time_per_call(
        lambda: op(data), rounds=mode["rounds"], min_seconds=mode["min_seconds"]
    )
    median_ms = statistics.median(seconds) * 1000
    entry: dict[str, Any] = {
        "median_ms": round(median_ms, 3),
        "max_ms": round(max(seconds) * 1000, 3),
        "peak_memory_mib": round(peak_memory(lambda: op(data)) / MiB, 2),
    }
    if case.headers:
        entry["ms_per_64k_headers"] = round(median_ms * KB64 / header_bytes(data), 3)
    return entry


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time replytrack's parsers on pathological input; print a JSON report."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK['rounds']} short rounds instead of {FULL['rounds']}",
    )
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--cases", help="comma-separated case names (default: all)")
    parser.add_argument("--output", help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its JSON report; return the exit status."""
    args = parse_args(argv)
    mode = dict(QUICK if args.quick else FULL)
    if args.rounds:
        mode["rounds"] = args.rounds
    log = _common.stderr_logger("bench_pathological")

    cases = build_cases()
    if args.cases:
        wanted = args.cases.split(",")
        unknown = set(wanted) - {c.name for c in cases}
        if unknown:
            raise SystemExit(f"bench_pathological: unknown cases: {', '.join(sorted(unknown))}")
        cases = [c for c in cases if c.name in wanted]
    ops = operations()

    load_start = _common.load_average()
    started = dt.datetime.now(dt.timezone.utc)
    results: dict[str, Any] = {}
    for case in cases:
        entry: dict[str, Any] = {
            "what": case.what,
            "bytes": len(case.data),
            "header_bytes": header_bytes(case.data),
            "sha256": hashlib.sha256(case.data).hexdigest(),
        }
        for name, op in ops.items():
            entry[name] = measure(case, op, mode)
        results[case.name] = entry
        log(f"{case.name}: " + ", ".join(f"{n} {entry[n]['median_ms']} ms" for n in ops))

    header_rates = [
        (entry[n]["ms_per_64k_headers"], f"{case}.{n}")
        for case, entry in results.items()
        for n in ops
        if "ms_per_64k_headers" in entry[n]
    ]
    peaks = [
        (entry[n]["peak_memory_mib"], f"{case}.{n}")
        for case, entry in results.items()
        for n in ops
    ]
    targets: dict[str, Any] = {}
    for name, values, limit in (
        ("max_ms_per_64k_headers", header_rates, TARGET_MS_PER_64K_HEADERS),
        ("max_peak_memory_mib", peaks, TARGET_PEAK_MIB),
    ):
        if values:
            worst, where = max(values)
            targets[name] = {
                "value": worst,
                "where": where,
                "op": "<=",
                "limit": limit,
                "met": worst <= limit,
            }

    report = {
        "benchmark": "bench_pathological",
        "schema": SCHEMA_VERSION,
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1),
        "mode": "quick" if args.quick else "full",
        "settings": {
            "rounds": mode["rounds"],
            "min_seconds_per_round": mode["min_seconds"],
            "gc_disabled_while_timing": True,
            "operations": list(ops),
        },
        "environment": _common.environment(),
        "load_average": {"start": load_start, "end": _common.load_average()},
        "results": results,
        "targets": targets,
        "all_targets_met": bool(targets) and all(t["met"] for t in targets.values()),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
