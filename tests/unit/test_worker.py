"""The multi-worker loop: leases, takeover, renewal, failures, shutdown, retries, pruning."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from replytrack import ReplyEvent, ReplyTracker
from replytrack import worker as worker_module
from replytrack.errors import ConfigError, StoreError
from replytrack.sources import MemorySource
from replytrack.sources.base import Batch
from replytrack.store import MemoryStore, OutboxEntry, Pruned, SentMessage, SQLiteStore, Store
from replytrack.testing import CapturingHook, build_reply
from replytrack.worker import PRUNE_LEASE, PollSpan, RoundResult, Worker, default_worker_id

UTC = dt.timezone.utc
T0 = dt.datetime(2027, 3, 1, 9, 30, tzinfo=UTC)
LEASE = dt.timedelta(minutes=2)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


class Spans:
    """An observer that keeps every span, thread-safely."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[PollSpan] = []

    def __call__(self, span: PollSpan) -> None:
        with self.lock:
            self.spans.append(span)

    @property
    def finished(self) -> list[PollSpan]:
        with self.lock:
            return [s for s in self.spans if s.finished is not None]


def mailbox(store: Store, name: str, count: int, **kwargs: object) -> MemorySource:
    """A source with `count` replies, each to a send of its own recorded in `store`."""
    source = MemorySource(name=name, **kwargs)  # type: ignore[arg-type]
    for i in range(count):
        send = f"{name}-send-{i}@mail.sales.example"
        store.record_sent(
            SentMessage(send, f"{name}:{i}", "rep@sales.example", ("jo@customer.example",))
        )
        source.add(build_reply(in_reply_to=send, message_id=f"{name}-reply-{i}@customer.example"))
    return source


def worker(
    store: Store,
    sources: list[MemorySource],
    *,
    hook: Callable[[ReplyEvent], None] | None = None,
    clock: Clock | None = None,
    **kwargs: object,
) -> Worker:
    tracker = ReplyTracker(
        store,
        crm_log=hook or CapturingHook(),
        clock=clock,
        retry_base=dt.timedelta(seconds=1),
    )
    kwargs.setdefault("prune_every", None)
    return Worker(tracker, sources, clock=clock, **kwargs)  # type: ignore[arg-type]


def free(store: Store, name: str, now: dt.datetime = T0) -> bool:
    """Whether a third worker could take `name` now (the lease was released or ran out)."""
    granted = store.claim_source(name, "probe", now, now + dt.timedelta(seconds=1))
    if granted:
        store.release_source(name, "probe")
    return granted


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    made: Store = (
        MemoryStore()
        if request.param == "memory"
        else SQLiteStore(tmp_path / "store.db", synchronous="NORMAL")
    )
    with made:
        yield made


# --------------------------------------------------------------------------------------------
# One round
# --------------------------------------------------------------------------------------------


def test_run_once_polls_every_free_source_and_sums_up(store: Store) -> None:
    hook = CapturingHook()
    sources = [mailbox(store, "a", 3), mailbox(store, "b", 2)]
    w = worker(store, sources, hook=hook, clock=Clock())
    result = w.run_once()
    assert result == RoundResult(polled=2, batches=2, seen=5, matched=5, events=5)
    assert sorted(e.ref for e in hook.events) == ["a:0", "a:1", "a:2", "b:0", "b:1"]
    assert free(store, "a")
    assert free(store, "b")
    assert w.held == frozenset()
    again = w.run_once()
    assert (again.polled, again.seen, again.events) == (2, 0, 0)


def test_a_source_held_by_another_worker_is_skipped(store: Store) -> None:
    sources = [mailbox(store, "a", 2), mailbox(store, "b", 2)]
    assert store.claim_source("a", "other", T0, T0 + LEASE)
    result = worker(store, sources, clock=Clock()).run_once()
    assert (result.polled, result.held, result.seen) == (1, 1, 2)
    assert store.load_cursor("a") is None
    assert not free(store, "a")  # still the other worker's


