"""What every atheris harness in this folder shares: seeds, counting, the JSON report.

A harness defines one ``check(data: bytes) -> None`` function that calls a replytrack entry
point the way a mailbox source would, asserts what must hold whatever the input, and returns.
`main` runs it under atheris (libFuzzer) with a counting wrapper:

* every input is counted, and timed; the slowest input is kept (``slowest.bin``);
* an exception out of ``check`` is an *unhandled exception*: it is counted, its type and
  message are recorded, the first input that raised it is saved under ``crashes/`` (one
  file per distinct exception type and place), and fuzzing goes on (``--fail-fast``
  stops at the first one instead, as plain libFuzzer would);
* the JSON report (inputs, unhandled exceptions, exec/s, the slowest input, the exact command)
  is written every 10 seconds and at the end, to ``--report`` and to stdout; after
  ``--runs`` inputs the process exits, with status 1 if any input raised.

The seed corpus is drawn from ``tests/corpus`` (the files listed in ``seeds.txt``) plus the
harness's own synthetic seeds; it is copied into ``<workdir>/corpus``, where libFuzzer also
keeps the inputs it finds interesting. Nothing is written inside the repository unless
``--report`` or ``--workdir`` point there.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CORPUS = ROOT / "tests" / "corpus"
SEED_LIST = HERE / "seeds.txt"
REPORT_EVERY_SECONDS = 10.0


def corpus_seeds() -> list[tuple[str, bytes]]:
    """The seed files named in ``seeds.txt``: (name, bytes), in the listed order."""
    seeds = []
    for line in SEED_LIST.read_text(encoding="utf-8").splitlines():
        name = line.split("#", 1)[0].strip()
        if name:
            seeds.append((name, (CORPUS / name).read_bytes()))
    return seeds


class Counter:
    """Counts and times the inputs, records unhandled exceptions, writes the report."""

    def __init__(
        self,
        target: str,
        check: Callable[[bytes], None],
        *,
        runs: int,
        workdir: Path,
        report: Path | None,
        command: str,
        fail_fast: bool,
        libfuzzer_args: Sequence[str],
    ) -> None:
        self.target = target
        self.check = check
        self.runs = runs
        self.workdir = workdir
        self.report_path = report
        self.command = command
        self.fail_fast = fail_fast
        self.libfuzzer_args = list(libfuzzer_args)
        self.inputs = 0
        self.unhandled = 0
        self.distinct: dict[str, dict[str, Any]] = {}
        self.slowest = (0.0, b"")
        self.total_bytes = 0
        self.started = time.time()
        self.started_iso = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.last_report = time.monotonic()
        (workdir / "crashes").mkdir(parents=True, exist_ok=True)

    def __call__(self, data: bytes) -> None:
        """Run the harness's check on one input (the function libFuzzer calls)."""
        self.inputs += 1
        self.total_bytes += len(data)
        start = time.perf_counter()
        try:
            self.check(data)
        except Exception as exc:  # every exception out of a check is a finding
            self._record(data, exc)
            if self.fail_fast:
                self.write_report(final=True)
                raise
        elapsed = time.perf_counter() - start
        if elapsed > self.slowest[0]:
            self.slowest = (elapsed, data)
        if self.inputs >= self.runs:
            # Stop here rather than through libFuzzer's -runs: its count includes inputs it
            # runs for itself, and its exit skips Python's clean-up.
            self.write_report(final=True)
            sys.stdout.flush()
            os._exit(1 if self.unhandled else 0)
        if time.monotonic() - self.last_report > REPORT_EVERY_SECONDS:
            self.write_report(final=False)

    def _record(self, data: bytes, exc: Exception) -> None:
        self.unhandled += 1
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
        key = f"{type(exc).__name__} at {where}"
        if key not in self.distinct:
            digest = hashlib.sha1(data).hexdigest()[:16]  # noqa: S324 - a file name, not security
            path = self.workdir / "crashes" / f"{self.target}-{digest}.bin"
            path.write_bytes(data)
            self.distinct[key] = {
                "exception": type(exc).__name__,
                "message": str(exc)[:300],
                "where": where,
                "count": 0,
                "first_input": str(path),
                "traceback": traceback.format_exception(exc)[-6:],
            }
        self.distinct[key]["count"] += 1

    def report(self, *, final: bool) -> dict[str, Any]:
        """The report as a dict (see README.md for its keys)."""
        seconds = time.time() - self.started
        slowest_path = self.workdir / "slowest.bin"
        slowest_path.write_bytes(self.slowest[1])
        return {
            "harness": f"fuzz_{self.target}",
            "target": self.target,
            "schema": 1,
            "final": final,
            "started": self.started_iso,
            "seconds": round(seconds, 1),
            "runs_requested": self.runs,
            "inputs": self.inputs,
            "exec_per_second": round(self.inputs / seconds, 1) if seconds else None,
            "mean_input_bytes": round(self.total_bytes / self.inputs, 1) if self.inputs else 0,
            "unhandled_exceptions": self.unhandled,
            "distinct_exceptions": list(self.distinct.values()),
            "slowest_input": {
                "seconds": round(self.slowest[0], 4),
                "bytes": len(self.slowest[1]),
                "path": str(slowest_path),
            },
            "command": self.command,
            "libfuzzer_args": self.libfuzzer_args,
            "workdir": str(self.workdir),
            "environment": {
                "python": platform.python_version(),
                "atheris": version("atheris"),
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
                "load_average": [round(x, 2) for x in os.getloadavg()],
            },
        }

    def write_report(self, *, final: bool) -> None:
        """Write the report to ``--report`` (atomically) and, when final, to stdout."""
        self.last_report = time.monotonic()
        text = json.dumps(self.report(final=final), indent=2, sort_keys=False)
        if self.report_path is not None:
            tmp = self.report_path.with_suffix(".tmp")
            tmp.write_text(text + "\n", encoding="utf-8")
            tmp.replace(self.report_path)
        if final:
            print(text, flush=True)


