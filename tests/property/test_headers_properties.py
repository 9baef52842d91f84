"""Properties of replytrack.headers: lenient parsing never raises, and what goes in comes out.

The generators build mail the way senders really write it: ``email.utils.formataddr`` for address
lists, ``email.header.Header`` for RFC 2047 subjects, msg-ids with every separator RFC 5322 allows
(and the commas it does not), and header blocks with random folding, line endings, 8-bit bytes and
encoded-words, broken or not.
"""

from __future__ import annotations

import datetime as dt
import email
import email.message
import re
import string
from collections.abc import Sequence
from email.header import Header
from email.utils import formataddr
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from replytrack.headers import (
    Address,
    normalize_subject,
    parse_addresses,
    parse_headers,
    parse_msg_ids,
)

# Example counts keep the whole file under 20 s; the costly part is generating the inputs.
QUICK = settings(max_examples=100, deadline=None)
FAST = settings(max_examples=200, deadline=None)
THOROUGH = settings(max_examples=300, deadline=None)


def _assert_documented_shape(h: Any) -> None:
    """Every documented attribute of a parse result is readable and of its documented type."""
    assert h.message_id is None or isinstance(h.message_id, str)
    for ids in (h.in_reply_to, h.references):
        assert isinstance(ids, tuple)
        assert all(isinstance(i, str) for i in ids)
    for addrs in (h.from_, h.sender, h.reply_to, h.to, h.cc):
        assert isinstance(addrs, tuple)
        assert all(isinstance(a, Address) for a in addrs)
        assert all(isinstance(a.name, str) and isinstance(a.addr, str) for a in addrs)
    assert h.subject is None or isinstance(h.subject, str)
    assert h.date is None or (isinstance(h.date, dt.datetime) and h.date.utcoffset() is not None)
    assert isinstance(h.defects, tuple)
    assert all(isinstance(d, str) for d in h.defects)
    for name in ("Subject", "from", "X-Anything"):
        value = h.get(name)
        assert value is None or isinstance(value, str)
        assert all(isinstance(v, str) for v in h.get_all(name) or ())


# --- building blocks ---------------------------------------------------------------------------

ATEXT = string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~"
atoms = st.text(alphabet=ATEXT, min_size=1, max_size=12)
dot_atoms = st.lists(atoms, min_size=1, max_size=4).map(".".join)
labels = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,10}[A-Za-z0-9])?", fullmatch=True)
domains = st.lists(labels, min_size=1, max_size=4).map(".".join)
# (left, right) of a msg-id; the normalised form keeps the left part and lower-cases the domain.
msg_id_parts = st.tuples(dot_atoms, domains)


def _normalised(parts: tuple[str, str]) -> str:
    return f"{parts[0]}@{parts[1].lower()}"


# Without brackets an id has no delimiters, so a lenient parser trims punctuation that sticks
# to it in prose ("see a@b.example."); "{", "}" and "'" are atext but trimmed too. Bare ids
# therefore start and end with a letter or digit.
bare_msg_id_parts = st.tuples(
    dot_atoms.filter(lambda left: left[0].isalnum() and left[-1].isalnum()), domains
)


def _unique_ids(*, bare: bool = False) -> st.SearchStrategy[list[tuple[str, str]]]:
    # Whether a repeated id is kept twice is not part of the contract: generate distinct ids.
    parts = bare_msg_id_parts if bare else msg_id_parts
    return st.lists(parts, min_size=1, max_size=8, unique_by=_normalised)


EOLS = ("\r\n", "\n", "\r")
EOL_BYTES = tuple(e.encode() for e in EOLS)
FWS = st.sampled_from([" ", "  ", "\t", "\r\n ", "\r\n\t", "\n ", "\r\n  \t"])
comments = st.text(alphabet=string.ascii_letters + string.digits + " .-", max_size=12).map(
    lambda text: f"({text})"
)
# Between and around msg-ids: folding whitespace, comments (RFC 5322 CFWS) and commas (not in
# the grammar, but Outlook and others write them).
id_separators = st.lists(FWS | comments | st.just(","), max_size=3).map("".join)

local_atoms = st.text(
    alphabet=string.ascii_letters + string.digits + "_+-", min_size=1, max_size=10
)
local_parts = st.lists(local_atoms, min_size=1, max_size=3).map(".".join)
addr_specs = st.builds(lambda local, domain: f"{local}@{domain}", local_parts, domains)

# Display names: words of letters and digits from any script, plus the specials that force
# formataddr to quote; single spaces between words, as a human types them. No "=", so no name
# can read as an encoded-word.
name_chars = st.characters(categories=["L", "N"]) | st.sampled_from(list(".,'\"()<>@;:[]\\-!&"))
name_words = st.text(alphabet=name_chars, min_size=1, max_size=8)
display_names = st.lists(name_words, max_size=4).map(" ".join)
address_pairs = st.tuples(display_names, addr_specs)
list_separators = st.sampled_from([", ", ",", ",\r\n ", " , ", ",\n\t"])