def test_an_expired_lease_is_taken_over(store: Store) -> None:
    sources = [mailbox(store, "a", 2)]
    assert store.claim_source("a", "dead-worker", T0 - LEASE, T0 - dt.timedelta(seconds=1))
    result = worker(store, sources, clock=Clock()).run_once()
    assert (result.polled, result.held, result.seen) == (1, 0, 2)


def test_a_lease_is_taken_for_the_lease_length_and_renewed_before_each_batch(
    store: Store,
) -> None:
    clock = Clock()
    seen_at: list[bool] = []

    def hook(event: ReplyEvent) -> None:
        # During each batch the lease holds until at least a lease from its start.
        seen_at.append(
            not store.claim_source(
                "a", "other", clock.now + LEASE - dt.timedelta(seconds=1), T0 + 10 * LEASE
            )
        )
        clock.advance(LEASE / 3)

    sources = [mailbox(store, "a", 4)]
    result = worker(store, sources, hook=hook, clock=clock, batch_size=1).run_once()
    assert result.batches == 4
    assert result.lost == 0
    assert seen_at == [True] * 4


def test_a_refused_renewal_stops_polling_that_source_without_releasing_it(store: Store) -> None:
    clock = Clock()
    spans = Spans()

    def hook(event: ReplyEvent) -> None:
        # The batch outlives the lease, and another worker takes the source meanwhile.
        later = clock.now + LEASE + dt.timedelta(seconds=1)
        assert store.claim_source("a", "other", later, later + LEASE)

    sources = [mailbox(store, "a", 3)]
    w = worker(store, sources, hook=hook, clock=clock, batch_size=1, on_poll=spans)
    result = w.run_once()
    assert (result.polled, result.lost, result.batches, result.seen) == (1, 1, 1, 1)
    assert not result.errors
    [span] = spans.finished
    assert span.lost
    assert span.batches == 1
    assert w.held == frozenset()
    later = T0 + LEASE + dt.timedelta(seconds=2)
    assert not free(store, "a", later)  # the other worker's lease was left alone


def test_max_batches_bounds_a_visit_and_the_round_asks_for_more(store: Store) -> None:
    sources = [mailbox(store, "a", 5), mailbox(store, "b", 1)]
    w = worker(store, sources, clock=Clock(), batch_size=1, max_batches=2)
    first = w.run_once()
    assert first.more
    assert first.batches == 3  # two of a, one of b
    assert first.polled == 2
    while w.run_once().more:
        pass
    assert store.is_processed("a-reply-4@customer.example")


def test_rounds_start_one_source_further_each_time(store: Store) -> None:
    spans = Spans()
    sources = [mailbox(store, name, 0) for name in "abcd"]
    w = worker(store, sources, clock=Clock(), on_poll=spans)
    firsts = []
    for _ in range(4):
        before = len(spans.finished)
        w.run_once()
        firsts.append(spans.finished[before].source)
    assert sorted(firsts) == ["a", "b", "c", "d"]
    assert "".join(firsts) in "abcdabcd"


def test_the_observer_sees_each_visit_start_and_end(store: Store) -> None:
    spans = Spans()
    clock = Clock()
    w = worker(store, [mailbox(store, "a", 2)], clock=clock, on_poll=spans, worker_id="w1")
    w.run_once()
    start, end = spans.spans
    assert start == PollSpan("w1", "a", T0)
    assert end == PollSpan("w1", "a", T0, T0, batches=1, seen=2, events=2)


