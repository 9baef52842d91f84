"""Evaluate replytrack's classification on folders of real messages.

Usage::

    python tools/evaluate_classify.py FOLDER... [--expected FILE.json] [--json]

Every regular file below each FOLDER is one message (``*.md``, ``*.json``, ``*.py`` and dot
files are skipped). For each the command runs ``replytrack.classify.classify`` — or, while that
module does not exist, ``replytrack.dsn.analyze_report``, which only tells reports from the rest
— and prints the distribution of kinds. With ``--expected`` it also prints agreement figures:

* bounce detected: expected bounce/delay messages classified as bounce or delay;
* kind agreement: expected kind == classified kind (for every expected message);
* recipients: detected bounces whose failed-recipient set is exactly the expected one;
* status / reason / hard: per expected recipient that carries the field, the classified
  recipient with the same address agrees;
* original message id: expected id == classified ``original_message_id``;
* human not automated: messages expected as ``reply`` classified as ``reply``.

When ``flufl.bounce`` is importable, its ``all_failures`` runs side by side on the expected
bounces (detection and exact recipient set), for comparison.

The expected file is JSON: ``{"messages": {"<path relative to the folder's parent>": {"kind":
"bounce", "recipients": {"a@b.example": {"status": "5.1.1", "reason": "userunknown", "hard":
true}}, "original_message_id": "..."}}}``; ``"recipients"`` and the per-recipient fields are
optional. Paths are matched by suffix, so the folder may be given from anywhere.
"""

from __future__ import annotations

import argparse
import collections
import email
import email.message
import email.policy
import importlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from replytrack.dsn import analyze_report
from replytrack.headers import parse_headers

#: ``classify`` reads at most this many bytes of a message (the same limit as replytrack's).
LIMIT = 512 * 1024

Result = dict[str, Any]


def _classifier() -> tuple[str, Callable[[bytes], Result]]:
    """The best classifier available: ``classify`` when importable, else ``analyze_report``."""
    try:
        classify_module = importlib.import_module("replytrack.classify")
        classify = classify_module.classify
    except (ImportError, AttributeError):
        classify = None
    if classify is not None:

        def run_classify(data: bytes) -> Result:
            c = classify(data)
            kind = getattr(c.kind, "value", c.kind)
            return _result(str(kind).lower(), getattr(c, "bounce", None), c)

        return "replytrack.classify.classify", run_classify

    def run_dsn(data: bytes) -> Result:
        message = email.message_from_bytes(data[:LIMIT], policy=email.policy.compat32)
        report = analyze_report(message, parse_headers(data))
        if report is None:
            return {"kind": "reply", "recipients": {}, "original_message_id": None}
        return _result(report.kind, report.bounce, report)

    return "replytrack.dsn.analyze_report (classify not available)", run_dsn


def _result(kind: str, bounce: Any, whole: Any) -> Result:
    recipients: dict[str, dict[str, Any]] = {}
    for r in getattr(bounce, "recipients", ()) or ():
        recipients[r.address.lower()] = {"status": r.status, "reason": r.reason, "hard": r.hard}
    mid = getattr(bounce, "original_message_id", None) or getattr(
        whole, "original_message_id", None
    )
    return {"kind": kind, "recipients": recipients, "original_message_id": mid}


def _flufl() -> Callable[[email.message.Message], tuple[set[str], set[str]]] | None:
    try:
        flufl_bounce = importlib.import_module("flufl.bounce")
    except ImportError:
        return None

    def run(message: email.message.Message) -> tuple[set[str], set[str]]:
        temporary, permanent = flufl_bounce.all_failures(message)
        return (
            {a.decode("ascii", "replace").lower() for a in temporary},
            {a.decode("ascii", "replace").lower() for a in permanent},
        )

    return run


