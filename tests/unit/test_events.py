"""ReplyEvent: stable ids, a lossless versioned JSON payload, and strict reading of it."""

from __future__ import annotations

import datetime as dt
import json
import pickle
from typing import Any

import attrs
import pytest

from replytrack.classify import Kind
from replytrack.correlate import MatchMethod, Role
from replytrack.dsn import Bounce, BouncedRecipient
from replytrack.errors import ConfigError, ParseError
from replytrack.events import MAX_BODY_TEXT, Action, ReplyEvent, make_event_id
from replytrack.headers import Address
from replytrack.policy import Scope
from replytrack.store import SentMessage

CET = dt.timezone(dt.timedelta(hours=1))

SENT = SentMessage(
    message_id="<send-1@mail.sales.example>",
    ref="c42:p7",
    sender="rep@sales.example",
    to=("jo@customer.example",),
    cc=("sam@customer.example", "kim@customer.example"),
    subject="Quick question",
    sent_at=dt.datetime(2027, 2, 26, 9, 0, 0, 123456, tzinfo=dt.timezone.utc),
    provider_thread_id="thread-17",
    thread_index=bytes(range(16)),
)

BOUNCE = Bounce(
    recipients=(
        BouncedRecipient(
            address="jo@customer.example",
            status="5.1.1",
            reason="userunknown",
            permanent=True,
            hard=True,
            diagnostic="smtp; 550 5.1.1 User unknown",
            action="failed",
            remote_mta="mx.customer.example",
        ),
    ),
    original_message_id="send-1@mail.sales.example",
    reporting_mta="mx.sales.example",
)


def _event(**overrides: Any) -> ReplyEvent:
    fields: dict[str, Any] = {
        "event_id": make_event_id("reply-1@customer.example", "c42:p7", Kind.REPLY),
        "kind": Kind.REPLY,
        "action": Action.STOP,
        "resume_on": None,
        "ref": "c42:p7",
        "sent": SENT,
        "message_id": "reply-1@customer.example",
        "responder": Address("Jo Müller", "jo@customer.example"),
        "role": Role.RECIPIENT,
        "method": MatchMethod.IN_REPLY_TO,
        "received_at": dt.datetime(2027, 2, 27, 10, 30, 5, 42, tzinfo=CET),
        "subject": "Re: Quick question — 回复",
        "body_text": "Yes, let's talk.\n\n> Quick question",
        "reasons": ("no automation headers", "matched by in_reply_to", "human reply: stop"),
    }
    fields.update(overrides)
    return ReplyEvent(**fields)


# -- event ids ---------------------------------------------------------------------------------


def test_event_id_is_stable_and_well_formed() -> None:
    first = make_event_id("reply-1@customer.example", "c42:p7", Kind.REPLY)
    assert first == make_event_id("reply-1@customer.example", "c42:p7", Kind.REPLY)
    assert first.startswith("evt_")
    assert len(first) == 36
    assert all(c in "0123456789abcdef" for c in first[4:])


def test_event_id_pinned() -> None:
    """Changing the scheme re-delivers every pending event under a new id: it must not drift."""
    assert (
        make_event_id("reply-1@customer.example", "c42:p7", Kind.REPLY)
        == "evt_d1bd70519ecafead0461f2589a2de6c8"
    )


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("ab", "c", Kind.REPLY), ("a", "bc", Kind.REPLY)),
        (("m", "r", Kind.REPLY), ("m", "r", Kind.BOUNCE)),
        (("m1", "r", Kind.REPLY), ("m2", "r", Kind.REPLY)),
        (("m", "r1", Kind.REPLY), ("m", "r2", Kind.REPLY)),
        (("m", "", Kind.REPLY), ("m\x00", "", Kind.REPLY)),
    ],
)
def test_event_id_separates_its_inputs(a: tuple[str, str, Kind], b: tuple[str, str, Kind]) -> None:
    assert make_event_id(*a) != make_event_id(*b)


def test_event_id_accepts_undecodable_text() -> None:
    assert make_event_id("sha256:\udcff", "ref", Kind.REPLY).startswith("evt_")


@pytest.mark.parametrize(
    ("key", "ref", "kind"),
    [("", "r", Kind.REPLY), (None, "r", Kind.REPLY), ("m", 7, Kind.REPLY), ("m", "r", "reply")],
)
def test_event_id_refuses_bad_input(key: object, ref: object, kind: object) -> None:
    with pytest.raises(ConfigError):
        make_event_id(key, ref, kind)  # type: ignore[arg-type]


# -- the event value ---------------------------------------------------------------------------


def test_event_is_frozen_hashable_and_picklable() -> None:
    event = _event(bounce=BOUNCE)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.action = Action.PAUSE  # type: ignore[misc]
    assert hash(event) == hash(_event(bounce=BOUNCE))
    assert pickle.loads(pickle.dumps(event)) == event


def test_scope_accepts_the_policy_enum_and_its_value() -> None:
    assert _event(scope=Scope.ACCOUNT).scope == "account"
    assert _event(scope="account") == _event(scope=Scope.ACCOUNT)
    assert _event().scope == "prospect"


