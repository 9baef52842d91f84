"""Smoke test of tools/evaluate_classify.py: it runs, counts kinds and scores expectations."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent
TOOL = ROOT / "tools" / "evaluate_classify.py"
EXPECTED = ROOT / "tools" / "expected_corpus.json"
BOUNCES = ROOT / "tests" / "corpus" / "flanker" / "bounce"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


def test_text_report_shows_kinds_and_agreement() -> None:
    out = _run(str(BOUNCES), "--expected", str(EXPECTED)).stdout
    assert "kinds:" in out
    assert "bounce_detected" in out
    assert "9/9 (100.0 %)" in out


def test_json_report() -> None:
    report = json.loads(_run(str(BOUNCES), "--expected", str(EXPECTED), "--json").stdout)
    assert report["messages"] == 9
    assert report["kinds"].get("bounce", 0) + report["kinds"].get("delay", 0) == 9
    assert report["agreement"]["bounce_detected"]["hits"] == 9
    assert set(report["files"]) == {p.as_posix() for p in sorted(BOUNCES.iterdir())}


def test_expected_file_lists_every_corpus_message_it_names() -> None:
    expected = json.loads(EXPECTED.read_text(encoding="utf-8"))["messages"]
    corpus = ROOT / "tests" / "corpus"
    assert all((corpus / name).is_file() for name in expected)
    assert {"bounce", "delay", "complaint", "receipt", "reply"} <= {
        e["kind"] for e in expected.values()
    }
