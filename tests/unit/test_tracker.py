"""The tracker end to end: stamping, processing, hooks, durability, polling."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import attrs
import pytest

from replytrack import Kind, MessageIdGenerator, SQLiteStore, ThreadIndex, parse_headers
from replytrack.correlate import MatchMethod, Role
from replytrack.errors import ConfigError, SourceError
from replytrack.events import Action, ReplyEvent
from replytrack.sources import Batch, IncomingMessage
from replytrack.store import OutboxState
from replytrack.testing import (
    CapturingHook,
    MemorySource,
    build_bounce,
    build_out_of_office,
    build_reply,
)
from replytrack.tracker import ORIGIN_HEADER, ReplyTracker

NOW = dt.datetime(2027, 3, 1, 9, 0, tzinfo=dt.timezone.utc)
REP = "rep@sales.example"
JO = "jo@customer.example"
SAM = "sam@customer.example"
KEY = b"k" * 32


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    with SQLiteStore(tmp_path / "replytrack.db") as s:
        yield s


@pytest.fixture
def stop() -> CapturingHook:
    return CapturingHook()


@pytest.fixture
def crm() -> CapturingHook:
    return CapturingHook()


@pytest.fixture
def tracker(
    store: SQLiteStore, clock: Clock, stop: CapturingHook, crm: CapturingHook
) -> ReplyTracker:
    return ReplyTracker(
        store,
        MessageIdGenerator("mail.sales.example", secret=KEY),
        campaign_stop=stop,
        crm_log=crm,
        own_addresses=[REP],
        clock=clock,
        max_attempts=3,
    )


def outgoing(subject: str = "Quick question") -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Rep <{REP}>"
    message["To"] = f"Jo <{JO}>"
    message["Cc"] = f"Sam <{SAM}>"
    message["Subject"] = subject
    message.set_content("Hi Jo, do you have 15 minutes this week?")
    return message


# -- stamping ---------------------------------------------------------------------------------


def test_stamp_sets_a_signed_message_id_and_records_the_send(tracker: ReplyTracker) -> None:
    message = outgoing()
    sent = tracker.stamp(message, "c42:p7")
    token = tracker.generator.verify(message["Message-ID"])  # type: ignore[union-attr]
    assert token is not None
    assert token.ref == "c42:p7"
    assert sent.message_id == parse_headers(message.as_bytes()).message_id
    assert (sent.sender, sent.to, sent.cc) == (REP, (JO,), (SAM,))
    assert tracker.store.find_sent_by_ref("c42:p7") == sent


def test_stamp_sets_an_outlook_thread_index_and_topic(tracker: ReplyTracker) -> None:
    message = outgoing("Re: Quick question")
    sent = tracker.stamp(message, "c1")
    index = ThreadIndex.decode(message["Thread-Index"])
    assert index is not None
    assert index.guid == sent.thread_index
    assert message["Thread-Topic"] == "Quick question"


def test_a_follow_up_threads_under_the_previous_step(tracker: ReplyTracker) -> None:
    first = tracker.stamp(outgoing(), "c42:p7:s1")
    message = outgoing("Re: Quick question")
    second = tracker.stamp(message, "c42:p7:s2", follow_up_of=first)
    h = parse_headers(message.as_bytes())
    assert h.in_reply_to == (first.message_id,)
    assert h.references == (first.message_id,)
    index = ThreadIndex.decode(h.get("Thread-Index"))
    assert index is not None
    assert index.guid == first.thread_index == second.thread_index
    assert index.child_count == 1


def test_long_ids_are_not_folded_into_encoded_words(tracker: ReplyTracker) -> None:
    first = tracker.stamp(outgoing(), "campaign-123456:prospect-987654:step-1")
    message = outgoing()
    tracker.stamp(message, "campaign-123456:prospect-987654:step-2", follow_up_of=first)
    assert b"=?utf-8?" not in message.as_bytes()


@pytest.mark.parametrize("missing", ["From", "To"])
def test_stamp_refuses_a_message_without_from_or_to(tracker: ReplyTracker, missing: str) -> None:
    message = outgoing()
    del message[missing]
    with pytest.raises(ConfigError):
        tracker.stamp(message, "c1")


def test_record_alias_adds_the_id_a_provider_used(tracker: ReplyTracker) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    tracker.record_alias("c42:p7", "<AAMkAGI2.graph@outlook.example>")
    events = tracker.process(build_reply(in_reply_to="<AAMkAGI2.graph@outlook.example>"))
    assert [e.ref for e in events] == ["c42:p7"]
    assert events[0].sent == sent


# -- processing -----------------------------------------------------------------------------------


def test_a_reply_stops_the_campaign_and_is_logged(
    tracker: ReplyTracker, stop: CapturingHook, crm: CapturingHook
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    events = tracker.process(build_reply(in_reply_to=f"<{sent.message_id}>", from_=JO))
    assert len(events) == 1
    event = events[0]
    assert (event.kind, event.action, event.role) == (Kind.REPLY, Action.STOP, Role.RECIPIENT)
    assert event.method is MatchMethod.TOKEN
    assert event.body_text is not None
    assert "Tuesday" in event.body_text
    assert stop.events == [event]
    assert crm.events == [event]


def test_replies_from_the_cc_and_from_another_address_stop_too(
    tracker: ReplyTracker, stop: CapturingHook
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    cc = tracker.process(build_reply(in_reply_to=f"<{sent.message_id}>", from_=SAM))
    other = tracker.process(
        build_reply(in_reply_to=f"<{sent.message_id}>", from_="jo.home@mail.example")
    )
    assert [(e.role, e.action) for e in (*cc, *other)] == [
        (Role.CC, Action.STOP),
        (Role.OTHER, Action.STOP),
    ]
    assert len(stop.events) == 2


def test_processing_the_same_message_again_yields_nothing(
    tracker: ReplyTracker, stop: CapturingHook
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    reply = build_reply(in_reply_to=f"<{sent.message_id}>")
    first = tracker.process(reply)
    assert tracker.process(reply) == []
    assert len(first) == 1
    assert len(stop.events) == 1


def test_an_out_of_office_pauses_until_the_return_date(
    tracker: ReplyTracker, stop: CapturingHook
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    ooo = build_out_of_office(
        language="de",
        return_date=dt.date(2027, 3, 8),
        in_reply_to=f"<{sent.message_id}>",
        from_=JO,
        date=NOW,
    )
    [event] = tracker.process(ooo)
    assert (event.kind, event.action) == (Kind.OUT_OF_OFFICE, Action.PAUSE)
    assert event.resume_on == dt.date(2027, 3, 9)
    assert stop.events == [event]


def test_a_hard_bounce_stops_the_campaign(tracker: ReplyTracker) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    [event] = tracker.process(build_bounce(original_message_id=f"<{sent.message_id}>"))
    assert (event.kind, event.action) == (Kind.BOUNCE, Action.STOP)
    assert event.bounce is not None
    assert event.bounce.recipients[0].hard


def test_every_event_carries_the_text_of_its_message(tracker: ReplyTracker) -> None:
    """A reply's text is the one classify read; a bounce's (not read to decide) is read then."""
    sent = tracker.stamp(outgoing(), "c42:p7")
    [reply] = tracker.process(
        build_reply(in_reply_to=f"<{sent.message_id}>", body="Call me on Tuesday.\n", html=True)
    )
    [bounce] = tracker.process(build_bounce(original_message_id=f"<{sent.message_id}>"))

    assert reply.body_text is not None
    assert reply.body_text.startswith("Call me on Tuesday.")
    assert bounce.body_text is not None
    assert "jo@customer.example" in bounce.body_text


def test_own_mail_and_unrelated_mail_produce_no_event(
    tracker: ReplyTracker, stop: CapturingHook, crm: CapturingHook
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    own = build_reply(in_reply_to=f"<{sent.message_id}>", from_=f"Rep <{REP}>", to=JO)
    newsletter = build_reply(in_reply_to=None, from_="news@vendor.example")
    assert tracker.process(own) == []
    assert tracker.process(newsletter) == []
    assert stop.events == crm.events == []


# -- durability ------------------------------------------------------------------------------


def test_a_failing_hook_keeps_its_event_and_others_go_on(
    tracker: ReplyTracker, crm: CapturingHook, stop: CapturingHook, clock: Clock
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    crm.failures = 1
    [first] = tracker.process(build_reply(in_reply_to=f"<{sent.message_id}>", from_=JO))
    [second] = tracker.process(build_reply(in_reply_to=f"<{sent.message_id}>", from_=SAM))
    assert [e.event_id for e in crm.events] == [second.event_id]
    assert len(stop.events) == 2
    assert tracker.retry_pending().delivered == 0  # not due yet: backoff
    clock.now += dt.timedelta(minutes=5)
    result = tracker.retry_pending()
    assert (result.delivered, result.failed, result.dead) == (1, 0, 0)
    assert [e.event_id for e in crm.events] == [second.event_id, first.event_id]
    assert crm.events[1] == first


def test_a_hook_that_always_fails_is_parked_dead_after_max_attempts(
    tracker: ReplyTracker, crm: CapturingHook, clock: Clock
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    crm.failures = 100
    tracker.process(build_reply(in_reply_to=f"<{sent.message_id}>"))
    outcomes = []
    for _ in range(5):
        clock.now += dt.timedelta(hours=7)
        outcomes.append(tracker.retry_pending())
    assert sum(r.failed for r in outcomes) == 1
    assert sum(r.dead for r in outcomes) == 1
    [dead] = tracker.store.dead_outbox()
    assert dead.attempts == 3
    assert "injected" in (dead.last_error or "")


def test_an_interrupted_batch_records_each_earlier_outcome_once(
    store: SQLiteStore, clock: Clock
) -> None:
    """The first batch's failure is recorded by the second batch's commit, not again when a
    hook of the second batch interrupts processing."""
    calls = []

    def crm(event: ReplyEvent) -> None:
        calls.append(event)
        if len(calls) == 1:
            raise RuntimeError("CRM down")
        raise KeyboardInterrupt

    tracker = ReplyTracker(store, crm_log=crm, clock=clock)
    sent = tracker.stamp(outgoing(), "c42:p7")
    replies = [
        build_reply(in_reply_to=f"<{sent.message_id}>", from_=sender) for sender in (JO, SAM)
    ]

    with pytest.raises(KeyboardInterrupt):
        tracker.process_many(replies, batch_size=1)

    [first] = tracker.store.find_outbox(calls[0].event_id)
    assert first.attempts == 1  # recorded once: twice would count two failed attempts
    assert first.last_error == "RuntimeError: CRM down"


def test_a_crash_between_commit_and_hook_redelivers_with_the_same_event_id(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "crash.db"
    delivered = CapturingHook()
    with SQLiteStore(path) as store:
        tracker = ReplyTracker(store, campaign_stop=delivered, clock=clock)
        sent = tracker.stamp(outgoing(), "c42:p7")
        monkeypatch.setattr(ReplyTracker, "_dispatch", lambda self, decided: [])  # the crash
        tracker.process(build_reply(in_reply_to=f"<{sent.message_id}>"))
        monkeypatch.undo()
    assert delivered.events == []
    with SQLiteStore(path) as store:  # the restart
        tracker = ReplyTracker(store, campaign_stop=delivered, clock=clock)
        # Still reserved for the worker that died, for claim_for (5 minutes by default) ...
        assert tracker.retry_pending().delivered == 0
        clock.now += dt.timedelta(minutes=5)
        # ... then any worker delivers it, once.
        assert tracker.retry_pending().delivered == 1
        assert tracker.retry_pending().delivered == 0
    [event] = delivered.events
    assert event.ref == "c42:p7"


# -- polling ---------------------------------------------------------------------------------


def test_poll_processes_new_mail_once_and_saves_the_cursor(
    tracker: ReplyTracker, stop: CapturingHook
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    source = MemorySource(name="inbox")
    source.add(build_reply(in_reply_to=f"<{sent.message_id}>", from_=JO))
    source.add(build_reply(in_reply_to=None, from_="news@vendor.example"))
    first = tracker.poll(source, limit=1)
    assert (first.seen, first.matched, first.events, first.batches) == (2, 1, 1, 2)
    assert tracker.store.load_cursor("inbox") is not None
    source.add(build_reply(in_reply_to=f"<{sent.message_id}>", from_=SAM))
    second = tracker.poll(source)
    assert (second.seen, second.matched) == (1, 1)
    assert len(stop.events) == 2


def test_a_source_failure_loses_nothing_and_duplicates_nothing(
    tracker: ReplyTracker, stop: CapturingHook
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    source = MemorySource(name="inbox")
    for sender in (JO, SAM, "x@customer.example"):
        source.add(build_reply(in_reply_to=f"<{sent.message_id}>", from_=sender))
    tracker.poll(source, limit=1, max_batches=1)
    source.fail_next(1)
    failed = tracker.poll(source, limit=1)
    assert failed.errors
    tracker.poll(source, limit=1)
    assert sorted(e.responder.addr for e in stop.events if e.responder) == sorted(
        [JO, SAM, "x@customer.example"]
    )


def test_hook_outcomes_are_recorded_when_a_later_batch_fails(
    tracker: ReplyTracker, stop: CapturingHook
) -> None:
    """Outcomes wait for the next batch's commit; a failure there must not leave them out."""

    class FailsOnSecondFetch(MemorySource):
        fetches = 0

        def fetch(self, cursor: str | None, limit: int = 100) -> Batch:
            self.fetches += 1
            if self.fetches == 2:
                raise SourceError("the mailbox went away")
            return super().fetch(cursor, limit)

    sent = tracker.stamp(outgoing(), "c42:p7")
    source = FailsOnSecondFetch(name="inbox")
    for sender in (JO, SAM):
        source.add(build_reply(in_reply_to=f"<{sent.message_id}>", from_=sender))

    result = tracker.poll(source, limit=1)

    assert result.errors
    [event] = stop.events
    states = {entry.state for entry in tracker.store.find_outbox(event.event_id)}
    assert states == {OutboxState.DELIVERED}
    assert tracker.retry_pending().delivered == 0  # nothing left to deliver again


