"""An in-memory store: for tests, demos and hosts that persist nothing.

Rule 1: every operation holds one re-entrant lock, and a transaction holds it from its first
        write to its end, so other threads never see half a transaction. The thread that
        owns a transaction reads its own writes, as it would on SQLite.
Rule 2: a transaction applies its writes as it goes and records how to undo each; an
        exception in the block undoes them in reverse, so none remain ("applies on
        successful exit only"). Nothing is copied per transaction.
Rule 3: memory grows with what is recorded; nothing is dropped but what `MemoryStore.prune`
        deletes. Use `SQLiteStore` for anything long-lived.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import attrs

from replytrack.errors import ConfigError
from replytrack.headers import address_key
from replytrack.store.base import (
    BaseStore,
    OutboxEntry,
    OutboxState,
    Pruned,
    SentMessage,
    Transaction,
    address_keys,
    aware_utc,
    canonical_id,
    check_cursor,
    check_key,
    check_lease,
    check_limit,
    check_text,
    group_lookup_ids,
    guid_bytes,
    newest_first_key,
    payload_bytes,
    subject_key,
)

if TYPE_CHECKING:
    from replytrack.headers import Address

__all__ = ["MemoryStore"]

_MISSING: Any = object()


@attrs.define
class _Send:
    order: int
    sent: SentMessage


class MemoryStore(BaseStore):
    """A store in dictionaries; thread-safe; see the module's rules.

    Example::

        with MemoryStore() as store:
            sent = SentMessage("<a@x.example>", "c1:p1", "rep@x.example", "p@y.example")
            store.record_sent(sent)
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._local = threading.local()
        self._journal: list[Callable[[], None]] | None = None
        # The last send order and outbox entry id given out. Journaled like the tables, so
        # a rolled-back transaction gives its numbers out again, as SQLite does.
        self._counters: dict[str, int] = {"order": 0, "entry": 0}
        # Message-ID (own or alias) -> the send's own id.
        self._ids: dict[str, str] = {}
        self._sends: dict[str, _Send] = {}
        self._aliases: dict[str, str] = {}  # alias -> own id
        self._by_ref: dict[str, set[str]] = {}
        self._by_thread: dict[str, set[str]] = {}
        self._by_guid: dict[bytes, set[str]] = {}
        self._by_subject: dict[str, set[str]] = {}
        self._incoming: dict[str, str] = {}  # incoming id -> the send's own id
        self._processed: dict[str, _dt.datetime] = {}
        self._outbox: dict[int, OutboxEntry] = {}
        self._outbox_keys: dict[tuple[str, str], int] = {}
        self._pending: set[int] = set()
        self._dead: set[int] = set()
        self._cursors: dict[str, str] = {}
        self._leases: dict[str, tuple[str, _dt.datetime]] = {}  # source -> (worker, expiry)

    def _close(self) -> None:
        with self._lock:
            for table in (self._sends, self._ids, self._incoming, self._processed, self._outbox):
                table.clear()

    # -- the unit of work --------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Open an atomic unit of writes; see `replytrack.store.Store.transaction`.

        Raises:
            ConfigError: the store is closed, or this thread has a transaction open already.
        """
        self._check_open()
        if getattr(self._local, "in_transaction", False):
            raise ConfigError("transactions do not nest; use the open transaction")
        with self._lock:
            self._local.in_transaction = True
            self._journal = []
            tx = _MemoryTransaction(self)
            try:
                yield tx
            except BaseException:
                for undo in reversed(self._journal):
                    undo()
                raise
            finally:
                tx.finished = True
                self._journal = None
                self._local.in_transaction = False

    def _check_outside_transaction(self) -> None:
        # base.py, Rule 5: the calls that commit on their own refuse to run inside one.
        if getattr(self._local, "in_transaction", False):
            raise ConfigError("this call commits on its own: not inside a transaction")

    # -- journaled primitives (Rule 2) -------------------------------------------------------

    def _set(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        old = table.get(key, _MISSING)
        table[key] = value
        assert self._journal is not None  # noqa: S101 (only transactions write)
        if old is _MISSING:
            self._journal.append(lambda: table.pop(key, None))
        else:
            self._journal.append(lambda: table.__setitem__(key, old))

    def _next(self, counter: str) -> int:
        value = self._counters[counter] + 1
        self._set(self._counters, counter, value)
        return value

    def _member(self, members: set[Any], item: Any, *, add: bool) -> None:
        if (item in members) == add:
            return
        assert self._journal is not None  # noqa: S101 (only transactions write)
        if add:
            members.add(item)
            self._journal.append(lambda: members.discard(item))
        else:
            members.discard(item)
            self._journal.append(lambda: members.add(item))

    def _index(self, index: dict[Any, set[str]], key: Any, mid: str, *, add: bool) -> None:
        if key is not None:
            self._member(index.setdefault(key, set()), mid, add=add)

    def _reindex(self, sent: SentMessage, *, add: bool) -> None:
        mid = sent.message_id
        self._index(self._by_ref, sent.ref, mid, add=add)
        self._index(self._by_thread, sent.provider_thread_id, mid, add=add)
        self._index(self._by_guid, sent.thread_index, mid, add=add)
        self._index(self._by_subject, sent.subject_key, mid, add=add)

    # -- reads -------------------------------------------------------------------------------

    def _newest(self, mids: Iterable[str]) -> SentMessage | None:
        best = max(
            (self._sends[m] for m in mids),
            key=lambda s: newest_first_key(s.sent.sent_at, s.order),
            default=None,
        )
        return None if best is None else best.sent

    def find_sent(self, message_ids: Iterable[str]) -> dict[str, SentMessage]:
        """See `replytrack.store.Store.find_sent`."""
        grouped = group_lookup_ids(message_ids)
        with self._lock:
            self._check_open()
            found: dict[str, SentMessage] = {}
            for canonical, given in grouped.items():
                own = self._ids.get(canonical)
                if own is not None:
                    sent = self._sends[own].sent
                    found.update(dict.fromkeys(given, sent))
            return found

    def find_sent_by_ref(self, ref: str) -> SentMessage | None:
        """See `replytrack.store.Store.find_sent_by_ref`."""
        with self._lock:
            self._check_open()
            return self._newest(self._by_ref.get(check_text(ref, "ref"), ()))

    def find_sent_by_provider_thread(self, thread_id: str) -> SentMessage | None:
        """See `replytrack.store.Store.find_sent_by_provider_thread`."""
        with self._lock:
            self._check_open()
            return self._newest(self._by_thread.get(check_text(thread_id, "thread_id"), ()))

    def find_sent_by_thread_index(self, guid: bytes) -> SentMessage | None:
        """See `replytrack.store.Store.find_sent_by_thread_index`."""
        key = guid_bytes(guid)
        with self._lock:
            self._check_open()
            return self._newest(self._by_guid.get(key, ()))

    def find_sent_by_subject(
        self,
        subject: str,
        addresses: Iterable[str | Address],
        since: _dt.datetime | None = None,
        *,
        limit: int = 20,
    ) -> list[SentMessage]:
        """See `replytrack.store.Store.find_sent_by_subject`."""
        key = subject_key(subject)
        parties = address_keys(addresses)
        check_limit(limit)
        floor = None if since is None else aware_utc(since, "since")
        with self._lock:
            self._check_open()
            if key is None or not parties:
                return []
            hits = []
            for mid in self._by_subject.get(key, ()):
                send = self._sends[mid]
                sent = send.sent
                if floor is not None and (sent.sent_at is None or sent.sent_at < floor):
                    continue
                if parties.isdisjoint(address_key(a) for a in sent.participants):
                    continue
                hits.append(send)
        hits.sort(key=lambda s: newest_first_key(s.sent.sent_at, s.order), reverse=True)
        return [s.sent for s in hits[:limit]]

    def find_incoming(self, message_ids: Iterable[str]) -> dict[str, SentMessage]:
        """See `replytrack.store.Store.find_incoming`."""
        grouped = group_lookup_ids(message_ids)
        with self._lock:
            self._check_open()
            found: dict[str, SentMessage] = {}
            for canonical, given in grouped.items():
                own = self._incoming.get(canonical)
                if own is not None:
                    found.update(dict.fromkeys(given, self._sends[own].sent))
            return found

    def is_processed(self, key: str) -> bool:
        """See `replytrack.store.Store.is_processed`."""
        check_key(key, "key")
        with self._lock:
            self._check_open()
            return key in self._processed

    def find_processed(self, keys: Iterable[str]) -> set[str]:
        """See `replytrack.store.Store.find_processed`."""
        wanted = [check_key(key, "key") for key in keys]
        with self._lock:
            self._check_open()
            return {key for key in wanted if key in self._processed}

    def due_outbox(self, now: _dt.datetime, limit: int = 100) -> list[OutboxEntry]:
        """See `replytrack.store.Store.due_outbox`."""
        moment = aware_utc(now, "now")
        check_limit(limit)
        with self._lock:
            self._check_open()
            due = [
                self._outbox[i]
                for i in self._pending
                if (self._outbox[i].next_attempt_at or moment) <= moment
            ]
        due.sort(key=lambda e: (e.next_attempt_at, e.entry_id))
        return due[:limit]

    def dead_outbox(self, limit: int = 100) -> list[OutboxEntry]:
        """See `replytrack.store.Store.dead_outbox`."""
        check_limit(limit)
        with self._lock:
            self._check_open()
            return [self._outbox[i] for i in sorted(self._dead)[:limit]]

    def find_outbox(self, event_id: str) -> list[OutboxEntry]:
        """See `replytrack.store.Store.find_outbox`."""
        check_key(event_id, "event_id")
        with self._lock:
            self._check_open()
            ids = sorted(i for (e, _), i in self._outbox_keys.items() if e == event_id)
            return [self._outbox[i] for i in ids]

    def load_cursor(self, source: str) -> str | None:
        """See `replytrack.store.Store.load_cursor`."""
        check_key(source, "source")
        with self._lock:
            self._check_open()
            return self._cursors.get(source)

    # -- work sharing and retention ------------------------------------------------------------

    def claim_outbox(
        self, now: _dt.datetime, until: _dt.datetime, limit: int = 100
    ) -> list[OutboxEntry]:
        """See `replytrack.store.Store.claim_outbox`."""
        moment, expiry = check_lease(now, until)
        with self.transaction() as tx:  # under the lock: claims never overlap
            assert isinstance(tx, _MemoryTransaction)  # noqa: S101 (our own transaction)
            claimed = self.due_outbox(moment, limit)
            for entry in claimed:
                tx._put(attrs.evolve(entry, next_attempt_at=expiry))
        return claimed

    def claim_source(
        self, source: str, worker: str, now: _dt.datetime, until: _dt.datetime
    ) -> bool:
        """See `replytrack.store.Store.claim_source`."""
        check_key(source, "source")
        check_key(worker, "worker")
        moment, expiry = check_lease(now, until)
        with self.transaction():
            holder = self._leases.get(source)
            if holder is not None and holder[0] != worker and holder[1] > moment:
                return False
            self._set(self._leases, source, (worker, expiry))
            return True

    def release_source(self, source: str, worker: str) -> None:
        """See `replytrack.store.Store.release_source`."""
        check_key(source, "source")
        check_key(worker, "worker")
        self._check_outside_transaction()
        with self._lock:
            self._check_open()
            holder = self._leases.get(source)
            if holder is not None and holder[0] == worker:
                del self._leases[source]

    def prune(self, before: _dt.datetime) -> Pruned:
        """See `replytrack.store.Store.prune`."""
        cutoff = aware_utc(before, "before")
        self._check_outside_transaction()
        with self._lock:
            self._check_open()
            keys = [key for key, at in self._processed.items() if at < cutoff]
            for key in keys:
                del self._processed[key]
            entries = [
                entry
                for entry in self._outbox.values()
                if entry.state is OutboxState.DELIVERED
                and entry.finished_at is not None
                and entry.finished_at < cutoff
            ]
            for entry in entries:
                del self._outbox[entry.entry_id]
                del self._outbox_keys[(entry.event_id, entry.hook)]
        return Pruned(ledger=len(keys), outbox=len(entries))


class _MemoryTransaction:
    """The writes of one `MemoryStore` transaction (see `replytrack.store.Transaction`)."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self.finished = False

    def _check(self) -> MemoryStore:
        if self.finished:
            raise ConfigError("the transaction is over; open a new one")
        return self._store

    def record_sent(self, sent: SentMessage) -> None:
        """See `replytrack.store.Transaction.record_sent`."""
        s = self._check()
        if not isinstance(sent, SentMessage):
            raise ConfigError(f"record_sent() takes a SentMessage, not {type(sent).__name__}")
        mid = sent.message_id
        if mid in s._aliases:
            raise ConfigError(f"{mid!r} is an alias of the send {s._aliases[mid]!r}")
        old = s._sends.get(mid)
        if old is not None:
            s._reindex(old.sent, add=False)
            order = old.order
        else:
            order = s._next("order")
            s._set(s._ids, mid, mid)
        s._set(s._sends, mid, _Send(order, sent))
        s._reindex(sent, add=True)

    def record_alias(self, message_id: str, alias_id: str) -> None:
        """See `replytrack.store.Transaction.record_alias`."""
        s = self._check()
        target, alias = canonical_id(message_id), canonical_id(alias_id)
        own = s._ids.get(target)
        if own is None:
            raise ConfigError(f"no send is recorded as {message_id!r}")
        taken = s._ids.get(alias)
        if taken == own:
            return
        if taken is not None:
            raise ConfigError(f"{alias_id!r} already names the send {taken!r}")
        s._set(s._ids, alias, own)
        s._set(s._aliases, alias, own)

    def record_incoming(self, message_id: str, sent_message_id: str) -> None:
        """See `replytrack.store.Transaction.record_incoming`."""
        s = self._check()
        incoming, target = canonical_id(message_id), canonical_id(sent_message_id)
        own = s._ids.get(target)
        if own is None:
            raise ConfigError(f"no send is recorded as {sent_message_id!r}")
        if incoming not in s._incoming:
            s._set(s._incoming, incoming, own)

    def mark_processed(self, key: str, processed_at: _dt.datetime) -> bool:
        """See `replytrack.store.Transaction.mark_processed`."""
        s = self._check()
        check_key(key, "key")
        at = aware_utc(processed_at, "processed_at")
        if key in s._processed:
            return False
        s._set(s._processed, key, at)
        return True

    def enqueue(
        self,
        event_id: str,
        hook: str,
        payload: bytes,
        now: _dt.datetime,
        *,
        due_at: _dt.datetime | None = None,
    ) -> int | None:
        """See `replytrack.store.Transaction.enqueue`."""
        s = self._check()
        pair = (check_key(event_id, "event_id"), check_key(hook, "hook"))
        body = payload_bytes(payload)
        moment = aware_utc(now, "now")
        due = moment if due_at is None else aware_utc(due_at, "due_at")
        if pair in s._outbox_keys:
            return None
        entry_id = s._next("entry")
        entry = OutboxEntry(
            entry_id=entry_id,
            event_id=event_id,
            hook=hook,
            payload=body,
            state=OutboxState.PENDING,
            attempts=0,
            created_at=moment,
            next_attempt_at=due,
            last_error=None,
            finished_at=None,
        )
        s._set(s._outbox_keys, pair, entry_id)
        self._put(entry)
        return entry_id

    def _put(self, entry: OutboxEntry) -> None:
        s = self._store
        s._set(s._outbox, entry.entry_id, entry)
        s._member(s._pending, entry.entry_id, add=entry.state is OutboxState.PENDING)
        s._member(s._dead, entry.entry_id, add=entry.state is OutboxState.DEAD)

    def _entry(self, entry_id: int) -> OutboxEntry:
        entry = self._check()._outbox.get(entry_id)
        if entry is None:
            raise ConfigError(f"no outbox entry {entry_id!r}")
        return entry

    def mark_delivered(self, entry_id: int, now: _dt.datetime) -> None:
        """See `replytrack.store.Transaction.mark_delivered`."""
        entry = self._entry(entry_id)
        moment = aware_utc(now, "now")
        if entry.state is not OutboxState.DELIVERED:
            self._put(
                attrs.evolve(
                    entry, state=OutboxState.DELIVERED, next_attempt_at=None, finished_at=moment
                )
            )

    def mark_failed(self, entry_id: int, error: str, retry_at: _dt.datetime) -> None:
        """See `replytrack.store.Transaction.mark_failed`."""
        entry = self._entry(entry_id)
        when = aware_utc(retry_at, "retry_at")
        message = _error_text(error)
        if entry.state is OutboxState.PENDING:
            self._put(
                attrs.evolve(
                    entry, attempts=entry.attempts + 1, next_attempt_at=when, last_error=message
                )
            )

    def mark_dead(self, entry_id: int, error: str, now: _dt.datetime) -> None:
        """See `replytrack.store.Transaction.mark_dead`."""
        entry = self._entry(entry_id)
        moment = aware_utc(now, "now")
        message = _error_text(error)
        if entry.state is OutboxState.PENDING:
            self._put(
                attrs.evolve(
                    entry,
                    state=OutboxState.DEAD,
                    attempts=entry.attempts + 1,
                    next_attempt_at=None,
                    last_error=message,
                    finished_at=moment,
                )
            )

    def save_cursor(self, source: str, cursor: str) -> None:
        """See `replytrack.store.Transaction.save_cursor`."""
        s = self._check()
        s._set(s._cursors, check_key(source, "source"), check_cursor(cursor))


def _error_text(error: str) -> str:
    if not isinstance(error, str):
        raise ConfigError(f"error must be a str, not {type(error).__name__}")
    return error
