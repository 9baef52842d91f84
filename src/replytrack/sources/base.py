"""The mailbox source port: what the tracker reads mail from, and the values it reads.

A source hands out batches of incoming messages (`Batch`) together with an opaque cursor that
says how far the batch reached. The tracker commits that cursor in the same store transaction
as the decisions about the batch's messages (DESIGN.md, "Durability"), so the contract between
the two is about cursors:

Rule 1: **no miss.** A message that is in the mailbox when a cursor is made, or arrives later,
        and is not excluded by that cursor's ``since`` bound, is delivered by some fetch that
        starts from the cursor or from a cursor that fetch returned. A source takes its
        high-water mark *before* it enumerates the mailbox, so mail arriving during a scan
        lands after the mark and is picked up by the next fetch.
Rule 2: **bounded duplicates.** Fetching again from a cursor that was handed out re-delivers
        what followed it (resuming from an older cursor after a crash is how the tracker
        recovers); a source may also re-deliver a few messages on its own (each source says
        when). The tracker's processed ledger drops the duplicates; a source never promises
        exactly-once.
Rule 3: **invalid cursors rescan a window, never jump to "now".** A cursor the source can no
        longer honour (an mbox truncated or replaced, an IMAP UIDVALIDITY change, a Gmail
        404, a Graph 410), and a cursor it cannot read at all (malformed, from another kind
        of source, from a newer replytrack), restarts at `BaseSource.rescan_window` before the
        source's clock and says so with ``Batch.rescan``. Rescanning was chosen over raising
        for unreadable cursors because it cannot lose mail: the cost is duplicates, which the
        ledger absorbs, while an error would stop polling until a human intervened.
Rule 4: messages come oldest first, in an order that is stable across fetches.
Rule 5: a source never changes the mailbox: nothing is marked read, moved or locked.
Rule 6: every failure of the outside world surfaces as `SourceError` with ``source`` set to
        the source's name and the original exception as ``__cause__`` (`BaseSource` does this
        at its boundary); calling the API wrongly (a naive datetime, a bad limit, a closed
        source) raises `ConfigError`.

Cursors are JSON objects ``{"v": 1, "kind": ..., ...}`` (`dump_cursor` / `load_cursor`): the
version lets a later replytrack read or reject old cursors, and the kind keeps a cursor saved
under one source name from being misread by a source of another type.
"""

from __future__ import annotations

import abc
import datetime as _dt
import json
import logging
import threading
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol, runtime_checkable

import attrs

from replytrack.errors import ConfigError, ReplytrackError, SourceError
from replytrack.store.base import aware_utc, check_limit

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

__all__ = [
    "CURSOR_VERSION",
    "DEFAULT_RESCAN_WINDOW",
    "BaseSource",
    "Batch",
    "IncomingMessage",
    "InvalidCursor",
    "MailboxSource",
    "dump_cursor",
    "load_cursor",
]

log: logging.Logger = logging.getLogger("replytrack.sources")

#: The version written into every cursor; cursors of another version are rescanned (Rule 3).
CURSOR_VERSION: Final = 1

#: How far back a source rescans when its cursor is invalid (Rule 3).
DEFAULT_RESCAN_WINDOW: Final = _dt.timedelta(days=7)

_UTC: Final = _dt.timezone.utc


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


def _data(value: bytes | bytearray | memoryview) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise ConfigError(f"message data must be bytes, not {type(value).__name__}")
    return bytes(value)


def _source_id(value: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"source_id must be a non-empty str, got {value!r:.200}")
    return value


def _optional_str(value: str | None) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"expected a str or None, not {type(value).__name__}")
    return value


def _labels(value: Iterable[str]) -> tuple[str, ...]:
    # One str would otherwise become a tuple of its letters.
    labels = () if isinstance(value, str) else tuple(value)
    if isinstance(value, str) or not all(isinstance(v, str) for v in labels):
        raise ConfigError(f"labels must be a collection of str, got {value!r:.200}")
    return labels


def _optional_time(value: _dt.datetime | None) -> _dt.datetime | None:
    return None if value is None else aware_utc(value, "received_at")


def _short_bytes(value: bytes) -> str:
    # A message can be megabytes; a repr shows its size and how it starts.
    return f"<{len(value)} bytes: {value[:40]!r}...>" if len(value) > 40 else repr(value)


