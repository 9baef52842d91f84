"""`TRACKING_FIELDS` holds every header field replytrack's decisions read.

Sources that can fetch chosen fields only (IMAP ``BODY.PEEK[HEADER.FIELDS (...)]``, Gmail
``format=metadata``) hand the tracker a header block cut down to these fields. On every message
of the corpus, the cut-down block must give the same threading values, the same "may this be a
report" answer (which decides whether the body is fetched) and the same classification as the
whole header block.
"""

from __future__ import annotations

import re

import pytest

from replytrack.classify import classify
from replytrack.dsn import may_be_report
from replytrack.headers import TRACKING_FIELDS, Headers, parse_headers
from replytrack.sources.memory import header_block
from replytrack.tracker import ORIGIN_HEADER

from .test_corpus_headers import MESSAGES, Sample

_WANTED = {name.lower() for name in TRACKING_FIELDS}
_FIELD_START = re.compile(rb"^([^\s:]+)[ \t]*:")


def cut_down(data: bytes) -> bytes:
    """The header block of `data` with only the TRACKING_FIELDS (folded lines kept)."""
    out: list[bytes] = []
    keep = False
    for line in header_block(data).splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        match = _FIELD_START.match(line)
        keep = match is not None and match.group(1).decode("latin-1").lower() in _WANTED
        if keep:
            out.append(line)
    return b"".join(out) + b"\r\n"


def threading(h: Headers) -> tuple[object, ...]:
    return (
        h.message_id,
        h.in_reply_to,
        h.references,
        h.from_,
        h.sender,
        h.reply_to,
        h.to,
        h.cc,
        h.subject,
        h.date,
        h.get("thread-index"),
    )


@pytest.mark.parametrize("sample", MESSAGES, ids=lambda s: s.id)
def test_cut_down_header_block_decides_the_same(sample: Sample) -> None:
    full = parse_headers(sample.data)
    cut = parse_headers(cut_down(sample.data))
    assert threading(cut) == threading(full)
    assert may_be_report(cut) == may_be_report(full)
    a, b = classify(sample.data, headers=full), classify(sample.data, headers=cut)
    assert b == a  # kind, reasons (the header evidence named), bounce, return date


def test_the_origin_header_is_fetched_so_learn_sent_works_on_header_blocks() -> None:
    assert ORIGIN_HEADER in TRACKING_FIELDS
