"""The faster reason patterns of ``replytrack.dsn`` find exactly what the whole patterns found.

Each reason pattern is searched in two pieces (``_ReasonPattern``): its alternatives that start
with a given character, and the others, each behind the exact literal prefilter of
``replytrack._prefilter``. A text holds a match of the pattern where it holds one of either piece;
the reference here is the whole pattern, compiled as it was.
"""

from __future__ import annotations

import email
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from replytrack import dsn
from replytrack.headers import parse_headers

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_CORPUS = Path(__file__).parent.parent / "corpus"
_WHOLE = [(reason, re.compile(pattern)) for reason, pattern in dsn._REASON_PATTERNS]


def _old_text_reason(text: str) -> str | None:
    """`dsn._cut_text_reason` as it was: every whole pattern in turn."""
    text = text.lower()
    for reason, regex in _WHOLE:
        if regex.search(text):
            return reason
    return None


def _literal_pieces(source: str) -> list[str]:
    pieces = re.split(r"\\[bBsSdDwW]|\\.|\(\?[:=!<]*|[()|?*+.^$\[\]]|\{\d*,?\d*\}", source)
    return [piece for piece in pieces if len(piece) >= 2]


_FRAGMENTS = sorted({p for _, source in dsn._REASON_PATTERNS for p in _literal_pieces(source)})
_ALTERNATIVES = [a for _, source in dsn._REASON_PATTERNS for a in dsn._alternatives(source)]
_PIECE = st.one_of(
    st.sampled_from(_FRAGMENTS),
    # Strings that contain a match of one alternative, so that matches are found, not misses.
    st.sampled_from(_ALTERNATIVES).flatmap(st.from_regex),
    st.sampled_from(["550", "5.7.21", "5.1.1", "<jo@example.com>", "spamhaus", "wall", "cop"]),
    st.text(max_size=12),
)
_SEPARATOR = st.sampled_from(["", " ", "  ", ": ", "\n", "-", "_"])
_TEXT = st.lists(st.tuples(_PIECE, _SEPARATOR), max_size=10).map(
    lambda parts: "".join(piece + separator for piece, separator in parts)
)


@pytest.mark.parametrize(("reason", "source"), dsn._REASON_PATTERNS)
def test_the_alternatives_are_the_pattern_split_at_its_top_level(reason: str, source: str) -> None:
    alternatives = dsn._alternatives(source)
    assert "|".join(alternatives) == source
    for alternative in alternatives:
        re.compile(alternative)  # a whole alternative: its groups and classes are closed
    assert sum(re.compile(a).groups for a in alternatives) == re.compile(source).groups


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (r"a|b", ["a", "b"]),
        (r"(?:a|b)c|d", ["(?:a|b)c", "d"]),
        (r"[|]|x", ["[|]", "x"]),
        (r"[]|]|x", ["[]|]", "x"]),
        (r"[^]|]|x", ["[^]|]", "x"]),
        (r"\||x", [r"\|", "x"]),
        (r"[\]|]|x", [r"[\]|]", "x"]),
        (r"\(|x", [r"\(", "x"]),
        (r"abc", ["abc"]),
    ],
)
def test_alternatives(source: str, expected: list[str]) -> None:
    assert dsn._alternatives(source) == expected


@pytest.mark.parametrize(("reason", "source"), dsn._REASON_PATTERNS)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_alternative_is_found_by_its_reason_pattern(
    reason: str, source: str, data: st.DataObject
) -> None:
    """One alternative at a time, so that a piece or a prefilter that loses one is found."""
    for alternative in dsn._alternatives(source):
        text = data.draw(st.from_regex(alternative), label=alternative)
        pattern = dict(dsn._REASON_REGEXES)[reason]
        assert pattern.search(text) is not None
        assert re.compile(source).search(text) is not None


@PROPERTY
@given(_TEXT.map(str.lower))
@example("5.7.21 dmarc policy violation")
@example("virus wall")
@example("the spamhaus list")
@example("")
def test_the_reason_patterns_match_where_the_whole_patterns_matched(text: str) -> None:
    for (reason, pattern), (_, whole) in zip(dsn._REASON_REGEXES, _WHOLE, strict=True):
        assert (pattern.search(text) is None) == (whole.search(text) is None), reason
    assert dsn._cut_text_reason.__wrapped__(text) == _old_text_reason(text)


def _report_texts() -> list[str]:
    texts: list[str] = []
    for path in sorted(_CORPUS.rglob("*")):
        if not path.is_file() or path.suffix in (".md", ".json", ".py"):
            continue
        message = email.message_from_bytes(path.read_bytes())
        for part in message.walk():
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                texts.append(payload.decode("utf-8", "replace")[: dsn._REASON_SCAN_CHARS])
        texts.extend(str(v) for v in message.values())
    return texts


def test_the_corpus_reads_the_same_reasons() -> None:
    texts = _report_texts()
    assert len(texts) > 500
    found = 0
    for text in texts:
        reason = dsn._cut_text_reason.__wrapped__(text)
        assert reason == _old_text_reason(text)
        found += reason is not None
    assert found > 100


def test_a_corpus_bounce_still_reads_its_reason() -> None:
    path = _CORPUS / "flufl.bounce" / "postfix_01.txt"
    message = email.message_from_bytes(path.read_bytes())
    report = dsn.analyze_report(message, parse_headers(path.read_bytes()))
    assert report is not None
    assert report.bounce is not None
    assert all(r.reason in dsn.REASONS for r in report.bounce.recipients)
