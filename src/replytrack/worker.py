"""Workers: poll many mailboxes against one shared store, from many processes and machines.

A `Worker` runs in rounds. In each round it visits its sources in turn: it asks the store for
a source's lease (`Store.claim_source`), polls the source batch by batch while it holds the
lease, and releases it. Then it retries the hook deliveries that are due
(`ReplyTracker.retry_pending`) and, now and then, prunes the store (`Store.prune`). Any number
of workers - threads, processes, machines - may run over the same sources against one store:
the leases share the mailboxes out and the outbox claims share the retries (store Rule 7), so
a platform scales out by starting more workers, and a dead worker's mailboxes are taken over
once its leases run out.

Rule 1: a worker polls a source only while it holds the source's lease. It claims the lease
        before the first batch and renews it before every further batch, each time for
        `lease` from now. When a renewal is refused (the lease ran out and another worker took
        the source) it stops polling that source at once, and does not release it.
Rule 2: a batch - fetching it, processing it, the commit and the hook calls - must take
        less than half the lease. Every batch starts with at least half a lease left: a claim
        or renewal that the store granted only after half the lease had passed (a lock wait,
        a slow network) is given back at once, and the source is not polled. A batch that
        outlives its lease may overlap the next holder's polling of the same source
        (harmless for correctness - the processed ledger and the outbox's idempotency drop
        the duplicates - but wasted work). The default, 2 minutes, is about a hundred times a
        batch of 100 messages from a local mailbox and ten times a slow IMAP batch; a batch
        that took more than half the lease is logged as a warning. Workers on different
        machines compare lease times read from their own clocks: keep the clocks in sync
        (NTP) to well within the lease.
Rule 3: fairness. A worker polls a source at most `max_batches` batches per visit, then moves
        on; a round that left a source with more to fetch (or a full retry batch) is followed
        at once by the next round, otherwise the worker sleeps `interval`. Each worker starts
        its rounds at a random place in its list and one source further each round, so that
        workers started together do not queue for the same source and no source is always
        last.
Rule 4: failures never end the loop. A source whose poll failed (`SourceError`, a
        `StoreError` during its batch, or anything else its adapter raised) is logged, counted
        and backed off by this worker - not polled again before `backoff`, doubling with each
        further failure up to `max_backoff`; a store failure while claiming, retrying or
        pruning is logged and counted, and the round goes on. The failed batch was not
        acknowledged: it comes again (tracker Rule 1).
Rule 5: stopping (`Worker.stop`, or the event handed to `Worker.run`) lets the current batch
        finish - its decisions committed and its hooks called - then releases every lease the
        worker holds, so that other workers take its sources at once rather than after the
        lease runs out. A worker killed without stopping leaves its leases to run out, and
        the hook calls it had not recorded to other workers' `retry_pending` once the
        tracker's ``claim_for`` ran out: nothing is lost, a few deliveries come twice, with
        the same ``event_id`` (hooks Rule 1).
Rule 6: retention. At most once per `prune_every` across all the workers sharing a store,
        one of them deletes the ledger keys and delivered outbox entries older than `retain`
        (store Rule 8). They agree through a lease on the reserved name `PRUNE_LEASE`, taken
        for `prune_every` and never released: whoever gets it prunes. `retain` must exceed
        every source's rescan window (7 days by default), or a rescan would bring back mail
        whose ledger key is gone, and its events again.
Rule 7: the worker reads the time only through its injected clock (leases, backoff, the
        prune cadence, the spans it reports). It does not close the store, the tracker or the
        sources: whoever opened them closes them, after `run` returned.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Protocol, runtime_checkable

import attrs

from replytrack.errors import ConfigError, StoreError
from replytrack.sources.base import MailboxSource
from replytrack.store.base import Pruned, aware_utc, check_limit
from replytrack.tracker import ReplyTracker, RetryResult

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_PRUNE_EVERY",
    "DEFAULT_RETAIN",
    "PRUNE_LEASE",
    "PollObserver",
    "PollSpan",
    "RoundResult",
    "Worker",
    "default_worker_id",
]

log: logging.Logger = logging.getLogger("replytrack.worker")

#: How long a lease lasts unless renewed (module Rule 2).
DEFAULT_LEASE: Final = _dt.timedelta(minutes=2)
#: How often the workers sharing a store prune it, by default (module Rule 6).
DEFAULT_PRUNE_EVERY: Final = _dt.timedelta(days=1)
#: How long ledger keys and delivered outbox entries are kept, by default (module Rule 6).
DEFAULT_RETAIN: Final = _dt.timedelta(days=30)
#: The name of the lease that elects the pruning worker. Do not name a source like this.
PRUNE_LEASE: Final = "replytrack:prune"

_UTC: Final = _dt.timezone.utc
_SLOW: Final = "the store took more than half the lease to grant it: not polled, released"


def default_worker_id() -> str:
    """A worker id unique among live workers: host name, process id and a random suffix.

    The suffix tells apart the workers of one process (threads) and a process that reuses
    the pid of a dead one.
    """
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@attrs.frozen
class PollSpan:
    """One visit of a worker to a source: from the lease granted to the lease given back.

    A `PollObserver` receives each visit twice: when the lease is granted (``finished`` is
    ``None``, the counts are zero) and when the visit ends.

    Attributes:
        worker_id: the worker's id.
        source: the source's name.
        started: the worker's clock just after the store granted the lease.
        finished: the worker's clock when the last batch ended and before the lease was
            released (or, when a renewal was refused, when the last batch ended): no batch
            of this visit runs outside [started, finished]. ``None`` while the visit runs.
        batches: batches polled (each one fetch and one commit, or one failure).
        seen: messages fetched.
        events: events created.
        errors: failures reported by the polls, human-readable.
        more: the source had more to give when the visit ended (``max_batches`` reached, or
            the worker was stopping).
        lost: a renewal was refused: another worker took the source (module Rule 1).
    """

    worker_id: str
    source: str
    started: _dt.datetime
    finished: _dt.datetime | None = None
    batches: int = 0
    seen: int = 0
    events: int = 0
    errors: tuple[str, ...] = ()
    more: bool = False
    lost: bool = False


@runtime_checkable
class PollObserver(Protocol):
    """Watches a worker's visits to its sources, for monitoring and tests.

    Called in the worker's thread, twice per visit (see `PollSpan`). It must be quick; if it
    raises, the error is logged and the worker goes on.
    """

    def __call__(self, span: PollSpan, /) -> None:
        """Note `span`."""


@attrs.frozen
class RoundResult:
    """What one `Worker.run_once` did.

    Attributes:
        polled: sources visited (their lease was granted).
        held: sources skipped because another worker holds their lease.
        backing_off: sources skipped because they failed recently (module Rule 4).
        lost: visits cut short because a renewal was refused (module Rule 1).
        batches: batches polled.
        seen: messages fetched.
        matched: messages tied to one of our sends.
        events: events created.
        own: messages skipped as our own mail.
        duplicates: messages processed before.
        retried: what `ReplyTracker.retry_pending` did.
        pruned: what the store pruned this round, or ``None`` when it did not prune.
        errors: failures, human-readable, each prefixed with the source's name (or
            ``store:``).
        more: work is left that the next round should do at once (a source with more mail,
            a full batch of retries).
        stopped: the round ended early because the worker is stopping.
    """

    polled: int = 0
    held: int = 0
    backing_off: int = 0
    lost: int = 0
    batches: int = 0
    seen: int = 0
    matched: int = 0
    events: int = 0
    own: int = 0
    duplicates: int = 0
    retried: RetryResult = attrs.field(factory=RetryResult)
    pruned: Pruned | None = None
    errors: tuple[str, ...] = ()
    more: bool = False
    stopped: bool = False


@attrs.define
class _Visit:
    """The running totals of one visit."""

    batches: int = 0
    seen: int = 0
    matched: int = 0
    events: int = 0
    own: int = 0
    duplicates: int = 0
    errors: list[str] = attrs.Factory(list)
    more: bool = False
    lost: bool = False
    released: bool = False
    failed: bool = False


def _positive(value: _dt.timedelta, name: str) -> _dt.timedelta:
    if not isinstance(value, _dt.timedelta) or value <= _dt.timedelta(0):
        raise ConfigError(f"{name} must be a positive timedelta, got {value!r}")
    return value


class Worker:
    """Poll a set of sources against one store, sharing them with other workers.

    Args:
        tracker: the tracker that processes the mail; its store is the one shared with the
            other workers (``tracker.store``).
        sources: the mailboxes this worker may poll; other workers may be given the same (or
            overlapping) sets. Names must be unique: a name is the key of the source's cursor
            and lease.
        worker_id: this worker's id, unique among the live workers sharing the store
            (default: `default_worker_id`).
        lease: how long a lease lasts unless renewed (module Rule 2).
        batch_size: messages per batch.
        max_batches: batches per visit to a source before moving on (module Rule 3).
        retry_limit: hook deliveries retried per round.
        backoff: how long a source that failed is left alone, doubling per further failure...
        max_backoff: ... up to this.
        prune_every: how often the workers sharing the store prune it (module Rule 6);
            ``None``: this worker never prunes.
        retain: how long ledger keys and delivered outbox entries are kept; more than every
            source's rescan window.
        clock: returns the current aware time (default: UTC now).
        on_poll: called at the start and the end of every visit (see `PollObserver`).

    Raises:
        ConfigError: an argument is invalid: two sources share a name, `retain` does not
            exceed a source's rescan window, a duration is not positive ...
    """

    def __init__(
        self,
        tracker: ReplyTracker,
        sources: Iterable[MailboxSource],
        *,
        worker_id: str | None = None,
        lease: _dt.timedelta = DEFAULT_LEASE,
        batch_size: int = 100,
        max_batches: int = 10,
        retry_limit: int = 100,
        backoff: _dt.timedelta = _dt.timedelta(seconds=30),
        max_backoff: _dt.timedelta = _dt.timedelta(minutes=15),
        prune_every: _dt.timedelta | None = DEFAULT_PRUNE_EVERY,
        retain: _dt.timedelta = DEFAULT_RETAIN,
        clock: Callable[[], _dt.datetime] | None = None,
        on_poll: PollObserver | None = None,
    ) -> None:
        if not isinstance(tracker, ReplyTracker):
            raise ConfigError(f"tracker must be a ReplyTracker, not {type(tracker).__name__}")
        self.tracker = tracker
        self.sources: tuple[MailboxSource, ...] = tuple(sources)
        names = [source.name for source in self.sources]
        if len(set(names)) != len(names):
            twice = sorted({name for name in names if names.count(name) > 1})
            raise ConfigError(f"sources must have unique names; given twice: {twice}")
        if PRUNE_LEASE in names:
            raise ConfigError(f"{PRUNE_LEASE!r} is reserved for the prune lease")
        if worker_id is None:
            worker_id = default_worker_id()
        if not isinstance(worker_id, str) or not worker_id.strip():
            raise ConfigError(f"worker_id must be a non-empty str, got {worker_id!r}")
        self.worker_id = worker_id
        self.lease: _dt.timedelta = _positive(lease, "lease")
        self.batch_size: int = check_limit(batch_size, "batch_size")
        self.max_batches: int = check_limit(max_batches, "max_batches")
        self.retry_limit: int = check_limit(retry_limit, "retry_limit")
        self.backoff: _dt.timedelta = _positive(backoff, "backoff")
        self.max_backoff: _dt.timedelta = _positive(max_backoff, "max_backoff")
        if self.max_backoff < self.backoff:
            raise ConfigError("max_backoff must be at least backoff")
        self.prune_every: _dt.timedelta | None = (
            None if prune_every is None else _positive(prune_every, "prune_every")
        )
        self.retain: _dt.timedelta = _positive(retain, "retain")
        for source in self.sources if self.prune_every is not None else ():
            window = getattr(source, "rescan_window", None)
            if isinstance(window, _dt.timedelta) and self.retain <= window:
                raise ConfigError(
                    f"retain ({self.retain}) must exceed the rescan window of {source.name!r} "
                    f"({window}): a rescan would bring back mail whose ledger key was pruned"
                )
        if clock is not None and not callable(clock):
            raise ConfigError("clock must be a callable returning an aware datetime")
        if on_poll is not None and not callable(on_poll):
            raise ConfigError(f"on_poll must be callable, not {type(on_poll).__name__}")
        self._clock = clock or (lambda: _dt.datetime.now(_UTC))
        self._on_poll = on_poll
        self._stop = threading.Event()
        self._held: set[str] = set()
        self._failures: dict[str, int] = {}
        self._resume_at: dict[str, _dt.datetime] = {}
        self._next_prune: _dt.datetime | None = None  # None: at the first round
        # Module Rule 3: a random place to start, one further each round.
        self._offset = secrets.randbelow(len(self.sources)) if self.sources else 0

    def __repr__(self) -> str:
        return f"Worker(worker_id={self.worker_id!r}, sources={len(self.sources)})"

    # -- control -----------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """Whether `stop` was called (or the event handed to `run` was set)."""
        return self._stop.is_set()

    @property
    def held(self) -> frozenset[str]:
        """The names of the sources whose lease this worker holds right now."""
        return frozenset(self._held)

    def stop(self) -> None:
        """Ask the worker to stop: the current batch finishes, then leases are released.

        Safe from any thread. From a signal handler, call it in a new thread: setting a
        `threading.Event` there can deadlock with the interrupted thread's own use of it.
        """
        self._stop.set()

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        interval: float = 30.0,
        on_round: Callable[[RoundResult], None] | None = None,
    ) -> None:
        """Run rounds until stopped, sleeping `interval` seconds after a round with no more work.

        Sources' own `MailboxSource.wait` is not used: a worker watches many sources and
        cannot block on one; mail that arrives waits at most `interval` (plus a round).
        Returns once stopped, with every lease released (module Rule 5).

        Args:
            stop: an event that stops the worker when set, as `stop` does (`stop` sets it).
            interval: seconds to sleep between rounds when no work is left.
            on_round: called with each round's result, in this thread (for progress
                reports); an exception it raises ends `run`.

        Raises:
            ConfigError: `interval` is not a positive number.
        """
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
            raise ConfigError(f"interval must be a positive number of seconds, got {interval!r}")
        if stop is not None:
            if self._stop.is_set():
                stop.set()
            self._stop = stop
        try:
            while not self._stop.is_set():
                result = self.run_once()
                if on_round is not None:
                    on_round(result)
                if not result.more:
                    self._stop.wait(interval)
        finally:
            self._release_all()

    def run_once(self) -> RoundResult:
        """Run one round: visit each source, retry due hook deliveries, prune when due.

        Returns:
            What the round did.
        """
        totals = _Visit()
        counts = {"polled": 0, "held": 0, "backing_off": 0, "lost": 0}
        stopped = False
        more = False
        order = self._order()
        for source in order:
            if self._stop.is_set():
                stopped = True
                break
            name = source.name
            now = self._now()
            resume_at = self._resume_at.get(name)
            if resume_at is not None and now < resume_at:
                counts["backing_off"] += 1
                continue
            try:
                granted = self._claim(name)
            except StoreError as exc:
                log.warning("worker %s: claiming %s failed: %s", self.worker_id, name, exc)
                totals.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            if granted is None:
                totals.errors.append(f"{name}: {_SLOW}")
                more = True  # try again at once: the store may be quick again
                continue
            if not granted:
                counts["held"] += 1
                continue
            counts["polled"] += 1
            visit = self._visit(source)
            counts["lost"] += visit.lost
            more = more or visit.more
            for field in ("batches", "seen", "matched", "events", "own", "duplicates"):
                setattr(totals, field, getattr(totals, field) + getattr(visit, field))
            totals.errors.extend(f"{name}: {error}" for error in visit.errors)
        retried = RetryResult()
        pruned = None
        if not stopped and not self._stop.is_set():
            retried = self._retry(totals.errors)
            more = more or retried.delivered + retried.failed + retried.dead >= self.retry_limit
            pruned = self._maybe_prune(totals.errors)
        return RoundResult(
            polled=counts["polled"],
            held=counts["held"],
            backing_off=counts["backing_off"],
            lost=counts["lost"],
            batches=totals.batches,
            seen=totals.seen,
            matched=totals.matched,
            events=totals.events,
            own=totals.own,
            duplicates=totals.duplicates,
            retried=retried,
            pruned=pruned,
            errors=tuple(totals.errors),
            more=more and not self._stop.is_set(),
            stopped=stopped or self._stop.is_set(),
        )

    # -- internals ---------------------------------------------------------------------------

    def _now(self) -> _dt.datetime:
        return aware_utc(self._clock(), "clock()")

    def _order(self) -> Sequence[MailboxSource]:
        sources = self.sources
        if not sources:
            return ()
        start = self._offset % len(sources)
        self._offset = start + 1
        return (*sources[start:], *sources[:start])

    def _visit(self, source: MailboxSource) -> _Visit:
        """Poll `source`, whose lease was just granted, batch by batch (module Rule 1)."""
        name = source.name
        self._held.add(name)
        visit = _Visit()
        started = last_end = self._now()
        self._notify(PollSpan(self.worker_id, name, started))
        try:
            while True:
                last_end = self._batch(source, visit)
                if not self._go_on(name, visit):
                    break
        finally:
            # Read before the lease is given back; when it was already (lost, or released
            # by `_claim`), the end of the last batch is the end of the visit.
            finished = last_end if visit.lost or visit.released else self._now()
            if name in self._held:
                self._release(name)
        self._after(name, visit)
        self._notify(
            PollSpan(
                self.worker_id,
                name,
                started,
                finished,
                batches=visit.batches,
                seen=visit.seen,
                events=visit.events,
                errors=tuple(visit.errors),
                more=visit.more,
                lost=visit.lost,
            )
        )
        return visit

    def _batch(self, source: MailboxSource, visit: _Visit) -> _dt.datetime:
        """Poll one batch of `source` into `visit`; return the time it ended."""
        began = time.monotonic()
        visit.batches += 1
        try:
            result = self.tracker.poll(source, limit=self.batch_size, max_batches=1)
        except Exception as exc:  # an adapter's bug must not end the loop (Rule 4)
            log.exception("worker %s: polling %s failed", self.worker_id, source.name)
            visit.errors.append(f"{type(exc).__name__}: {exc}")
            visit.failed = True
            return self._now()
        ended = self._now()
        took = time.monotonic() - began
        if took > self.lease.total_seconds() / 2:
            log.warning(
                "worker %s: a batch of %s took %.1f s, more than half the lease (%s):"
                " lengthen the lease or shorten the batch",
                self.worker_id,
                source.name,
                took,
                self.lease,
            )
        visit.seen += result.seen
        visit.matched += result.matched
        visit.events += result.events
        visit.own += result.own
        visit.duplicates += result.duplicates
        visit.errors.extend(result.errors)
        visit.failed = bool(result.errors)
        visit.more = result.more
        return ended

    def _go_on(self, name: str, visit: _Visit) -> bool:
        """Whether to poll another batch of `name`; renews its lease when so (Rule 1)."""
        if visit.failed or not visit.more:
            visit.more = False
            return False
        if visit.batches >= self.max_batches or self._stop.is_set():
            return False  # more is left: the next round comes at once (Rule 3)
        try:
            renewed = self._claim(name)
        except StoreError as exc:
            # Whether we still hold the lease is unknown: stop polling (Rule 1), release it.
            log.warning("worker %s: renewing %s failed: %s", self.worker_id, name, exc)
            visit.errors.append(f"{type(exc).__name__}: {exc}")
            return False
        if renewed is None:
            visit.errors.append(_SLOW)  # and it was released: another worker may go on
            visit.released = True
            return False
        if not renewed:
            log.warning(
                "worker %s: lost the lease of %s to another worker (it ran out: see"
                " replytrack.worker Rule 2)",
                self.worker_id,
                name,
            )
            visit.lost = True
            self._held.discard(name)
            return False
        return True

    def _claim(self, name: str) -> bool | None:
        """Claim or renew the lease of `name` for `lease` from now (module Rules 1 and 2).

        Returns:
            True when granted, False when another worker holds it, ``None`` when it was
            granted so late (the store took more than half the lease to answer: a lock wait,
            a slow network) that too little of it is left to poll a batch safely: the lease
            was given back.

        Raises:
            StoreError: the store failed.
        """
        store = self.tracker.store
        now = self._now()
        granted = store.claim_source(name, self.worker_id, now, now + self.lease)
        if not granted:
            return False
        if self._now() - now < self.lease / 2:
            return True
        log.warning("worker %s: %s (%s)", self.worker_id, _SLOW, name)
        self._release(name)
        return None

    def _after(self, name: str, visit: _Visit) -> None:
        """Back a failed source off, or forget its failures (module Rule 4)."""
        if not visit.failed:
            self._failures.pop(name, None)
            self._resume_at.pop(name, None)
            return
        failures = self._failures[name] = self._failures.get(name, 0) + 1
        delay = min(self.backoff * 2 ** min(failures - 1, 32), self.max_backoff)
        self._resume_at[name] = self._now() + delay
        log.warning(
            "worker %s: %s failed (%d in a row); next try in %s",
            self.worker_id,
            name,
            failures,
            delay,
        )

    def _release(self, name: str) -> None:
        self._held.discard(name)
        try:
            self.tracker.store.release_source(name, self.worker_id)
        except StoreError as exc:
            # The lease runs out by itself; other workers wait for it a little longer.
            log.warning("worker %s: releasing %s failed: %s", self.worker_id, name, exc)

    def _release_all(self) -> None:
        for name in sorted(self._held):
            self._release(name)

    def _notify(self, span: PollSpan) -> None:
        if self._on_poll is None:
            return
        try:
            self._on_poll(span)
        except Exception:  # monitoring must not stop the work
            log.exception("worker %s: the on_poll observer failed", self.worker_id)

    def _retry(self, errors: list[str]) -> RetryResult:
        try:
            return self.tracker.retry_pending(limit=self.retry_limit)
        except StoreError as exc:
            log.warning("worker %s: retrying hooks failed: %s", self.worker_id, exc)
            errors.append(f"store: {type(exc).__name__}: {exc}")
            return RetryResult()

    def _maybe_prune(self, errors: list[str]) -> Pruned | None:
        """Prune the store when it is due here and no other worker did lately (Rule 6)."""
        if self.prune_every is None:
            return None
        now = self._now()
        if self._next_prune is not None and now < self._next_prune:
            return None
        self._next_prune = now + self.prune_every
        store = self.tracker.store
        try:
            if not store.claim_source(PRUNE_LEASE, self.worker_id, now, now + self.prune_every):
                return None  # another worker pruned within prune_every
            pruned = store.prune(now - self.retain)
        except StoreError as exc:
            log.warning("worker %s: pruning failed: %s", self.worker_id, exc)
            errors.append(f"store: {type(exc).__name__}: {exc}")
            # Let another worker (or this one, after a backoff) try again soon.
            self._next_prune = now + self.backoff
            with contextlib.suppress(StoreError):  # else it runs out by itself
                store.release_source(PRUNE_LEASE, self.worker_id)
            return None
        log.info(
            "worker %s: pruned %d ledger keys and %d delivered outbox entries older than %s",
            self.worker_id,
            pruned.ledger,
            pruned.outbox,
            now - self.retain,
        )
        return pruned