def test_the_same_message_in_two_mailboxes_yields_one_event(
    tracker: ReplyTracker, stop: CapturingHook
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    reply = build_reply(in_reply_to=f"<{sent.message_id}>")
    inbox, shared = MemorySource(name="rep-inbox"), MemorySource(name="team-inbox")
    inbox.add(reply)
    shared.add(reply)
    assert tracker.poll(inbox).events == 1
    result = tracker.poll(shared)
    assert (result.events, result.duplicates) == (0, 1)
    assert len(stop.events) == 1


def test_a_third_step_keeps_the_thread_root_first_in_references(tracker: ReplyTracker) -> None:
    first = tracker.stamp(outgoing(), "c42:p7:s1")
    second = tracker.stamp(outgoing("Re: Quick question"), "c42:p7:s2", follow_up_of=first)
    message = outgoing("Re: Quick question")
    tracker.stamp(message, "c42:p7:s3", follow_up_of=[first, second])
    h = parse_headers(message.as_bytes())
    assert h.references == (first.message_id, second.message_id)
    assert h.in_reply_to == (second.message_id,)
    index = ThreadIndex.decode(h.get("Thread-Index"))
    assert index is not None
    assert (index.guid, index.child_count) == (first.thread_index, 2)


def test_an_unreadable_outbox_payload_is_parked_not_fatal(
    tracker: ReplyTracker, crm: CapturingHook, clock: Clock
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    with tracker.store.transaction() as tx:
        tx.enqueue("evt_garbage", "crm_log", b"{not json", NOW)
    crm.failures = 1
    tracker.process(build_reply(in_reply_to=f"<{sent.message_id}>"))
    clock.now += dt.timedelta(hours=1)
    result = tracker.retry_pending()
    assert (result.delivered, result.dead) == (1, 1)
    assert [e.event_id for e in tracker.store.dead_outbox()] == ["evt_garbage"]


# -- learning from the Sent folder ----------------------------------------------------------------


def sent_copy(message: EmailMessage, *, message_id: str | None = None) -> bytes:
    """The copy of `message` in the rep's Sent folder; `message_id` as the provider replaced it."""
    copy = EmailMessage()
    for name, value in message.items():
        if name.lower() != "message-id" or message_id is None:
            copy[name] = value
    if message_id is not None:
        copy["Message-ID"] = message_id
    copy.set_content("Hi Jo, do you have 15 minutes this week?")
    return copy.as_bytes()


def test_stamp_repeats_the_minted_id_in_the_origin_header(tracker: ReplyTracker) -> None:
    message = outgoing()
    sent = tracker.stamp(message, "c42:p7")
    assert message[ORIGIN_HEADER] == f"<{sent.message_id}>"


def test_learn_sent_aliases_an_id_the_provider_replaced(
    tracker: ReplyTracker, stop: CapturingHook
) -> None:
    message = outgoing()
    sent = tracker.stamp(message, "c42:p7")
    replaced = "<AM0PR07MB5377.graph@eurprd07.prod.outlook.example>"
    folder = MemorySource([sent_copy(message, message_id=replaced)], name="sent")
    result = tracker.learn_sent(folder)
    assert (result.seen, result.learned, result.known, result.unmatched) == (1, 1, 0, 0)
    # A reply that references only the id actually sent now finds the send, exactly.
    events = tracker.process(build_reply(in_reply_to=replaced, from_=JO))
    assert [(e.ref, e.method) for e in events] == [("c42:p7", MatchMethod.IN_REPLY_TO)]
    assert events[0].sent == sent


def test_learn_sent_without_the_origin_header_cannot_learn_a_replaced_id(
    store: SQLiteStore, clock: Clock
) -> None:
    tracker = ReplyTracker(store, clock=clock, origin_header=None)
    message = outgoing()
    tracker.stamp(message, "c42:p7")
    assert ORIGIN_HEADER not in message
    folder = MemorySource([sent_copy(message, message_id="<new@outlook.example>")])
    assert tracker.learn_sent(folder).unmatched == 1
    assert tracker.process(build_reply(in_reply_to="<new@outlook.example>")) == []


def test_learn_sent_counts_kept_ids_and_hand_written_mail(tracker: ReplyTracker) -> None:
    message = outgoing()
    tracker.stamp(message, "c42:p7")
    by_hand = build_reply(in_reply_to=None, from_=REP, to=JO, message_id="<hand@sales.example>")
    forged = sent_copy(outgoing(), message_id="<x@sales.example>")  # origin names no send
    folder = MemorySource([sent_copy(message), by_hand, forged, b"Subject: no id\r\n\r\n"])
    result = tracker.learn_sent(folder)
    assert (result.seen, result.learned, result.known, result.unmatched) == (4, 0, 1, 3)


def test_learn_sent_records_the_provider_thread_for_the_thread_hint(tracker: ReplyTracker) -> None:
    message = outgoing()
    sent = tracker.stamp(message, "c42:p7")
    folder = MemorySource(name="sent")
    folder.add(sent_copy(message), provider_thread_id="18c2f0a9d1e4b7aa")
    assert tracker.learn_sent(folder).threads == 1
    assert tracker.store.find_sent_by_provider_thread("18c2f0a9d1e4b7aa") == attrs.evolve(
        sent, provider_thread_id="18c2f0a9d1e4b7aa"
    )
    # A reply whose client dropped every threading header, seen in the same provider thread.
    events = tracker.process(
        build_reply(in_reply_to=None, from_=JO, subject="Tuesday?"),
        provider_thread_id="18c2f0a9d1e4b7aa",
    )
    assert [(e.ref, e.method) for e in events] == [("c42:p7", MatchMethod.PROVIDER_THREAD)]


def test_learn_sent_is_incremental_and_idempotent(tracker: ReplyTracker) -> None:
    first, second = outgoing("One"), outgoing("Two")
    tracker.stamp(first, "c42:p1")
    tracker.stamp(second, "c42:p2")
    folder = MemorySource(name="sent")
    folder.add(sent_copy(first, message_id="<one@outlook.example>"))
    assert tracker.learn_sent(folder).learned == 1
    folder.add(sent_copy(second, message_id="<two@outlook.example>"))
    again = tracker.learn_sent(folder)
    assert (again.seen, again.learned) == (1, 1)  # only what is new since the saved cursor
    replay = tracker.learn_sent(MemorySource(folder.messages, name="sent-again"))
    assert (replay.seen, replay.learned, replay.known) == (2, 0, 2)


def test_learn_sent_stops_on_a_source_failure_and_resumes(tracker: ReplyTracker) -> None:
    message = outgoing()
    tracker.stamp(message, "c42:p7")
    folder = MemorySource([sent_copy(message, message_id="<new@outlook.example>")], name="sent")
    folder.fail_next(1)
    failed = tracker.learn_sent(folder)
    assert failed.errors
    assert failed.learned == 0
    assert tracker.learn_sent(folder).learned == 1


def test_origin_header_must_be_a_field_name(store: SQLiteStore) -> None:
    with pytest.raises(ConfigError):
        ReplyTracker(store, origin_header="X Bad: name")


# -- process_many -------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2, 5, 100])
def test_process_many_gives_what_process_gives_one_by_one(
    store: SQLiteStore, clock: Clock, tmp_path: Path, batch_size: int
) -> None:
    def run(
        tracker: ReplyTracker, batched: bool
    ) -> list[tuple[str, str | None, Kind, MatchMethod, Role]]:
        sent = tracker.stamp(outgoing(), "c42:p7")
        mail = [
            build_reply(in_reply_to=f"<{sent.message_id}>", from_=JO, message_id="<r1@c.example>"),
            build_reply(in_reply_to=None, from_="news@vendor.example"),
            build_out_of_office(
                in_reply_to=f"<{sent.message_id}>", from_=SAM, message_id="<o1@c.example>"
            ),
            build_reply(in_reply_to=f"<{sent.message_id}>", from_=JO, message_id="<r1@c.example>"),
            build_reply(
                in_reply_to="<r1@c.example>", from_="boss@c.example", message_id="<r2@c.example>"
            ),
        ]
        if batched:
            events = tracker.process_many(mail, batch_size=batch_size)
        else:
            events = [e for m in mail for e in tracker.process(m)]
        return [(e.event_id, e.ref, e.kind, e.method, e.role) for e in events]

    with SQLiteStore(tmp_path / "other.db") as other:
        one_by_one = run(ReplyTracker(other, clock=clock), batched=False)
    batched = run(ReplyTracker(store, clock=clock), batched=True)
    assert batched == one_by_one
    # The duplicate and the newsletter give nothing. The boss answered Jo's reply with only
    # In-Reply-To: that matches through Jo's reply, also when both came in one batch.
    assert len(batched) == 3
    assert batched[-1][3:] == (MatchMethod.THREAD, Role.OTHER)


def test_poll_ties_a_reply_to_a_reply_of_the_same_batch(
    tracker: ReplyTracker, stop: CapturingHook
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    source = MemorySource(name="inbox")
    source.add(build_reply(in_reply_to=f"<{sent.message_id}>", message_id="<r1@c.example>"))
    source.add(build_reply(in_reply_to="<r1@c.example>", from_="boss@customer.example"))
    result = tracker.poll(source)
    assert (result.batches, result.seen, result.matched) == (1, 2, 2)
    assert [(e.method, e.role, e.action) for e in stop.events] == [
        (MatchMethod.TOKEN, Role.RECIPIENT, Action.STOP),
        (MatchMethod.THREAD, Role.OTHER, Action.STOP),
    ]


def test_process_many_takes_incoming_messages_with_provider_data(
    tracker: ReplyTracker, stop: CapturingHook
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    tracker.record_sent(attrs.evolve(sent, provider_thread_id="thread-9"))
    when = NOW - dt.timedelta(minutes=5)
    incoming = IncomingMessage(
        build_reply(in_reply_to=None, from_=JO, subject="Tuesday?"),
        source_id="webhook-1",
        provider_thread_id="thread-9",
        received_at=when,
    )
    (event,) = tracker.process_many([incoming])
    assert (event.method, event.received_at) == (MatchMethod.PROVIDER_THREAD, when)
    assert stop.events == [event]


def test_process_many_refuses_a_bad_batch_size(tracker: ReplyTracker) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        tracker.process_many([], batch_size=0)
