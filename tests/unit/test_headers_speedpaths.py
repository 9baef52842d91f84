"""The fast paths of replytrack.headers give exactly what the general paths give.

Each fast path is checked against the code it short-cuts - the stdlib date parser, the regex
unfolding, the regex that matched every line of the block, the field regex as it was, the
field cache read through `Headers._parsed` - on generated input that reaches both its accepting
and its declining branches, plus the examples that sit on their edges.
"""

from __future__ import annotations

import datetime as dt
import re
import string
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from replytrack import headers
from replytrack.headers import Headers, parse_headers
from strategies import dates, header_blocks

# Explicit: tests/unit has no Hypothesis profile, and the default deadline flakes on a busy CI.
CHECKS = settings(max_examples=300, deadline=None)
MANY = settings(max_examples=1000, deadline=None)

# The regexes as they were before the fast paths; the reference the new ones must agree with.
OLD_VALID_BLOCK = re.compile(rb"(?:(?:[!-9;-~]+[ \t]*:|[ \t])[^\n]*\n)*")
OLD_FIELD = re.compile(r"^([!-9;-~]+)[ \t]*:([^\n]*(?:\n[ \t][^\n]*)*)", re.MULTILINE)


def _same_date(value: str) -> tuple[str, list[str]]:
    """The date of `value` with its defects, as `repr`: equal datetimes may differ in zone."""
    defects: list[str] = []
    return repr(headers._parse_date(value, defects)), defects


def _general_date(value: str) -> tuple[str, list[str]]:
    defects: list[str] = []
    return repr(headers._parse_any_date(value, defects)), defects


# --- dates -------------------------------------------------------------------------------------

# Spelled out: strftime's %a and %b follow the locale.
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@st.composite
def common_dates(draw: st.DrawFn) -> str:
    """A date in the common shape: any moment of years 1000-9999, any zone under a day."""
    moment = draw(st.datetimes(min_value=dt.datetime(1000, 1, 1)))
    day_name = draw(st.sampled_from(["", DAY_NAMES[moment.weekday()] + ", ", "Xyz, "]))
    day = draw(st.sampled_from([str(moment.day), f"{moment.day:02}"]))
    month = MONTH_NAMES[moment.month - 1]
    time = f"{moment:%H:%M}" + draw(st.sampled_from([f":{moment:%S}", ""]))
    # Zone minutes over 59 are minutes to the stdlib too; under 23 hours they stay valid.
    zone = draw(
        st.one_of(
            st.sampled_from(["GMT", "UTC", "+0000", "-0000"]),
            st.builds(
                "{}{:02}{:02}".format,
                st.sampled_from("+-"),
                st.integers(0, 22),
                st.integers(0, 99),
            ),
        )
    )
    tail = draw(st.sampled_from(["", " (CET)", " x y z", "  ", " +0100"]))
    return f"{day_name}{day} {month} {moment.year} {time} {zone}{tail}"


@st.composite
def near_common_dates(draw: st.DrawFn) -> str:
    """Values near the common shape: impossible dates, and shapes it does not take."""
    value = draw(common_dates())
    words = value.split(" ")
    at = draw(st.integers(0, len(words) - 1))
    words[at] = draw(
        st.sampled_from(
            [
                "0",
                "32",
                "99",
                "001",
                "1x",
                "mar",
                "MAR",
                "March",
                "0099",
                "27",
                "12345",
                "24:00",
                "23:59:60",
                "9:30",
                "09:5",
                "+2400",
                "-9999",
                "+01",
                "EST",
                "gmt",
                "Z",
                "",
                "\xa0",
                "(CET)",
                "\n",
                "Mon,01",
            ]
        )
    )
    return " ".join(words)


@CHECKS
@given(common_dates())
@example("Mon, 01 Mar 2027 09:30:00 +0000")
@example("Mon, 01 Mar 2027 09:30:00 -0000")  # the stdlib: naive; both: UTC
@example("1 Mar 2027 09:30 +0530 (IST)")
@example("Mon, 01 Mar 2027 09:30:00 +0199")  # 99 minutes, as the stdlib reads them
def test_common_dates_take_the_fast_path_and_parse_as_the_stdlib_parses_them(value: str) -> None:
    fast = headers._common_date(value)
    assert fast is not None
    assert _same_date(value) == _general_date(value) == (repr(fast), [])


