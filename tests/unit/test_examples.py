"""The examples are documentation: each must run and print what it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent.parent / "examples"


def test_match_a_reply_recognises_the_reply_from_the_cc_colleague() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "match_a_reply.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "reply from sam@customer.example answers send 'c42:p7'" in out


def run_example(name: str, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def test_quickstart_fires_both_hooks_once() -> None:
    out = run_example("quickstart.py")
    assert "campaign_stop: stop sequence campaign-42:prospect-7 (reply)" in out
    assert "crm_log: reply from jo@customer.example:" in out
    assert "processed again: 0 new events" in out


def test_salesforce_hook_prints_task_payloads() -> None:
    out = run_example("salesforce_hook.py")
    tasks = json.loads("[" + out.rsplit("\n", 2)[0].replace("}\n{", "},\n{") + "]")
    assert [t["Subject"] for t in tasks] == [
        "Email out-of-office: Réponse automatique: Quick question",
        "Email reply: Re: Quick question",
    ]
    assert {t["WhoId"] for t in tasks} == {"003Dn00000AbCdEIAX"}
    assert tasks[1]["Description"].startswith("Yes - Tuesday at 10?")
    assert all(t["ReplyTrack_Event_Id__c"].startswith("evt_") for t in tasks)
    assert out.rstrip().endswith("2 tasks")


def test_custom_source_polls_and_resumes_from_its_cursor() -> None:
    out = run_example("custom_source.py")
    assert "stop c42:p7: reply from Jo Prospect <jo@customer.example>" in out
    assert "stop c42:p7: bounce from" in out
    assert out.count("PollResult(seen=1, matched=1, events=1") == 2


def test_worker_retries_the_failed_hook_on_the_next_iteration() -> None:
    out = run_example("worker.py", "--iterations", "2", "--interval", "0.05")
    assert "iteration 1: 1 new, 1 events, 0 retried ok" in out
    assert "crm_log: logged reply for c42:p7" in out
    assert "iteration 2: 0 new, 0 events, 1 retried ok, 0 failed again" in out


def test_workers_share_the_mailboxes_deliver_each_reply_once_and_stop_on_sigterm() -> None:
    out = run_example("workers.py", "--workers", "2", "--mailboxes", "3", "--replies", "4")
    assert "2 workers, 3 mailboxes, 12 replies (+ 6 unrelated messages)" in out
    assert "all 12 of 12 replies delivered" in out
    assert "12 campaign_stop and 12 crm_log calls, 0 duplicates" in out
    assert out.count(", exit code 0") == 2
    assert out.rstrip().endswith("every worker exited cleanly on SIGTERM")
