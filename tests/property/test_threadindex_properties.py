"""Properties of replytrack.threadindex: decode never raises, round trips, replies keep GUIDs."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from replytrack.threadindex import CHILD_BLOCK_BYTES, Layout, ThreadIndex

FAST = settings(max_examples=300, deadline=None)

blocks = st.binary(min_size=CHILD_BLOCK_BYTES, max_size=CHILD_BLOCK_BYTES)
classic_filetimes = st.builds(
    lambda second, rest: (0x01 << 56) | (second << 48) | (rest << 16),
    st.integers(0, 255).filter(lambda b: b != 0x01),
    st.integers(0, (1 << 32) - 1),
)
prefixed_filetimes = st.builds(
    lambda rest: (0x01 << 56) | (rest << 24), st.integers(0, (1 << 32) - 1)
)
indexes = st.one_of(
    st.builds(
        ThreadIndex,
        guid=st.binary(min_size=16, max_size=16),
        filetime=classic_filetimes,
        children=st.lists(blocks, max_size=8).map(tuple),
        layout=st.just(Layout.CLASSIC),
    ),
    st.builds(
        ThreadIndex,
        guid=st.binary(min_size=16, max_size=16),
        filetime=prefixed_filetimes,
        children=st.lists(blocks, max_size=8).map(tuple),
        layout=st.just(Layout.PREFIXED),
    ),
)
times = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2056, 1, 1), timezones=st.just(timezone.utc)
)


@FAST
@given(value=st.text())
def test_decode_never_raises_on_text(value: str) -> None:
    result = ThreadIndex.decode(value)
    assert result is None or isinstance(result, ThreadIndex)


@FAST
@given(raw=st.binary(max_size=80))
def test_decode_never_raises_on_any_base64(raw: bytes) -> None:
    result = ThreadIndex.decode(base64.b64encode(raw).decode())
    if result is not None:
        assert result.to_bytes() == raw


@FAST
@given(index=indexes)
def test_decode_of_encode_is_identity(index: ThreadIndex) -> None:
    assert ThreadIndex.decode(index.encode()) == index


@FAST
@given(index=indexes, delay=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=9000)))
def test_child_keeps_the_guid_and_header_and_adds_one_block(
    index: ThreadIndex, delay: timedelta
) -> None:
    reply = index.child(now=index.header_time + delay, random=0)
    assert reply.guid == index.guid
    assert reply.header == index.header
    assert reply.children[:-1] == index.children
    assert reply.child_count == index.child_count + 1
    assert ThreadIndex.decode(reply.encode()) == reply


@FAST
@given(now=times, guid=st.binary(min_size=16, max_size=16))
def test_new_round_trips_in_both_layouts(now: datetime, guid: bytes) -> None:
    for layout in Layout:
        index = ThreadIndex.new(now=now, guid=guid, layout=layout)
        assert ThreadIndex.decode(index.encode()) == index
        assert timedelta(0) <= now - index.header_time < timedelta(seconds=2)
