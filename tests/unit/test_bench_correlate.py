"""Smoke test of benchmarks/bench_correlate.py: a tiny run reports, and every answer matched.

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
    return load_benchmark("bench_correlate")


def test_a_tiny_run_reports_and_matches_every_answer_and_nothing_else(
    bench: ModuleType, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    output = tmp_path / "results" / "report.json"
    argv = ["--sends", "500", "--messages", "200", "--data-dir", str(tmp_path)]
    assert bench.main([*argv, "--output", str(output)]) == 0
    report = json.loads(capsys.readouterr().out)

    assert json.loads(output.read_text(encoding="utf-8")) == report
    assert {
        "benchmark",
        "schema",
        "started",
        "seconds",
        "mode",
        "settings",
        "fixture",
        "sample",
        "environment",
        "load_average",
        "results",
        "matches",
        "sanity",
        "memory",
        "targets",
        "all_targets_met",
    } <= set(report)
    assert (report["settings"]["sends"], report["settings"]["messages"]) == (500, 200)
    assert report["fixture"]["build_seconds"] is not None
    correlate = report["results"]["correlate"]
    assert correlate["messages"] == 200
    assert {"per_second", "median_us", "p95_us", "p99_us"} <= set(correlate)
    assert set(report["targets"]) == {
        "correlations_per_second",
        "tracemalloc_peak_growth",
        "max_rss_growth",
    }
    assert report["memory"]["checkpoints"] == [50, 200]
    assert len(report["memory"]["tracemalloc"]["peak_kib"]) == 2
    assert len(report["memory"]["max_rss_mb"]["at_checkpoints"]) == 2

    assert report["sanity"] == {"ok": True, "failures": 0, "examples": []}
    matches = report["matches"]
    assert sum(m["messages"] for m in matches.values()) == 200
    for category in ("reply", "out_of_office", "bounce"):
        assert matches[category]["messages"] > 0
        assert matches[category]["matched"] == matches[category]["messages"]
        assert matches[category]["as_expected"] == matches[category]["messages"]
    assert set(matches["bounce"]["by_method"]) == {"bounce_original"}
    assert set(matches["reply"]["by_role"]) == {"recipient", "cc", "other"}
    assert matches["unrelated"]["messages"] > 0
    assert matches["unrelated"]["matched"] == 0


def test_the_stream_is_deterministic_and_every_message_distinct(bench: ModuleType) -> None:
    pool = bench.build_pool(20, seed=7)
    first = [m.raw for m in bench.stream(pool, 1000, 60, seed=8)]
    again = [m.raw for m in bench.stream(bench.build_pool(20, seed=7), 1000, 60, seed=8)]
    assert first == again
    assert len(set(first)) == 60
    assert not any(bench.PLACEHOLDER.search(raw) for raw in first)
