"""An in-memory mailbox: the test double for hosts (and for replytrack's own tests).

Messages are kept in arrival order; a cursor is the generation of the mailbox and the number of
messages already handed out, so the double behaves like an IMAP folder with UIDVALIDITY and
UIDs. Tests drive the situations real mailboxes produce: new mail between fetches
(`MemorySource.add`), a UIDVALIDITY change (`MemorySource.invalidate`), a provider that fails
(`MemorySource.fail_next`) and a provider that sends header blocks first (``headers_only``).

Rule 1: a cursor is ``{"gen": G, "next": N}``: messages ``N`` and up of generation ``G`` are
        still to come. Arrival order is delivery order (base Rule 4).
Rule 2: `invalidate` starts a new generation; a cursor of an older one rescans the window by
        ``received_at`` (base Rule 3). Messages without ``received_at`` are always rescanned:
        a date that is not known cannot prove a message is old.
Rule 3: a ``since`` bound (an initial cursor or a rescan) filters only the messages that were
        there when the cursor was made (``until``); mail added later is always delivered,
        whatever its date.
Rule 4: every method holds one lock, so a test may `add` from another thread while a poller
        fetches; `add` wakes a pending `wait`.
"""

from __future__ import annotations

import datetime as _dt
import threading
from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING

import attrs

from replytrack.errors import ConfigError, SourceError
from replytrack.sources.base import (
    DEFAULT_RESCAN_WINDOW,
    BaseSource,
    Batch,
    IncomingMessage,
    InvalidCursor,
    cursor_int,
    cursor_optional_int,
)
from replytrack.store.base import from_micros, to_micros

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["MemorySource", "header_block"]


def header_block(data: bytes) -> bytes:
    """The header block of `data`, up to and including the empty line that ends it.

    A message without an empty line is all header (RFC 5322 section 2.1: the body is
    optional), so it is returned whole.
    """
    ends = [i for i in (data.find(b"\n\n"), data.find(b"\n\r\n")) if i >= 0]
    if not ends:
        return data
    end = min(ends)
    return data[: end + (2 if data[end + 1 : end + 2] == b"\n" else 3)]


