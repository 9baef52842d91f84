"""Fuzz `replytrack.parse_headers`: the first thing every incoming message goes through.

Run (see README.md)::

    .venv/bin/python fuzz/fuzz_parse_headers.py --runs 1000000 --report parse_headers.json

Each input is a raw message. The check reads every field a correlator reads, and asserts what
the module promises whatever the input (``headers.py`` Rules 1, 5 and 6): no exception, the
bytes and the str of the same message parse alike, ids and id lists are bounded, and every id
read back in brackets is itself (stores keep ids in that form and look them up that way).
"""

# ruff: noqa: S101 - the asserts are the checks; one that fails is a finding

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _runner  # found through the sys.path line above

with _runner.instrumented(__name__ == "__main__"):
    from replytrack.headers import (
        MAX_ID_LENGTH,
        MAX_IDS_PER_FIELD,
        normalize_msg_id,
        normalize_subject,
        parse_headers,
    )


def check(data: bytes) -> None:
    """Parse `data` as bytes and as text; read everything; assert the promised bounds."""
    headers = parse_headers(data)
    ids = [headers.message_id, *headers.in_reply_to, *headers.references]
    for addresses in (headers.from_, headers.sender, headers.reply_to, headers.to, headers.cc):
        for address in addresses:
            _ = (address.local, address.domain, str(address))
    subject = headers.subject
    if subject is not None:
        assert normalize_subject(normalize_subject(subject)) == normalize_subject(subject)
    _ = (headers.date, headers.defects, headers.fields, headers.get_all("received"))
    assert len(headers.in_reply_to) <= MAX_IDS_PER_FIELD
    assert len(headers.references) <= MAX_IDS_PER_FIELD
    for mid in ids:
        if mid is not None:
            assert 0 < len(mid) <= MAX_ID_LENGTH, mid
            assert normalize_msg_id(f"<{mid}>") == mid, mid
    text = data.decode("utf-8", "surrogateescape")
    assert parse_headers(text) == headers


if __name__ == "__main__":
    _runner.main("parse_headers", check)
