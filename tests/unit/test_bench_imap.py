"""Smoke test of benchmarks/bench_imap.py: a tiny folder on its own Dovecot, every section.

No timing is asserted here: timings belong to the benchmark's own report.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from servers import Dovecot

pytest.importorskip("imapclient", reason="the imap extra is not installed")


@pytest.fixture(scope="module")
def bench(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("bench_imap")


def test_a_small_run_reports_every_section(
    bench: ModuleType,
    dovecot: Dovecot,  # skips (fails in CI) where Dovecot is missing; the script starts its own
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    output = tmp_path / "report.json"
    argv = ["--messages", "30", "--polls", "3", "--limit", "7", "--window", "4"]
    argv += ["--tracker-messages", "40", "--sends", "5"]
    assert bench.main([*argv, "--output", str(output)]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert json.loads(output.read_text(encoding="utf-8")) == report
    assert "messages/s" in captured.err  # the human summary
    assert report["benchmark"] == "bench_imap"
    assert report["sanity"] == {"ok": True, "failures": 0, "examples": []}
    assert report["settings"]["messages"] == 30
    assert report["server"]["version"]
    sync = report["results"]["initial_sync"]
    assert sync["messages"] == 30
    assert sync["batches"] == 5  # 7 per fetch
    assert 0 < sync["header_data_bytes_per_message"] < sync["bytes_received_per_message"]
    assert sync["bytes_received_per_message"] < report["sample"]["bytes"]  # headers only
    idle = report["results"]["incremental_poll"]
    assert idle["polls"] == 3
    assert idle["commands_per_poll"] == 1  # EXAMINE: nothing new
    one = report["results"]["incremental_poll_one_new"]
    assert one["commands_per_poll"] == 2  # EXAMINE, FETCH
    assert {"median_ms", "p95_ms", "min_ms"} <= set(one)
    assert report["results"]["connections"] == 1
    assert report["settings"]["tracker_messages"] == 40
    track = report["results"]["tracker_poll"]
    # Message n is a reply when n % 20 < 7 and an out-of-office notice when n % 20 == 7.
    assert track["mix"] == {"replies": 14, "out_of_office": 2, "unrelated": 24}
    assert (track["messages"], track["matched"], track["events"]) == (40, 16, 16)
    assert track["kinds"] == {"reply": 14, "out_of_office": 2}
    assert track["hook_calls"] == {"crm_log": 16, "campaign_stop": 16}  # STOP, PAUSE
    assert track["batches"] == 6  # 7 per batch
    # A batch's bodies come in one UID FETCH (after a NOOP), not two commands per message:
    # per batch EXAMINE, the header FETCHes (windows of 4) and those two; LOGIN and LOGOUT.
    assert track["commands"] <= 6 * track["batches"] + 2
    assert track["commands_per_matched_message"] < 2
    assert track["connections"] == 1
    assert "tracker poll:" in captured.err
    assert {"python", "platform", "imapclient", "dovecot"} <= set(report["environment"])


def test_a_sanity_failure_sets_the_exit_status(
    bench: ModuleType,
    dovecot: Dovecot,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bench, "number", lambda data: 0)  # every message "is" number 0
    assert bench.main(["--messages", "3", "--polls", "1"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["sanity"]["ok"] is False


def test_a_tracker_check_that_fails_sets_the_exit_status(
    bench: ModuleType,
    dovecot: Dovecot,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bench.CountingHooks, "crm_log", lambda self, event: None)
    argv = ["--messages", "3", "--polls", "1", "--tracker-messages", "20", "--sends", "2"]
    assert bench.main(argv) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["sanity"]["ok"] is False
    assert any("crm_log called 0 times for 8 events" in f for f in report["sanity"]["examples"])
