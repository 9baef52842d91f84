"""Properties of replytrack.msgid: refs round trip, tampering never verifies, verify never raises.

A signed id must survive whatever case-folding mail systems apply, yet any change to a single
character of its left part that is *not* a change of case must make it unrecognisable: the
tag covers every character before it, and the tag itself is 80 bits.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from replytrack.msgid import MAX_REF_BYTES, MessageIdGenerator

FAST = settings(max_examples=200, deadline=None)
THOROUGH = settings(max_examples=500, deadline=None)

KEY = b"property-test-key-0123456789abcdef"
DOMAIN = "mail.example.com"
T0 = 1_767_225_600.0
GEN = MessageIdGenerator(DOMAIN, KEY, clock=lambda: T0)

# Any text whose UTF-8 form fits in a ref (hypothesis' text() already excludes lone surrogates).
refs = st.text(max_size=MAX_REF_BYTES).filter(lambda r: len(r.encode()) <= MAX_REF_BYTES)


@FAST
@given(ref=refs)
def test_ref_round_trips(ref: str) -> None:
    token = GEN.verify(GEN.generate(ref=ref))
    assert token is not None
    assert token.ref == ref


@FAST
@given(ref=refs, data=st.data())
def test_any_case_folding_of_the_id_still_verifies(ref: str, data: st.DataObject) -> None:
    mid = GEN.generate(ref=ref)
    flips = data.draw(st.lists(st.booleans(), min_size=len(mid), max_size=len(mid)))
    folded = "".join(c.swapcase() if flip else c for c, flip in zip(mid, flips, strict=True))
    token = GEN.verify(folded)
    assert token is not None
    assert token.ref == ref


@FAST
@given(seconds=st.integers(min_value=0, max_value=2**35 - 1), fraction=st.floats(0, 0.999))
def test_issued_at_is_the_clock_truncated_to_the_second(seconds: int, fraction: float) -> None:
    gen = MessageIdGenerator(DOMAIN, KEY, clock=lambda: seconds + fraction)
    token = gen.verify(gen.generate(ref="x"))
    assert token is not None
    assert token.issued_at.tzinfo is timezone.utc
    assert token.issued_at == datetime.fromtimestamp(seconds, timezone.utc)


@THOROUGH
@given(ref=refs, data=st.data())
def test_changing_one_character_of_the_left_part_never_verifies(
    ref: str, data: st.DataObject
) -> None:
    """Any single-character change that is not a change of case gives None, not another ref."""
    mid = GEN.generate(ref=ref)
    at = mid.index("@")
    index = data.draw(st.integers(min_value=1, max_value=at - 1), label="index")
    original = mid[index]
    replacement = data.draw(
        st.characters().filter(lambda c: c.lower() != original.lower()), label="replacement"
    )
    tampered = mid[:index] + replacement + mid[index + 1 :]
    assert GEN.verify(tampered) is None


@FAST
@given(ref=refs, data=st.data())
def test_deleting_or_inserting_a_character_in_the_left_part_never_verifies(
    ref: str, data: st.DataObject
) -> None:
    mid = GEN.generate(ref=ref)
    at = mid.index("@")
    index = data.draw(st.integers(min_value=1, max_value=at - 1), label="index")
    deleted = mid[:index] + mid[index + 1 :]
    inserted = mid[:index] + data.draw(st.characters(), label="inserted") + mid[index:]
    assert GEN.verify(deleted) is None
    assert GEN.verify(inserted) is None


@FAST
@given(ref=refs, domain=st.from_regex(r"[a-z0-9-]{1,20}(\.[a-z0-9-]{1,20}){0,3}", fullmatch=True))
def test_the_domain_is_not_part_of_the_signature(ref: str, domain: str) -> None:
    mid = GEN.generate(ref=ref)
    moved = mid[: mid.index("@") + 1] + domain + ">"
    token = GEN.verify(moved)
    assert token is not None
    assert token.ref == ref


@THOROUGH
@given(text=st.text())
def test_verify_never_raises_on_arbitrary_text(text: str) -> None:
    assert GEN.verify(text) is None


@FAST
@given(data=st.binary())
def test_verify_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    assert GEN.verify(data) is None


@THOROUGH
@given(
    text=st.from_regex(
        re.compile(
            r"\s*<?[rR]1\.[a-zA-Z2-7]{27}(\.[0-9a-fA-F]{0,130})?\.[a-zA-Z2-7]{14,18}"
            r"(@[^\s>]{0,20})?>?\s*"
        ),
        fullmatch=True,
    )
)
def test_verify_never_raises_on_near_misses_of_the_format(text: str) -> None:
    """Well-shaped forgeries reach the tag comparison and the decoders; still None."""
    assert GEN.verify(text) is None
