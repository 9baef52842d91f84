"""Sweep every real message in tests/corpus through replytrack.headers.

Two promises are checked on each message:

* ``parse_headers`` never raises, whatever form the message is handed in, and every documented
  attribute comes back with its documented type;
* on headers the standard library parses without a defect *and* whose raw value is plain (see
  ``_plain_*`` below: deliberately conservative), replytrack agrees with the standard library.

Expected values come from ``email.policy.default``; the plainness rules keep out the cases where
the standard library is known to guess (unknown charsets, malformed encoded-words, ``-0000``
dates, two-digit years, comments, groups), so a disagreement here is a replytrack bug.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import datetime as dt
import email
import email.message
import email.policy
import mailbox
import re
from collections import Counter
from email.errors import MessageDefect
from email.headerregistry import AddressHeader, BaseHeader, DateHeader
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from replytrack.headers import Address, parse_headers

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
NOT_MESSAGES = frozenset({"SOURCES.md", ".gitattributes"})


class Sample(NamedTuple):
    """One message of the corpus: an id for test names, and its bytes."""

    id: str
    data: bytes
    mbox_with_members: bool = False  # its messages are samples of their own too


def _mbox_members(path: Path) -> list[bytes]:
    box = mailbox.mbox(path, create=False)
    try:
        return [box.get_bytes(key) for key in box.iterkeys()]
    finally:
        box.close()


def _corpus_samples() -> list[Sample]:
    """Every file of the corpus, plus each message inside an mbox file on its own."""
    samples = []
    for path in sorted(CORPUS.rglob("*")):
        if not path.is_file() or path.name in NOT_MESSAGES:
            continue
        rel = path.relative_to(CORPUS).as_posix()
        # dkimpy's "message.mbox" is one bare message, no "From " line: no members.
        members = _mbox_members(path) if path.suffix == ".mbox" else []
        samples.append(Sample(rel, path.read_bytes(), mbox_with_members=bool(members)))
        samples.extend(Sample(f"{rel}#{n}", data) for n, data in enumerate(members))
    return samples


SAMPLES = _corpus_samples()
# For the agreement sweep an mbox file counts through its members only, not twice.
MESSAGES = [s for s in SAMPLES if not s.mbox_with_members]


# --- how a test hands a message to parse_headers -------------------------------------------


def _as_bytes(data: bytes) -> Any:
    return data


def _as_str(data: bytes) -> Any:
    return data.decode("latin-1")


def _as_message(data: bytes) -> Any:
    """What mailbox and most sources produce: a compat32 ``email.message.Message``."""
    return email.message_from_bytes(data)


def _as_email_message(data: bytes) -> Any:
    """A modern ``email.message.EmailMessage`` (``policy.default``)."""
    return email.message_from_bytes(data, policy=email.policy.default)


INPUT_KINDS = {
    "bytes": _as_bytes,
    "str": _as_str,
    "message": _as_message,
    "email-message": _as_email_message,
}


# --- plainness: when is the standard library's answer the right answer? ----------------------

ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
DOT_ATOM = rf"{ATEXT}+(?:\.{ATEXT}+)*"
# RFC 5322 section 3.6.4 without the obsolete forms: dot-atom "@" (dot-atom / no-fold-literal)
PLAIN_MSG_ID = rf"<{DOT_ATOM}@(?:{DOT_ATOM}|\[[!-Z^-~]*\])>"
WSP = r"[ \t]*"
ONE_MSG_ID_RE = re.compile(rf"{WSP}({PLAIN_MSG_ID}){WSP}")
MSG_ID_LIST_RE = re.compile(rf"{WSP}(?:{PLAIN_MSG_ID}{WSP})+")
MSG_ID_RE = re.compile(PLAIN_MSG_ID)

# RFC 5322 section 3.3 with a four-digit year; the zone is numeric or one of the obs-zone
# names of section 4.3 that have a defined offset (military letters are ambiguous: left out).
PLAIN_DATE_RE = re.compile(
    r"[ \t]*(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),[ \t]*)?"
    r"\d{1,2}[ \t]+(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[ \t]+\d{4}[ \t]+"
    r"\d{2}:\d{2}(?::\d{2})?[ \t]+"
    r"(?:[+-]\d{4}|UT|GMT|EST|EDT|CST|CDT|MST|MDT|PST|PDT)"
    r"(?:[ \t]*\([A-Za-z0-9 +:-]*\))?[ \t]*"
)

# RFC 2047 section 2: encoded-word = "=?" charset "?" encoding "?" encoded-text "?="
ENCODED_WORD_RE = re.compile(r"=\?([^?\s]+)\?([BbQq])\?([^?\s]*)\?=")
QP_TEXT_RE = re.compile(r"(?:[!-<>@-~]|=[0-9A-Fa-f]{2})*")


def _unfold(raw: str) -> str:
    return re.sub(r"\r?\n|\r", "", raw)


def _encoded_word_is_sound(charset: str, encoding: str, text: str) -> bool:
    """Known charset, valid payload, and the bytes decode in that charset without error."""
    charset = charset.split("*", 1)[0]  # RFC 2231 section 5: charset*language
    try:
        codec = codecs.lookup(charset)
    except LookupError:
        return False
    if encoding in "Bb":
        try:
            payload = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return False
    else:
        if QP_TEXT_RE.fullmatch(text) is None:
            return False
        raw = re.sub(rb"=([0-9A-Fa-f]{2})", lambda m: bytes([int(m[1], 16)]), text.encode())
        payload = raw.replace(b"_", b" ")
    try:
        codec.decode(payload)
    except (UnicodeDecodeError, ValueError):
        return False
    return True


def _encoded_words_are_plain(value: str) -> bool:
    """Every ``=?`` starts a sound encoded-word that stands alone between whitespace."""
    for m in ENCODED_WORD_RE.finditer(value):
        if not _encoded_word_is_sound(m[1], m[2], m[3]):
            return False
        # RFC 2047 section 5: an encoded-word is a whole word, so whitespace on both sides.
        before = value[m.start() - 1] if m.start() else " "
        after = value[m.end()] if m.end() < len(value) else " "
        if not (before.isspace() and after.isspace()):
            return False
    stripped = ENCODED_WORD_RE.sub("", value)
    return "=?" not in stripped


def _single_raw(msg: email.message.Message, name: str) -> str | None:
    """The unfolded raw value of ``name`` if it occurs exactly once and is pure ASCII."""
    values = [v for k, v in msg.raw_items() if k.lower() == name.lower()]
    if len(values) != 1:
        return None
    value = _unfold(values[0])
    if not value.isascii():
        return None
    return value


def _norm_id(msg_id: str) -> str:
    """Normalised form of a plain ``<left@right>``: no brackets, domain lower-cased."""
    left, _, right = msg_id.strip("<>").rpartition("@")
    return f"{left}@{right.lower()}"


def _norm_space(text: str) -> str:
    return " ".join(text.split())


class Case(NamedTuple):
    """One header of one corpus message, with the value replytrack must produce."""

    sample: Sample
    header: str
    expected: Any


def _defects(header: object) -> tuple[MessageDefect, ...]:
    """The parse defects of a header read under ``email.policy.default``.

    The policy's header classes derive from `BaseHeader` and from a parser class
    (`AddressHeader`, `DateHeader` ...), which the stubs declare apart (and with clashing
    ``init`` signatures), so a header narrowed to its parser class reads its defects here.
    """
    assert isinstance(header, BaseHeader)
    return header.defects


def _plain_message_id(msg: email.message.Message) -> Any:
    raw = _single_raw(msg, "Message-ID")
    if raw is None or (m := ONE_MSG_ID_RE.fullmatch(raw)) is None:
        return None
    if _defects(msg["Message-ID"]):
        return None
    return _norm_id(m[1])


def _plain_msg_id_list(msg: email.message.Message, name: str) -> Any:
    raw = _single_raw(msg, name)
    if raw is None or MSG_ID_LIST_RE.fullmatch(raw) is None or _defects(msg[name]):
        return None
    ids = tuple(_norm_id(i) for i in MSG_ID_RE.findall(raw))
    # A repeated id (some clients repeat References entries) may or may not be collapsed: the
    # contract does not say, so such values are not plain.
    if len(set(ids)) != len(ids):
        return None
    return ids


def _plain_addresses(msg: email.message.Message, name: str) -> Any:
    raw = _single_raw(msg, name)
    if raw is None or not raw.strip():
        return None
    # Comments, quoted-pairs, groups and source routes: all legal, all places where parsers
    # legitimately differ on the display name or the members; not plain.
    if any(c in raw for c in "()\\:;") or not _encoded_words_are_plain(raw):
        return None
    header = msg[name]
    assert isinstance(header, AddressHeader)
    if _defects(header) or any(g.display_name is not None for g in header.groups):
        return None
    pairs = []
    for a in header.addresses:
        if a.addr_spec.count("@") != 1 or '"' in a.addr_spec or not a.domain:
            return None
        pairs.append((_norm_space(a.display_name), a.addr_spec.lower()))
    return tuple(pairs) or None


def _plain_subject(msg: email.message.Message) -> Any:
    raw = _single_raw(msg, "Subject")
    if raw is None or not raw.strip() or not _encoded_words_are_plain(raw):
        return None
    header = msg["Subject"]
    if _defects(header):
        return None
    return _norm_space(str(header))


def _plain_date(msg: email.message.Message) -> Any:
    raw = _single_raw(msg, "Date")
    if raw is None or PLAIN_DATE_RE.fullmatch(raw) is None:
        return None
    header = msg["Date"]
    assert isinstance(header, DateHeader)
    when = header.datetime
    if _defects(header) or when is None or when.utcoffset() is None:
        return None  # "-0000" gives a naive datetime: unknown zone, not comparable
    return when


def _agreement_cases() -> list[Case]:
    cases: list[Case] = []
    for sample in MESSAGES:
        msg = email.message_from_bytes(sample.data, policy=email.policy.default)
        expectations = {
            "Message-ID": _plain_message_id(msg),
            "In-Reply-To": _plain_msg_id_list(msg, "In-Reply-To"),
            "References": _plain_msg_id_list(msg, "References"),
            "From": _plain_addresses(msg, "From"),
            "To": _plain_addresses(msg, "To"),
            "Cc": _plain_addresses(msg, "Cc"),
            "Subject": _plain_subject(msg),
            "Date": _plain_date(msg),
        }
        cases.extend(Case(sample, h, e) for h, e in expectations.items() if e is not None)
    return cases


AGREEMENT_CASES = _agreement_cases()
AGREEMENTS_PER_HEADER = Counter(c.header for c in AGREEMENT_CASES)


def _got(parsed: Any, header: str) -> Any:
    """replytrack's answer for ``header``, in the same shape as the expected value."""
    if header == "Message-ID":
        return parsed.message_id
    if header == "In-Reply-To":
        return parsed.in_reply_to
    if header == "References":
        return parsed.references
    if header in ("From", "To", "Cc"):
        addrs = {"From": parsed.from_, "To": parsed.to, "Cc": parsed.cc}[header]
        return tuple((_norm_space(a.name), a.addr.lower()) for a in addrs)
    if header == "Subject":
        return None if parsed.subject is None else _norm_space(parsed.subject)
    return parsed.date


