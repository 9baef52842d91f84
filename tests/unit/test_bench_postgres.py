"""Smoke test of benchmarks/bench_postgres.py: a tiny fixture, two rounds, then reused.

No timing is asserted here: timings belong to the benchmark's own report.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from servers import PostgreSQL

pytest.importorskip("psycopg", reason="the postgres extra is not installed")


@pytest.fixture(scope="module")
def bench(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("bench_postgres")


def test_a_tiny_run_builds_the_fixture_once_and_reports_every_round(
    bench: ModuleType,
    postgres: PostgreSQL,  # skips (fails in CI) without PostgreSQL; the script starts its own
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    output = tmp_path / "results" / "report.json"
    argv = ["--sends", "400", "--messages", "60", "--workers", "1,2", "--data-dir", str(tmp_path)]
    assert bench.main([*argv, "--output", str(output)]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert json.loads(output.read_text(encoding="utf-8")) == report
    assert "correlations/s" in captured.err
    assert {
        "benchmark",
        "schema",
        "started",
        "seconds",
        "mode",
        "settings",
        "fixture",
        "server",
        "sample",
        "environment",
        "load_average",
        "results",
        "scaling",
        "notes",
        "sanity",
    } <= set(report)
    assert report["benchmark"] == "bench_postgres"
    assert report["sanity"] == {"ok": True, "failures": 0, "examples": []}
    assert report["fixture"]["sends"] == 400
    assert report["fixture"]["build_seconds"] is not None
    assert report["server"]["settings"]["fsync"] == "on"  # durable, unlike the tests' server
    assert report["server"]["settings"]["synchronous_commit"] == "on"
    assert set(report["results"]) == {"1", "2"}
    for workers, result in report["results"].items():
        assert result["workers"] == int(workers)
        assert result["messages"] == 60
        assert len(result["per_worker"]) == int(workers)
        assert sum(w["messages"] for w in result["per_worker"]) == 60
        assert {"per_second", "wall_seconds", "latency", "cpu_busy"} <= set(result)
        assert {"median_us", "p95_us", "p99_us"} <= set(result["latency"])
    assert report["scaling"]["1"] == 1.0
    assert {"psycopg", "postgres", "usable_cpus"} <= set(report["environment"])

    assert bench.main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["fixture"]["build_seconds"] is None  # the kept cluster's fixture, reused
    assert again["sanity"]["ok"]


def test_the_workers_shares_make_up_the_correlate_benchmarks_stream(bench: ModuleType) -> None:
    bc = bench.bc
    pool = bc.build_pool(20, seed=7)
    stream = [(m.send, m.raw) for m in bc.stream(pool, 1000, 50, seed=8)]
    shares = [list(bench.share(pool, 1000, 50, 8, workers=3, index=k)) for k in range(3)]
    assert [len(s) for s in shares] == [17, 17, 16]
    merged = [shares[seq % 3][seq // 3] for seq in range(50)]
    assert [(m.send, m.raw) for m in merged] == stream
