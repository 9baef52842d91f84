"""Outlook Thread-Index: real values from the corpus, values built from [MS-OXOMSG], replies."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from replytrack.errors import ConfigError
from replytrack.headers import parse_headers
from replytrack.threadindex import (
    CHILD_BLOCK_BYTES,
    HEADER_BYTES,
    Layout,
    ThreadIndex,
    child_delta,
    thread_topic,
)

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
GUID = bytes(range(16))
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=timezone.utc)


def filetime(when: datetime) -> int:
    return (when - FILETIME_EPOCH) // timedelta(microseconds=1) * 10


def corpus_thread_indexes() -> list[tuple[str, str, datetime | None]]:
    found = []
    for path in sorted(CORPUS.rglob("*")):
        if not path.is_file():
            continue
        headers = parse_headers(path.read_bytes())
        value = headers.get("Thread-Index")
        if value is not None:
            found.append((path.relative_to(CORPUS).as_posix(), value, headers.date))
    return found


CORPUS_VALUES = corpus_thread_indexes()


def test_the_corpus_has_real_thread_index_values() -> None:
    assert len(CORPUS_VALUES) >= 5


@pytest.mark.parametrize(
    ("name", "value", "date"), CORPUS_VALUES, ids=[v[0] for v in CORPUS_VALUES]
)
def test_real_values_decode_to_a_classic_header_dated_like_the_message(
    name: str, value: str, date: datetime | None
) -> None:
    index = ThreadIndex.decode(value)

    assert index is not None
    assert index.layout is Layout.CLASSIC
    assert index.child_count == 0
    assert len(index.guid) == 16
    assert index.encode() == value
    if date is not None and "malformed" not in name:
        # The header's time is when Outlook started the conversation: this very message.
        assert abs(index.header_time - date) < timedelta(days=1)


def test_a_real_outlook_2003_value_decodes_to_its_known_parts() -> None:
    index = ThreadIndex.decode("AcZN8UUmtkmHCxAbRoiJEsv5oNLqjQ==")

    assert index is not None
    assert index.guid == bytes.fromhex("b649870b101b46888912cbf9a0d2ea8d")
    assert index.header_time.replace(microsecond=0) == datetime(
        2006, 3, 22, 20, 43, 26, tzinfo=timezone.utc
    )


def test_classic_header_is_the_filetime_without_its_low_16_bits_then_the_guid() -> None:
    index = ThreadIndex.new(now=T0, guid=GUID)

    expected = (filetime(T0) >> 16).to_bytes(6, "big") + GUID
    assert index.to_bytes() == expected
    assert index.encode() == base64.b64encode(expected).decode()
    assert index.encode().startswith("Adx")  # 0x01DC...: a 2026 FILETIME


def test_prefixed_header_is_0x01_then_the_top_five_filetime_bytes() -> None:
    index = ThreadIndex.new(now=T0, guid=GUID, layout=Layout.PREFIXED)

    expected = b"\x01" + (filetime(T0) >> 24).to_bytes(5, "big") + GUID
    assert index.to_bytes() == expected
    assert index.encode().startswith("AQH")  # as Exchange Online values look
    decoded = ThreadIndex.decode(index.encode())
    assert decoded == index
    assert decoded is not None
    assert abs(decoded.header_time - T0) < timedelta(seconds=2)


def test_both_layouts_put_the_guid_in_the_same_place() -> None:
    classic = ThreadIndex.new(now=T0, guid=GUID)
    prefixed = ThreadIndex.new(now=T0, guid=GUID, layout=Layout.PREFIXED)

    assert classic.to_bytes()[6:22] == prefixed.to_bytes()[6:22] == GUID
    assert classic.same_conversation(prefixed)


def test_header_time_is_accurate_to_the_layout_precision() -> None:
    index = ThreadIndex.new(now=T0, guid=GUID)

    assert timedelta(0) <= T0 - index.header_time < timedelta(milliseconds=7)


def test_child_appends_one_block_and_keeps_the_header() -> None:
    parent = ThreadIndex.new(now=T0, guid=GUID)

    reply = parent.child(now=T0 + timedelta(hours=2), random=0x5A)

    assert reply.child_count == 1
    assert reply.header == parent.header
    assert reply.guid == parent.guid
    assert len(reply.to_bytes()) == HEADER_BYTES + CHILD_BLOCK_BYTES
    assert reply.children[0][-1] == 0x5A
    assert reply.encode() != parent.encode()  # echoing the parent does not thread


def test_child_of_child_appends_again() -> None:
    first = ThreadIndex.new(now=T0, guid=GUID).child(now=T0 + timedelta(minutes=5))
    second = first.child(now=T0 + timedelta(minutes=50))

    assert second.children[:1] == first.children
    assert second.child_count == 2


def test_short_delta_uses_delta_code_0_with_bits_18_to_48() -> None:
    parent = ThreadIndex.new(now=T0, guid=GUID)
    later = T0 + timedelta(hours=2)

    block = parent.child(now=later, random=0).children[0]

    assert block[0] & 0x80 == 0
    delta = filetime(later) - parent.filetime
    assert int.from_bytes(block[:4], "big") == delta >> 18
    assert abs(child_delta(block) - timedelta(hours=2)) < timedelta(milliseconds=40)


def test_long_delta_uses_delta_code_1_with_bits_23_to_53() -> None:
    parent = ThreadIndex.new(now=T0, guid=GUID)
    later = T0 + timedelta(days=3 * 365)

    block = parent.child(now=later, random=0).children[0]

    assert block[0] & 0x80
    delta = filetime(later) - parent.filetime
    assert int.from_bytes(block[:4], "big") == (1 << 31) | (delta >> 23)
    assert abs(child_delta(block) - timedelta(days=3 * 365)) < timedelta(seconds=1)


def test_a_reply_before_the_header_time_counts_as_no_delay() -> None:
    parent = ThreadIndex.new(now=T0, guid=GUID)

    block = parent.child(now=T0 - timedelta(hours=1), random=0).children[0]

    assert child_delta(block) == timedelta(0)


def test_a_huge_delta_saturates_instead_of_wrapping() -> None:
    parent = ThreadIndex.new(now=datetime(1900, 1, 1, tzinfo=timezone.utc), guid=GUID)

    block = parent.child(now=datetime(2050, 1, 1, tzinfo=timezone.utc), random=0).children[0]

    assert block[:4] == b"\xff\xff\xff\xff"


def test_child_blocks_are_opaque_and_survive_a_round_trip() -> None:
    raw = ThreadIndex.new(now=T0, guid=GUID).to_bytes() + b"\xde\xad\xbe\xef\x00" * 3
    value = base64.b64encode(raw).decode()

    index = ThreadIndex.decode(value)

    assert index is not None
    assert index.children == (b"\xde\xad\xbe\xef\x00",) * 3
    assert index.encode() == value


def test_folded_value_with_whitespace_decodes() -> None:
    value = ThreadIndex.new(now=T0, guid=GUID).child(now=T0, random=1).encode()

    assert ThreadIndex.decode(f" {value[:10]}\r\n\t{value[10:]} ") == ThreadIndex.decode(value)


def test_bytes_value_decodes_like_text() -> None:
    value = ThreadIndex.new(now=T0, guid=GUID).encode()

    assert ThreadIndex.decode(value.encode()) == ThreadIndex.decode(value)


def test_defaults_use_the_current_time_and_a_random_guid() -> None:
    before = datetime.now(timezone.utc)
    first, second = ThreadIndex.new(), ThreadIndex.new()

    assert first.guid != second.guid
    assert abs(first.header_time - before) < timedelta(seconds=5)
    assert first.child().child_count == 1


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "not base64 at all!",
        "AAAA",  # too short
        "AcZN8UUmtkmHCxAbRoiJEsv5oNLqjQ",  # missing padding is not canonical base64
        "AcZN8UUmtkmHCxAbRoiJEsv5oNLqjQ==AAAA",  # data after the padding
        base64.b64encode(b"\x01" * 23).decode(),  # not a header plus whole blocks
        base64.b64encode(b"\x02" + b"\xc6" * 21).decode(),  # first byte is not 0x01
        "AcZN8UUmtkmHCxAbRoiJEsv5oNLqjQ==\u00e9",
        b"\xff\xfe",
    ],
)
def test_garbage_gives_none(value: str | bytes | None) -> None:
    assert ThreadIndex.decode(value) is None


def test_from_bytes_rejects_short_input() -> None:
    assert ThreadIndex.from_bytes(b"\x01" * 21) is None


def test_naive_now_is_refused() -> None:
    with pytest.raises(ConfigError, match="naive"):
        ThreadIndex.new(now=datetime(2026, 1, 1))  # naive on purpose


def test_guid_must_be_16_bytes() -> None:
    with pytest.raises(ConfigError, match="16 bytes"):
        ThreadIndex.new(now=T0, guid=b"short")


def test_random_byte_must_fit_a_byte() -> None:
    with pytest.raises(ConfigError, match="random"):
        ThreadIndex.new(now=T0, guid=GUID).child(now=T0, random=256)


def test_a_time_outside_the_headers_range_is_refused() -> None:
    with pytest.raises(ConfigError, match="cannot be stored"):
        ThreadIndex.new(now=datetime(2100, 1, 1, tzinfo=timezone.utc), guid=GUID)


def test_child_blocks_must_be_5_bytes() -> None:
    with pytest.raises(ConfigError, match="child block"):
        ThreadIndex(guid=GUID, filetime=ThreadIndex.new(now=T0).filetime, children=(b"1234",))


def test_child_delta_refuses_a_block_of_the_wrong_size() -> None:
    with pytest.raises(ConfigError):
        child_delta(b"123")


@pytest.mark.parametrize(
    ("subject", "topic"),
    [("RE: AW: Pricing for Q1", "Pricing for Q1"), ("Pricing", "Pricing"), (None, "")],
)
def test_thread_topic_is_the_subject_without_prefixes(subject: str | None, topic: str) -> None:
    assert thread_topic(subject) == topic
