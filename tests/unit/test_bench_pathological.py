"""Smoke test of benchmarks/bench_pathological.py: it runs and its report has the documented shape.

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
    return load_benchmark("bench_pathological")


def test_a_quick_run_of_two_cases_reports_the_documented_keys(
    bench: ModuleType, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    output = tmp_path / "report.json"
    status = bench.main(
        [
            "--quick",
            "--rounds",
            "1",
            "--cases",
            "references_10000,nested_10000",
            "--output",
            str(output),
        ]
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
        "environment",
        "load_average",
        "results",
        "targets",
        "all_targets_met",
    } <= set(report)
    assert report["benchmark"] == "bench_pathological"
    assert set(report["results"]) == {"references_10000", "nested_10000"}
    for name, result in report["results"].items():
        assert {"what", "bytes", "header_bytes", "sha256"} <= set(result)
        for op in ("parse", "classify", "correlate"):
            assert {"median_ms", "max_ms", "peak_memory_mib"} <= set(result[op])
            # Only the header cases are measured per 64 KB of headers.
            assert ("ms_per_64k_headers" in result[op]) is (name == "references_10000")
    assert set(report["targets"]) == {"max_ms_per_64k_headers", "max_peak_memory_mib"}


def test_the_cases_are_deterministic_and_named_once(bench: ModuleType) -> None:
    first = bench.build_cases()
    second = bench.build_cases()

    assert [(c.name, c.data) for c in first] == [(c.name, c.data) for c in second]
    assert len({c.name for c in first}) == len(first)


def test_an_unknown_case_is_refused(bench: ModuleType) -> None:
    with pytest.raises(SystemExit, match="unknown cases: nope"):
        bench.main(["--quick", "--cases", "nope"])