def main(
    target: str,
    check: Callable[[bytes], None],
    extra_seeds: Iterable[tuple[str, bytes]] = (),
    argv: Sequence[str] | None = None,
) -> None:
    """Fuzz `check` under atheris until ``--runs`` inputs have run, then report and exit.

    Args:
        target: the harness's short name (``parse_headers``, ``classify`` ...).
        check: the function to fuzz; it raises only on a finding.
        extra_seeds: synthetic seeds, beside the corpus files of ``seeds.txt``.
        argv: the command line (default ``sys.argv``).
    """
    import atheris  # noqa: PLC0415 - only the fuzzing run needs it, not `--help` or tests

    argv = list(sys.argv if argv is None else argv)
    parser = argparse.ArgumentParser(description=f"Fuzz replytrack's {target} with atheris.")
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs to run")
    parser.add_argument("--report", type=Path, help="where to write the JSON report")
    parser.add_argument("--workdir", type=Path, help="corpus and findings (default: a temp dir)")
    parser.add_argument("--max-len", type=int, default=16384, help="libFuzzer -max_len")
    parser.add_argument("--timeout", type=int, default=10, help="libFuzzer -timeout (seconds)")
    parser.add_argument("--seed", type=int, default=1, help="libFuzzer -seed")
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first exception")
    parser.add_argument("--no-seeds", action="store_true", help="start from an empty corpus")
    args, rest = parser.parse_known_args(argv[1:])

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"replytrack-fuzz-{target}-"))
    corpus_dir = workdir / "corpus"
    corpus_dir.mkdir(parents=True, exist_ok=True)
    if not args.no_seeds:
        for name, data in [*corpus_seeds(), *extra_seeds]:
            safe = name.replace("/", "__")
            (corpus_dir / f"seed-{safe}").write_bytes(data)
    libfuzzer_args = [
        f"-max_len={args.max_len}",
        f"-timeout={args.timeout}",
        f"-seed={args.seed}",
        *rest,
        str(corpus_dir),
    ]
    counter = Counter(
        target,
        check,
        runs=args.runs,
        workdir=workdir,
        report=args.report,
        command=shlex.join([sys.executable, *argv]),
        fail_fast=args.fail_fast,
        libfuzzer_args=libfuzzer_args,
    )
    atheris.Setup([argv[0], *libfuzzer_args], counter)
    atheris.Fuzz()  # never returns: the counter ends the process after --runs inputs


def instrumented(fuzzing: bool) -> contextlib.AbstractContextManager[object]:
    """`atheris.instrument_imports` for replytrack when `fuzzing`, else a no-op.

    A harness imports replytrack inside this context, so that a fuzzing run gets coverage
    feedback from replytrack's code, while a test that imports the harness to replay inputs
    (``tests/unit/test_fuzz_regressions.py``) needs no atheris at all.
    """
    if not fuzzing:
        return contextlib.nullcontext()
    import atheris  # noqa: PLC0415 - optional: only fuzzing runs need it

    return atheris.instrument_imports(include=["replytrack"])  # type: ignore[no-any-return]
