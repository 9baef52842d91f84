"""The faster paths of ``replytrack.ooo`` read exactly what the code they replaced read.

Each test compares a function with the code it replaced, kept here as the reference: the quote
hint answered by substring tests (``_has_quote_hint``), ``_normalize`` without
``str.translate``, and ``_detect``, which reads the subject's wording only where the body's
leaves it a say, reuses the flattened subject and body for the return date, and reads the
reply fields only for an absence subject.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email
import sys
import unicodedata
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from replytrack import ooo
from replytrack.headers import Headers, parse_headers
from replytrack.testing import (
    OOO_LANGUAGES,
    build_auto_reply,
    build_out_of_office,
    build_reply,
    format_date,
)

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- the references: the code as it was ----------------------------------------------------------

_OLD_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u00b4": "'", "`": "'"})


def _old_normalize(text: str) -> str:
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    text = text.translate(_OLD_APOSTROPHES).lower()
    if "  " in text or "\t" in text or not text.isascii():
        text = ooo._WS.sub(" ", text)
    return text


def _old_flat(text: str) -> str:
    return " ".join(_old_normalize(text).split())


def _old_unquoted(text: str) -> tuple[str, bool]:
    out: list[str] = []
    size = 0
    for line in text.splitlines():
        if ooo._QUOTE_HINT.search(line) and ooo._QUOTE_START.match(_old_normalize(line).strip()):
            return "\n".join(out)[: ooo.MAX_SCAN_CHARS], True
        out.append(line)
        size += len(line) + 1
        if size >= ooo.MAX_SCAN_CHARS:
            break
    return "\n".join(out)[: ooo.MAX_SCAN_CHARS], False


@contextlib.contextmanager
def _old_normalize_in_ooo() -> Iterator[None]:
    saved = ooo._normalize
    ooo._normalize = _old_normalize
    try:
        yield
    finally:
        ooo._normalize = saved


def _old_find_return_date(text: str, **kwargs: object) -> dt.date | None:
    with _old_normalize_in_ooo():
        return ooo.find_return_date(text, **kwargs)  # type: ignore[arg-type]


def _old_detect(headers: Headers, raw_body: str) -> ooo.AutoReply | None:
    """`ooo._detect` as it was."""
    evidence = ooo._header_evidence(headers)
    subject_raw = (headers.get("Subject") or "")[: ooo.MAX_SUBJECT_CHARS]
    subject = ooo._subject_evidence(subject_raw)
    is_reply = bool(headers.in_reply_to or headers.references)
    own_text, quoted = _old_unquoted(raw_body)
    reasons: list[str] = []
    out_of_office = evidence.vacation
    if evidence.strong:
        reasons.extend(evidence.strong)
    if subject.machine:
        reasons.append(subject.machine)
        out_of_office = out_of_office or subject.machine_ooo
    if subject.absence and (is_reply or reasons):
        reasons.append(subject.absence + (", answering a message" if is_reply else ""))
        out_of_office = True
    body_only = not reasons and not quoted and not ooo._is_list_post(headers)
    flat_body = _old_flat(own_text) if reasons or evidence.weak or body_only else ""
    body_only = body_only and len(flat_body) <= ooo._MAX_BODY_ONLY_CHARS
    if not (reasons or evidence.weak or body_only):
        return None
    body = ooo._body_evidence(flat_body)
    corroboration = body.statement or body.declaration or body.service
    if not reasons and evidence.weak and corroboration:
        reasons.extend(evidence.weak)
        reasons.append(f"body: {corroboration}")
    if body_only and not reasons:
        reasons.extend(ooo._body_only(body, quoted=quoted))
    if not reasons:
        return None
    subject_body = ooo._body_evidence(_old_flat(subject_raw))
    if body.absence or subject_body.absence or body.statement:
        out_of_office = True
        wording = body.statement or body.absence or subject_body.absence
        if f"body: {wording}" not in reasons:
            reasons.append(f"out-of-office: {wording}")
    elif out_of_office and evidence.vacation:
        reasons.append("out-of-office: vacation marker in Auto-Submitted")
    if not out_of_office:
        return ooo.AutoReply(out_of_office=False, return_date=None, reasons=tuple(reasons))
    date = headers.date
    return_date = _old_find_return_date(
        subject_raw + "\n" + own_text,
        reference=date.date() if date else None,
        languages=body.languages or subject_body.languages,
        utc_offset=date.utcoffset() if date else None,
    )
    if return_date is not None:
        reasons.append(f"return date {return_date.isoformat()}")
    return ooo.AutoReply(out_of_office=True, return_date=return_date, reasons=tuple(reasons))


# -- text made of what the patterns look for ---------------------------------------------------

_TRICKY = [
    "begin", "BEGIN", "Begın", "BEGİN", "beg", "in", "b", "B", "İ", "ı", ">", ":", "_", "-",
    "\u2019", "\u2018", "\u00b4", "`", "'", "\u00a0", "\u2009", "\u200b", "\u3000", "\t", "  ",
    "\r\n", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "Σ", "ΑΣ", "ς", "ﬁ", "ß",
    "e\u0301", "\u0301", "K", "ſ", "Å", "A\u030a",
    "On Mon, 1 Mar 2027, Jo <jo@example.com> wrote:", "-----Original Message-----",
    "Von: Jo <jo@example.com>", "Begin forwarded message:", "> quoted", "____________",
]  # fmt: skip
_NAMES = sorted({*ooo._MONTHS, *ooo._WEEKDAYS, *ooo._WEEKDAY_ABBREVIATIONS, *ooo._RELATIVE})
_DATE_WORDS = [
    "back", "until", "bis", "zurück am", "de retour le", "through", "from 3 to 14", "du 1er au",
    "3", "14", "31", "2027", "27", "3.", "3/14", "14.3.", "2027-03-14", "3月14日", "1st", "the",
    "of", "de", "(月)", "より出社", "mars", "mar", "march", "marchx", "mon", "monday", "montag",
    "-", ".", ",", "/", "9.30 uhr", "am",
]  # fmt: skip
_PIECE = st.one_of(
    st.sampled_from(_TRICKY),
    st.sampled_from(_NAMES),
    st.sampled_from(_DATE_WORDS),
    st.text(max_size=12),
)
_SEPARATOR = st.sampled_from(["", " ", "  ", ". ", ", ", "\n", "\r\n", "\t"])
_TEXT = st.lists(st.tuples(_PIECE, _SEPARATOR), max_size=16).map(
    lambda parts: "".join(piece + separator for piece, separator in parts)
)


# -- the quote hint and the quoted original ------------------------------------------------------


def test_the_quote_hint_agrees_with_the_pattern_on_every_character() -> None:
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        for line in (char, f"x{char}x", f"{char}egin", f"beg{char}n", f"BEG{char}N"):
            assert ooo._has_quote_hint(line) == bool(ooo._QUOTE_HINT.search(line)), hex(code)


@PROPERTY
@given(_TEXT)
@example("Begİn forwarded message")
@example("begın")
@example("Thanks, see you\r\n\r\nOn Mon, 1 Mar 2027 Jo wrote:\r\n> hi")
def test_the_quote_hint_and_the_sender_s_text_are_read_as_before(text: str) -> None:
    for line in text.splitlines():
        assert ooo._has_quote_hint(line) == bool(ooo._QUOTE_HINT.search(line))
    assert ooo._unquoted(text) == _old_unquoted(text)


# -- text preparation ----------------------------------------------------------------------------


@PROPERTY
@given(_TEXT)
@example("It\u2019s `here` \u00b4s \u2018x\u2019")
def test_normalize_is_what_translating_the_apostrophes_was(text: str) -> None:
    assert ooo._normalize(text) == _old_normalize(text)
    assert ooo._flat(text) == _old_flat(text)


@PROPERTY
@given(_TEXT, _TEXT)
@example("ΑΣ", "Σα")
@example("x", "\u0301e")
@example("A\u030a ", " \u200b")
@example("", "")
def test_texts_joined_by_a_line_break_flatten_to_their_flat_forms_joined(a: str, b: str) -> None:
    joined = " ".join(part for part in (ooo._flat(a), ooo._flat(b)) if part)
    assert ooo._flat(a + "\n" + b) == joined


# -- the return date -----------------------------------------------------------------------------


@PROPERTY
@given(_TEXT)
@example("back on monday 3 march 2027, bis montag 14.3., marchx 3, mars 3, mon 3 mar")
@example("zurück am 3. märz, de retour le lundi 14 mars, 3月14日(月)より出社, tomorrowland")
def test_the_return_date_is_found_as_before(text: str) -> None:
    reference = dt.date(2027, 3, 1)
    for languages in ((), ("en",), ("de",), ("ja",)):
        for offset in (None, dt.timedelta(hours=-5)):
            found = ooo.find_return_date(
                text, reference=reference, languages=languages, utc_offset=offset
            )
            assert found == _old_find_return_date(
                text, reference=reference, languages=languages, utc_offset=offset
            )


# -- the verdict ---------------------------------------------------------------------------------


def _messages() -> Iterator[bytes]:
    day = dt.date(2027, 3, 1)
    for n, language in enumerate(OOO_LANGUAGES):
        for style in ("automatic_reply", "absence", "original"):
            for back in (None, day + dt.timedelta(days=3 + n), day + dt.timedelta(days=300)):
                for auto_submitted in (True, False):
                    yield build_out_of_office(
                        language=language,
                        return_date=back,
                        subject_style=style,
                        auto_submitted=auto_submitted,
                    )
        yield build_out_of_office(
            language=language,
            subject=f"Out of Office: back {format_date(language, day + dt.timedelta(days=9))}",
            body="Thanks for your message.",
        )
    for style in ("ticket", "acknowledgement", "challenge"):
        yield build_auto_reply(style=style)  # type: ignore[arg-type]
        yield build_auto_reply(style=style, auto_submitted=False)  # type: ignore[arg-type]
    yield build_reply()
    yield build_reply(subject="Out of Office", quote=None)
    yield build_reply(body="I am out of the office until March 14, with limited access.")


@pytest.mark.parametrize("raw", list(_messages()))
def test_detect_decides_as_before(raw: bytes) -> None:
    headers = parse_headers(raw)
    body = ooo.body_text(email.message_from_bytes(raw))
    assert ooo._detect(headers, body) == _old_detect(parse_headers(raw), body)


@PROPERTY
@given(
    st.sampled_from(
        [
            "Automatic reply: Quick question",
            "Out of Office",
            "Abwesenheitsnotiz",
            "Re: Quick question",
            "Urlaub bis 14.3.",
            "Absence du bureau",
            "",
        ]
    ),
    st.booleans(),
    st.booleans(),
    _TEXT,
)
@example(
    "Out of Office",
    True,
    False,
    "I am currently out of the office until Monday 14 March. For urgent matters ...",
)
def test_detect_decides_as_before_on_any_body(
    subject: str, auto: bool, answers: bool, body: str
) -> None:
    raw = build_reply(
        subject=subject,
        body=body.replace("\r", ""),
        quote=None,
        in_reply_to="<send-1@mail.sales.example>" if answers else None,
        headers={"Auto-Submitted": "auto-replied"} if auto else {},
    )
    headers = parse_headers(raw)
    text = ooo.body_text(email.message_from_bytes(raw))
    assert ooo._detect(headers, text) == _old_detect(parse_headers(raw), text)
    assert ooo._detect(headers, body) == _old_detect(parse_headers(raw), body)


@pytest.mark.parametrize("subject", ["", "Out of Office", "Abwesenheitsnotiz: Urlaub bis 14.3."])
@pytest.mark.parametrize(
    "body", ["", "I am out of the office until 14 March.", "Bin bis 14.3. weg"]
)
def test_the_return_date_reads_the_flat_form_of_subject_and_body_joined(
    subject: str, body: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    read: list[str] = []
    real = ooo._return_date

    def spy(flat: str, *args: object) -> dt.date | None:
        read.append(flat)
        return real(flat, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(ooo, "_return_date", spy)
    raw = build_reply(subject=subject, body=body, quote=None, headers={"Auto-Submitted": "yes"})
    verdict = ooo._detect(parse_headers(raw), body)
    own_text, _ = ooo._unquoted(body)
    out_of_office = verdict is not None and verdict.out_of_office
    assert read == ([ooo._flat(subject + "\n" + own_text)] if out_of_office else [])