@attrs.frozen
class IncomingMessage:
    r"""One message as a source delivers it.

    Attributes:
        data: the raw message: at least the whole header block; the full message when
            `complete`.
        source_id: the source's stable id for the message (Maildir key, mbox offset and
            digest, IMAP UID, provider message id).
        folder: the folder it was found in, when the source has folders.
        provider_thread_id: the provider's thread (Gmail ``threadId``, Graph
            ``conversationId``), when known: a correlation hint.
        labels: provider labels or flags (``\\Seen``, ``INBOX`` ...).
        received_at: when the mailbox received it (aware, kept in UTC), when known.
        complete: False when only the header block was fetched; `MailboxSource.fetch_body`
            gives the whole message.

    Raises:
        ConfigError: a field has the wrong type, or `received_at` is naive.
    """

    data: bytes = attrs.field(converter=_data, repr=_short_bytes)
    source_id: str = attrs.field(converter=_source_id)
    folder: str | None = attrs.field(default=None, converter=_optional_str)
    provider_thread_id: str | None = attrs.field(default=None, converter=_optional_str)
    labels: tuple[str, ...] = attrs.field(default=(), converter=_labels)
    received_at: _dt.datetime | None = attrs.field(default=None, converter=_optional_time)
    complete: bool = True


@attrs.frozen
class Batch:
    """What one `MailboxSource.fetch` returns.

    Attributes:
        messages: the messages, oldest first (module Rule 4); possibly none.
        cursor: where the next fetch starts. Opaque; safe to commit once every message of
            the batch is handled, and resumable (module Rules 1 and 2).
        more: True when the source stopped at the limit and fetch should be called again
            right away; False when it is caught up (for now).
        rescan: True when the cursor given could not be honoured and this batch starts a
            rescan of the recent window (module Rule 3): expect duplicates. Hosts may log it.
    """

    messages: tuple[IncomingMessage, ...]
    cursor: str
    more: bool
    rescan: bool = False


# --------------------------------------------------------------------------------------------
# Cursors
# --------------------------------------------------------------------------------------------


class InvalidCursor(Exception):  # noqa: N818 (a signal between a source and its base class)
    """Raised inside a source's ``_fetch`` when its cursor cannot be honoured.

    `BaseSource.fetch` catches it and restarts from `BaseSource.rescan_cursor` (module
    Rule 3). Adapters raise it on an IMAP UIDVALIDITY change, a Gmail 404 on ``history.list``,
    a Graph 410, or a cursor they cannot read. It never reaches a host.
    """


def dump_cursor(kind: str, state: Mapping[str, Any]) -> str:
    """Serialise a cursor: compact JSON with the version and the kind of source.

    Args:
        kind: the kind of source (``"maildir"``, ``"mbox"`` ...).
        state: JSON-serialisable fields; ``v`` and ``kind`` are reserved.

    Returns:
        The cursor, a str (stores keep cursors as str).
    """
    body = {**state, "v": CURSOR_VERSION, "kind": kind}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def load_cursor(kind: str, cursor: str) -> dict[str, Any]:
    """Read a cursor written by `dump_cursor` for a source of `kind`.

    Returns:
        The cursor's fields (``v`` and ``kind`` included).

    Raises:
        InvalidCursor: the cursor is not JSON, not an object, of another version or of
            another kind of source.
    """
    try:
        state = json.loads(cursor)
    except ValueError as exc:  # json.JSONDecodeError and the UnicodeDecodeError family
        raise InvalidCursor(f"not a cursor: {cursor[:80]!r}") from exc
    if not isinstance(state, dict):
        raise InvalidCursor(f"not a cursor: {cursor[:80]!r}")
    if state.get("kind") != kind:
        raise InvalidCursor(f"a cursor of another kind of source: {state.get('kind')!r}")
    if state.get("v") != CURSOR_VERSION:
        raise InvalidCursor(f"a cursor of version {state.get('v')!r}, not {CURSOR_VERSION}")
    return state


def cursor_int(state: Mapping[str, Any], key: str, *, minimum: int = 0) -> int:
    """Read an int field of a loaded cursor.

    Raises:
        InvalidCursor: the field is missing, not an int, or below `minimum`.
    """
    value = state.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidCursor(f"cursor field {key!r} is not an int >= {minimum}: {value!r:.80}")
    return value