def _messages(folders: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for folder in folders:
        root = Path(folder)
        candidates = [root] if root.is_file() else sorted(root.rglob("*"))
        for path in candidates:
            if not path.is_file() or path.name.startswith("."):
                continue
            if path.suffix in (".md", ".json", ".py", ".pyc"):
                continue
            files.append(path)
    return files


def _lookup(expected: dict[str, Result], path: Path) -> Result | None:
    text = path.as_posix()
    for key, value in expected.items():
        if text == key or text.endswith("/" + key):
            return value
    return None


class _Tally:
    """A ratio that prints as "hits/total (pct %)"."""

    def __init__(self) -> None:
        self.hits = 0
        self.total = 0
        self.misses: list[str] = []

    def add(self, ok: bool, label: str) -> None:
        self.total += 1
        self.hits += ok
        if not ok:
            self.misses.append(label)

    def as_dict(self) -> dict[str, Any]:
        pct = round(100 * self.hits / self.total, 1) if self.total else None
        return {"hits": self.hits, "total": self.total, "percent": pct, "misses": self.misses}

    def __str__(self) -> str:
        if not self.total:
            return "n/a"
        return f"{self.hits}/{self.total} ({100 * self.hits / self.total:.1f} %)"


def evaluate(folders: Sequence[str], expected_file: str | None = None) -> dict[str, Any]:
    """Classify every message below `folders`; compare with `expected_file` when given.

    Args:
        folders: folders (or single files) of messages.
        expected_file: a JSON file of expected results (see the module docstring), or None.

    Returns:
        A JSON-serialisable report: ``classifier``, ``kinds`` (distribution), ``files`` and,
        with expectations, ``agreement`` figures and ``flufl`` figures when available.
    """
    name, run = _classifier()
    flufl = _flufl()
    expected: dict[str, Result] = {}
    if expected_file:
        expected = json.loads(Path(expected_file).read_text(encoding="utf-8"))["messages"]
    kinds: collections.Counter[str] = collections.Counter()
    tallies = {
        key: _Tally()
        for key in (
            "bounce_detected",
            "kind",
            "recipients",
            "status",
            "reason",
            "hard",
            "original_message_id",
            "human_not_automated",
        )
    }
    flufl_tallies = {"bounce_detected": _Tally(), "recipients": _Tally()}
    files: dict[str, Result] = {}
    started = time.perf_counter()
    slowest = (0.0, "")
    for path in _messages(folders):
        data = path.read_bytes()
        t0 = time.perf_counter()
        got = run(data)
        elapsed = time.perf_counter() - t0
        slowest = max(slowest, (elapsed, path.as_posix()))
        label = path.as_posix()
        kinds[got["kind"]] += 1
        files[label] = got
        want = _lookup(expected, path)
        if want is None:
            continue
        _compare(tallies, label, want, got)
        if flufl is not None and want["kind"] in ("bounce", "delay"):
            message = email.message_from_bytes(data, policy=email.policy.compat32)
            temporary, permanent = flufl(message)
            found = temporary | permanent
            flufl_tallies["bounce_detected"].add(bool(found), label)
            if "recipients" in want:
                flufl_tallies["recipients"].add(found == set(want["recipients"]), label)
    out: dict[str, Any] = {
        "classifier": name,
        "messages": len(files),
        "seconds": round(time.perf_counter() - started, 3),
        "slowest": {"file": slowest[1], "seconds": round(slowest[0], 4)},
        "kinds": dict(sorted(kinds.items())),
        "files": files,
    }
    if expected:
        out["agreement"] = {k: v.as_dict() for k, v in tallies.items()}
        if flufl is not None:
            out["flufl"] = {k: v.as_dict() for k, v in flufl_tallies.items()}
    return out


def _compare(tallies: dict[str, _Tally], label: str, want: Result, got: Result) -> None:
    kind = want["kind"]
    tallies["kind"].add(got["kind"] == kind, label)
    if kind == "reply":
        tallies["human_not_automated"].add(got["kind"] == "reply", label)
        return
    if kind not in ("bounce", "delay"):
        return
    detected = got["kind"] in ("bounce", "delay")
    tallies["bounce_detected"].add(detected, label)
    if not detected:
        return
    if "recipients" in want:
        wanted = {a.lower(): v for a, v in want["recipients"].items()}
        tallies["recipients"].add(set(wanted) == set(got["recipients"]), label)
        for address, fields in wanted.items():
            mine = got["recipients"].get(address)
            for key in ("status", "reason", "hard"):
                if key in fields:
                    ok = mine is not None and mine.get(key) == fields[key]
                    tallies[key].add(ok, f"{label} {address} {key}")
    if "original_message_id" in want:
        ok = got["original_message_id"] == want["original_message_id"]
        tallies["original_message_id"].add(ok, label)


def _print(report: dict[str, Any]) -> None:
    print(f"classifier: {report['classifier']}")
    print(f"messages:   {report['messages']} in {report['seconds']} s")
    print(f"slowest:    {report['slowest']['seconds'] * 1000:.1f} ms  {report['slowest']['file']}")
    print("kinds:")
    for kind, count in report["kinds"].items():
        print(f"  {kind:<16} {count}")
    if "agreement" in report:
        print("agreement with expected results:")
        for key, tally in report["agreement"].items():
            shown = (
                f"{tally['hits']}/{tally['total']} ({tally['percent']} %)"
                if tally["total"]
                else "n/a"
            )
            print(f"  {key:<22} {shown}")
            for miss in tally["misses"][:20]:
                print(f"      miss: {miss}")
    if "flufl" in report:
        print("flufl.bounce on the expected bounces:")
        for key, tally in report["flufl"].items():
            print(f"  {key:<22} {tally['hits']}/{tally['total']} ({tally['percent']} %)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: the arguments, without the program name; ``sys.argv[1:]`` when None.

    Returns:
        The exit status: 0.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="folders (or files) of messages")
    parser.add_argument("--expected", help="JSON file of expected results")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    args = parser.parse_args(argv)
    report = evaluate(args.folders, args.expected)
    if args.json:
        json.dump(report, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        _print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
