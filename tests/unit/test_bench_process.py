"""Smoke test of benchmarks/bench_process.py: a tiny run reports, and every reply is a STOP.

No timing is asserted here: timings belong to the benchmark's own report.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("bench_process")


def test_a_tiny_run_reports_and_every_reply_stops_its_campaign(
    bench: ModuleType, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    output = tmp_path / "results" / "report.json"
    argv = ["--sends", "500", "--messages", "200", "--profile-messages", "40"]
    assert bench.main([*argv, "--data-dir", str(tmp_path), "--output", str(output)]) == 0
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
        "events",
        "hook_calls",
        "store_after",
        "sanity",
        "memory",
        "profile",
        "targets",
        "all_targets_met",
    } <= set(report)
    assert (report["settings"]["sends"], report["settings"]["messages"]) == (500, 200)
    assert report["settings"]["synchronous"] == "FULL"
    process = report["results"]["process"]
    assert process["messages"] == 200
    assert {"per_second", "median_us", "p95_us", "p99_us"} <= set(process)
    assert set(report["targets"]) == {
        "messages_per_second",
        "tracemalloc_peak_growth",
        "max_rss_growth",
    }
    assert report["memory"]["checkpoints"] == [50, 200]
    assert len(report["memory"]["tracemalloc"]["peak_kib"]) == 2
    assert len(report["memory"]["max_rss_mb"]["at_checkpoints"]) == 2
    assert report["sanity"] == {"ok": True, "failures": 0, "examples": []}

    # Every reply produced exactly one event, a STOP; unrelated mail none.
    events = report["events"]["by_category"]
    replies = events["reply"]["messages"]
    assert replies > 0
    assert events["reply"]["events"] == replies
    assert events["reply"]["by_action"] == {"stop": replies}
    assert events["reply"]["by_kind"] == {"reply": replies}
    for category in ("out_of_office", "bounce"):
        assert events[category]["messages"] > 0
        assert events[category]["events"] == events[category]["messages"]
    assert events["unrelated"]["messages"] > 0
    assert events["unrelated"]["events"] == 0
    total = report["events"]["total"]
    assert report["hook_calls"]["crm_log"] == total
    stops_and_pauses = sum(
        n for action, n in report["events"]["by_action"].items() if action in ("stop", "pause")
    )
    assert report["hook_calls"]["campaign_stop"] == stops_and_pauses

    # The store copy saw every message once, delivered every hook call, and is gone.
    after = report["store_after"]
    assert after["ledger_rows"] == after["messages_processed"]
    assert set(after["outbox_by_state"]) == {"delivered"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("bench_process-")] == []
    with contextlib.closing(sqlite3.connect(report["fixture"]["path"])) as fixture:
        assert fixture.execute("SELECT COUNT(*) FROM processed").fetchone() == (0,)

    profile = report["profile"]
    assert profile["messages"] == 40
    assert len(profile["top_cumulative"]) == 10
    assert profile["top_cumulative"][0]["function"].startswith("replytrack/tracker.py")


def test_passes_never_repeat_a_message_id(bench: ModuleType) -> None:
    pool = bench.bc.build_pool(13, seed=7)
    ids = set()
    for shift in (0, 1, 2, 3):
        for m in bench.bc.stream(bench.rotated(pool, shift), 1000, 60, seed=8):
            header = m.raw.split(b"\r\n\r\n", 1)[0]
            (line,) = [x for x in header.split(b"\r\n") if x.lower().startswith(b"message-id:")]
            ids.add(line)
    assert len(ids) == 4 * 60