@CHECKS
@given(st.one_of(near_common_dates(), dates(), st.text(string.printable, max_size=40)))
@example("Mon, 01 Mar 2027 09:30:00 +2400")  # a zone of a day: unparsable
@example("Mon, 31 Feb 2027 09:30:00 +0000")
@example("Mon, 01 Mar 0099 09:30:00 +0000")  # the stdlib makes 1999 of it
@example("Mon, 01 Mar 2027 23:59:60 +0000")
def test_every_date_parses_as_the_stdlib_parses_it(value: str) -> None:
    assert _same_date(value) == _general_date(value)


@pytest.mark.parametrize(
    "value",
    [
        "Mon, 01 Mar 2027 09:30:00 +0000",
        "Mon, 1 Mar 2027 09:30 -0800",
        "1 Mar 2027 09:30:00 GMT",
        "Tue, 02 Mar 2027 23:59:59 +0100 (CET)",
        "Mon, 01 Mar 2027 09:30:00 UTC",
    ],
)
def test_the_common_shapes_take_the_fast_path(value: str) -> None:
    fast = headers._common_date(value)
    assert fast is not None
    assert repr(fast) == _general_date(value)[0]


@pytest.mark.parametrize(
    "value",
    [
        "Mon, 01 Mar 27 09:30:00 +0000",  # two-digit year: the stdlib's window decides
        "Mon,01 Mar 2027 09:30:00 +0000",
        "Mon, 01 mar 2027 09:30:00 +0000",
        "Mon, 01 Mar 2027 09:30:00 EST",
        "Mon, 01 Mar 2027 09:30:00 +0000x",
        "Mon, 31 Feb 2027 09:30:00 +0000",
        "Mon, 01 Mar 2027 09:30:00 +9999",
        "Mon, 01 Mar 2027 09:30:00 +0000\n",
    ],
)
def test_other_shapes_and_impossible_dates_go_to_the_general_parser(value: str) -> None:
    assert headers._common_date(value) is None
    assert _same_date(value) == _general_date(value)


def test_a_zero_offset_is_the_utc_singleton_as_before() -> None:
    for value in ("Mon, 01 Mar 2027 09:30:00 +0000", "Mon, 01 Mar 2027 09:30:00 -0000"):
        parsed = headers._common_date(value)
        assert parsed is not None
        assert parsed.tzinfo is dt.timezone.utc


# --- unfolding ----------------------------------------------------------------------------------

_UNFOLD_TEXT = st.lists(
    st.sampled_from(["a", " ", "\t", "\r", "\n", "\r\n", "\x0b", "\u2028"]), max_size=12
).map("".join)


@MANY
@given(st.one_of(_UNFOLD_TEXT, st.text(max_size=20)))
@example(" Re: Pricing\r")
@example("\r\n \r")
@example(" a\r\n b\r")
@example("a\rb")
def test_unfold_is_the_regex_unfolding(value: str) -> None:
    assert headers._unfold(value) == headers._NEWLINE_RUN.sub("", value).strip()


# --- the end of the block ------------------------------------------------------------------------

_LINES = st.sampled_from(
    [
        b"Subject: hi",
        b"Received: from a\r",
        b"X-Name \t: v",
        b"a:",
        b" continued",
        b"\tcontinued\r",
        b"",
        b"\r",
        b"no colon here",
        b":no name",
        b"bad name: v",
        b"\xc3\xa9t\xc3\xa9: v",
        b"Name:\xe9",
    ]
)


@st.composite
def raw_blocks(draw: st.DrawFn) -> tuple[bytes, int]:
    """Lines good and bad, the last maybe without its LF, and a limit that may cut anywhere."""
    first = draw(st.sampled_from([b"Subject: hi", b"X-A:", b"A\t:", b""]))
    data = b"\n".join([first, *draw(st.lists(_LINES, max_size=12))])
    if draw(st.booleans()):
        data += b"\n"
    data += draw(st.sampled_from([b"", b"body", b"\n\nbody"]))
    return data, draw(st.one_of(st.just(len(data)), st.integers(0, len(data) + 2)))


