"""Smoke test of benchmarks/bench_store.py: it builds a small fixture, reuses it, reports.

No timing is asserted here: timings belong to the benchmark's own report.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

CASES = {
    "find_sent_hit",
    "find_sent_reply",
    "find_sent_miss",
    "find_incoming_miss",
    "find_sent_by_thread_index",
    "find_sent_by_ref",
    "find_sent_by_subject",
    "is_processed",
}


@pytest.fixture(scope="module")
def bench(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("bench_store")


def test_a_small_run_builds_the_fixture_once_and_reports_every_case(
    bench: ModuleType, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["--sends", "300", "--rounds", "2", "--loops", "3", "--data-dir", str(tmp_path)]
    output = tmp_path / "report.json"
    assert bench.main([*argv, "--output", str(output)]) == 0
    first = json.loads(capsys.readouterr().out)
    assert json.loads(output.read_text(encoding="utf-8")) == first
    assert first["fixture"]["sends"] == 300
    assert first["fixture"]["build_seconds"] is not None
    assert set(first["results"]) == CASES
    for result in first["results"].values():
        assert {"what", "per_second", "median_us", "p95_us", "min_us"} <= set(result)
        assert (result["loops"], result["rounds"]) == (3, 2)
    assert set(first["targets"]) == {"reply_lookups_per_second", "miss_lookups_per_second"}

    assert bench.main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["fixture"]["build_seconds"] is None  # reused, not rebuilt
    assert [p.name for p in tmp_path.glob("*.db*")] == [Path(first["fixture"]["path"]).name]