def test_an_observer_that_raises_does_not_stop_the_worker(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    def observer(span: PollSpan) -> None:
        raise RuntimeError("monitoring is down")

    result = worker(store, [mailbox(store, "a", 1)], clock=Clock(), on_poll=observer).run_once()
    assert result.events == 1
    assert "on_poll observer failed" in caplog.text


# --------------------------------------------------------------------------------------------
# Several workers at once
# --------------------------------------------------------------------------------------------


def test_workers_in_threads_never_poll_one_source_at_once(store: Store) -> None:
    spans = Spans()
    delivered: list[str] = []
    lock = threading.Lock()

    def hook(event: ReplyEvent) -> None:
        with lock:
            delivered.append(event.event_id)

    sources = {name: mailbox(store, name, 30) for name in ("a", "b", "c", "d", "e")}
    stop = threading.Event()
    workers = [
        Worker(
            ReplyTracker(store, crm_log=hook),
            # Each worker gets its own source objects: a source is used by one thread at a time.
            [MemorySource(s.messages, name=s.name) for s in sources.values()],
            worker_id=f"w{i}",
            batch_size=3,
            max_batches=2,
            prune_every=None,
            on_poll=spans,
        )
        for i in range(3)
    ]
    threads = [
        threading.Thread(target=w.run, args=(stop,), kwargs={"interval": 0.01}) for w in workers
    ]
    for thread in threads:
        thread.start()
    try:
        for _ in range(500):
            with lock:
                if len(delivered) >= 150:
                    break
            stop.wait(0.02)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads)
    assert len(delivered) == len(set(delivered)) == 150
    assert len({span.worker_id for span in spans.finished}) >= 2  # the work was shared
    by_source: dict[str, list[PollSpan]] = {}
    for span in spans.finished:
        by_source.setdefault(span.source, []).append(span)
    for visits in by_source.values():
        visits.sort(key=lambda s: s.started)
        for before, after in itertools.pairwise(visits):
            assert before.finished is not None
            assert before.finished <= after.started, (before, after)
    assert all(not w.held for w in workers)
    assert all(free(store, name, dt.datetime.now(UTC)) for name in sources)


# --------------------------------------------------------------------------------------------
# Failures
# --------------------------------------------------------------------------------------------


def test_a_failing_source_is_backed_off_and_the_others_go_on(store: Store) -> None:
    clock = Clock()
    a, b = mailbox(store, "a", 1), mailbox(store, "b", 1)
    a.fail_next(2)
    w = worker(store, [a, b], clock=clock, backoff=dt.timedelta(seconds=30))
    first = w.run_once()
    assert first.polled == 2
    assert first.events == 1
    assert [e.split(":")[0] for e in first.errors] == ["a"]
    assert "SourceError" in first.errors[0]
    assert free(store, "a")  # released after the failure

    backing = w.run_once()
    assert (backing.polled, backing.backing_off, backing.errors) == (1, 1, ())

    clock.advance(dt.timedelta(seconds=30))
    second = w.run_once()  # fails again: the backoff doubles
    assert second.errors
    clock.advance(dt.timedelta(seconds=59))
    assert w.run_once().backing_off == 1
    clock.advance(dt.timedelta(seconds=1))
    third = w.run_once()
    assert (third.errors, third.events) == ((), 1)
    clock.advance(dt.timedelta(seconds=1))
    assert w.run_once().backing_off == 0  # a success forgets the failures


def test_the_backoff_is_capped(store: Store) -> None:
    clock = Clock()
    a = mailbox(store, "a", 1)
    a.fail_next(10)
    w = worker(
        store,
        [a],
        clock=clock,
        backoff=dt.timedelta(seconds=10),
        max_backoff=dt.timedelta(seconds=25),
    )
    for _ in range(5):
        assert w.run_once().errors
        clock.advance(dt.timedelta(seconds=25))


class BuggySource(MemorySource):
    """A host's adapter with a bug: its fetch raises something that is not SourceError."""

    def fetch(self, cursor: str | None, limit: int = 100) -> Batch:
        raise KeyError("oops")