# --- never raises, right types ---------------------------------------------------------------


def _assert_documented_shape(h: Any) -> None:
    assert h.message_id is None or isinstance(h.message_id, str)
    for ids in (h.in_reply_to, h.references):
        assert isinstance(ids, tuple)
        assert all(isinstance(i, str) for i in ids)
    for addrs in (h.from_, h.sender, h.reply_to, h.to, h.cc):
        assert isinstance(addrs, tuple)
        for a in addrs:
            assert isinstance(a, Address)
            assert isinstance(a.name, str)
            assert isinstance(a.addr, str)
    assert h.subject is None or isinstance(h.subject, str)
    assert h.date is None or (isinstance(h.date, dt.datetime) and h.date.utcoffset() is not None)
    assert isinstance(h.defects, tuple)
    assert all(isinstance(d, str) for d in h.defects)
    subject = h.get("subject")
    assert subject is None or isinstance(subject, str)
    received = h.get_all("RECEIVED")
    assert received is None or isinstance(received, (list, tuple))
    assert all(isinstance(r, str) for r in received or ())
    assert h.get("X-Replytrack-Absent") is None
    assert not h.get_all("X-Replytrack-Absent")


@pytest.mark.parametrize("kind", INPUT_KINDS)
@pytest.mark.parametrize("sample", SAMPLES, ids=[s.id for s in SAMPLES])
def test_parse_headers_never_raises_and_returns_documented_types(
    sample: Sample, kind: str
) -> None:
    parsed = parse_headers(INPUT_KINDS[kind](sample.data))
    _assert_documented_shape(parsed)


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.id for s in SAMPLES])
def test_parsed_ids_are_normalised(sample: Sample) -> None:
    """No brackets, no whitespace, not empty; a single ``@`` means a lower-case domain."""
    parsed = parse_headers(sample.data)
    ids = [*([parsed.message_id] if parsed.message_id is not None else []), *parsed.in_reply_to]
    ids += parsed.references
    for msg_id in ids:
        assert msg_id
        assert not any(c in msg_id for c in "<>")
        assert not any(c.isspace() for c in msg_id)
        if msg_id.count("@") == 1:
            domain = msg_id.partition("@")[2]
            assert domain == domain.lower(), msg_id