def _key(pair: tuple[str, str]) -> tuple[str, str]:
    """How an address compares: exact name, addr case-insensitively."""
    return pair[0], pair[1].lower()


def _got(addresses: Sequence[Address]) -> list[tuple[str, str]]:
    return [_key((a.name, a.addr)) for a in addresses]


# --- arbitrary input never raises ----------------------------------------------------------------


@THOROUGH
@given(st.binary(max_size=4096))
def test_parse_headers_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    _assert_documented_shape(parse_headers(data))


@THOROUGH
@given(st.text(max_size=2048))
def test_parse_headers_never_raises_on_arbitrary_text(text: str) -> None:
    _assert_documented_shape(parse_headers(text))


@FAST
@given(st.binary(max_size=2048))
def test_parse_headers_never_raises_on_surrogate_escaped_text(data: bytes) -> None:
    """``bytes.decode("utf-8", "surrogateescape")`` is how Python code often holds raw mail."""
    _assert_documented_shape(parse_headers(data.decode("utf-8", "surrogateescape")))


@FAST
@given(st.text(max_size=500))
def test_helpers_never_raise_on_arbitrary_text(text: str) -> None:
    assert all(isinstance(i, str) for i in parse_msg_ids(text))
    assert all(isinstance(a, Address) for a in parse_addresses(text))
    assert isinstance(normalize_subject(text), str)


# Header blocks: real and random field names, values made of pieces that parsers trip on, folded
# and terminated with a random mix of CRLF, LF and bare CR, with stray malformed lines.
field_names = st.sampled_from(
    [
        "Message-ID",
        "In-Reply-To",
        "References",
        "From",
        "Sender",
        "Reply-To",
        "To",
        "Cc",
        "Subject",
        "Date",
        "Received",
        "Content-Type",
        "X-Mailer",
    ]
).flatmap(lambda name: st.sampled_from([name, name.lower(), name.upper()])) | st.from_regex(
    r"[!-9;-~]{1,20}", fullmatch=True
)
encoded_words = st.builds(
    lambda charset, encoding, text: f"=?{charset}?{encoding}?{text}?=",
    st.sampled_from(["utf-8", "UTF-8", "iso-8859-1", "koi8-r", "gb2312", "bogus", "", "utf-8*en"]),
    st.sampled_from(list("BbQqx")),
    st.text(alphabet=string.printable.replace("?", ""), max_size=24),
)


def _encode_header(text: str, charset: str) -> str:
    """RFC 2047-encode what of ``text`` the charset can carry (Header raises on the rest)."""
    return Header(text.encode(charset, "ignore").decode(charset), charset).encode()


real_encoded_words = st.builds(
    _encode_header,
    st.text(max_size=30),
    st.sampled_from(["utf-8", "iso-8859-1", "koi8-r"]),
).filter(bool)
value_pieces = st.one_of(
    st.text(max_size=20).map(lambda t: t.encode("utf-8")),
    st.binary(max_size=12),
    encoded_words.map(str.encode),
    real_encoded_words.map(str.encode),
    st.builds(formataddr, address_pairs).map(lambda a: a.encode("utf-8")),
    msg_id_parts.map(lambda p: f"<{p[0]}@{p[1]}>".encode()),
    st.sampled_from(
        [
            b"<",
            b">",
            b'"',
            b"(",
            b")",
            b"\\",
            b",",
            b";",
            b":",
            b"@",
            b"=?",
            b"?=",
            b"Re:",
            b"undisclosed-recipients:;",
            b"Mon, 2 Apr 2012 18:22:10 +0400",
            b"Thu, 31 Feb 2012 25:61:61 +9999",
            b"-0000",
            b"\x00",
            b"\xff\xfe",
        ]
    ),
)


@st.composite
def header_blocks(draw: st.DrawFn) -> bytes:
    # One line ending for the whole block, or (None) a different one at every line.
    block_eol = draw(st.sampled_from([b"\r\n", b"\n", b"\r", None]))

    def eol() -> bytes:
        return draw(st.sampled_from(EOL_BYTES)) if block_eol is None else block_eol

    lines = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["field", "field", "field", "field", "junk"]))
        if kind == "junk":
            lines.append(
                draw(
                    st.sampled_from(
                        [
                            b"no colon here",
                            b" continuation first",
                            b"From nobody Mon Jan  1",
                            b"Subject : spaced",
                            b": no name",
                            b"X" * 1200 + b": long",
                            b"",
                        ]
                    )
                )
                + eol()
            )
            continue
        value = b""
        for piece in draw(st.lists(value_pieces, max_size=6)):
            fold = draw(st.sampled_from([b"", b" ", b"\t", b"FOLD", b"FOLD\t", b"BREAK"]))
            # FOLD continues the field on the next line; BREAK ends the line with no
            # continuation, so the rest reads as a line of its own (a malformed one, often).
            fold = fold.replace(b"FOLD", eol() + b" ").replace(b"BREAK", eol())
            value += fold + piece
        name = draw(field_names).encode()
        lines.append(name + b":" + draw(st.sampled_from([b" ", b"", b"\t"])) + value + eol())
    block = b"".join(lines)
    if draw(st.booleans()):
        block += eol() + draw(st.binary(max_size=64))
    return block


