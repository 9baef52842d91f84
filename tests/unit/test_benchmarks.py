"""Smoke test of benchmarks/bench_parse.py: it runs and its report has the documented shape.

No timing is asserted here: timings belong to the benchmark's own report.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

CASES = {
    "replytrack",
    "stdlib_default",
    "stdlib_compat32",
    "msgid_generate_plain",
    "msgid_generate_ref",
    "msgid_verify",
    "stdlib_make_msgid",
}


@pytest.fixture(scope="module")
def bench(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("bench_parse")


def test_quick_run_reports_every_case_ratio_and_target(
    bench: ModuleType, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    output = tmp_path / "results" / "report.json"
    status = bench.main(["--quick", "--loops", "3", "--rounds", "2", "--output", str(output)])
    out = capsys.readouterr().out
    report = json.loads(out)

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
    assert set(report["results"]) == CASES
    for result in report["results"].values():
        assert {"what", "median_us", "p95_us", "min_us", "loops", "rounds"} <= set(result)
        assert 0 < result["min_us"] <= result["median_us"] <= result["p95_us"]
        assert (result["loops"], result["rounds"]) == (3, 2)
    assert set(report["ratios"]) == {
        "stdlib_compat32/replytrack",
        "stdlib_default/replytrack",
        "stdlib_make_msgid/msgid_generate_plain",
    }
    assert set(report["targets"]) == {
        "parse_median_us",
        "parse_speedup_vs_compat32",
        "generate_ref_median_us",
        "generate_plain_median_us",
    }
    for target in report["targets"].values():
        assert isinstance(target["met"], bool)
    assert {"python", "platform", "cpu_count", "replytrack"} <= set(report["environment"])
    assert report["sample"]["file"] == "benchmarks/data/reply-3k.eml"


def test_sanity_check_catches_a_parse_that_disagrees(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replytrack result that differs from the standard library stops the benchmark."""
    real = bench.parse_replytrack

    def broken(data: bytes) -> tuple[object, ...]:
        _, *rest = real(data)
        return ("wrong@example.com", *rest)

    monkeypatch.setattr(bench, "parse_replytrack", broken)
    with pytest.raises(AssertionError, match="message_id"):
        bench.check_agreement(bench.SAMPLE.read_bytes())
