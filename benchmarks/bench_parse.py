"""Benchmark replytrack's header parsing and Message-IDs against the standard library.

Run from the repository root::

    python benchmarks/bench_parse.py [--quick] [--output FILE]

Every case is timed in the same process, on the same sample (``data/reply-3k.eml``, a 3 KB
Gmail-style reply header block), and the cases are interleaved round by round, so a burst of
load from another process hits all of them alike instead of skewing one ratio. Each round
times one case for an autorange-sized number of loops (``timeit``'s rule: the first of 1, 2,
5, 10, 20, 50 ... loops that takes at least 0.2 s) with the garbage collector disabled, as
``timeit`` does. The per-call time of a round is its total divided by its loops; the report
gives the median, 95th percentile and minimum of those over the rounds. The p95 is therefore
the spread between rounds (other load, frequency scaling), not a per-call tail latency.

Before any timing, the script checks that replytrack and both standard-library variants read
the same values from the sample, so a broken parse cannot look fast.

The JSON report goes to stdout, and to ``--output`` as well when given. See README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import email
import email.policy
import hashlib
import json
import re
import statistics
import sys
import timeit
from collections.abc import Callable, Sequence
from email.header import decode_header, make_header
from email.parser import BytesHeaderParser
from email.utils import getaddresses, make_msgid
from pathlib import Path
from typing import Any

from replytrack.headers import parse_headers
from replytrack.msgid import MessageIdGenerator

SCHEMA_VERSION = 1
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # the sibling _common.py, also when loaded by a test

import _common  # noqa: E402 (found through the sys.path line above)

SAMPLE = HERE / "data" / "reply-3k.eml"
DOMAIN = "mail.example.com"
REF = "c42:p7"
KEY = b"bench-parse-key-0123456789abcdef"  # 32 bytes; the key's value does not change timings

FULL = {"rounds": 20, "min_seconds": 0.2}  # about 40 s in all: a round takes about 2 s
QUICK = {"rounds": 5, "min_seconds": 0.02}  # about 2 s

# The targets from the project brief: (name, case or ratio, comparison, limit).
TARGETS: tuple[tuple[str, str, str, float], ...] = (
    ("parse_median_us", "replytrack", "<=", 30.0),
    ("parse_speedup_vs_compat32", "stdlib_compat32/replytrack", ">=", 10.0),
    ("generate_ref_median_us", "msgid_generate_ref", "<=", 3.0),
    ("generate_plain_median_us", "msgid_generate_plain", "<=", 1.5),
)
RATIOS = (
    ("stdlib_compat32", "replytrack"),
    ("stdlib_default", "replytrack"),
    ("stdlib_make_msgid", "msgid_generate_plain"),
)

_BRACKETED_ID = re.compile(r"<([^>]*)>")
# Built once, as a long-running correlator would; this favours the standard library.
_COMPAT32_PARSER = BytesHeaderParser(policy=email.policy.compat32)


# --------------------------------------------------------------------------------------------
# What is timed. Each parse function reads the fields a reply correlator needs.
# --------------------------------------------------------------------------------------------


def parse_replytrack(data: bytes) -> tuple[Any, ...]:
    h = parse_headers(data)
    return (h.message_id, h.in_reply_to, h.references, h.from_, h.to, h.cc, h.subject)


def parse_stdlib_default(data: bytes) -> tuple[Any, ...]:
    # As the brief asks: message_from_bytes also parses the (small, multipart) body.
    msg = email.message_from_bytes(data, policy=email.policy.default)
    return (
        msg["message-id"],
        msg["in-reply-to"],
        msg["references"],
        msg["from"].addresses,
        msg["to"].addresses,
        msg["cc"].addresses,
        str(msg["subject"]),
    )


def parse_stdlib_compat32(data: bytes) -> tuple[Any, ...]:
    # The legacy API returns raw strings; this is the least post-processing a correlator
    # needs: split the id fields into ids, the address fields into (name, addr) pairs
    # (display names stay RFC 2047-encoded), and decode the subject.
    msg = _COMPAT32_PARSER.parsebytes(data)
    own = _BRACKETED_ID.findall(msg.get("message-id", ""))
    return (
        own[0] if own else None,
        tuple(_BRACKETED_ID.findall(msg.get("in-reply-to", ""))),
        tuple(_BRACKETED_ID.findall(msg.get("references", ""))),
        getaddresses(msg.get_all("from", [])),
        getaddresses(msg.get_all("to", [])),
        getaddresses(msg.get_all("cc", [])),
        str(make_header(decode_header(msg.get("subject", "")))),
    )


class Case:
    """One timed statement and the names it runs with."""

    def __init__(self, name: str, stmt: str, namespace: dict[str, Any], what: str) -> None:
        self.name = name
        self.what = what
        self.timer = timeit.Timer(stmt, globals=namespace)
        self.loops = 0
        self.per_call_us: list[float] = []


def build_cases(data: bytes) -> list[Case]:
    gen = MessageIdGenerator(DOMAIN, KEY)
    signed = gen.generate(ref=REF)
    parse_ns = {
        "data": data,
        "parse_replytrack": parse_replytrack,
        "parse_stdlib_default": parse_stdlib_default,
        "parse_stdlib_compat32": parse_stdlib_compat32,
    }
    gen_ns = {"gen": gen, "signed": signed, "make_msgid": make_msgid}
    return [
        Case(
            "replytrack",
            "parse_replytrack(data)",
            parse_ns,
            "parse_headers(data) + message_id, in_reply_to, references, from_, to, cc, subject",
        ),
        Case(
            "stdlib_default",
            "parse_stdlib_default(data)",
            parse_ns,
            "email.message_from_bytes(data, policy=default) + the same fields",
        ),
        Case(
            "stdlib_compat32",
            "parse_stdlib_compat32(data)",
            parse_ns,
            "BytesHeaderParser(policy=compat32).parsebytes(data) + ids split with a regex, "
            "getaddresses on From/To/Cc, decode_header + make_header on Subject",
        ),
        Case("msgid_generate_plain", "gen.generate()", gen_ns, "MessageIdGenerator.generate()"),
        Case(
            "msgid_generate_ref",
            f"gen.generate(ref={REF!r})",
            gen_ns,
            f"MessageIdGenerator.generate(ref={REF!r}), HMAC-SHA256 signed",
        ),
        Case("msgid_verify", "gen.verify(signed)", gen_ns, "MessageIdGenerator.verify(signed)"),
        Case(
            "stdlib_make_msgid",
            f"make_msgid(domain={DOMAIN!r})",
            gen_ns,
            f"email.utils.make_msgid(domain={DOMAIN!r})",
        ),
    ]


# --------------------------------------------------------------------------------------------
# Sanity: the three parsers must agree on the sample, and the generator must round-trip.
# --------------------------------------------------------------------------------------------


def expect(name: str, got: object, expected: object) -> None:
    # Not assert: the check must also run under python -O.
    if got != expected:
        raise AssertionError(f"{name}: {got!r} != {expected!r}")


def check_agreement(data: bytes) -> None:
    rt = parse_replytrack(data)
    default = parse_stdlib_default(data)
    legacy = parse_stdlib_compat32(data)
    message_id, in_reply_to, references, from_, to, cc, subject = rt

    # Every field is present in the sample, so agreement cannot be two empty results.
    for label, value in zip(
        ("message_id", "in_reply_to", "references", "from", "to", "cc", "subject"),
        rt,
        strict=True,
    ):
        if not value:
            raise AssertionError(f"replytrack read nothing for {label} from the sample")

    expect("message_id/default", message_id, _BRACKETED_ID.findall(str(default[0]))[0])
    expect("message_id/compat32", message_id, legacy[0])
    for index, label in ((1, "in_reply_to"), (2, "references")):
        expect(f"{label}/default", rt[index], tuple(_BRACKETED_ID.findall(str(default[index]))))
        expect(f"{label}/compat32", rt[index], legacy[index])
    for index, label in ((3, "from"), (4, "to"), (5, "cc")):
        ours = [(a.name, a.addr) for a in rt[index]]
        expect(f"{label}/default", ours, [(a.display_name, a.addr_spec) for a in default[index]])
        decoded = [(str(make_header(decode_header(n))), a) for n, a in legacy[index]]
        expect(f"{label}/compat32", ours, decoded)
    expect("subject/default", subject, default[6])
    expect("subject/compat32", subject, legacy[6])
    del from_, to, cc, references, in_reply_to

    gen = MessageIdGenerator(DOMAIN, KEY)
    plain = gen.generate()
    if not re.fullmatch(rf"<[a-z2-7]+@{re.escape(DOMAIN)}>", plain):
        raise AssertionError(f"unexpected plain id {plain!r}")
    token = gen.verify(gen.generate(ref=REF))
    expect("verify(generate(ref)).ref", token.ref if token else None, REF)
    expect("verify(plain)", gen.verify(plain), None)
    if not make_msgid(domain=DOMAIN).endswith(f"@{DOMAIN}>"):
        raise AssertionError("make_msgid ignored its domain")


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def run_rounds(cases: list[Case], rounds: int, log: Callable[[str], None]) -> None:
    for round_no in range(1, rounds + 1):
        for case in cases:
            # Timer.timeit disables the garbage collector while it runs, as Timer.repeat does.
            seconds = case.timer.timeit(case.loops)
            case.per_call_us.append(seconds / case.loops * 1e6)
        if round_no % 5 == 0 or round_no == rounds:
            log(f"round {round_no}/{rounds}")


def summary(case: Case) -> dict[str, Any]:
    times = sorted(case.per_call_us)
    p95 = statistics.quantiles(times, n=20, method="inclusive")[18]
    return {
        "what": case.what,
        "median_us": round(statistics.median(times), 4),
        "p95_us": round(p95, 4),
        "min_us": round(times[0], 4),
        "loops": case.loops,
        "rounds": len(times),
    }


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def evaluate(results: dict[str, dict[str, Any]]) -> tuple[dict[str, float], dict[str, Any]]:
    ratios = {
        f"{num}/{den}": round(results[num]["median_us"] / results[den]["median_us"], 2)
        for num, den in RATIOS
    }
    targets: dict[str, Any] = {}
    for name, source, op, limit in TARGETS:
        value = ratios[source] if "/" in source else results[source]["median_us"]
        met = value <= limit if op == "<=" else value >= limit
        targets[name] = {"value": value, "op": op, "limit": limit, "met": met}
    return ratios, targets


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time replytrack's header parsing and Message-IDs against the standard "
        "library; print a JSON report."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a short, noisier run: {QUICK['rounds']} rounds of about "
        f"{QUICK['min_seconds']} s per case (default: {FULL['rounds']} rounds of "
        f"{FULL['min_seconds']} s)",
    )
    parser.add_argument("--output", type=Path, help="also write the JSON report to this file")
    parser.add_argument("--rounds", type=int, help="override the number of rounds (at least 2)")
    # For the smoke test: a fixed number of loops per round, no calibration.
    parser.add_argument("--loops", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 2:
        parser.error("--rounds must be at least 2 (a percentile needs two rounds)")
    if args.loops is not None and args.loops < 1:
        parser.error("--loops must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its JSON report; return the exit status."""
    args = parse_args(argv)
    settings = dict(QUICK if args.quick else FULL)
    if args.rounds is not None:
        settings["rounds"] = args.rounds

    log = _common.stderr_logger("bench_parse")

    data = SAMPLE.read_bytes()
    check_agreement(data)
    load_start = _common.load_average()
    started = dt.datetime.now(dt.timezone.utc)

    cases = build_cases(data)
    for case in cases:
        case.loops = args.loops or _common.autorange(case.timer, settings["min_seconds"])
        log(f"{case.name}: {case.loops} loops per round")
    run_rounds(cases, int(settings["rounds"]), log)
    results = {case.name: summary(case) for case in cases}
    ratios, targets = evaluate(results)

    header_end = data.find(b"\r\n\r\n")
    report = {
        "benchmark": "bench_parse",
        "schema": SCHEMA_VERSION,
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1),
        "mode": "fixed-loops" if args.loops else ("quick" if args.quick else "full"),
        "settings": {
            "rounds": settings["rounds"],
            "min_seconds_per_round": None if args.loops else settings["min_seconds"],
            "fixed_loops": args.loops,
            "gc_disabled_while_timing": True,
            "interleaved": True,
        },
        "sample": {
            "file": SAMPLE.relative_to(HERE.parent).as_posix(),
            "bytes": len(data),
            "header_block_bytes": header_end + 4 if header_end >= 0 else None,
            "sha256": hashlib.sha256(data).hexdigest(),
        },
        "environment": _common.environment(),
        "load_average": {"start": load_start, "end": _common.load_average()},
        "results": results,
        "ratios": ratios,
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