@THOROUGH
@given(header_blocks())
def test_parse_headers_never_raises_on_header_like_bytes(block: bytes) -> None:
    _assert_documented_shape(parse_headers(block))


@QUICK
@given(header_blocks())
def test_parse_headers_never_raises_on_header_like_text(block: bytes) -> None:
    _assert_documented_shape(parse_headers(block.decode("latin-1")))


@QUICK
@given(header_blocks())
def test_parse_headers_never_raises_on_header_like_message(block: bytes) -> None:
    _assert_documented_shape(parse_headers(email.message_from_bytes(block)))


# --- msg-ids -------------------------------------------------------------------------------------


@st.composite
def formatted_id_lists(draw: st.DrawFn) -> tuple[str, tuple[str, ...]]:
    ids = draw(_unique_ids())
    value = draw(id_separators)
    for left, right in ids:
        value += f"<{left}@{right}>" + draw(id_separators)
    return value, tuple(_normalised(p) for p in ids)


@FAST
@given(formatted_id_lists())
def test_parse_msg_ids_finds_every_bracketed_id_in_order(
    case: tuple[str, tuple[str, ...]],
) -> None:
    value, expected = case
    assert parse_msg_ids(value) == expected


@QUICK
@given(_unique_ids(bare=True), st.lists(FWS, min_size=8, max_size=8), FWS, FWS)
def test_parse_msg_ids_finds_bare_ids_separated_by_whitespace(
    ids: list[tuple[str, str]], gaps: list[str], lead: str, trail: str
) -> None:
    listed = "".join(
        f"{left}@{right}{gap}" for (left, right), gap in zip(ids, gaps[: len(ids)], strict=True)
    )
    value = lead + listed.rstrip() + trail
    assert parse_msg_ids(value) == tuple(_normalised(p) for p in ids)


@QUICK
@given(formatted_id_lists(), st.sampled_from(EOLS))
def test_parse_headers_reads_references_like_parse_msg_ids(
    case: tuple[str, tuple[str, ...]], eol: str
) -> None:
    value, expected = case
    folded = re.sub(r"\r\n|\n", eol, value)  # one line ending throughout the block
    data = f"From: a@example.com{eol}References: {folded}{eol}In-Reply-To: {folded}{eol}{eol}"
    parsed = parse_headers(data.encode())
    assert parsed.references == expected
    assert parsed.in_reply_to == expected


# --- addresses -----------------------------------------------------------------------------------


@st.composite
def formatted_address_lists(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    pairs = draw(st.lists(address_pairs, min_size=1, max_size=6))
    value = formataddr(pairs[0])
    for pair in pairs[1:]:
        value += draw(list_separators) + formataddr(pair)
    return value, [_key(p) for p in pairs]


@FAST
@given(formatted_address_lists())
def test_parse_addresses_round_trips_formataddr(case: tuple[str, list[tuple[str, str]]]) -> None:
    value, expected = case
    assert _got(parse_addresses(value)) == expected


@QUICK
@given(formatted_address_lists(), st.sampled_from(["From", "To", "Cc", "Reply-To", "Sender"]))
def test_parse_headers_reads_address_fields_like_parse_addresses(
    case: tuple[str, list[tuple[str, str]]], field: str
) -> None:
    value, expected = case
    parsed = parse_headers(f"{field}: {value}\r\n\r\nbody".encode())
    attribute = {"From": "from_", "To": "to", "Cc": "cc", "Reply-To": "reply_to"}
    assert _got(getattr(parsed, attribute.get(field, "sender"))) == expected


BAD_ADDRESSES = [
    "",
    "@",
    "foo",
    "a@",
    "@b.example",
    "<>",
    "<@>",
    "foo bar",
    "a@b@c.example",
    "[1.2.3.4]",
    "Undisclosed recipients:;",
    "x <y>",
    "<<>>",
    '""',
    "()",
    "=?utf-8?b?####?= <>",
    "=?bogus?q?x?= bad",
    "a@.example",
    ".@x.example",
    "Ä",
    "<a@b@c>",
]


def _is_subsequence(needles: Sequence[Any], haystack: Sequence[Any]) -> bool:
    it = iter(haystack)
    return all(any(n == h for h in it) for n in needles)


@FAST
@given(
    st.lists(address_pairs, min_size=1, max_size=4),
    st.sampled_from(BAD_ADDRESSES),
    st.lists(address_pairs, min_size=1, max_size=4),
)
# Found by a long run: a quoted name ending in an escaped backslash, after a bad entry.
@example(before=[("", "a@example.com")], bad="@", after=[("x\\", "b@example.com")])
def test_bad_address_in_a_list_loses_no_other_address(
    before: list[tuple[str, str]], bad: str, after: list[tuple[str, str]]
) -> None:
    value = ", ".join([*map(formataddr, before), bad, *map(formataddr, after)])
    got = _got(parse_addresses(value))
    expected = [_key(p) for p in [*before, *after]]
    assert _is_subsequence(expected, got), (value, got)


# --- subjects ------------------------------------------------------------------------------------


def _random_case(draw: st.DrawFn, word: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(word), max_size=len(word)))
    return "".join(c.swapcase() if flip else c for c, flip in zip(word, flips, strict=True))