class MemorySource(BaseSource):
    """A mailbox in a list; see the module's rules.

    Args:
        messages: the initial messages, raw bytes or `IncomingMessage` values, oldest first.
        name: the source's name (the cursor key in the store).
        headers_only: deliver header blocks only (``complete=False``), like an IMAP source's
            first pass, so that `fetch_body` is exercised; `body_fetches` counts its calls.
        rescan_window: how far back an invalidated cursor rescans.
        clock: the current aware time, for ``received_at`` defaults and rescans.

    Raises:
        ConfigError: a message or argument has the wrong type.
    """

    kind = "memory"

    def __init__(
        self,
        messages: Iterable[bytes | IncomingMessage] = (),
        *,
        name: str = "memory",
        headers_only: bool = False,
        rescan_window: _dt.timedelta = DEFAULT_RESCAN_WINDOW,
        clock: Callable[[], _dt.datetime] | None = None,
    ) -> None:
        super().__init__(name, rescan_window=rescan_window, clock=clock)
        self._lock = threading.RLock()
        self._messages: list[IncomingMessage] = []
        self._generation = 1
        self._failures: list[Exception] = []
        self._headers_only = bool(headers_only)
        self.body_fetches: int = 0
        for item in messages:
            if isinstance(item, IncomingMessage):
                self.add_message(item)
            else:
                self.add(item)

    # -- driving the double --------------------------------------------------------------------

    @property
    def messages(self) -> tuple[IncomingMessage, ...]:
        """Every message added in this generation, in arrival order (complete)."""
        with self._lock:
            return tuple(self._messages)

    def add(
        self,
        data: bytes,
        *,
        source_id: str | None = None,
        folder: str | None = None,
        provider_thread_id: str | None = None,
        labels: Iterable[str] = (),
        received_at: _dt.datetime | None = None,
    ) -> IncomingMessage:
        """Deliver a message into the mailbox.

        Args:
            data: the whole raw message.
            source_id: its id; default: its arrival number in this generation, from 1.
            folder: the folder to report.
            provider_thread_id: the provider thread id to report.
            labels: labels to report.
            received_at: when it arrived (aware); default: the source's clock.

        Returns:
            The message as stored (complete).

        Raises:
            ConfigError: an argument has the wrong type, or `received_at` is naive.
        """
        if isinstance(labels, str):
            raise ConfigError("labels must be a collection of str, not one str")
        with self._lock:
            message = IncomingMessage(
                data,
                source_id if source_id is not None else str(len(self._messages) + 1),
                folder=folder,
                provider_thread_id=provider_thread_id,
                labels=tuple(labels),
                received_at=self.now() if received_at is None else received_at,
            )
            return self.add_message(message)

    def add_message(self, message: IncomingMessage) -> IncomingMessage:
        """Deliver a prepared `IncomingMessage` (its ``complete`` flag is ignored: it is whole).

        Raises:
            ConfigError: `message` is not an `IncomingMessage`.
        """
        if not isinstance(message, IncomingMessage):
            raise ConfigError(f"expected an IncomingMessage, not {type(message).__name__}")
        message = attrs.evolve(message, complete=True)
        with self._lock:
            self._messages.append(message)
        self.wake()
        return message

    def invalidate(self, *, keep: bool = True) -> None:
        """Start a new generation, as an IMAP server does when UIDVALIDITY changes.

        Cursors of the old generation are then rescanned by date (module Rule 2).

        Args:
            keep: keep the messages (a server that renumbered its folder); False empties the
                mailbox (a folder deleted and re-created).
        """
        with self._lock:
            self._generation += 1
            if not keep:
                self._messages.clear()
        self.wake()

    def fail_next(self, count: int = 1, error: Exception | None = None) -> None:
        """Make the next `count` calls of `fetch` fail, before they read anything.

        Args:
            count: how many fetches fail.
            error: what they raise; default `SourceError`. Any other exception shows the
                translation at the boundary: the host sees `SourceError` with it as cause.

        Raises:
            ConfigError: `count` is not a positive int.
        """
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"count must be a positive int, got {count!r}")
        with self._lock:
            for _ in range(count):
                self._failures.append(
                    error if error is not None else SourceError("injected failure")
                )

    # -- the source ----------------------------------------------------------------------------

    def _initial_cursor(self, since: _dt.datetime | None) -> str:
        with self._lock:
            return self._cursor(0, since, len(self._messages))

    def _cursor(self, position: int, since: _dt.datetime | None, until: int) -> str:
        state: dict[str, int | None] = {"gen": self._generation, "next": position}
        if since is not None and position < until:
            # Rule 3: the bound matters only until the messages it filters are behind us.
            state["since"] = to_micros(since)
            state["until"] = until
        return self._dump_cursor(state)

    def _fetch(self, cursor: str, limit: int) -> Batch:
        with self._lock:
            if self._failures:
                raise self._failures.pop(0)
            state = self._load_cursor(cursor)
            position = cursor_int(state, "next")
            since_micros = cursor_optional_int(state, "since")
            until = cursor_optional_int(state, "until") or 0
            if cursor_int(state, "gen") != self._generation:
                raise InvalidCursor("the mailbox was invalidated (a new generation)")
            if position > len(self._messages):
                raise InvalidCursor(f"position {position} is past the end of the mailbox")
            since = None if since_micros is None else from_micros(since_micros)
            end = len(self._messages)  # the high-water mark, before enumerating (base Rule 1)
            out: list[IncomingMessage] = []
            while position < end and len(out) < limit:
                message = self._messages[position]
                position += 1
                if self._skipped(message, position - 1, since, until):
                    continue
                out.append(self._delivered(message))
            return Batch(tuple(out), self._cursor(position, since, until), position < end)

    @staticmethod
    def _skipped(
        message: IncomingMessage, position: int, since: _dt.datetime | None, until: int
    ) -> bool:
        if since is None or position >= until or message.received_at is None:
            return False  # Rules 2 and 3
        return message.received_at < since

    def _delivered(self, message: IncomingMessage) -> IncomingMessage:
        if not self._headers_only:
            return message
        return attrs.evolve(message, data=header_block(message.data), complete=False)

    def _fetch_body(self, message: IncomingMessage) -> bytes:
        with self._lock:
            self.body_fetches += 1
            for stored in self._messages:
                if stored.source_id == message.source_id:
                    return stored.data
        raise SourceError(f"no message {message.source_id!r} in {self.name}", source=self.name)

    def _probe(self) -> Hashable:
        with self._lock:
            return (self._generation, len(self._messages))
