"""The events replytrack hands to the host: what came back, for which send, and what to do.

A `ReplyEvent` is the one value the tracker stores in its outbox and passes to the host's hooks
(DESIGN.md, "The tracker and its hooks"). It says what kind of message came back (`Kind`), which
send it answers (``ref``, ``sent``), who answered (``responder``, ``role``), how it was matched
(``method``), and what the policy decided (``action``, ``resume_on``, ``scope``).

Rule 1: ``event_id`` is a pure function of the incoming message's key, the send's ref and the
        kind (`make_event_id`). Processing the same message again — after a crash, a retry, a
        resync, or from a second mailbox — yields the same id, so a host that keys its side
        effects on it applies each event once although delivery is at least once.
Rule 2: `ReplyEvent.to_json` is lossless: ``ReplyEvent.from_json(e.to_json()) == e`` for every
        event, and display names, UTC offsets and ``thread_index`` bytes survive too (`Address`
        equality ignores the name, aware datetimes compare as instants: the payload keeps both
        anyway). One limit: a named time zone (``zoneinfo.ZoneInfo``) comes back as the fixed
        UTC offset it had at that instant — same instant, same offset, no zone name.
Rule 3: the payload is versioned (``"v": 1``). Fields added later get defaults, keep ``v`` at 1
        and may be absent from older payloads; a reader ignores keys it does not know (a queue
        drained by workers of two versions during a deploy must not wedge). A change of meaning
        bumps ``v``; an unknown ``v`` is refused.
Rule 4: `ReplyEvent.from_json` raises `ParseError` and nothing else on any input bytes: the
        outbox is storage, and storage can be corrupted or written by someone else.
Rule 5: ``body_text`` is bounded (`MAX_BODY_TEXT` characters) so one long reply cannot bloat
        the outbox; it is truncated on construction.
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import enum
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import attrs

from replytrack.classify import Kind
from replytrack.correlate import MatchMethod, Role
from replytrack.dsn import Bounce, BouncedRecipient
from replytrack.errors import ConfigError, ParseError
from replytrack.headers import Address
from replytrack.store.base import SentMessage

__all__ = [
    "EVENT_ID_PREFIX",
    "MAX_BODY_TEXT",
    "PAYLOAD_VERSION",
    "SCOPES",
    "Action",
    "ReplyEvent",
    "make_event_id",
]

#: The version written in every payload's ``"v"`` (module Rule 3).
PAYLOAD_VERSION: Final = 1

#: The most characters of a reply's text an event carries (module Rule 5). A CRM activity
#: needs the answer, not a quoted thread of fifty messages.
MAX_BODY_TEXT: Final = 20_000

#: Every event id starts with this, so ids are recognisable in host logs and databases.
EVENT_ID_PREFIX: Final = "evt_"

#: The values of `ReplyEvent.scope` (the values of `replytrack.policy.Scope`).
SCOPES: Final = frozenset({"prospect", "account"})

# Separates event ids from any other sha256 use of the same inputs, and lets a future scheme
# coexist with this one.
_ID_DOMAIN: Final = b"replytrack.event_id.v1"
# The payload's JSON form (see `ReplyEvent.to_json`), built once: json.dumps with options
# builds an encoder per call.
_ENCODER: Final = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), sort_keys=True)


class Action(enum.Enum):
    """What the host should do with the campaign of the send."""

    #: End the sequence for this prospect (or account, see `ReplyEvent.scope`).
    STOP = "stop"
    #: Hold the sequence until `ReplyEvent.resume_on`.
    PAUSE = "pause"
    #: Change nothing; record the activity only.
    LOG_ONLY = "log_only"


def make_event_id(message_key: str, ref: str, kind: Kind) -> str:
    """Return the stable idempotency key of the event one incoming message produces.

    The inputs are length-prefixed before hashing, so no two different triples collide by
    concatenation (``("ab", "c")`` and ``("a", "bc")`` give different ids).

    Args:
        message_key: what identifies the incoming message across mailboxes and retries: its
            canonical Message-ID, or a digest of its header block when it has none — the same
            key the tracker's dedupe ledger uses.
        ref: the host's ref of the send the message answers.
        kind: what the message is.

    Returns:
        ``"evt_"`` followed by 32 lower-case hex digits (128 bits of sha256).

    Raises:
        ConfigError: `message_key` is empty or not a str, `ref` is not a str, or `kind` is not a
            `Kind`.
    """
    if not isinstance(message_key, str) or not message_key:
        # An empty key would give every keyless message of a send the same id: the host would
        # drop all but the first as duplicates.
        raise ConfigError("make_event_id() needs a non-empty message key")
    if not isinstance(ref, str):
        raise ConfigError(f"ref must be a str, not {type(ref).__name__}")
    if not isinstance(kind, Kind):
        raise ConfigError(f"kind must be a Kind, not {type(kind).__name__}")
    digest = hashlib.sha256(_ID_DOMAIN)
    for part in (message_key, ref, kind.value):
        # surrogatepass: keys read with surrogateescape must hash, not raise.
        raw = part.encode("utf-8", "surrogatepass")
        digest.update(len(raw).to_bytes(8, "big"))
        digest.update(raw)
    return EVENT_ID_PREFIX + digest.hexdigest()[:32]


# --------------------------------------------------------------------------------------------
# The event
# --------------------------------------------------------------------------------------------


def _aware(value: _dt.datetime | None) -> _dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, _dt.datetime):
        raise ConfigError(f"received_at must be a datetime, not {type(value).__name__}")
    if value.utcoffset() is None:
        raise ConfigError(f"received_at must be an aware datetime, got {value!r}")
    return value


def _scope(value: str | enum.Enum) -> str:
    # Accepting `replytrack.policy.Scope` as well as its value spares callers a `.value`
    # without importing policy here (policy imports this module).
    text = value.value if isinstance(value, enum.Enum) else value
    if text not in SCOPES:
        raise ConfigError(f"scope must be one of {sorted(SCOPES)}, got {value!r}")
    return str(text)


def _body(value: str | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"body_text must be a str or None, not {type(value).__name__}")
    return value[:MAX_BODY_TEXT]


def _reasons(value: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    reasons = tuple(value)
    if not all(isinstance(r, str) for r in reasons):
        raise ConfigError("reasons must be strings")
    return reasons


@attrs.frozen
class ReplyEvent:
    """Something came back for one of our sends, and what the policy says to do about it.

    Attributes:
        event_id: the stable idempotency key (`make_event_id`, module Rule 1).
        kind: what came back: a reply, an out-of-office, a bounce ...
        action: what the host should do with the campaign.
        resume_on: for `Action.PAUSE`, the first day the campaign may send again.
        ref: the host's ref of the send.
        sent: the send, or ``None`` for a token match whose send is not in the store.
        message_id: the incoming message's Message-ID (canonical form), when it has one.
        responder: who wrote the incoming message (first ``From``), when known.
        role: the responder's role relative to the send.
        method: the evidence that tied the message to the send.
        received_at: when the message arrived (aware), when known.
        subject: the incoming message's decoded subject.
        bounce: the failed recipients, for bounces and delay notices.
        body_text: the decoded plain text of the reply for the CRM, when available; at most
            `MAX_BODY_TEXT` characters (longer text is truncated on construction).
        reasons: the classification and correlation evidence and the policy's reason, human
            readable.
        scope: ``"prospect"`` (act on this prospect only) or ``"account"`` (act on every
            prospect of the same organisation), the values of `replytrack.policy.Scope`; a
            ``Scope`` member is accepted and stored as its value.
        account_domain: with ``scope="account"``, the organisational domain of the account
            (``"example.co.uk"``), so the host can find the prospects it covers.

    Raises:
        ConfigError: ``received_at`` is naive, ``scope`` is unknown, or ``body_text`` or
            ``reasons`` are not text.
    """

    event_id: str
    kind: Kind
    action: Action
    resume_on: _dt.date | None
    ref: str
    sent: SentMessage | None
    message_id: str | None
    responder: Address | None
    role: Role
    method: MatchMethod
    received_at: _dt.datetime | None = attrs.field(converter=_aware)
    subject: str | None
    bounce: Bounce | None = None
    body_text: str | None = attrs.field(default=None, converter=_body)
    reasons: tuple[str, ...] = attrs.field(default=(), converter=_reasons)
    scope: str = attrs.field(default="prospect", converter=_scope)
    account_domain: str | None = None

    def to_json(self) -> bytes:
        r"""Return the outbox payload: versioned JSON that `from_json` reads back exactly.

        Returns:
            Compact JSON, ASCII-only (so valid UTF-8): non-ASCII text is escaped
            (``\u00e9``), which also carries strings holding lone surrogates (undecodable
            header bytes kept by ``surrogateescape``) that a raw UTF-8 encoding would refuse.
        """
        return _ENCODER.encode(_event_to_dict(self)).encode("ascii")

    @classmethod
    def from_json(cls, data: bytes | bytearray | memoryview | str) -> ReplyEvent:
        """Read an outbox payload written by `to_json`.

        Args:
            data: the payload.

        Returns:
            The event, equal to the one that was written.

        Raises:
            ParseError: the payload is not JSON, not an event, of an unknown version, or holds
                a value of the wrong type or form (module Rule 4).
            TypeError: `data` is not bytes or str (a programming error, not bad data).
        """
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if not isinstance(data, (bytes, str)):
            raise TypeError(f"from_json() takes bytes or str, not {type(data).__name__}")
        try:
            obj = json.loads(data, object_pairs_hook=_no_duplicates)
        except ParseError:
            raise
        except (ValueError, RecursionError) as exc:
            # ValueError covers JSONDecodeError, bad UTF-8/16/32 and oversized integers;
            # RecursionError a deeply nested array.
            raise ParseError(f"not a JSON event payload: {exc}", value=_excerpt(data)) from exc
        return _event_from_dict(obj)


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def _opt(value: Any, encode: Callable[[Any], Any]) -> Any:
    return None if value is None else encode(value)


def _address_to_dict(a: Address) -> dict[str, Any]:
    return {"name": a.name, "addr": a.addr}


def _sent_to_dict(s: SentMessage) -> dict[str, Any]:
    return {
        "message_id": s.message_id,
        "ref": s.ref,
        "sender": s.sender,
        "to": list(s.to),
        "cc": list(s.cc),
        "subject": s.subject,
        "sent_at": _opt(s.sent_at, _dt.datetime.isoformat),
        "provider_thread_id": s.provider_thread_id,
        "thread_index": _opt(s.thread_index, lambda b: base64.b64encode(b).decode("ascii")),
    }


def _recipient_to_dict(r: BouncedRecipient) -> dict[str, Any]:
    return {
        "address": r.address,
        "status": r.status,
        "reason": r.reason,
        "permanent": r.permanent,
        "hard": r.hard,
        "diagnostic": r.diagnostic,
        "action": r.action,
        "remote_mta": r.remote_mta,
    }


def _bounce_to_dict(b: Bounce) -> dict[str, Any]:
    return {
        "recipients": [_recipient_to_dict(r) for r in b.recipients],
        "original_message_id": b.original_message_id,
        "reporting_mta": b.reporting_mta,
    }


def _event_to_dict(e: ReplyEvent) -> dict[str, Any]:
    return {
        "v": PAYLOAD_VERSION,
        "event_id": e.event_id,
        "kind": e.kind.value,
        "action": e.action.value,
        "resume_on": _opt(e.resume_on, _dt.date.isoformat),
        "ref": e.ref,
        "sent": _opt(e.sent, _sent_to_dict),
        "message_id": e.message_id,
        "responder": _opt(e.responder, _address_to_dict),
        "role": e.role.value,
        "method": e.method.value,
        # isoformat keeps the UTC offset to the microsecond; fromisoformat is its inverse.
        "received_at": _opt(e.received_at, _dt.datetime.isoformat),
        "subject": e.subject,
        "bounce": _opt(e.bounce, _bounce_to_dict),
        "body_text": e.body_text,
        "reasons": list(e.reasons),
        "scope": e.scope,
        "account_domain": e.account_domain,
    }


# --------------------------------------------------------------------------------------------
# Decoding: every helper raises ParseError naming the field
# --------------------------------------------------------------------------------------------

_T = TypeVar("_T")
_E = TypeVar("_E", bound=enum.Enum)
_MISSING: Final = object()


def _excerpt(data: bytes | str) -> str:
    text = data if isinstance(data, str) else data[:200].decode("utf-8", "replace")
    return text[:200]


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of duplicate keys silently; a payload that says two things
    # about one field is not one this library wrote.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ParseError("duplicate key in event payload")
    return obj


def _field(obj: Mapping[str, Any], key: str, where: str, default: Any = _MISSING) -> Any:
    if key in obj:
        return obj[key]
    if default is _MISSING:
        raise ParseError(f"{where}: missing {key!r}")
    return default


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ParseError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def _opt_str(value: Any, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ParseError(f"{where}: expected true or false, got {type(value).__name__}")
    return value


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ParseError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ParseError(f"{where}: expected an array, got {type(value).__name__}")
    return value


def _str_tuple(value: Any, where: str) -> tuple[str, ...]:
    return tuple(_str(v, f"{where}[{i}]") for i, v in enumerate(_list(value, where)))


def _enum(cls: type[_E], value: Any, where: str) -> _E:
    try:
        return cls(_str(value, where))
    except ValueError:
        raise ParseError(f"{where}: unknown {cls.__name__} {value!r}") from None


def _datetime(value: Any, where: str) -> _dt.datetime | None:
    if value is None:
        return None
    text = _str(value, where)
    try:
        parsed = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise ParseError(f"{where}: not an ISO 8601 datetime: {text[:100]!r}") from None
    if parsed.utcoffset() is None:
        raise ParseError(f"{where}: datetime without a UTC offset: {text[:100]!r}")
    return parsed


def _date(value: Any, where: str) -> _dt.date | None:
    if value is None:
        return None
    text = _str(value, where)
    try:
        return _dt.date.fromisoformat(text)
    except ValueError:
        raise ParseError(f"{where}: not an ISO 8601 date: {text[:100]!r}") from None


def _bytes(value: Any, where: str) -> bytes | None:
    if value is None:
        return None
    text = _str(value, where)
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, binascii.Error):  # UnicodeEncodeError is a ValueError
        raise ParseError(f"{where}: not base64") from None


def _nested(value: Any, where: str, build: Callable[[Mapping[str, Any], str], _T]) -> _T | None:
    return None if value is None else build(_obj(value, where), where)


def _address_from(obj: Mapping[str, Any], where: str) -> Address:
    return Address(
        name=_str(_field(obj, "name", where), f"{where}.name"),
        addr=_str(_field(obj, "addr", where), f"{where}.addr"),
    )


def _sent_from(obj: Mapping[str, Any], where: str) -> SentMessage:
    def get(key: str) -> Any:
        return _field(obj, key, where)

    try:
        return SentMessage(
            message_id=_str(get("message_id"), f"{where}.message_id"),
            ref=_str(get("ref"), f"{where}.ref"),
            sender=_str(get("sender"), f"{where}.sender"),
            to=_str_tuple(get("to"), f"{where}.to"),
            cc=_str_tuple(get("cc"), f"{where}.cc"),
            subject=_opt_str(get("subject"), f"{where}.subject"),
            sent_at=_datetime(get("sent_at"), f"{where}.sent_at"),
            provider_thread_id=_opt_str(get("provider_thread_id"), f"{where}.provider_thread_id"),
            thread_index=_bytes(get("thread_index"), f"{where}.thread_index"),
        )
    except ConfigError as exc:
        # SentMessage validates ids, addresses and the GUID length; in a payload a value it
        # refuses is malformed data, not a programming error.
        raise ParseError(f"{where}: {exc}") from exc


def _recipient_from(obj: Mapping[str, Any], where: str) -> BouncedRecipient:
    def get(key: str) -> Any:
        return _field(obj, key, where)

    return BouncedRecipient(
        address=_str(get("address"), f"{where}.address"),
        status=_opt_str(get("status"), f"{where}.status"),
        reason=_str(get("reason"), f"{where}.reason"),
        permanent=_bool(get("permanent"), f"{where}.permanent"),
        hard=_bool(get("hard"), f"{where}.hard"),
        diagnostic=_opt_str(get("diagnostic"), f"{where}.diagnostic"),
        action=_opt_str(_field(obj, "action", where, None), f"{where}.action"),
        remote_mta=_opt_str(_field(obj, "remote_mta", where, None), f"{where}.remote_mta"),
    )


def _bounce_from(obj: Mapping[str, Any], where: str) -> Bounce:
    items = _list(_field(obj, "recipients", where), f"{where}.recipients")
    recipients = tuple(
        _recipient_from(_obj(item, f"{where}.recipients[{i}]"), f"{where}.recipients[{i}]")
        for i, item in enumerate(items)
    )
    return Bounce(
        recipients=recipients,
        original_message_id=_opt_str(
            _field(obj, "original_message_id", where), f"{where}.original_message_id"
        ),
        reporting_mta=_opt_str(
            _field(obj, "reporting_mta", where, None), f"{where}.reporting_mta"
        ),
    )


def _event_from_dict(data: Any) -> ReplyEvent:
    obj = _obj(data, "event")
    version = _field(obj, "v", "event")
    # bool is an int: "v": true is not version 1.
    if type(version) is not int or version != PAYLOAD_VERSION:
        raise ParseError(f"event: unsupported payload version {version!r}")

    def get(key: str, default: Any = _MISSING) -> Any:
        return _field(obj, key, "event", default)

    try:
        return ReplyEvent(
            event_id=_str(get("event_id"), "event_id"),
            kind=_enum(Kind, get("kind"), "kind"),
            action=_enum(Action, get("action"), "action"),
            resume_on=_date(get("resume_on"), "resume_on"),
            ref=_str(get("ref"), "ref"),
            sent=_nested(get("sent"), "sent", _sent_from),
            message_id=_opt_str(get("message_id"), "message_id"),
            responder=_nested(get("responder"), "responder", _address_from),
            role=_enum(Role, get("role"), "role"),
            method=_enum(MatchMethod, get("method"), "method"),
            received_at=_datetime(get("received_at"), "received_at"),
            subject=_opt_str(get("subject"), "subject"),
            # Fields that have defaults may be missing from payloads of older writers (Rule 3).
            bounce=_nested(get("bounce", None), "bounce", _bounce_from),
            body_text=_opt_str(get("body_text", None), "body_text"),
            reasons=_str_tuple(get("reasons", []), "reasons"),
            scope=_str(get("scope", "prospect"), "scope"),
            account_domain=_opt_str(get("account_domain", None), "account_domain"),
        )
    except ConfigError as exc:
        raise ParseError(f"event: {exc}") from exc
