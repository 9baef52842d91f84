"""Properties of the whole pure core on hostile mail (``strategies.py``): it never raises, what
it returns is bounded, and what should read back as itself does.

The example counts come from the Hypothesis profile (``tests/property/conftest.py``): short by
default, ``HYPOTHESIS_PROFILE=thorough`` for long runs. The atheris harnesses in ``fuzz/`` run
the same entry points on a million inputs each (``docs/robustness.md``).
"""

from __future__ import annotations

import datetime as dt
import re

from hypothesis import example, given
from hypothesis import strategies as st

from replytrack import mime, ooo
from replytrack.classify import MAX_PARSE_BYTES, Kind, classify
from replytrack.conversation import thread_messages
from replytrack.correlate import Correlator, MatchMethod
from replytrack.dsn import MAX_RECIPIENTS, REASONS
from replytrack.headers import (
    MAX_ID_LENGTH,
    MAX_IDS_PER_FIELD,
    Address,
    normalize_msg_id,
    parse_addresses,
    parse_headers,
    parse_msg_ids,
)
from replytrack.store import MemoryStore, SentMessage
from replytrack.threadindex import ThreadIndex
from strategies import (
    address_lists,
    dsns,
    header_blocks,
    messages,
    mime_trees,
    msg_id_lists,
    thread_index_values,
)

SEND = SentMessage(
    message_id="<send-1@mail.sales.example>",
    ref="c1:p1",
    sender="rep@sales.example",
    to=("jo@customer.example",),
)
_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


def _assert_canonical_ids(ids: tuple[str, ...]) -> None:
    """Headers Rule 5 and 6: bounded, no brackets, and each reads back in brackets as itself."""
    assert len(ids) <= MAX_IDS_PER_FIELD
    for mid in ids:
        assert 0 < len(mid) <= MAX_ID_LENGTH
        assert "<" not in mid
        assert ">" not in mid
        # Stores keep ids in this form and read them back in brackets (store.base.canonical_id).
        assert normalize_msg_id(f"<{mid}>") == mid


# --- headers ----------------------------------------------------------------------------------


@given(header_blocks())
@example(b"Subject: =?base64?q?abc?=\n\n")
@example(b"Subject: =?utf-8\x00?q?abc?=\n\n")
@example(b"From: =?idna?q?=FF?= <a@b.example>\n\n")
@example(b"Message-ID: abc@host.example>\n\n")
def test_parse_headers_never_raises_and_bytes_and_text_agree(block: bytes) -> None:
    headers = parse_headers(block)
    _ = (headers.subject, headers.date, headers.defects, headers.fields, headers.get("x"))
    for addresses in (headers.from_, headers.sender, headers.reply_to, headers.to, headers.cc):
        assert all(isinstance(a, Address) for a in addresses)
    ids = (headers.message_id,) if headers.message_id else ()
    for field in (ids, headers.in_reply_to, headers.references):
        _assert_canonical_ids(field)
    # Rule 3: the same message as text (as the stdlib hands out 8-bit headers), bytearray or
    # memoryview parses the same.
    assert parse_headers(block.decode("utf-8", "surrogateescape")) == headers
    assert parse_headers(bytearray(block)) == headers
    assert parse_headers(memoryview(block)) == headers


@given(msg_id_lists())
def test_msg_id_lists_parse_to_canonical_ids_that_parse_again_to_themselves(value: str) -> None:
    ids = parse_msg_ids(value)
    _assert_canonical_ids(ids)
    assert parse_msg_ids(" ".join(f"<{mid}>" for mid in ids)) == ids


@given(st.lists(st.text(max_size=30), max_size=200).map(" ".join))
def test_msg_id_lists_of_any_text_are_bounded(value: str) -> None:
    _assert_canonical_ids(parse_msg_ids(value))


@given(address_lists())
def test_address_lists_never_raise_and_names_have_no_line_breaks(value: str) -> None:
    found = parse_addresses(value)
    assert len(found) <= value.count("@") + value.count("<") + value.count(",") + 1
    for address in found:
        assert "\r" not in address.name
        assert "\n" not in address.name
        assert address.addr.strip() == address.addr


# --- classification ---------------------------------------------------------------------------


@given(messages())
def test_classify_never_raises_and_always_says_why(message: bytes) -> None:
    verdict = classify(message)
    assert isinstance(verdict.kind, Kind)
    assert verdict.reasons
    if verdict.original_message_id is not None:
        _assert_canonical_ids((verdict.original_message_id,))


@given(mime_trees())
def test_the_fast_mime_reader_agrees_with_the_stdlib_or_abstains(message: bytes) -> None:
    """mime Rule 1: the first text part is the stdlib's, or the reader says it is unsure."""
    data = message[:MAX_PARSE_BYTES]
    fast = mime.body_text(data)
    parsed = mime.parse(data)
    assert parsed is not None
    assert fast is None or fast == ooo.body_text(parsed)


@given(dsns())
def test_reports_have_bounded_well_formed_recipients(message: bytes) -> None:
    verdict = classify(message)
    if verdict.bounce is None:
        return
    recipients = verdict.bounce.recipients
    assert len(recipients) <= 2 * MAX_RECIPIENTS
    for r in recipients:
        assert r.status is None or _STATUS.fullmatch(r.status)
        assert r.permanent == bool(r.status and r.status.startswith("5"))
        assert r.reason in REASONS
        assert not r.hard or r.permanent


# --- correlation and threading ----------------------------------------------------------------


@given(messages())
def test_hostile_mail_after_a_valid_in_reply_to_still_correlates(message: bytes) -> None:
    store = MemoryStore()
    store.record_sent(SEND)
    data = b"In-Reply-To: <send-1@mail.sales.example>\n" + message
    found = Correlator(store).correlate(data)
    assert found is not None
    assert found.ref == "c1:p1"
    assert found.method is MatchMethod.IN_REPLY_TO


@given(st.lists(header_blocks(), max_size=8))
def test_threading_hostile_headers_keeps_every_message_once(blocks: list[bytes]) -> None:
    threads = thread_messages(blocks)
    seen = []
    stack = list(threads)
    while stack:
        node = stack.pop()
        if node.message is not None:
            seen.append(id(node.message))
        stack.extend(node.children)
    assert sorted(seen) == sorted(id(b) for b in blocks)


# --- Thread-Index -----------------------------------------------------------------------------


@given(thread_index_values())
def test_thread_index_values_decode_or_not_and_what_decodes_round_trips(value: str) -> None:
    index = ThreadIndex.decode(value)
    if index is None:
        return
    assert ThreadIndex.decode(index.encode()) == index
    assert ThreadIndex.from_bytes(index.to_bytes()) == index
    reply = index.child(dt.datetime(2060, 1, 1, tzinfo=dt.timezone.utc), random=0)
    assert reply.same_conversation(index)
    assert reply.children[:-1] == index.children
