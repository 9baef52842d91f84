r"""Exact literal prefilters for regex searches: skip a search that cannot match.

A search with a pattern that starts with ``\b`` (or any assertion, or a group) cannot skip
ahead to its leading literal: `re` steps through the whole text. Many such searches over the
same text (the out-of-office phrasebooks, the bounce reason patterns) are skipped instead when
the text contains none of the literal strings that every match of the pattern must contain:
``literal in text`` is a fast C substring search. The strings are derived from the compiled
pattern itself, with CPython's regex parser, so they cannot drift from the patterns; where
the derivation is unsure it gives none, and the pattern is always searched.

Internal to replytrack (`replytrack.ooo`, `replytrack.dsn`): not a public API.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Final

import attrs

#: The most literal strings one pattern (or one piece of a pattern) is summarised by; beyond
#: this a pattern gets no prefilter rather than a slow one.
MAX_LITERALS: Final = 64
#: Shorter required strings select too little to be worth a check.
MIN_LITERAL_LEN: Final = 2


@attrs.frozen
class _Facts:
    """What a piece of a parsed pattern says about the strings it matches.

    Attributes:
        exact: every string the piece can match, when there are few (``""`` for an
            assertion); else ``None``.
        required: strings, at least `MIN_LITERAL_LEN` long, one of which every match of the
            piece contains; ``None`` when there are no such strings (or too many).
    """

    exact: frozenset[str] | None
    required: frozenset[str] | None


_UNKNOWN: Final = _Facts(None, None)
_ZERO_WIDTH: Final = _Facts(frozenset({""}), None)

# CPython's own regex parser (private; `sre_parse` before 3.11). Without it there is no prefilter.
try:
    if sys.version_info >= (3, 11):
        from re import _parser as _sre_parse
    else:
        import sre_parse as _sre_parse
    _HAVE_PARSER = True
except ImportError:  # pragma: no cover - not CPython
    _HAVE_PARSER = False


def _concat(heads: frozenset[str], tails: frozenset[str]) -> frozenset[str] | None:
    """Every head followed by every tail; ``None`` when that is more than `MAX_LITERALS`."""
    if len(heads) * len(tails) > MAX_LITERALS:
        return None
    return frozenset(head + tail for head in heads for tail in tails)


def _best(candidates: list[frozenset[str]]) -> frozenset[str] | None:
    """The most useful of some required-string sets: long enough strings, then fewest."""
    best: frozenset[str] | None = None
    best_score = (0, 0, 0)
    for literals in candidates:
        shortest = min(map(len, literals), default=0)
        # Four characters already select well in a short text; past that, fewer checks win.
        score = (min(shortest, 4), -len(literals), shortest)
        if shortest >= MIN_LITERAL_LEN and (best is None or score > best_score):
            best, best_score = literals, score
    return best


def _sequence_facts(items: list[tuple[Any, Any]]) -> _Facts:
    """`_Facts` of parsed items matched one after the other."""
    facts: list[_Facts] = []
    spelled = ""  # a stretch of items that match one string each, as that one string
    for op, av in items:
        if op is _sre_parse.LITERAL:
            spelled += chr(av)
            continue
        item = _item_facts(op, av)
        if item.exact is not None and len(item.exact) == 1:
            spelled += next(iter(item.exact))
            continue
        if spelled:
            facts.append(_Facts(frozenset({spelled}), None))
            spelled = ""
        facts.append(item)
    if spelled or not facts:
        facts.append(_Facts(frozenset({spelled}), None))
    # Whatever one item requires, the sequence requires ...
    candidates = [f.required for f in facts if f.required is not None]
    # ... and so does every run of consecutive items whose matches are known, spelled out.
    exact: frozenset[str] | None = None
    for start in range(len(facts)):
        run: frozenset[str] | None = frozenset({""})
        for end in range(start, len(facts)):
            step = facts[end].exact
            run = _concat(run, step) if run is not None and step is not None else None
            if run is None:
                break
            candidates.append(run)
            if start == 0 and end == len(facts) - 1:
                exact = run
    return _Facts(exact, _best(candidates))


def _item_facts(op: Any, av: Any) -> _Facts:
    """`_Facts` of one parsed item; anything not understood is `_UNKNOWN`."""
    p = _sre_parse  # plain characters (LITERAL) are spelled out by _sequence_facts
    if op is p.IN and all(kind is p.LITERAL for kind, _ in av):  # [abc]: no ranges, no negation
        return _Facts(frozenset(chr(char) for _, char in av), None)
    if op in (p.AT, p.ASSERT, p.ASSERT_NOT):  # \b, ^, $, look-ahead and look-behind
        return _ZERO_WIDTH
    if op is p.SUBPATTERN:
        _group, add_flags, _del_flags, sub = av
        # Case-insensitive groups match strings their literals do not spell.
        return _UNKNOWN if add_flags & re.IGNORECASE else _sequence_facts(sub.data)
    if op is p.BRANCH:
        branches = [_sequence_facts(branch.data) for branch in av[1]]
        exact: frozenset[str] | None = frozenset()
        required: frozenset[str] | None = frozenset()
        for branch in branches:
            exact = (
                exact | branch.exact if exact is not None and branch.exact is not None else None
            )
            required = (
                required | branch.required
                if required is not None and branch.required is not None
                else None
            )
        return _Facts(
            exact if exact is not None and len(exact) <= MAX_LITERALS else None,
            required if required is not None and len(required) <= MAX_LITERALS else None,
        )
    if op in (p.MAX_REPEAT, p.MIN_REPEAT, getattr(p, "POSSESSIVE_REPEAT", None)):  # x{m,n}
        low, high, sub = av
        inner = _sequence_facts(sub.data)
        if low == high == 1:
            return inner
        if low == 0:  # may match nothing: requires nothing, and is known only as (x)?
            if high == 1 and inner.exact is not None:
                return _Facts(inner.exact | {""}, None)
            return _UNKNOWN
        return _Facts(None, inner.required)  # at least one match of the inner piece
    return _UNKNOWN


def required_literals(pattern: re.Pattern[str]) -> tuple[str, ...] | None:
    r"""Strings one of which every match of `pattern` contains, or ``None`` if none are known.

    This is exact, not a heuristic: the strings are spelled out from literal characters,
    ``[abc]`` classes, alternations and ``(...)?`` groups of the parsed pattern, with
    assertions (``\b``, ``^``, look-arounds) matching the empty string. Anything else (other
    classes, ``.``, repeats that may match nothing, back-references, case-insensitive parts)
    is not spelled out. A pattern with an alternative that requires no string of two or more
    characters this way gets ``None``: it is always searched.
    """
    if pattern.flags & re.IGNORECASE or not _HAVE_PARSER:
        return None
    try:
        parsed = _sre_parse.parse(pattern.pattern, pattern.flags)
        if parsed.state.flags & re.IGNORECASE:
            return None
        required = _sequence_facts(parsed.data).required
    except Exception:  # a parser that changed shape: no prefilter, never a wrong one
        return None
    return minimal(required) if required is not None else None


def starts_with_literal(pattern: str) -> bool:
    r"""Whether every match of `pattern` starts with one given character (no "\b", no group).

    The regex engine skips the positions where no alternative of a pattern can start only
    when each alternative is such a pattern (see `replytrack.dsn`'s reason patterns).
    """
    if not _HAVE_PARSER:
        return False
    try:
        items = _sre_parse.parse(pattern).data
    except Exception:  # a parser that changed shape: "no", which only costs speed
        return False
    return bool(items) and items[0][0] is _sre_parse.LITERAL


def minimal(literals: frozenset[str]) -> tuple[str, ...]:
    """`literals` without those containing another one: that one is found whenever they are."""
    ordered = sorted(literals, key=lambda s: (len(s), s))
    return tuple(s for i, s in enumerate(ordered) if not any(t in s for t in ordered[:i]))


def contains_any(text: str, literals: tuple[str, ...]) -> bool:
    """Whether `text` contains one of `literals`."""
    # Some 300 checks per text: a plain loop is a sixth faster than any() over a generator.
    for literal in literals:  # noqa: SIM110
        if literal in text:
            return True
    return False


@attrs.frozen
class Phrase:
    """A compiled pattern with its exact prefilter (see `required_literals`).

    An out-of-office body phrase, or a piece of a bounce reason pattern: `search` answers as
    ``pattern.search`` does, without searching a text that holds none of the literals.
    """

    pattern: re.Pattern[str]
    literals: tuple[str, ...] | None  # None: no prefilter, always search

    @classmethod
    def of(cls, pattern: re.Pattern[str]) -> Phrase:
        return cls(pattern, required_literals(pattern))

    def search(self, text: str) -> re.Match[str] | None:
        if self.literals is not None and not contains_any(text, self.literals):
            return None  # a match would contain one of the literals
        return self.pattern.search(text)