def test_an_adapter_bug_does_not_end_the_loop(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    sources = [BuggySource(name="buggy"), mailbox(store, "b", 1)]
    w = worker(store, sources, clock=Clock())
    result = w.run_once()
    assert result.events == 1
    assert [e for e in result.errors if e.startswith("buggy: KeyError")]
    assert free(store, "buggy")
    assert "polling buggy failed" in caplog.text


class FlakyStore(MemoryStore):
    """A store whose lease and outbox calls fail on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_claims: set[str] = set()
        self.fail_release = False
        self.fail_outbox = False
        self.fail_prune = False

    def claim_source(self, source: str, worker: str, now: dt.datetime, until: dt.datetime) -> bool:
        if source in self.fail_claims:
            raise StoreError("lease table unavailable")
        return super().claim_source(source, worker, now, until)

    def release_source(self, source: str, worker: str) -> None:
        if self.fail_release:
            raise StoreError("connection lost")
        super().release_source(source, worker)

    def claim_outbox(
        self, now: dt.datetime, until: dt.datetime, limit: int = 100
    ) -> list[OutboxEntry]:
        if self.fail_outbox:
            raise StoreError("outbox unavailable")
        return super().claim_outbox(now, until, limit)

    def prune(self, before: dt.datetime) -> Pruned:
        if self.fail_prune:
            raise StoreError("prune failed")
        return super().prune(before)


def test_store_failures_are_counted_and_the_round_goes_on() -> None:
    with FlakyStore() as store:
        sources = [mailbox(store, "a", 1), mailbox(store, "b", 1)]
        store.fail_claims.add("a")
        store.fail_outbox = True
        store.fail_release = True
        w = worker(store, sources, clock=Clock())
        result = w.run_once()
        assert result.events == 1
        assert len(result.errors) == 2
        assert result.errors[0].startswith("a: StoreError")
        assert result.errors[1].startswith("store: StoreError")
        assert w.held == frozenset()  # forgotten: the lease runs out by itself


def test_a_renewal_that_fails_stops_polling_that_source() -> None:
    with FlakyStore() as store:

        def hook(event: ReplyEvent) -> None:
            store.fail_claims.add("a")

        w = worker(store, [mailbox(store, "a", 3)], hook=hook, clock=Clock(), batch_size=1)
        result = w.run_once()
        assert result.batches == 1
        assert result.more
        assert result.errors[0].startswith("a: StoreError")
        store.fail_claims.clear()
        assert free(store, "a")  # released, since it was maybe still ours


class SlowStore(MemoryStore):
    """A store whose lease claims take `delay` by the test's clock (a lock wait, a slow link)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.delay = dt.timedelta(0)

    def claim_source(self, source: str, worker: str, now: dt.datetime, until: dt.datetime) -> bool:
        granted = super().claim_source(source, worker, now, until)
        self.clock.advance(self.delay)
        return granted


def test_a_lease_granted_after_half_its_length_is_given_back_unpolled() -> None:
    clock = Clock()
    with SlowStore(clock) as store:
        w = worker(store, [mailbox(store, "a", 1)], clock=clock)
        store.delay = LEASE / 2
        result = w.run_once()
        assert (result.polled, result.seen, result.more) == (0, 0, True)
        assert result.errors == ("a: " + worker_module._SLOW,)
        assert store.load_cursor("a") is None
        assert free(store, "a", clock.now)
        store.delay = LEASE / 2 - dt.timedelta(seconds=1)
        assert w.run_once().seen == 1


def test_a_renewal_granted_too_late_ends_the_visit_and_gives_the_lease_back() -> None:
    clock = Clock()
    spans = Spans()
    with SlowStore(clock) as store:

        def hook(event: ReplyEvent) -> None:
            store.delay = LEASE  # the renewal after this batch is slow

        w = worker(
            store, [mailbox(store, "a", 3)], hook=hook, clock=clock, on_poll=spans, batch_size=1
        )
        result = w.run_once()
        assert (result.batches, result.seen, result.lost) == (1, 1, 0)
        assert result.errors == ("a: " + worker_module._SLOW,)
        [span] = spans.finished
        assert span.finished == T0  # the end of the batch, not after the slow renewal
        store.delay = dt.timedelta(0)
        assert free(store, "a", clock.now)


# --------------------------------------------------------------------------------------------
# Stopping
# --------------------------------------------------------------------------------------------


def test_stop_finishes_the_current_batch_and_releases_the_lease(store: Store) -> None:
    spans = Spans()
    w: Worker

    def hook(event: ReplyEvent) -> None:
        w.stop()  # as a SIGTERM handler would, in the middle of a batch

    w = worker(store, [mailbox(store, "a", 5)], hook=hook, batch_size=2, on_poll=spans)
    w.run(interval=60)
    [span] = spans.finished
    assert (span.batches, span.seen, span.events, span.more) == (1, 2, 2, True)
    assert store.is_processed("a-reply-1@customer.example")
    assert store.load_cursor("a") is not None  # the batch was committed
    assert not store.due_outbox(dt.datetime.now(UTC) + dt.timedelta(days=1))  # hooks recorded
    assert free(store, "a", dt.datetime.now(UTC))
    assert w.stopping


def test_run_returns_soon_after_its_stop_event_is_set(store: Store) -> None:
    w = worker(store, [mailbox(store, "a", 1)])
    stop = threading.Event()
    thread = threading.Thread(target=w.run, args=(stop,), kwargs={"interval": 3600})
    thread.start()
    stop.wait(0.2)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_stop_before_run_sets_the_event_given_to_run(store: Store) -> None:
    w = worker(store, [mailbox(store, "a", 1)])
    w.stop()
    stop = threading.Event()
    w.run(stop, interval=3600)
    assert stop.is_set()
    assert store.load_cursor("a") is None  # nothing was polled


def test_a_round_in_progress_ends_at_the_next_source_once_stopping(store: Store) -> None:
    w: Worker

    def hook(event: ReplyEvent) -> None:
        w.stop()

    sources = [mailbox(store, "a", 1), mailbox(store, "b", 1)]
    w = worker(store, sources, hook=hook, clock=Clock())
    result = w.run_once()
    assert (result.polled, result.events, result.stopped, result.more) == (1, 1, True, False)
    assert result.retried.delivered == 0  # no retries, no pruning while stopping


# --------------------------------------------------------------------------------------------
# Retries and pruning
# --------------------------------------------------------------------------------------------


def test_failed_hook_deliveries_are_retried_in_a_later_round(store: Store) -> None:
    clock = Clock()
    hook = CapturingHook(failures=1)
    w = worker(store, [mailbox(store, "a", 1)], hook=hook, clock=clock)
    first = w.run_once()
    assert (first.events, first.retried.delivered, hook.events) == (1, 0, [])
    clock.advance(dt.timedelta(seconds=2))
    second = w.run_once()
    assert second.retried.delivered == 1
    assert [e.ref for e in hook.events] == ["a:0"]


def test_a_full_batch_of_retries_asks_for_another_round_at_once(store: Store) -> None:
    clock = Clock()
    hook = CapturingHook(failures=3)
    w = worker(store, [mailbox(store, "a", 3)], hook=hook, clock=clock, retry_limit=2)
    w.run_once()
    clock.advance(dt.timedelta(seconds=2))
    second = w.run_once()
    assert second.retried.delivered == 2
    assert second.more
    third = w.run_once()
    assert (third.retried.delivered, third.more) == (1, False)


def old_ledger(store: Store, count: int, at: dt.datetime) -> None:
    with store.transaction() as tx:
        for i in range(count):
            tx.mark_processed(f"old-{i}@x.example", at)


def test_one_worker_prunes_per_period_across_all_workers(store: Store) -> None:
    clock = Clock()
    every = dt.timedelta(hours=1)
    retain = dt.timedelta(days=30)
    one = worker(store, [], clock=clock, prune_every=every, retain=retain)
    two = worker(store, [], clock=clock, prune_every=every, retain=retain)
    old_ledger(store, 3, T0 - retain - dt.timedelta(seconds=1))
    first = one.run_once().pruned
    assert first is not None
    assert first.ledger == 3
    assert two.run_once().pruned is None  # one pruned within the hour
    assert one.run_once().pruned is None  # not due here yet either
    clock.advance(every)
    old_ledger(store, 2, clock.now - retain - dt.timedelta(seconds=1))
    pruned = [w.run_once().pruned for w in (two, one)]
    assert pruned[0] is not None
    assert pruned[0].ledger == 2
    assert pruned[1] is None
    assert store.is_processed("old-0@x.example") is False


def test_the_prune_keeps_what_is_younger_than_retain(store: Store) -> None:
    clock = Clock()
    w = worker(store, [], clock=clock, prune_every=dt.timedelta(days=1))
    old_ledger(store, 1, T0 - dt.timedelta(days=29))
    pruned = w.run_once().pruned
    assert pruned is not None
    assert pruned.ledger == 0
    assert store.is_processed("old-0@x.example")


def test_a_failed_prune_frees_the_prune_lease_and_is_tried_again_after_the_backoff() -> None:
    clock = Clock()
    with FlakyStore() as store:
        store.fail_prune = True
        w = worker(
            store,
            [],
            clock=clock,
            prune_every=dt.timedelta(days=1),
            backoff=dt.timedelta(seconds=30),
        )
        result = w.run_once()
        assert result.pruned is None
        assert result.errors == ("store: StoreError: prune failed",)
        assert free(store, PRUNE_LEASE)
        store.fail_prune = False
        assert w.run_once().pruned is None  # not yet
        clock.advance(dt.timedelta(seconds=30))
        assert w.run_once().pruned is not None


def test_without_prune_every_a_worker_never_prunes(store: Store) -> None:
    old_ledger(store, 1, T0 - dt.timedelta(days=300))
    assert worker(store, [], clock=Clock(), prune_every=None).run_once().pruned is None
    assert store.is_processed("old-0@x.example")


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def test_retain_must_exceed_the_rescan_window_of_every_source(store: Store) -> None:
    source = MemorySource(name="a", rescan_window=dt.timedelta(days=10))
    with pytest.raises(ConfigError, match="rescan window"):
        worker(store, [source], retain=dt.timedelta(days=10), prune_every=dt.timedelta(days=1))
    worker(store, [source], retain=dt.timedelta(days=10), prune_every=None)  # never prunes


def test_source_names_must_be_unique_and_not_the_prune_lease(store: Store) -> None:
    with pytest.raises(ConfigError, match="given twice"):
        worker(store, [MemorySource(name="a"), MemorySource(name="a")])
    with pytest.raises(ConfigError, match="reserved"):
        worker(store, [MemorySource(name=PRUNE_LEASE)])


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("lease", dt.timedelta(0)),
        ("batch_size", 0),
        ("max_batches", 0),
        ("retry_limit", 0),
        ("backoff", dt.timedelta(seconds=-1)),
        ("max_backoff", dt.timedelta(seconds=1)),
        ("prune_every", dt.timedelta(0)),
        ("worker_id", ""),
        ("on_poll", "not callable"),
    ],
)
def test_bad_arguments_are_config_errors(store: Store, name: str, value: Any) -> None:
    with pytest.raises(ConfigError):
        worker(store, [], **{name: value})


def test_run_needs_a_positive_interval(store: Store) -> None:
    with pytest.raises(ConfigError, match="interval"):
        worker(store, []).run(interval=0)


def test_default_worker_ids_differ_within_one_process() -> None:
    assert default_worker_id() != default_worker_id()
    with MemoryStore() as store:
        assert worker(store, []).worker_id != worker(store, []).worker_id
