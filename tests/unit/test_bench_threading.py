"""Smoke test of benchmarks/bench_threading.py: it runs and its report has the documented shape.

No timing is asserted here: timings belong to the benchmark's own report.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("bench_threading")


def test_tiny_run_reports_the_documented_keys(
    bench: ModuleType, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    output = tmp_path / "report.json"
    status = bench.main(
        ["--messages", "300", "--rounds", "1", "--no-flanker", "--output", str(output)]
    )
    report = json.loads(capsys.readouterr().out)

    assert status == 0
    assert json.loads(output.read_text(encoding="utf-8")) == report
    assert {
        "benchmark",
        "schema",
        "started",
        "seconds",
        "mode",
        "settings",
        "sample",
        "environment",
        "load_average",
        "results",
        "ratios",
        "targets",
        "all_targets_met",
    } <= set(report)
    assert report["benchmark"] == "bench_threading"
    assert report["sample"]["messages"] == 300
    assert set(report["results"]) == {"replytrack", "replytrack_from_bytes"}
    for result in report["results"].values():
        assert {"median_s", "min_s", "messages_per_s", "peak_memory_bytes"} <= set(result)
    assert report["all_targets_met"] is False  # no reference, so no target can be met


def test_the_mailbox_is_deterministic(bench: ModuleType) -> None:
    first, stats = bench.generate_mailbox(500, 11)
    second, _ = bench.generate_mailbox(500, 11)

    assert first == second
    assert len(first) == 500
    assert stats["threads"] > 0
