"""Fuzz `replytrack.classify`: reports, auto-replies and MIME, all read from untrusted bytes.

Run (see README.md)::

    .venv/bin/python fuzz/fuzz_classify.py --runs 1000000 --report classify.json

Each input is a raw message. ``classify`` must never raise on mail (``classify.py`` Rule 3)
and must always say why it decided (Rule 4); bounce recipients are bounded (``dsn.py`` Rule 6).
"""

# ruff: noqa: S101 - the asserts are the checks; one that fails is a finding

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _runner  # found through the sys.path line above

with _runner.instrumented(__name__ == "__main__"):
    from replytrack.classify import Kind, classify
    from replytrack.dsn import MAX_RECIPIENTS


def check(data: bytes) -> None:
    """Classify `data`; assert the verdict's shape and bounds."""
    verdict = classify(data)
    assert isinstance(verdict.kind, Kind)
    assert verdict.reasons
    assert verdict.return_date is None or isinstance(verdict.return_date, dt.date)
    if verdict.bounce is not None:
        assert verdict.kind in (Kind.BOUNCE, Kind.DELAY, Kind.RECEIPT)
        assert len(verdict.bounce.recipients) <= 2 * MAX_RECIPIENTS


def extra_seeds() -> list[tuple[str, bytes]]:
    """Synthetic seeds from `replytrack.testing`: a reply, an out-of-office, bounces."""
    from replytrack import testing  # noqa: PLC0415 - seeds only, not instrumented

    return [
        ("testing-reply", testing.build_reply(html=True)),
        ("testing-ooo-de", testing.build_out_of_office(language="de")),
        ("testing-auto-reply", testing.build_auto_reply()),
        ("testing-bounce", testing.build_bounce()),
        ("testing-delay", testing.build_bounce(action="delayed", status="4.4.1")),
    ]


if __name__ == "__main__":
    _runner.main("classify", check, extra_seeds())
