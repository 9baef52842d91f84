"""The store port: what replytrack keeps between messages, and the values it keeps.

A store remembers the sends replytrack stamped (`SentMessage`), the incoming messages already
tied to a send, which incoming messages were processed (the dedupe ledger), the outbox of hook
deliveries still owed to the host (`OutboxEntry`), and one cursor per mailbox source. The
tracker writes the ledger, the outbox and the cursor of a batch in one `Transaction`, so a
crash never acknowledges a message whose events were not recorded (DESIGN.md, "Durability").

Rule 1: a Message-ID is stored and compared in replytrack's canonical form only (no brackets,
        domain lower-cased: `replytrack.headers.normalize_msg_id`). Lookups accept ids in any
        form and answer keyed by the id exactly as the caller gave it.
Rule 2: one Message-ID names at most one send, whether it is the send's own id or an alias
        (an id a provider such as Microsoft Graph put in place of ours). Recording a second
        send under an id that is taken is a `ConfigError`.
Rule 3: "newest" means the latest ``sent_at``; a send without ``sent_at`` is older than any
        with one; ties go to the send recorded last. Every lookup that returns one send (or a
        list) follows this order.
Rule 4: a store never reads a clock: every time it keeps is handed in, as an aware datetime.
        Naive datetimes are a `ConfigError`. Times come back in UTC, to the microsecond.
Rule 5: writes inside ``with store.transaction() as tx:`` are committed together when the
        block exits normally, and none of them when it raises. Transactions do not nest.
        Re-doing a write is harmless: marking a key processed twice, enqueueing the same
        (event_id, hook) twice, or tying an incoming id twice keeps the first. The work
        sharing and retention calls (`Store.claim_outbox`, `Store.claim_source`,
        `Store.release_source`, `Store.prune`) commit on their own: inside an open
        transaction of the same thread they raise `ConfigError`.
Rule 6: every failure of the backend surfaces as `StoreError` (the backend's exception is its
        ``__cause__``); calling the API wrongly (a naive datetime, an unknown outbox entry, a
        closed store) raises `ConfigError`. A write refused with `ConfigError` has written
        nothing: the transaction around it may go on or roll back, as the caller decides.
Rule 7: several workers may share one store (processes, machines). A source is polled by the
        worker holding its lease (`Store.claim_source`); a lease ends when released or when it
        expires, so a dead worker's sources are taken over. Outbox entries are handed to one
        caller at a time by `Store.claim_outbox`, which makes them due again only when the
        claim runs out: an entry whose worker died is retried, one being delivered is not
        delivered twice meanwhile.
Rule 8: retention: `Store.prune` deletes ledger keys and delivered outbox entries older than a
        horizon. Sends, aliases, incoming ties, cursors, leases and dead entries are kept.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as _dt
import enum
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

import attrs

from replytrack.errors import ConfigError
from replytrack.headers import (
    Address,
    address_key,
    normalize_msg_id,
    normalize_subject,
    parse_addresses,
)

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

__all__ = [
    "GUID_LENGTH",
    "BaseStore",
    "Migration",
    "OutboxEntry",
    "OutboxState",
    "Pruned",
    "SentMessage",
    "Store",
    "Transaction",
]

#: Length of an Outlook conversation GUID (the ``Thread-Index`` header's bytes 6-21).
GUID_LENGTH: Final = 16

_UTC: Final = _dt.timezone.utc
_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_UTC)

# --------------------------------------------------------------------------------------------
# Conversions shared by the stores (and by backends hosts write)
# --------------------------------------------------------------------------------------------


# Ids that are already canonical in the common case: no brackets, white space or comments.
_PLAIN_ID: Final = re.compile(r"[^<>\s()@]+@[^<>\s()@A-Z]+")


def canonical_id(value: str) -> str:
    """Return `value` as a canonical Message-ID, with or without its angle brackets.

    Args:
        value: one msg-id, such as ``"<abc@Mail.Example.com>"`` or ``"abc@mail.example.com"``.

    Returns:
        The id in canonical form (``"abc@mail.example.com"``).

    Raises:
        ConfigError: `value` is not a str or holds no Message-ID.
    """
    if not isinstance(value, str):
        raise ConfigError(f"a Message-ID must be a str, not {type(value).__name__}")
    if _PLAIN_ID.fullmatch(value):
        return value  # already canonical: every id read back from a store takes this path
    text = value.strip()
    # normalize_msg_id reads bare ids too, but not bare ids with a quoted left part
    # ('"a b"@x'): brackets make every canonical id read back as itself.
    found = normalize_msg_id(text if text.startswith("<") else f"<{text}>")
    if found is None:
        raise ConfigError(f"not a Message-ID: {value[:200]!r}")
    return found


def lookup_id(value: str) -> str | None:
    """Return the canonical form of a looked-up id, or ``None`` when it holds no id.

    Lookups never raise on a malformed id: it simply matches nothing. Ids that are already
    canonical (the correlator's, read by `parse_headers`) skip the parser.
    """
    try:
        return canonical_id(value)
    except ConfigError:
        return None


# The common address forms that need no parsing: "local@domain" with nothing around it.
_PLAIN_ADDRESS: Final = re.compile(r"[^\s<>()\",;:@\[\]\\]+@[^\s<>()\",;:@\[\]\\]+")


def _checked(addr: str, given: object) -> str:
    # A send goes to real mailboxes: "Ops, Revenue <x@y>" unquoted is two mailboxes, "Ops"
    # and x@y, and the lone "Ops" is a bug in the caller, not a domain-less mailbox.
    if "@" not in addr[1:-1]:
        raise ConfigError(f"not an address (local@domain): {given!r:.200}")
    return addr


def _address(value: str | Address) -> str:
    if isinstance(value, Address):
        return _checked(value.addr, value)
    if not isinstance(value, str):
        raise ConfigError(f"an address must be a str or an Address, not {type(value).__name__}")
    text = value.strip()
    if _PLAIN_ADDRESS.fullmatch(text):
        return text
    found = parse_addresses(text)
    if len(found) != 1:
        raise ConfigError(f"not one address: {value:.200}")
    return _checked(found[0].addr, value)


def _addresses(value: str | Address | Iterable[str | Address]) -> tuple[str, ...]:
    if isinstance(value, Address):
        return (_address(value),)
    if isinstance(value, str):
        # A str is a header value: "ann@example.com" or "Ann <ann@x>, bob@y" alike.
        text = value.strip()
        if _PLAIN_ADDRESS.fullmatch(text):
            return (text,)
        return tuple(_checked(a.addr, value) for a in parse_addresses(text))
    return tuple(_address(v) for v in value)


def aware_utc(value: _dt.datetime, name: str = "time") -> _dt.datetime:
    """Return the aware datetime `value` in UTC.

    Raises:
        ConfigError: `value` is not a datetime, or is naive (module Rule 4).
    """
    if not isinstance(value, _dt.datetime):
        raise ConfigError(f"{name} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigError(f"{name} must be an aware datetime (with a time zone), got {value!r}")
    return value.astimezone(_UTC)


def _optional_time(value: _dt.datetime | None) -> _dt.datetime | None:
    return None if value is None else aware_utc(value, "sent_at")


def to_micros(value: _dt.datetime, name: str = "time") -> int:
    """Microseconds since the Unix epoch of an aware datetime: the stores' time format.

    Integers are exact (a round trip gives back the same instant to the microsecond), sort
    correctly whatever the time zone of the input, and index compactly.

    Args:
        value: an aware datetime, in any time zone.
        name: what `value` is, for the error message.

    Raises:
        ConfigError: `value` is not a datetime, or is naive (module Rule 4).
    """
    # A store converts several times per message: a plain UTC datetime (what the tracker's
    # clock gives) skips the checks and the conversion, which cost three times the rest.
    if type(value) is not _dt.datetime or value.tzinfo is not _UTC:
        value = aware_utc(value, name)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> _dt.datetime:
    """The UTC datetime of `value` microseconds since the Unix epoch."""
    return _EPOCH + _dt.timedelta(microseconds=value)


def subject_key(subject: str) -> str | None:
    """The subject heuristic's key: `normalize_subject`, casefolded; ``None`` when empty.

    Raises:
        ConfigError: `subject` is not a str.
    """
    if not isinstance(subject, str):
        raise ConfigError(f"a subject must be a str, not {type(subject).__name__}")
    return normalize_subject(subject).casefold() or None


def _subject(value: str | None) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"subject must be a str or None, not {type(value).__name__}")
    return value


def _thread_id(value: str | None) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"provider_thread_id must be a str or None, not {type(value).__name__}")
    return value


def _ref(value: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"ref must be a str, not {type(value).__name__}")
    return value


def _guid(value: bytes | bytearray | memoryview | None) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ConfigError(f"thread_index must be bytes, not {type(value).__name__}")
    guid = bytes(value)
    if len(guid) != GUID_LENGTH:
        raise ConfigError(
            f"thread_index must be the {GUID_LENGTH}-byte conversation GUID, got {len(guid)}"
        )
    return guid


def guid_bytes(value: bytes | bytearray | memoryview) -> bytes:
    """Check a looked-up conversation GUID.

    Raises:
        ConfigError: `value` is not 16 bytes.
    """
    guid = _guid(value)
    assert guid is not None  # noqa: S101 (only None gives None, and value is not None)
    return guid


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


@attrs.frozen
class SentMessage:
    """One outbound message replytrack knows, as recorded by the host or by ``stamp()``.

    Values are normalised on construction, so two descriptions of the same send are equal:
    the id is canonical (module Rule 1), addresses are bare ``local@domain`` strings (an
    `Address`, or a str such as ``"Ann <ann@example.com>"``, is reduced to its address; for
    ``to`` and ``cc`` a single str is read as a header value, so ``"a@x, b@y"`` gives two) and
    ``sent_at`` is in UTC.

    Attributes:
        message_id: the send's Message-ID, canonical (brackets are accepted and dropped).
        ref: the host's reference for the send (campaign, prospect, step ...). Opaque.
        sender: the address the send came from.
        to: the ``To`` addresses, in order.
        cc: the ``Cc`` addresses, in order.
        subject: the subject as sent, or ``None``.
        sent_at: when it was sent (an aware datetime, kept in UTC), or ``None``.
        provider_thread_id: the provider's thread of the send (Gmail ``threadId``, Microsoft
            Graph ``conversationId``), when the host knows it.
        thread_index: the 16-byte Outlook conversation GUID of the ``Thread-Index`` replytrack
            stamped, or ``None``.

    Raises:
        ConfigError: an id, address, time or GUID is malformed or of the wrong type.
    """

    message_id: str = attrs.field(converter=canonical_id)
    ref: str = attrs.field(converter=_ref)
    sender: str = attrs.field(converter=_address)
    to: tuple[str, ...] = attrs.field(converter=_addresses)
    cc: tuple[str, ...] = attrs.field(default=(), converter=_addresses)
    subject: str | None = attrs.field(default=None, converter=_subject)
    sent_at: _dt.datetime | None = attrs.field(default=None, converter=_optional_time)
    provider_thread_id: str | None = attrs.field(default=None, converter=_thread_id)
    thread_index: bytes | None = attrs.field(default=None, converter=_guid)

    @property
    def subject_key(self) -> str | None:
        """The subject as the subject heuristic compares it: normalised and casefolded.

        ``None`` when the send has no subject, or nothing is left once ``Re:`` and the like
        are stripped.
        """
        return None if self.subject is None else subject_key(self.subject)

    @property
    def participants(self) -> tuple[str, ...]:
        """The sender, then every recipient: whom the subject heuristic accepts as a party."""
        return (self.sender, *self.to, *self.cc)


_new_object: Final = object.__new__
_set_field: Final = object.__setattr__


def stored_sent(  # noqa: PLR0917 - the fields of SentMessage, in their order
    message_id: str,
    ref: str,
    sender: str,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    subject: str | None,
    sent_at: _dt.datetime | None,
    provider_thread_id: str | None,
    thread_index: bytes | None,
) -> SentMessage:
    """A `SentMessage` from values a store wrote, without running the converters again.

    For stores only: the values must be what a `SentMessage` held when it was recorded
    (canonical id, bare addresses, a UTC time, 16-byte GUID). The converters cost more than
    the indexed lookup that found the row, and every lookup that matches builds one.
    """
    sent: SentMessage = _new_object(SentMessage)
    _set_field(sent, "message_id", message_id)
    _set_field(sent, "ref", ref)
    _set_field(sent, "sender", sender)
    _set_field(sent, "to", to)
    _set_field(sent, "cc", cc)
    _set_field(sent, "subject", subject)
    _set_field(sent, "sent_at", sent_at)
    _set_field(sent, "provider_thread_id", provider_thread_id)
    _set_field(sent, "thread_index", thread_index)
    return sent


@attrs.frozen
class Migration:
    """One forward step of a store's schema.

    `SQLiteStore.MIGRATIONS` and `PostgresStore.MIGRATIONS` list theirs, oldest first.

    Attributes:
        version: the schema version after this step: 1, 2, 3 ... without gaps.
        description: what the step does, for people reading ``schema_migrations``.
        statements: SQL statements run in order, in the migrating transaction. Do not put
            ``BEGIN``/``COMMIT`` in them.
    """

    version: int
    description: str
    statements: tuple[str, ...]


class OutboxState(enum.Enum):
    """Where an outbox entry stands.

    ``PENDING`` → ``DELIVERED`` (the hook returned) or ``DEAD`` (it failed too often). A
    failed attempt leaves the entry ``PENDING`` with a later ``next_attempt_at``. A dead entry
    that is delivered after all (a host retrying it by hand) becomes ``DELIVERED``.
    """

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


@attrs.frozen
class OutboxEntry:
    """One hook delivery the tracker owes the host.

    Attributes:
        entry_id: the store's id of the entry. Ids grow, and a committed id is never given
            to another entry (an id handed out by a transaction that rolled back may be).
        event_id: the event's stable idempotency key (the same on every retry).
        hook: the name of the hook to call (``"campaign_stop"``, ``"crm_log"`` ...).
        payload: the serialised event, opaque to the store.
        state: pending, delivered or dead.
        attempts: how many attempts failed so far.
        created_at: when it was enqueued (UTC).
        next_attempt_at: when it is due (UTC); ``None`` unless pending.
        last_error: what the last failed attempt reported, or ``None``.
        finished_at: when it was delivered or declared dead (UTC); ``None`` while pending.
    """

    entry_id: int
    event_id: str
    hook: str
    payload: bytes
    state: OutboxState
    attempts: int
    created_at: _dt.datetime
    next_attempt_at: _dt.datetime | None
    last_error: str | None
    finished_at: _dt.datetime | None


@attrs.frozen
class Pruned:
    """What `Store.prune` deleted.

    Attributes:
        ledger: processed-ledger keys.
        outbox: delivered outbox entries.
    """

    ledger: int = 0
    outbox: int = 0


def payload_bytes(value: bytes | bytearray | memoryview) -> bytes:
    """Check an outbox payload.

    Raises:
        ConfigError: `value` is not bytes (serialise text first, e.g. JSON as UTF-8).
    """
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ConfigError(f"an outbox payload must be bytes, not {type(value).__name__}")
    return bytes(value)


def check_key(value: str, name: str) -> str:
    """Check a ledger key, event id, hook name or source name: a non-empty str.

    Raises:
        ConfigError: `value` is not a non-empty str.
    """
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{name} must be a non-empty str, got {value!r}")
    return value


def check_text(value: str, name: str) -> str:
    """Check a looked-up ref or provider thread id: a str (empty finds what was stored empty).

    Raises:
        ConfigError: `value` is not a str.
    """
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a str, not {type(value).__name__}")
    return value


def check_cursor(value: str) -> str:
    """Check a source cursor: any str, opaque to the store.

    Raises:
        ConfigError: `value` is not a str.
    """
    if not isinstance(value, str):
        raise ConfigError(f"a cursor must be a str, not {type(value).__name__}")
    return value


def check_lease(now: _dt.datetime, until: _dt.datetime) -> tuple[_dt.datetime, _dt.datetime]:
    """Check the times of a claim: both aware, `until` after `now`; returned in UTC.

    Raises:
        ConfigError: a datetime is naive, or `until` is not after `now`.
    """
    moment, expiry = aware_utc(now, "now"), aware_utc(until, "until")
    if expiry <= moment:
        raise ConfigError(f"a claim must end after it starts: until={until!r}, now={now!r}")
    return moment, expiry


def check_limit(value: int, name: str = "limit") -> int:
    """Check a result limit (or another count called `name`).

    Raises:
        ConfigError: `value` is not a positive int.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")
    return value