@pytest.mark.parametrize(
    "overrides",
    [
        {"scope": "company"},
        {"received_at": dt.datetime(2027, 2, 27, 10, 30)},  # naive
        {"received_at": "2027-02-27"},
        {"body_text": b"bytes"},
        {"reasons": ("ok", 3)},
    ],
)
def test_invalid_event_is_a_config_error(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        _event(**overrides)


def test_body_text_is_bounded() -> None:
    event = _event(body_text="x" * (MAX_BODY_TEXT + 10))
    assert event.body_text == "x" * MAX_BODY_TEXT
    assert ReplyEvent.from_json(event.to_json()) == event


# -- JSON ------------------------------------------------------------------------------------


def test_json_round_trip_keeps_every_field() -> None:
    event = _event(
        kind=Kind.OUT_OF_OFFICE,
        action=Action.PAUSE,
        resume_on=dt.date(2027, 3, 11),
        bounce=BOUNCE,
        scope="account",
        account_domain="customer.example",
    )
    back = ReplyEvent.from_json(event.to_json())
    assert back == event
    assert back.responder is not None
    assert back.responder.name == "Jo Müller"  # Address equality ignores the name
    assert back.received_at is not None
    assert back.received_at.utcoffset() == dt.timedelta(hours=1)
    assert back.sent is not None
    assert back.sent.thread_index == bytes(range(16))


def test_json_round_trip_of_a_minimal_event() -> None:
    event = _event(sent=None, message_id=None, responder=None, received_at=None, subject=None)
    event = attrs.evolve(event, body_text=None, reasons=(), role=Role.UNKNOWN)
    assert ReplyEvent.from_json(event.to_json()) == event


def test_json_is_versioned_ascii_with_readable_values() -> None:
    data = _event(bounce=BOUNCE).to_json()
    assert data.isascii()
    payload = json.loads(data)
    assert payload["v"] == 1
    assert payload["kind"] == "reply"
    assert payload["action"] == "stop"
    assert payload["role"] == "recipient"
    assert payload["method"] == "in_reply_to"
    assert payload["received_at"] == "2027-02-27T10:30:05.000042+01:00"
    assert payload["responder"] == {"name": "Jo Müller", "addr": "jo@customer.example"}
    assert payload["sent"]["thread_index"] == "AAECAwQFBgcICQoLDA0ODw=="
    assert payload["bounce"]["recipients"][0]["hard"] is True


def test_json_carries_lone_surrogates() -> None:
    event = _event(subject="Re: caf\udce9", body_text="\ud800")
    assert ReplyEvent.from_json(event.to_json()) == event


def test_from_json_accepts_str_and_bytearray() -> None:
    event = _event()
    assert ReplyEvent.from_json(event.to_json().decode()) == event
    assert ReplyEvent.from_json(bytearray(event.to_json())) == event
    assert ReplyEvent.from_json(memoryview(event.to_json())) == event


def test_from_json_reads_payloads_without_defaulted_fields() -> None:
    """An older writer of version 1 did not know the fields added later with defaults."""
    payload = json.loads(_event().to_json())
    for key in ("bounce", "body_text", "reasons", "scope", "account_domain"):
        del payload[key]
    back = ReplyEvent.from_json(json.dumps(payload).encode())
    assert back == _event(body_text=None, reasons=())


def test_from_json_ignores_unknown_keys() -> None:
    payload = json.loads(_event().to_json())
    payload["added_in_a_later_release"] = [1, 2]
    assert ReplyEvent.from_json(json.dumps(payload).encode()) == _event()


def _mutated(path: tuple[str | int, ...], value: Any) -> bytes:
    payload = json.loads(_event(bounce=BOUNCE).to_json())
    target = payload
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(payload).encode()


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("v",), 2),
        (("v",), "1"),
        (("v",), True),
        (("v",), _DELETE),
        (("event_id",), _DELETE),
        (("event_id",), 17),
        (("kind",), "spam"),
        (("action",), "STOP"),
        (("role",), None),
        (("method",), ["token"]),
        (("resume_on",), "2027-02-30"),
        (("received_at",), "2027-02-27T10:30:05"),  # no offset
        (("received_at",), "yesterday"),
        (("responder",), "jo@customer.example"),
        (("responder", "addr"), _DELETE),
        (("sent", "to"), "jo@customer.example"),
        (("sent", "to"), ["not an address"]),
        (("sent", "message_id"), "<>"),
        (("sent", "thread_index"), "AAEC"),  # 3 bytes, not a GUID
        (("sent", "thread_index"), "not base64!"),
        (("sent", "thread_index"), "é"),
        (("sent", "cc"), _DELETE),
        (("bounce", "recipients"), {}),
        (("bounce", "recipients", 0), "jo@customer.example"),
        (("bounce", "recipients", 0, "hard"), 1),
        (("reasons",), ["ok", None]),
        (("scope",), "company"),
        (("subject",), 3.5),
    ],
)
def test_from_json_refuses_malformed_fields(path: tuple[str | int, ...], value: Any) -> None:
    with pytest.raises(ParseError):
        ReplyEvent.from_json(_mutated(path, value))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b"null",
        b'"event"',
        b"{",
        b"\xff\xfe\x00",
        b"\xef\xbb\xbf{}",
        b"[" * 100_000,
        b"1" * 10_000,
        b'{"v": 1, "v": 1}',
        b"NaN",
    ],
)
def test_from_json_refuses_garbage_with_parse_error(data: bytes) -> None:
    with pytest.raises(ParseError):
        ReplyEvent.from_json(data)


def test_from_json_refuses_non_bytes() -> None:
    with pytest.raises(TypeError):
        ReplyEvent.from_json(42)  # type: ignore[arg-type]


def test_parse_error_survives_pickling() -> None:
    with pytest.raises(ParseError) as info:
        ReplyEvent.from_json(b"{")
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == str(info.value)
    assert again.value == "{"