REPLY_WORDS = ["re", "fwd", "fw", "aw", "wg", "sv", "vs", "antw", "rif", "r", "i", "tr", "enc"]
REPLY_WORDS += ["res", "回复", "转发", "답장"]


@st.composite
def subject_prefixes(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["word", "word", "counter", "tag"]))
    if kind == "tag":
        return draw(st.from_regex(r"\[[A-Za-z][A-Za-z0-9_.-]{0,14}\]", fullmatch=True))
    word = _random_case(draw, draw(st.sampled_from(REPLY_WORDS)))
    if kind == "counter":
        return f"{word}[{draw(st.integers(1, 99))}]:"
    return f"{word}:"


@st.composite
def prefix_stacks(draw: st.DrawFn) -> str:
    stack = draw(st.sampled_from(["", " "]))
    for prefix in draw(st.lists(subject_prefixes(), min_size=1, max_size=5)):
        stack += prefix + draw(st.sampled_from(["", " ", "  "]))
    return stack


# A base subject carries no prefix: words of letters and digits, with no colon or bracket
# anywhere, so nothing in it can read as "Re:" or "[tag]".
base_subjects = st.lists(
    st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1, max_size=10),
    min_size=1,
    max_size=6,
).map(" ".join)


@THOROUGH
@given(prefix_stacks(), base_subjects)
def test_normalize_subject_strips_any_stack_of_prefixes(stack: str, base: str) -> None:
    assert normalize_subject(stack + base) == normalize_subject(base)


@FAST
@given(base_subjects)
def test_normalize_subject_leaves_a_prefix_free_subject_unchanged(base: str) -> None:
    assert normalize_subject(base) == base


@THOROUGH
@given(st.text(max_size=200) | st.builds(str.__add__, prefix_stacks(), base_subjects))
def test_normalize_subject_is_idempotent(subject: str) -> None:
    once = normalize_subject(subject)
    assert normalize_subject(once) == once


# --- RFC 2047 ----------------------------------------------------------------------------------

subject_texts = (
    st.text(alphabet=st.characters(exclude_categories=["Cc", "Cs"]), min_size=1, max_size=150)
    .map(str.strip)
    .filter(bool)
)


def _subject_message(encoded: str, eol: str) -> bytes:
    return f"Subject: {encoded}{eol}From: a@example.com{eol}{eol}body{eol}".encode("ascii")


@THOROUGH
@given(subject_texts, st.sampled_from(["\r\n", "\n"]))
def test_rfc2047_subject_decodes_back(subject: str, eol: str) -> None:
    encoded = Header(subject, "utf-8", header_name="Subject").encode(linesep=eol)
    assert parse_headers(_subject_message(encoded, eol)).subject == subject


@THOROUGH
@given(subject_texts, st.integers(30, 78), st.sampled_from(["\r\n", "\n"]))
def test_folded_rfc2047_subject_decodes_back(subject: str, width: int, eol: str) -> None:
    encoded = Header(subject, "utf-8", maxlinelen=width, header_name="Subject").encode(linesep=eol)
    assert parse_headers(_subject_message(encoded, eol)).subject == subject


@FAST
@given(subject_texts, st.sampled_from(["iso-8859-1", "iso-8859-2", "koi8-r", "gb2312", "cp1251"]))
def test_rfc2047_subject_in_a_legacy_charset_decodes_back(subject: str, charset: str) -> None:
    # Keep only what the legacy charset can carry: the point is decoding with that codec.
    subject = subject.encode(charset, "ignore").decode(charset).strip() or "x"
    encoded = Header(subject, charset, header_name="Subject").encode(linesep="\r\n")
    assert parse_headers(_subject_message(encoded, "\r\n")).subject == subject