def newest_first_key(sent_at: _dt.datetime | None, order: int) -> tuple[bool, int, int]:
    """Sort key of module Rule 3, for ``sorted(..., reverse=True)``.

    Args:
        sent_at: the send's time, or ``None``.
        order: the send's recording order (larger is later).
    """
    return (sent_at is not None, 0 if sent_at is None else to_micros(sent_at), order)


# --------------------------------------------------------------------------------------------
# The port
# --------------------------------------------------------------------------------------------


class Transaction(Protocol):
    """The writes of one atomic unit; see `Store.transaction` and module Rule 5.

    A transaction is only valid inside its ``with`` block; using it afterwards raises
    `ConfigError`.
    """

    def record_sent(self, sent: SentMessage) -> None:
        """Record a send, or replace what is recorded under its Message-ID.

        Replacing keeps the send's aliases and incoming ties, and its place in the
        recording order (module Rule 3): hosts record before sending and again once the
        provider told them its thread id.

        Raises:
            ConfigError: the id is an alias of another send (module Rule 2).
        """
        ...

    def record_alias(self, message_id: str, alias_id: str) -> None:
        """Make `alias_id` name the send recorded as `message_id` too.

        Args:
            message_id: the id (or an existing alias) of a recorded send.
            alias_id: another id of the same message, e.g. the ``internetMessageId`` that
                Microsoft Graph gave it. Recording the same alias again is a no-op.

        Raises:
            ConfigError: no send is recorded under `message_id`, or `alias_id` already names
                another send.
        """
        ...

    def record_incoming(self, message_id: str, sent_message_id: str) -> None:
        """Tie an incoming message to the send it answers.

        Later messages that only reference the incoming one (a colleague answering the
        prospect's reply) then find the send through `Store.find_incoming`. The first tie of
        an incoming id wins; tying it again is a no-op.

        Raises:
            ConfigError: no send is recorded under `sent_message_id` (own id or alias).
        """
        ...

    def mark_processed(self, key: str, processed_at: _dt.datetime) -> bool:
        """Add `key` to the processed ledger.

        Args:
            key: the incoming Message-ID, or a digest of its header block when it has none.
            processed_at: when (kept for retention).

        Returns:
            True when the key is new, False when it was processed already (possibly by
            another worker).
        """
        ...

    def enqueue(
        self,
        event_id: str,
        hook: str,
        payload: bytes,
        now: _dt.datetime,
        *,
        due_at: _dt.datetime | None = None,
    ) -> int | None:
        """Add a pending delivery of `payload` to `hook`, created at `now` and due at `due_at`.

        Args:
            event_id: the event's idempotency key.
            hook: the hook's name.
            payload: the serialised event.
            now: the entry's creation time.
            due_at: when `Store.due_outbox` and `Store.claim_outbox` first offer it
                (default `now`). The tracker enqueues entries it is about to deliver itself
                due a little later, so that no other worker's retry takes them meanwhile.

        Returns:
            The new entry's id, or ``None`` when (`event_id`, `hook`) is in the outbox
            already, whatever its state (enqueueing is idempotent).
        """
        ...

    def save_cursor(self, source: str, cursor: str) -> None:
        """Remember how far `source` was read."""
        ...

    def mark_delivered(self, entry_id: int, now: _dt.datetime) -> None:
        """Mark an entry delivered. Marking it again is a no-op.

        Raises:
            ConfigError: no such entry.
        """
        ...

    def mark_failed(self, entry_id: int, error: str, retry_at: _dt.datetime) -> None:
        """Count a failed attempt and make the entry due again at `retry_at`.

        A no-op on an entry that is no longer pending (another worker finished it).

        Raises:
            ConfigError: no such entry.
        """
        ...

    def mark_dead(self, entry_id: int, error: str, now: _dt.datetime) -> None:
        """Count a failed attempt and park the entry: no more attempts.

        A no-op on an entry that is no longer pending.

        Raises:
            ConfigError: no such entry.
        """
        ...


