"""What every benchmark script shares: the machine description, loop calibration, memory.

Imported by the ``bench_*.py`` scripts next to this file (each puts this folder on
``sys.path``, so it also works when a test loads a script by path).
"""

from __future__ import annotations

import os
import platform
import resource
import sqlite3
import sys
import timeit
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any


def installed(name: str) -> str | None:
    """The installed version of distribution `name`, or ``None``."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def environment(**extra: Any) -> dict[str, Any]:
    """The facts a reader needs to compare two reports, plus `extra` ones."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "compiler": platform.python_compiler(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "sqlite": sqlite3.sqlite_version,
        "replytrack": installed("replytrack") or "not installed",
        **extra,
    }


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages: how busy the machine was."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def max_rss_mb() -> float:
    """The process's peak resident memory so far, in MiB."""
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, 1)


def autorange(timer: timeit.Timer, min_seconds: float) -> int:
    """`timeit.Timer.autorange` with its 0.2 s target as a parameter."""
    i = 1
    while True:
        for loops in (i, 2 * i, 5 * i):
            if timer.timeit(loops) >= min_seconds:
                return loops
        i *= 10


def stderr_logger(script: str) -> Callable[[str], None]:
    """A progress logger for `script`: one line on stderr, so stdout stays the JSON report."""

    def log(message: str) -> None:
        print(f"{script}: {message}", file=sys.stderr, flush=True)

    return log