def cursor_optional_int(state: Mapping[str, Any], key: str) -> int | None:
    """Read an optional int field of a loaded cursor (missing or null: ``None``).

    Raises:
        InvalidCursor: the field is there but not an int.
    """
    if state.get(key) is None:
        return None
    return cursor_int(state, key, minimum=-(2**63))


def cursor_str(state: Mapping[str, Any], key: str) -> str | None:
    """Read an optional str field of a loaded cursor (missing or null: ``None``).

    Raises:
        InvalidCursor: the field is there but not a str.
    """
    value = state.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidCursor(f"cursor field {key!r} is not a str: {value!r:.80}")
    return value


# --------------------------------------------------------------------------------------------
# The port
# --------------------------------------------------------------------------------------------


@runtime_checkable
class MailboxSource(Protocol):
    """Where the tracker reads incoming mail; see the module's rules.

    Implementations: `replytrack.sources.MemorySource`, `MaildirSource`, `MboxSource`, and the
    provider adapters. A host's own source subclasses `BaseSource` (or satisfies this
    Protocol) and should pass ``tests/unit/test_source_contract.py``. A source is used by one
    thread at a time.
    """

    @property
    def name(self) -> str:
        """The source's stable name: the key its cursor is saved under in the store."""
        ...

    def initial_cursor(self, since: _dt.datetime | None = None) -> str:
        """The cursor of a first scan.

        Args:
            since: skip mail the mailbox received before this aware time; only mail present
                when the cursor is made is filtered, later arrivals always count. ``None``:
                the whole mailbox.

        Raises:
            ConfigError: `since` is naive.
            SourceError: the mailbox could not be read.
        """
        ...

    def fetch(self, cursor: str | None, limit: int = 100) -> Batch:
        """Fetch up to `limit` messages after `cursor` (``None``: `initial_cursor()`).

        Raises:
            ConfigError: `limit` is not a positive int, or the source is closed.
            SourceError: the mailbox could not be read; fetching again from the same cursor
                later loses nothing.
        """
        ...

    def fetch_body(self, message: IncomingMessage) -> bytes:
        """The whole of `message` (its ``data`` when it is `complete` already).

        Raises:
            SourceError: the message could not be read (it may have been deleted).
        """
        ...

    def wait(self, cursor: str | None, timeout: float) -> bool:
        """Block up to `timeout` seconds or until new mail may be there.

        A hint only (IMAP IDLE, a file's size): the caller fetches afterwards either way.

        Returns:
            True when woken early by a sign of new mail, False on timeout.
        """
        ...

    def close(self) -> None:
        """Release the source's resources; idempotent."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_UTC)


class BaseSource(abc.ABC):
    """The boring parts of a source, so that an adapter is a few methods.

    A subclass sets `kind` and implements `_initial_cursor` and `_fetch`; it may override
    `_fetch_body` (sources that deliver header blocks first) and `_fetch_bodies` (those
    that can fetch several in one request), `_probe` (a cheap sign of new mail that `wait`
    polls) and `_close`. The base class supplies the rest:

    * ``fetch(None)`` starts from `initial_cursor`; `limit` and `since` are checked;
    * an `InvalidCursor` raised by `_fetch` restarts from `rescan_cursor` (module Rule 3);
    * every other failure becomes `SourceError` with ``source=self.name`` (module Rule 6);
    * `wait` sleeps, waking early on `wake` or when `_probe` changes; `close` is idempotent
      and the source is a context manager.

    Args:
        name: the stable name (the cursor key in the store).
        rescan_window: how far back an invalid cursor rescans.
        clock: returns the current aware time; injected so tests need no sleeping.

    Raises:
        ConfigError: `name` is empty, `rescan_window` is not positive, or `clock` is not
            callable.
    """

    #: The kind written into this source's cursors (`dump_cursor`).
    kind: ClassVar[str] = "source"

    #: Seconds between two `_probe` calls while `wait` blocks.
    wait_interval: ClassVar[float] = 1.0

    def __init__(
        self,
        name: str,
        *,
        rescan_window: _dt.timedelta = DEFAULT_RESCAN_WINDOW,
        clock: Callable[[], _dt.datetime] | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"a source name must be a non-empty str, got {name!r}")
        if not isinstance(rescan_window, _dt.timedelta) or rescan_window <= _dt.timedelta(0):
            raise ConfigError(f"rescan_window must be a positive timedelta, got {rescan_window!r}")
        if clock is not None and not callable(clock):
            raise ConfigError("clock must be a callable returning an aware datetime")
        self._name = name
        self._rescan_window = rescan_window
        self._clock = clock or _utc_now
        self._closed = False
        self._wakeup = threading.Event()
        # The probe taken when the last fetch started: `wait` compares against it, so mail
        # that arrived between that fetch and the wait still wakes the caller at once.
        self._fetch_probe: Hashable | None = None

    # -- identity and lifecycle --------------------------------------------------------------

    @property
    def name(self) -> str:
        """The stable name: the key this source's cursor is saved under."""
        return self._name

    @property
    def rescan_window(self) -> _dt.timedelta:
        """How far back an invalid cursor rescans (module Rule 3)."""
        return self._rescan_window

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self._name!r})"

    def now(self) -> _dt.datetime:
        """The source's clock, in UTC.

        Raises:
            ConfigError: the injected clock returned a naive datetime.
        """
        return aware_utc(self._clock(), "clock()")

    def close(self) -> None:
        """Release the source's resources; idempotent. Wakes a pending `wait`.

        Raises:
            SourceError: releasing failed.
        """
        if self._closed:
            return
        self._closed = True
        self._wakeup.set()
        with self._boundary("close"):
            self._close()

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

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError(f"{self!r} is closed")

    # -- the port ------------------------------------------------------------------------------

    def initial_cursor(self, since: _dt.datetime | None = None) -> str:
        """The cursor of a first scan; see `MailboxSource.initial_cursor`.

        A `since` in the future is taken as "now": a later start could only lose mail.

        Raises:
            ConfigError: `since` is naive, or the source is closed.
            SourceError: the mailbox could not be read.
        """
        self._check_open()
        if since is not None:
            since = min(aware_utc(since, "since"), self.now())
        with self._boundary("initial_cursor"):
            return self._initial_cursor(since)

    def rescan_cursor(self) -> str:
        """The cursor an invalid cursor is replaced by: `initial_cursor` of the window.

        Raises:
            SourceError: the mailbox could not be read.
        """
        return self.initial_cursor(self.now() - self._rescan_window)

    def fetch(self, cursor: str | None, limit: int = 100) -> Batch:
        """Fetch up to `limit` messages after `cursor`; see `MailboxSource.fetch`.

        Raises:
            ConfigError: `limit` is not a positive int, `cursor` is not a str or ``None``, or
                the source is closed.
            SourceError: the mailbox could not be read.
        """
        self._check_open()
        check_limit(limit)
        if cursor is not None and not isinstance(cursor, str):
            raise ConfigError(f"a cursor must be a str or None, not {type(cursor).__name__}")
        if cursor is None:
            cursor = self.initial_cursor()
        with self._boundary("fetch"):
            self._fetch_probe = self._probe()
            try:
                return self._fetch(cursor, limit)
            except InvalidCursor as exc:
                # Rule 3: rescan the window. The tracker's ledger absorbs the duplicates.
                log.warning(
                    "%s: cursor invalid (%s); rescanning %s", self._name, exc, self._rescan_window
                )
            batch = self._fetch(self.rescan_cursor(), limit)
            return attrs.evolve(batch, rescan=True)

    def fetch_body(self, message: IncomingMessage) -> bytes:
        """The whole of `message`; see `MailboxSource.fetch_body`.

        Raises:
            ConfigError: `message` is not an `IncomingMessage`, or the source is closed.
            SourceError: the message could not be read.
        """
        if not isinstance(message, IncomingMessage):
            raise ConfigError(f"expected an IncomingMessage, not {type(message).__name__}")
        if message.complete:
            return message.data
        self._check_open()
        with self._boundary("fetch_body"):
            return self._fetch_body(message)

    def fetch_bodies(self, messages: Sequence[IncomingMessage]) -> list[bytes]:
        """The whole of each of `messages`, in their order: `fetch_body` for many at once.

        Not part of the `MailboxSource` protocol: an optional capability that
        `ReplyTracker.poll` uses when a source has it, to ask for all the bodies a batch
        needs together. A source that can fetch several messages in one request overrides
        `_fetch_bodies` (IMAP: one ``UID FETCH`` per folder); by default they are fetched
        one by one.

        Raises:
            ConfigError: an item is not an `IncomingMessage`, or the source is closed.
            SourceError: a message could not be read; none of the bodies is returned.
        """
        for message in messages:
            if not isinstance(message, IncomingMessage):
                raise ConfigError(f"expected an IncomingMessage, not {type(message).__name__}")
        partial = [m for m in messages if not m.complete]
        if not partial:
            return [m.data for m in messages]
        self._check_open()
        with self._boundary("fetch_body"):
            fetched = self._fetch_bodies(partial)
            if len(fetched) != len(partial):
                raise SourceError(
                    f"_fetch_bodies gave {len(fetched)} bodies for {len(partial)} messages"
                )
            bodies = iter(fetched)
            return [m.data if m.complete else next(bodies) for m in messages]

    def wait(self, cursor: str | None, timeout: float) -> bool:
        """Sleep up to `timeout` seconds, waking early on `wake` or a changed `_probe`.

        Returns:
            True when woken early (by `wake`, or because the mailbox changed since the last
            fetch), False on timeout or when the source was closed.

        Raises:
            ConfigError: `timeout` is negative or not a number.
        """
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise ConfigError(f"timeout must be a number >= 0, got {timeout!r}")
        if self._closed:
            return False
        baseline = self._fetch_probe
        if baseline is None:
            baseline = self._safe_probe()
        remaining = float(timeout)
        while True:
            if self._safe_probe() != baseline:
                return True
            step = min(remaining, self.wait_interval)
            if self._wakeup.wait(step):
                self._wakeup.clear()
                return not self._closed
            remaining -= step
            if remaining <= 0:
                return False

    def wake(self) -> None:
        """Make a pending (or the next) `wait` return True at once. Safe from any thread."""
        self._wakeup.set()

    # -- for subclasses ------------------------------------------------------------------------

    def _dump_cursor(self, state: Mapping[str, Any]) -> str:
        return dump_cursor(self.kind, state)

    def _load_cursor(self, cursor: str) -> dict[str, Any]:
        return load_cursor(self.kind, cursor)

    @abc.abstractmethod
    def _initial_cursor(self, since: _dt.datetime | None) -> str:
        """The cursor of a first scan from `since` (aware UTC, not in the future) or all."""

    @abc.abstractmethod
    def _fetch(self, cursor: str, limit: int) -> Batch:
        """Fetch from `cursor`; raise `InvalidCursor` when it cannot be honoured."""

    def _fetch_body(self, message: IncomingMessage) -> bytes:
        """The whole of an incomplete `message`; sources that send only headers override."""
        raise SourceError(
            f"{self._name} cannot fetch the body of {message.source_id!r}", source=self._name
        )

    def _fetch_bodies(self, messages: Sequence[IncomingMessage]) -> list[bytes]:
        """The whole of each incomplete message, in order; by default `_fetch_body` each."""
        return [self._fetch_body(message) for message in messages]

    def _probe(self) -> Hashable | None:
        """A cheap value that changes when new mail may have arrived; ``None``: no probe."""
        return None

    def _close(self) -> None:  # noqa: B027 (optional: most sources hold nothing open)
        """Release resources (called once); nothing by default."""

    def _safe_probe(self) -> Hashable | None:
        # A probe that fails (the mailbox vanished) is a change: the caller's next fetch
        # reports the failure as SourceError.
        try:
            return self._probe()
        except Exception:  # any failure means "go and look"
            return object()

    def _boundary(self, operation: str) -> _Boundary:
        return _Boundary(self._name, operation)


class _Boundary:
    """Translate failures into `SourceError` at the edge of a source (module Rule 6).

    ``ConfigError`` (the API misused) and `SourceError` pass; a `SourceError` without a source
    gets this one's name. Anything else, ``OSError`` from a file, an IMAP client's or an HTTP
    library's exception, becomes ``SourceError(...) from exc``: hosts catch one type.
    """

    __slots__ = ("_name", "_operation")

    def __init__(self, name: str, operation: str) -> None:
        self._name = name
        self._operation = operation

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # An InvalidCursor that gets this far was not handled by `fetch` (a rescan cursor that
        # is itself invalid, or one raised from fetch_body): a failure like any other.
        if exc is None or not isinstance(exc, Exception):
            return
        if isinstance(exc, SourceError):
            if exc.source is None:
                exc.source = self._name
            return
        if isinstance(exc, ReplytrackError):
            return
        raise SourceError(
            f"{self._name}: {self._operation} failed: {type(exc).__name__}: {exc}",
            source=self._name,
        ) from exc
