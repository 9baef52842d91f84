"""The exact prefilter of ``ooo._body_evidence``: it skips only searches that cannot match.

Each body phrase carries the literal strings one of which any match must contain
(``_prefilter.required_literals``); each language carries the union of them (``gate``). The
properties here compare `_body_evidence` with the loop it replaced, which searched every
pattern, on text made of phrasebook fragments, strings the patterns match, and noise.
"""

from __future__ import annotations

import datetime as dt
import email
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from replytrack import _prefilter, ooo
from replytrack.testing import OOO_LANGUAGES, build_auto_reply, build_out_of_office

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_PHRASE_FIELDS = (
    "subject_auto",
    "subject_ooo",
    "subject_absence",
    "absence",
    "statements",
    "companions",
    "declarations",
    "service",
    "back",
    "until",
    "until_inclusive",
    "back_after",
    "until_after",
)


def _phrases(book: ooo._Compiled) -> list[_prefilter.Phrase]:
    body = (book.absence, book.statements, book.declarations, book.service)
    return [phrase for phrase in body if phrase is not None] + list(book.companions)


_ALL_PHRASES = [phrase for book in ooo._BOOKS for phrase in _phrases(book)]


def _first(pattern: re.Pattern[str] | None, text: str) -> str | None:
    if pattern is None:
        return None
    match = pattern.search(text)
    return match.group(0).strip() if match else None


def _reference(text: str) -> ooo._Body:
    """`_body_evidence` as it was before the prefilter: every pattern of every book searched."""
    absence = statement = declaration = service = None
    companions: list[str] = []
    spans: list[tuple[int, int]] = []
    languages: list[str] = []
    for book in ooo._BOOKS:
        code = book.book.code
        hits = False
        if absence is None and (found := _first(_bare(book.absence), text)):
            absence, hits = f"absence wording {found!r} ({code})", True
        if statement is None and (found := _first(_bare(book.statements), text)):
            statement, hits = f"absence statement {found[:80]!r} ({code})", True
        if declaration is None and (found := _first(_bare(book.declarations), text)):
            declaration, hits = f"says it is automatic: {found[:80]!r} ({code})", True
        if service is None and (found := _first(_bare(book.service), text)):
            service, hits = f"acknowledgement wording {found[:80]!r} ({code})", True
        for companion in book.companions:
            match = companion.pattern.search(text)
            # Count a phrase once: "respond upon my return" matches two patterns.
            if match and not any(
                match.start() < end and start < match.end() for start, end in spans
            ):
                spans.append(match.span())
                companions.append(f"{match.group(0).strip()[:60]!r} ({code})")
                hits = True
        if hits:
            languages.append(code)
    return ooo._Body(absence, statement, tuple(companions), declaration, service, tuple(languages))


def _bare(phrase: _prefilter.Phrase | None) -> re.Pattern[str] | None:
    return phrase.pattern if phrase is not None else None


def _literal_pieces(source: str) -> list[str]:
    """The literal stretches of a phrase's regular expression: "on (?:vacation|holiday)\\b"
    gives "on ", "vacation", "holiday"."""
    pieces = re.split(r"\\[bBsSdDwW]|\\.|\(\?[:=!<]*|[()|?*+.^$\[\]]|\{\d*,?\d*\}", source)
    return [piece for piece in pieces if len(piece) >= 2]


_FRAGMENTS = sorted(
    {
        piece
        for book in ooo.PHRASEBOOKS
        for field in _PHRASE_FIELDS
        for source in getattr(book, field)
        for piece in _literal_pieces(source)
    }
)
_REQUIRED = sorted({literal for p in _ALL_PHRASES for literal in p.literals or ()})

_BODY_FIELDS = ("absence", "statements", "declarations", "service", "companions")
# Every body phrase as the phrasebook writes it: (language, field, regular expression).
_SOURCES = [
    (book.code, field, source)
    for book in ooo.PHRASEBOOKS
    for field in _BODY_FIELDS
    for source in getattr(book, field)
]


def _containing_a_match(source: str) -> st.SearchStrategy[str]:
    return st.from_regex(source)


_PIECE = st.one_of(
    st.sampled_from(_FRAGMENTS),
    st.sampled_from(_REQUIRED),
    # Strings that contain a match of some phrase, so that matches are found, not only misses.
    st.sampled_from([source for _, _, source in _SOURCES]).flatmap(_containing_a_match),
    st.text(max_size=20),
)
_SEPARATOR = st.sampled_from(["", " ", "  ", ". ", ", ", "\n", "!"])
_TEXT = st.lists(st.tuples(_PIECE, _SEPARATOR), max_size=12).map(
    lambda parts: "".join(piece + separator for piece, separator in parts)
)