def _header_block(data: bytes) -> bytes:
    m = re.search(rb"\r?\n\r?\n", data)
    return data if m is None else data[: m.start()]


ASCII_HEADER_SAMPLES = [s for s in SAMPLES if _header_block(s.data).isascii()]


@pytest.mark.parametrize("sample", ASCII_HEADER_SAMPLES, ids=[s.id for s in ASCII_HEADER_SAMPLES])
def test_str_input_parses_like_bytes_when_headers_are_ascii(sample: Sample) -> None:
    from_bytes = parse_headers(sample.data)
    from_str = parse_headers(sample.data.decode("latin-1"))
    for header in ("Message-ID", "In-Reply-To", "References", "From", "To", "Cc", "Subject"):
        assert _got(from_str, header) == _got(from_bytes, header), header
    assert from_str.date == from_bytes.date


# --- agreement with the standard library ----------------------------------------------------


@pytest.mark.parametrize("kind", ["bytes", "message"])
@pytest.mark.parametrize(
    "case", AGREEMENT_CASES, ids=[f"{c.sample.id}:{c.header}" for c in AGREEMENT_CASES]
)
def test_agrees_with_stdlib_on_plain_header(case: Case, kind: str) -> None:
    parsed = parse_headers(INPUT_KINDS[kind](case.sample.data))
    assert _got(parsed, case.header) == case.expected


# Floors a little under what the corpus gives today (Message-ID 235, In-Reply-To 11,
# References 9, From 278, To 271, Cc 3, Subject 285, Date 253): they fail if the plainness rules
# or the corpus change so that the sweep quietly stops comparing anything. Cc is rare in the
# corpus; it goes through the same address parser as To.
MINIMUM_AGREEMENTS = {
    "Message-ID": 200,
    "In-Reply-To": 8,
    "References": 6,
    "From": 200,
    "To": 200,
    "Cc": 2,
    "Subject": 200,
    "Date": 200,
}


@pytest.mark.parametrize("header", MINIMUM_AGREEMENTS)
def test_sweep_compares_enough_headers(header: str) -> None:
    assert AGREEMENTS_PER_HEADER[header] >= MINIMUM_AGREEMENTS[header], AGREEMENTS_PER_HEADER
