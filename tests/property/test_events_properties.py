"""Properties of the event payload: every event survives JSON exactly; garbage is a ParseError.

The outbox stores `ReplyEvent.to_json` and hooks receive what `ReplyEvent.from_json` reads back,
possibly after a restart: any field the payload dropped or bent would reach the host wrong.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from replytrack.classify import Kind
from replytrack.correlate import MatchMethod, Role
from replytrack.dsn import Bounce, BouncedRecipient
from replytrack.errors import ParseError
from replytrack.events import Action, ReplyEvent, make_event_id
from replytrack.headers import Address
from replytrack.store import SentMessage

QUICK = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Every code point, lone surrogates included: header bytes decoded with surrogateescape end
# up in subjects and names.
texts = st.text(st.characters(codec=None, exclude_categories=()), max_size=30)
optional_texts = st.none() | texts

# Fixed offsets in whole minutes, as mail has them (RFC 5322 §3.3 zones are +hhmm). Finer ones
# do not survive: CPython 3.11's fromisoformat drops an offset's microseconds.
offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: dt.timedelta(minutes=minutes)
)
zones = st.sampled_from([dt.timezone.utc]) | st.builds(dt.timezone, offsets)
aware = st.datetimes(timezones=zones)
# SentMessage converts to UTC: stay clear of the ends of the calendar.
sent_times = st.datetimes(
    min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=zones
)

_local = st.from_regex(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,12}(\.[A-Za-z0-9_-]{1,8})?", fullmatch=True
)
_domain = st.from_regex(
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?(\.[A-Za-z]{2,6}){1,2}", fullmatch=True
)
addresses = st.builds("{}@{}".format, _local, _domain)
message_ids = st.builds("{}@{}".format, _local, _domain).flatmap(
    lambda i: st.sampled_from([i, f"<{i}>"])
)

sent_messages = st.builds(
    SentMessage,
    message_id=message_ids,
    ref=texts,
    sender=addresses,
    to=st.lists(addresses, min_size=1, max_size=3).map(tuple),
    cc=st.lists(addresses, max_size=3).map(tuple),
    subject=optional_texts,
    sent_at=st.none() | sent_times,
    provider_thread_id=optional_texts,
    thread_index=st.none() | st.binary(min_size=16, max_size=16),
)

recipients = st.builds(
    BouncedRecipient,
    address=texts,
    status=optional_texts,
    reason=texts,
    permanent=st.booleans(),
    hard=st.booleans(),
    diagnostic=optional_texts,
    action=optional_texts,
    remote_mta=optional_texts,
)
bounces = st.builds(
    Bounce,
    recipients=st.lists(recipients, max_size=3).map(tuple),
    original_message_id=optional_texts,
    reporting_mta=optional_texts,
)

events = st.builds(
    ReplyEvent,
    event_id=st.builds(make_event_id, texts.filter(bool), texts, st.sampled_from(Kind)) | texts,
    kind=st.sampled_from(Kind),
    action=st.sampled_from(Action),
    resume_on=st.none() | st.dates(),
    ref=texts,
    sent=st.none() | sent_messages,
    message_id=optional_texts,
    responder=st.none() | st.builds(Address, name=texts, addr=texts),
    role=st.sampled_from(Role),
    method=st.sampled_from(MatchMethod),
    received_at=st.none() | aware,
    subject=optional_texts,
    bounce=st.none() | bounces,
    body_text=optional_texts,
    reasons=st.lists(texts, max_size=4).map(tuple),
    scope=st.sampled_from(["prospect", "account"]),
    account_domain=optional_texts,
)


def _assert_identical(a: ReplyEvent, b: ReplyEvent) -> None:
    """Equality, plus what equality does not see: display names and UTC offsets."""
    assert a == b
    assert (a.responder and a.responder.name) == (b.responder and b.responder.name)
    assert (a.received_at and a.received_at.utcoffset()) == (
        b.received_at and b.received_at.utcoffset()
    )
    if a.sent is not None and b.sent is not None:
        assert a.sent.sent_at == b.sent.sent_at
        assert (a.sent.sent_at and a.sent.sent_at.utcoffset()) == (
            b.sent.sent_at and b.sent.sent_at.utcoffset()
        )


@QUICK
@given(events)
def test_json_round_trip_is_exact(event: ReplyEvent) -> None:
    data = event.to_json()
    assert data.isascii()
    back = ReplyEvent.from_json(data)
    _assert_identical(back, event)
    assert back.to_json() == data


@QUICK
@given(st.binary(max_size=500))
@example(b"[" * 50_000)
@example(b'{"v":1}')
def test_from_json_raises_only_parse_error_on_bytes(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        ReplyEvent.from_json(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@QUICK
@given(events, st.data())
def test_from_json_raises_only_parse_error_on_damaged_payloads(
    event: ReplyEvent, data: st.DataObject
) -> None:
    """Replace any one value of a real payload by any JSON value: an event or a ParseError."""
    payload = json.loads(event.to_json())
    path = data.draw(st.sampled_from(_paths(payload)))
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = data.draw(json_values)
    try:
        back = ReplyEvent.from_json(json.dumps(payload).encode())
    except ParseError:
        return
    assert isinstance(back, ReplyEvent)


@QUICK
@given(texts.filter(bool), texts, st.sampled_from(Kind))
def test_event_id_is_deterministic(key: str, ref: str, kind: Kind) -> None:
    first = make_event_id(key, ref, kind)
    assert first == make_event_id(key, ref, kind)
    assert len(first) == 36