@PROPERTY
@given(_TEXT)
@example("I am currently out of the office with limited access to email. Upon my return")
@example("Ich bin bis 3.3. nicht im Büro. In dringenden Fällen wenden Sie sich an ...")
@example("ich bin im urlaub" + "x" * 300)
@example("")
def test_body_evidence_equals_searching_every_pattern(text: str) -> None:
    assert ooo._body_evidence(text) == _reference(text)
    flat = ooo._flat(text)  # what _detect passes: lower-cased, one space
    assert ooo._body_evidence(flat) == _reference(flat)


def _book(code: str) -> ooo._Compiled:
    return next(book for book in ooo._BOOKS if book.book.code == code)


@pytest.mark.parametrize(
    ("code", "field", "source"),
    _SOURCES,
    ids=[f"{code}-{field}-{i}" for i, (code, field, _) in enumerate(_SOURCES)],
)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_phrase_passes_its_prefilters_where_it_matches(
    code: str, field: str, source: str, data: st.DataObject
) -> None:
    """One phrase at a time, so that a literal missing for any alternative is found."""
    text = data.draw(st.from_regex(source, fullmatch=True), label="text")
    before, after = data.draw(st.tuples(st.text(max_size=8), st.text(max_size=8)), label="around")
    book = _book(code)
    phrases = book.companions if field == "companions" else (getattr(book, field),)
    assert any(phrase is not None and phrase.search(text) for phrase in phrases)
    for sample in (text, before + text + after):  # the text holds a required literal either way
        assert book.gate is None or _prefilter.contains_any(sample, book.gate)
        for phrase in _phrases(book):
            assert (phrase.search(sample) is None) == (phrase.pattern.search(sample) is None)
        assert ooo._body_evidence(sample) == _reference(sample)


@pytest.mark.parametrize("language", OOO_LANGUAGES)
def test_every_language_template_is_read_as_before(language: str) -> None:
    for raw in (
        build_out_of_office(language=language),
        build_out_of_office(language=language, return_date=dt.date(2027, 3, 14)),
        build_auto_reply(),
    ):
        message = email.message_from_bytes(raw)
        for text in (ooo.body_text(message), str(message["Subject"])):
            flat = ooo._flat(text)
            assert ooo._body_evidence(flat) == _reference(flat)
    notice = email.message_from_bytes(build_out_of_office(language=language))
    assert language in ooo._body_evidence(ooo._flat(ooo.body_text(notice))).languages


# -- the prefilter does not silently vanish -----------------------------------------------------


@pytest.mark.parametrize("book", ooo._BOOKS, ids=lambda book: book.book.code)
def test_every_book_has_a_gate_and_prefilters_most_of_its_patterns(book: ooo._Compiled) -> None:
    phrases = _phrases(book)
    with_literals = [phrase for phrase in phrases if phrase.literals is not None]
    assert len(with_literals) >= 0.8 * len(phrases)
    assert book.gate is not None
    assert all(len(literal) >= 2 for literal in book.gate)
    for phrase in with_literals:
        assert phrase.literals
        assert all(len(literal) >= 2 for literal in phrase.literals)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (r"\bout of office\b", ("out of office",)),
        (r"out of (?:the )?office(?! hours)", ("out of ",)),
        (r"\b(?:dès|à) mon retour\b", (" mon retour",)),
        (r"\bon (?:vacation|holiday)\b", ("on holiday", "on vacation")),
        (r"(?:a|b)cdef|xyz", ("xyz", "cdef")),
        (r"[a-z]+ing", ("ing",)),
        (r"\bau(?:ß|ss)er haus\b", ("er haus",)),
        (r"ab+cd", ("cd",)),
        (r"(?:ab){2,3}", ("ab",)),
        (r"(?i:foo)barbaz", ("barbaz",)),
        ("不在(?:です|にして)", ("不在です", "不在にして")),
    ],
)
def test_required_literals(pattern: str, expected: tuple[str, ...]) -> None:
    assert _prefilter.required_literals(re.compile(pattern)) == expected


@pytest.mark.parametrize(
    "pattern",
    [
        r"(?:foo)?bar|\w+",  # the second alternative needs no literal
        r"(?:foo)?b",  # what is required is one character
        r"\d+",
        r"(?i)out of office",  # case-insensitive: the literals do not spell every match
        r"(?i:out of office)",
        r"x*",
        r"(a)\1",
    ],
)
def test_required_literals_is_none_where_no_literal_is_required(pattern: str) -> None:
    assert _prefilter.required_literals(re.compile(pattern)) is None


def test_case_insensitive_patterns_get_no_prefilter() -> None:
    assert _prefilter.required_literals(re.compile("out of office", re.IGNORECASE)) is None