@MANY
@given(raw_blocks())
@example((b"", 0))
@example((b"A: b\n", 4))  # the limit falls on the LF
@example((b"A: b\n", 5))
@example((b"A: b\nC", 6))  # a valid start, but no LF within the limit
@example((b"A: b\nCc: d\n", 7))  # the colon of the next line is past the limit
def test_the_valid_lines_end_where_the_line_regex_stopped(block: tuple[bytes, int]) -> None:
    data, limit = block
    match = OLD_VALID_BLOCK.match(data, 0, limit)
    assert headers._valid_lines_end(data, limit) == (match.end() if match else 0)


@CHECKS
@given(header_blocks(end=False), st.sampled_from([b"", b"\r\n", b"\n", b"\nbody", b"x: y"]))
def test_blocks_end_where_the_line_regex_stopped(block: bytes, rest: bytes) -> None:
    data = block + rest
    match = OLD_VALID_BLOCK.match(data, 0, headers.MAX_HEADER_BYTES)
    end = match.end() if match else 0
    assert headers._valid_lines_end(data, headers.MAX_HEADER_BYTES) == end


# --- splitting the fields -----------------------------------------------------------------------


@MANY
@given(st.text(st.sampled_from(["a", "B", ":", " ", "\t", "\n", "\r", "\x0b", "\x85", "é"])))
@example("A: b\r\n c\rd\n\x85e: f\n")
def test_the_field_regex_splits_as_before(text: str) -> None:
    assert headers._FIELD.findall(text) == OLD_FIELD.findall(text)


# --- the cache of structured fields -------------------------------------------------------------

_PROPERTIES: dict[str, tuple[str, Any, Any]] = {
    "message_id": ("message-id", headers._parse_ids, headers._NO_IDS),
    "in_reply_to": ("in-reply-to", headers._parse_ids, headers._NO_IDS),
    "references": ("references", headers._parse_ids, headers._NO_IDS),
    "from_": ("from", headers._parse_addresses, headers._NO_ADDRESSES),
    "sender": ("sender", headers._parse_addresses, headers._NO_ADDRESSES),
    "reply_to": ("reply-to", headers._parse_addresses, headers._NO_ADDRESSES),
    "to": ("to", headers._parse_addresses, headers._NO_ADDRESSES),
    "cc": ("cc", headers._parse_addresses, headers._NO_ADDRESSES),
    "subject": ("subject", headers._parse_subject, None),
    "date": ("date", headers._parse_date_field, None),
}


def _expected(h: Headers, prop: str) -> tuple[Any, tuple[str, ...]]:
    """What the property gives and which defects it adds, computed without the cache."""
    key, parse, empty = _PROPERTIES[prop]
    raw = h._first.get(key)
    defects = headers._DefectList()
    value = empty if raw is None else parse(raw, defects)
    found = tuple(f"{key}: {d}" for d in defects)
    if defects.dropped:
        found += (f"{key}: {defects.dropped} more defects not listed",)
    if prop == "message_id":
        value = value[0] if value else None
    return value, found


@CHECKS
@given(header_blocks(), st.lists(st.sampled_from(sorted(_PROPERTIES)), max_size=25))
def test_cached_reads_give_what_a_fresh_parse_gives(block: bytes, reads: list[str]) -> None:
    h = parse_headers(block)
    first_seen: dict[str, Any] = {}
    for prop in reads:
        value = getattr(h, prop)
        if prop in first_seen:
            assert value is first_seen[prop]  # a hit returns the cached object itself
        first_seen[prop] = value
        assert repr(value) == repr(_expected(h, prop)[0])
    # In the order `defects` lists them: block, ids, addresses, subject, date.
    expected_defects = list(h._block_defects)
    for prop in _PROPERTIES:
        expected_defects.extend(_expected(h, prop)[1])
    assert h.defects == tuple(expected_defects)
    for prop in _PROPERTIES:
        assert repr(getattr(h, prop)) == repr(_expected(h, prop)[0])


def test_a_field_with_more_defects_than_kept_still_says_how_many() -> None:
    h = parse_headers(b"Subject: s\nReferences: " + b"<a@> " * 50 + b"\n\n")
    assert h.references == ("a@",) * 50
    assert h.defects[-1] == "references: 30 more defects not listed"
    assert len(h.defects) == 21


def test_an_absent_field_is_cached_empty_without_defects() -> None:
    h = parse_headers(b"Subject: s\n\n")
    assert h.cc is headers._NO_ADDRESSES
    assert h.cc is headers._NO_ADDRESSES
    assert h.date is None
    assert h._cache["cc"] == ((), ())
    assert h.defects == ()
