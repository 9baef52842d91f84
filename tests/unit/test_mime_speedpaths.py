"""The faster paths of ``replytrack.mime`` read exactly what the code they replaced read.

``_Reader._header_end`` finds the end of a part's header block with one search for the first
line break not followed by a field or a continuation line; it replaced a search for the empty
line followed by a match of every line of the block. The reference here is that code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from replytrack import mime
from replytrack.testing import build_bounce, build_out_of_office, build_reply

PROPERTY = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_CORPUS = Path(__file__).parent.parent / "corpus"

_FIELD = rb"[\x21-\x39\x3b-\x7e]+:[^\n]*\n(?:[ \t][^\n]*\n)*"
_OLD_HEADER_BLOCK = re.compile(rb"(?:" + _FIELD + rb")*")
_OLD_EMPTY_LINE = re.compile(rb"\n\r?\n")


def _old_header_end(data: bytes, start: int, end: int) -> tuple[int, int] | None:
    """`_Reader._header_end` as it was; ``None`` for its `_UnsureError`."""
    if data.startswith(b"\n", start, end):
        return start, start + 1
    if data.startswith(b"\r\n", start, end):
        return start, start + 2
    blank = _OLD_EMPTY_LINE.search(data, start, end)
    if blank is None:
        return None
    fields_end, body = blank.start() + 1, blank.end()
    if _OLD_HEADER_BLOCK.fullmatch(data, start, fields_end) is None:
        return None
    return fields_end, body


def _header_end(data: bytes, start: int, end: int) -> tuple[int, int] | None:
    try:
        return mime._Reader(data)._header_end(start, end)
    except mime._UnsureError:
        return None


def _assert_same_everywhere(data: bytes) -> None:
    """Every line start as the part's start, and a few ends, as the reader uses them."""
    starts = [0] + [m.end() for m in re.finditer(rb"\n", data)]
    for start in starts[:40]:
        for end in {len(data), max(start, len(data) - 1), (start + len(data)) // 2}:
            assert _header_end(data, start, end) == _old_header_end(data, start, end), (
                start,
                end,
            )


_LINE = st.one_of(
    st.sampled_from(
        [
            b"Content-Type: text/plain",
            b"Subject: hi",
            b"X-A:",
            b":no-name",
            b"Name : value",
            b"From jo@example.com Mon Mar  1 09:30:00 2027",
            b" continued",
            b"\tcontinued",
            b"",
            b"\r",
            b"no colon here",
            b"Caf\xc3\xa9: x",
            b"A" * 40 + b":",
            b"--boundary",
        ]
    ),
    st.binary(max_size=12),
)
_ENDING = st.sampled_from([b"\n", b"\r\n", b"\r", b""])
_BLOCK = st.lists(st.tuples(_LINE, _ENDING), max_size=10).map(
    lambda lines: b"".join(line + ending for line, ending in lines)
)


@PROPERTY
@given(_BLOCK)
@example(b"Subject: hi\n\nbody")
@example(b"Subject: hi\r\n\r\nbody")
@example(b"Subject: hi\n continued\n\r\nbody")
@example(b"Subject: hi\nbad line\n\nbody")
@example(b" Subject: hi\n\nbody")
@example(b"Subject: hi\n\r\rbody\n\n")
@example(b"Subject: hi\n")
@example(b"\nbody")
@example(b"")
def test_the_header_block_ends_where_it_ended(data: bytes) -> None:
    _assert_same_everywhere(data)


@pytest.mark.parametrize(
    "data",
    [
        build_reply(),
        build_reply(html=True),
        build_out_of_office(language="de"),
        build_bounce(),
        build_bounce(original_body="hello\n"),
    ],
)
def test_built_messages_end_their_header_blocks_where_they_did(data: bytes) -> None:
    for variant in (data, data.replace(b"\r\n", b"\n")):
        _assert_same_everywhere(variant)


def test_corpus_messages_end_their_header_blocks_where_they_did() -> None:
    paths = [p for p in sorted(_CORPUS.rglob("*")) if p.is_file() and p.suffix != ".md"]
    assert len(paths) > 100
    for path in paths:
        _assert_same_everywhere(path.read_bytes()[: 64 * 1024])