@runtime_checkable
class Store(Protocol):
    """Where replytrack keeps sends, incoming ties, the ledger, the outbox and cursors.

    Implementations: `replytrack.store.MemoryStore`, `replytrack.store.SQLiteStore`, and
    PostgreSQL in `replytrack.store.postgres`. A host's own store subclasses `BaseStore` (or
    satisfies this Protocol) and should pass ``tests/unit/test_store_contract.py``. Every method
    may raise `StoreError` when the backend fails (module Rule 6). The write methods outside
    `transaction` are each a transaction of one write.
    """

    # -- sends -------------------------------------------------------------------------------

    def record_sent(self, sent: SentMessage) -> None:
        """Record a send; see `Transaction.record_sent`."""
        ...

    def record_alias(self, message_id: str, alias_id: str) -> None:
        """Add an id of a recorded send; see `Transaction.record_alias`."""
        ...

    def find_sent(self, message_ids: Iterable[str]) -> dict[str, SentMessage]:
        """Find the sends named by any of `message_ids` (own ids and aliases), in one round.

        Args:
            message_ids: ids in any form; malformed ones match nothing.

        Returns:
            The sends found, keyed by the id that matched, exactly as given.
        """
        ...

    def find_sent_by_ref(self, ref: str) -> SentMessage | None:
        """The newest send recorded with `ref` (module Rule 3), or ``None``."""
        ...

    def find_sent_by_provider_thread(self, thread_id: str) -> SentMessage | None:
        """The newest send in the provider thread `thread_id`, or ``None``."""
        ...

    def find_sent_by_thread_index(self, guid: bytes) -> SentMessage | None:
        """The newest send stamped with the Outlook conversation `guid`, or ``None``.

        Raises:
            ConfigError: `guid` is not 16 bytes.
        """
        ...

    def find_sent_by_subject(
        self,
        subject: str,
        addresses: Iterable[str | Address],
        since: _dt.datetime | None = None,
        *,
        limit: int = 20,
    ) -> list[SentMessage]:
        """Sends with this subject and one of `addresses` among their parties, newest first.

        The low-confidence heuristic's lookup: the subject is compared normalised and
        casefolded (`SentMessage.subject_key`), an address matches the send's sender or any
        recipient, compared case-insensitively with IDNA domains.

        Args:
            subject: a subject, ``Re:`` prefixes and all (it is normalised here).
            addresses: the incoming message's parties.
            since: only sends at or after this time; sends without ``sent_at`` are then
                left out. ``None``: no time limit.
            limit: at most this many sends.

        Returns:
            The sends, newest first (module Rule 3).
        """
        ...

    # -- incoming messages ---------------------------------------------------------------------

    def record_incoming(self, message_id: str, sent_message_id: str) -> None:
        """Tie an incoming message to a send; see `Transaction.record_incoming`."""
        ...

    def find_incoming(self, message_ids: Iterable[str]) -> dict[str, SentMessage]:
        """Find the sends that incoming messages in `message_ids` were tied to, in one round.

        Returns:
            The sends found, keyed by the incoming id that matched, exactly as given.
        """
        ...

    # -- ledger ------------------------------------------------------------------------------

    def is_processed(self, key: str) -> bool:
        """Whether `key` is in the processed ledger."""
        ...

    def find_processed(self, keys: Iterable[str]) -> set[str]:
        """The keys of `keys` that are in the processed ledger, looked up in one round.

        What a poller asks for a whole batch before deciding about its messages.

        Raises:
            ConfigError: a key is not a non-empty str.
        """
        ...

    # -- outbox ------------------------------------------------------------------------------

    def due_outbox(self, now: _dt.datetime, limit: int = 100) -> list[OutboxEntry]:
        """Pending entries due at `now`, the longest-due first, at most `limit`."""
        ...

    def dead_outbox(self, limit: int = 100) -> list[OutboxEntry]:
        """Dead entries, oldest first, at most `limit`."""
        ...

    def find_outbox(self, event_id: str) -> list[OutboxEntry]:
        """Every entry of `event_id` (one per hook), in the order they were enqueued."""
        ...

    def mark_delivered(self, entry_id: int, now: _dt.datetime) -> None:
        """See `Transaction.mark_delivered`."""
        ...

    def mark_failed(self, entry_id: int, error: str, retry_at: _dt.datetime) -> None:
        """See `Transaction.mark_failed`."""
        ...

    def mark_dead(self, entry_id: int, error: str, now: _dt.datetime) -> None:
        """See `Transaction.mark_dead`."""
        ...

    def claim_outbox(
        self, now: _dt.datetime, until: _dt.datetime, limit: int = 100
    ) -> list[OutboxEntry]:
        """Take pending entries due at `now` for one caller, so that no other caller gets them.

        Atomically selects up to `limit` entries as `due_outbox` does and makes them due
        again only at `until` (their ``next_attempt_at``; attempts are not counted): a claim
        that runs out makes an entry due again, for a caller that died before marking it
        (module Rule 7). The caller marks each entry delivered, failed or dead. Two callers,
        in any processes, never get the same entry before `until`; a backend with row locks
        skips the rows another claim is taking (PostgreSQL ``FOR UPDATE SKIP LOCKED``).

        Returns:
            The entries as they were when claimed (``next_attempt_at`` the old due time),
            longest-due first.

        Raises:
            ConfigError: `until` is not after `now`, or a datetime is naive.
        """
        ...

    # -- cursors -----------------------------------------------------------------------------

    def load_cursor(self, source: str) -> str | None:
        """The cursor saved for `source`, or ``None``."""
        ...

    def save_cursor(self, source: str, cursor: str) -> None:
        """See `Transaction.save_cursor`."""
        ...

    # -- work sharing and retention ------------------------------------------------------------

    def claim_source(
        self, source: str, worker: str, now: _dt.datetime, until: _dt.datetime
    ) -> bool:
        """Lease `source` to `worker` until `until`, unless another worker's lease holds at `now`.

        Atomic across every process and machine sharing the store (module Rule 7): of two
        workers claiming a free source at once, exactly one gets it. A worker renews its own
        lease by claiming again; a lease that expired (``until`` at or before `now`) is free.

        Args:
            source: the source's name (the cursor key).
            worker: the claiming worker's id, unique among the live workers.
            now: the current time, by the caller's clock.
            until: when the lease ends unless renewed; after `now`.

        Returns:
            True when `worker` holds the lease on return, False when another worker does.

        Raises:
            ConfigError: `until` is not after `now`, a datetime is naive, or a name is empty.
        """
        ...

    def release_source(self, source: str, worker: str) -> None:
        """End `worker`'s lease on `source`.

        A no-op when it holds none: the lease ran out and another worker took it, or it was
        released already.
        """
        ...

    def prune(self, before: _dt.datetime) -> Pruned:
        """Delete ledger keys processed, and outbox entries delivered, before `before`.

        What only matters for a while (module Rule 8). A message whose ledger key was pruned
        and that a source delivers again (a rescan reaching further back than the horizon) is
        processed again: its event comes again, with the same ``event_id``. Keep the horizon
        well beyond the sources' rescan window.

        Returns:
            How many rows were deleted.

        Raises:
            ConfigError: `before` is naive.
        """
        ...

    # -- the unit of work and the lifecycle ---------------------------------------------------

    def transaction(self) -> contextlib.AbstractContextManager[Transaction]:
        """Open an atomic unit of writes (module Rule 5).

        Raises:
            ConfigError: a transaction is already open in this thread.
            StoreError: the backend could not begin or commit.
        """
        ...

    def close(self) -> None:
        """Release the store's resources. Closing twice is fine; using it after is not."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class BaseStore(abc.ABC):
    """The boring parts of a store: the lifecycle and one-write conveniences.

    A subclass implements `transaction`, the lookups and `_close`; the single writes
    (`record_sent`, `mark_delivered` ...) come for free as one-write transactions.
    """

    _closed: bool = False

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def close(self) -> None:
        """Release the store's resources; idempotent.

        Raises:
            StoreError: the backend failed while closing.
        """
        if not self._closed:
            self._closed = True
            self._close()

    @abc.abstractmethod
    def _close(self) -> None:
        """Release the backend's resources (called once)."""

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError(f"{type(self).__name__} is closed")

    def __enter__(self) -> Self:
        self._check_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the unit of work --------------------------------------------------------------------

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[Transaction]:
        """Open an atomic unit of writes; see `Store.transaction`."""

    # -- one-write conveniences --------------------------------------------------------------

    def record_sent(self, sent: SentMessage) -> None:
        """Record a send; see `Transaction.record_sent`."""
        with self.transaction() as tx:
            tx.record_sent(sent)

    def record_alias(self, message_id: str, alias_id: str) -> None:
        """Add an id of a recorded send; see `Transaction.record_alias`."""
        with self.transaction() as tx:
            tx.record_alias(message_id, alias_id)

    def record_incoming(self, message_id: str, sent_message_id: str) -> None:
        """Tie an incoming message to a send; see `Transaction.record_incoming`."""
        with self.transaction() as tx:
            tx.record_incoming(message_id, sent_message_id)

    def mark_delivered(self, entry_id: int, now: _dt.datetime) -> None:
        """See `Transaction.mark_delivered`."""
        with self.transaction() as tx:
            tx.mark_delivered(entry_id, now)

    def mark_failed(self, entry_id: int, error: str, retry_at: _dt.datetime) -> None:
        """See `Transaction.mark_failed`."""
        with self.transaction() as tx:
            tx.mark_failed(entry_id, error, retry_at)

    def mark_dead(self, entry_id: int, error: str, now: _dt.datetime) -> None:
        """See `Transaction.mark_dead`."""
        with self.transaction() as tx:
            tx.mark_dead(entry_id, error, now)

    def save_cursor(self, source: str, cursor: str) -> None:
        """See `Transaction.save_cursor`."""
        with self.transaction() as tx:
            tx.save_cursor(source, cursor)

    # -- lookups -----------------------------------------------------------------------------

    @abc.abstractmethod
    def find_sent(self, message_ids: Iterable[str]) -> dict[str, SentMessage]:
        """See `Store.find_sent`."""

    @abc.abstractmethod
    def find_sent_by_ref(self, ref: str) -> SentMessage | None:
        """See `Store.find_sent_by_ref`."""

    @abc.abstractmethod
    def find_sent_by_provider_thread(self, thread_id: str) -> SentMessage | None:
        """See `Store.find_sent_by_provider_thread`."""

    @abc.abstractmethod
    def find_sent_by_thread_index(self, guid: bytes) -> SentMessage | None:
        """See `Store.find_sent_by_thread_index`."""

    @abc.abstractmethod
    def find_sent_by_subject(
        self,
        subject: str,
        addresses: Iterable[str | Address],
        since: _dt.datetime | None = None,
        *,
        limit: int = 20,
    ) -> list[SentMessage]:
        """See `Store.find_sent_by_subject`."""

    @abc.abstractmethod
    def find_incoming(self, message_ids: Iterable[str]) -> dict[str, SentMessage]:
        """See `Store.find_incoming`."""

    @abc.abstractmethod
    def is_processed(self, key: str) -> bool:
        """See `Store.is_processed`."""

    def find_processed(self, keys: Iterable[str]) -> set[str]:
        """See `Store.find_processed`; by default one `is_processed` per key."""
        return {key for key in dict.fromkeys(keys) if self.is_processed(key)}

    @abc.abstractmethod
    def due_outbox(self, now: _dt.datetime, limit: int = 100) -> list[OutboxEntry]:
        """See `Store.due_outbox`."""

    @abc.abstractmethod
    def dead_outbox(self, limit: int = 100) -> list[OutboxEntry]:
        """See `Store.dead_outbox`."""

    @abc.abstractmethod
    def find_outbox(self, event_id: str) -> list[OutboxEntry]:
        """See `Store.find_outbox`."""

    @abc.abstractmethod
    def load_cursor(self, source: str) -> str | None:
        """See `Store.load_cursor`."""


def group_lookup_ids(message_ids: Iterable[str]) -> dict[str, list[str]]:
    """Map each canonical id to the ids given for it, dropping ids that hold none.

    Lookups query canonical ids and answer with the caller's spelling (module Rule 1).

    Raises:
        ConfigError: `message_ids` is a str (a common slip: it would be read letter by letter).
    """
    if isinstance(message_ids, str):
        raise ConfigError("message_ids must be a collection of ids, not one str")
    grouped: dict[str, list[str]] = {}
    for given in message_ids:
        if not isinstance(given, str):
            raise ConfigError(f"a Message-ID must be a str, not {type(given).__name__}")
        canonical = lookup_id(given)
        if canonical is not None:
            grouped.setdefault(canonical, []).append(given)
    return grouped


def address_keys(addresses: Iterable[str | Address]) -> set[str]:
    """The comparison keys of `addresses` (see `address_key`), empty ones dropped.

    Raises:
        ConfigError: `addresses` is a str, or holds something that is neither str nor Address.
    """
    if isinstance(addresses, str):
        raise ConfigError("addresses must be a collection of addresses, not one str")
    keys: set[str] = set()
    for item in addresses:
        if isinstance(item, Address):
            addr = item.addr
        elif isinstance(item, str):
            addr = item.strip()
        else:
            raise ConfigError(f"an address must be a str or an Address, not {type(item)!r}")
        if addr:
            keys.add(address_key(addr))
    return keys


def iter_chunks(items: list[str], size: int) -> Iterator[list[str]]:
    """Yield `items` in slices of at most `size`."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
