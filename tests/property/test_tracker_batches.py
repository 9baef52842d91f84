"""Batches decide what one message at a time decides: `process`, `process_many` and `poll` agree.

`ReplyTracker.process_many` and `ReplyTracker.poll` decide a whole batch before writing it in one
transaction, so a message must see the ties of the earlier messages of its own batch (a
colleague answering, with only In-Reply-To, a reply of the same batch) exactly as if each had
been processed and committed in turn. Hypothesis draws a few stamped sends and a stream of
incoming mail - replies from the To, the Cc and a colleague, replies to earlier replies
(sometimes arriving before the reply they answer), exact duplicates, the rep's own mail,
unrelated mail, out-of-office notices, hard bounces, messages without a Message-ID, an
Outlook reply known only by its Thread-Index - and runs the stream three ways, each on a fresh
store with the same sends and the same fixed clock:

1. `process` one message at a time;
2. `process_many` with a drawn batch size;
3. `poll` of a `MemorySource` holding the stream, with a drawn limit, delivering whole
   messages or (``headers_only``) header blocks whose bodies `poll` fetches when it needs them.

The events, and every call of each hook in order, must be the same; `poll`'s counts must be
what one-at-a-time processing implies.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeAlias

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

from replytrack import Kind, MessageIdGenerator, ThreadIndex, parse_headers
from replytrack.correlate import MatchMethod, Role
from replytrack.events import Action, ReplyEvent
from replytrack.store import MemoryStore, SentMessage, SQLiteStore, Store
from replytrack.testing import (
    CapturingHook,
    MemorySource,
    build_bounce,
    build_out_of_office,
    build_reply,
)
from replytrack.tracker import PollResult, ReplyTracker, _ledger_key

QUICK = settings(max_examples=100, deadline=None)

NOW = dt.datetime(2027, 3, 1, 9, 0, tzinfo=dt.timezone.utc)
KEY = b"k" * 32
SALES = "mail.sales.example"
REP = "rep@sales.example"  # an own address
SDR = "sdr@sales.example"  # sends too, but is not configured as an own address
SENDERS = (REP, SDR)
PROSPECTS = ("jo@customer.example", "sam@customer.example", "kim@prospect.example")
COLLEAGUE = "pat@customer.example"  # on no send
BOSSES = ("boss@customer.example", "lee@customer.example")  # answer replies
DAEMON = "MAILER-DAEMON@mx.sales.example"  # build_bounce's From


def clock() -> dt.datetime:
    return NOW


# -- scenarios ------------------------------------------------------------------------------


@attrs.frozen
class SendSpec:
    to: int
    cc: int | None
    sender: int
    follow_up: bool  # a threaded follow-up of the previous send


@attrs.frozen
class MailSpec:
    """One incoming message (two for ``early_pair``); indexes are taken modulo what exists."""

    kind: str
    send: int = 0
    target: int = 0
    variant: int = 0


@attrs.frozen
class Scenario:
    signed: bool  # a MessageIdGenerator with a secret, else none (plain ids)
    sends: tuple[SendSpec, ...]
    mail: tuple[MailSpec, ...]
    moves: tuple[tuple[int, int], ...]  # (from, to): messages arriving out of their order
    batch_size: int  # for process_many, 1 .. len(stream) + 1
    limit: int  # for poll, likewise
    headers_only: bool  # the source gives header blocks first (poll fetches bodies it needs)


KINDS = (
    "reply",  # to a send: from its To, its Cc, or a colleague
    "reply_to_incoming",  # to an earlier message of the stream, with only In-Reply-To
    "early_pair",  # a reply to a reply, then the reply it answers (out of order)
    "duplicate",  # an exact copy of an earlier message
    "own",  # the rep's own mail
    "unrelated",  # a newsletter, a reply to an unknown id
    "ooo",  # an out-of-office, with or without a return date
    "bounce",  # a hard bounce of a send
    "no_id",  # a message without a Message-ID
    "thread_index",  # an Outlook reply with only a Thread-Index
)

send_specs = st.builds(
    SendSpec,
    to=st.integers(0, len(PROSPECTS) - 1),
    cc=st.none() | st.integers(0, len(PROSPECTS) - 1),
    sender=st.integers(0, len(SENDERS) - 1),
    follow_up=st.booleans(),
)
mail_specs = st.builds(
    MailSpec,
    kind=st.sampled_from(KINDS),
    send=st.integers(0, 2),
    target=st.integers(0, 20),
    variant=st.integers(0, 3),
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    mail = tuple(draw(st.lists(mail_specs, min_size=1, max_size=12)))
    n = len(mail) + sum(m.kind == "early_pair" for m in mail)  # messages in the stream
    positions = st.integers(0, n - 1)
    return Scenario(
        signed=draw(st.booleans()),
        sends=tuple(draw(st.lists(send_specs, min_size=1, max_size=3))),
        mail=mail,
        moves=tuple(draw(st.lists(st.tuples(positions, positions), max_size=2))),
        batch_size=draw(st.integers(1, n + 1)),
        limit=draw(st.integers(1, n + 1)),
        headers_only=draw(st.booleans()),
    )


# -- building the mail -----------------------------------------------------------------------


@attrs.frozen
class World:
    generator: MessageIdGenerator | None
    sends: tuple[SentMessage, ...]
    stream: tuple[bytes, ...]


@attrs.frozen
class _Built:
    data: bytes
    message_id: str | None  # with brackets
    sender: str


def outgoing(to: str, cc: str | None, sender: str, subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Rep <{sender}>"
    message["To"] = to
    if cc is not None and cc != to:
        message["Cc"] = cc
    message["Subject"] = subject
    message["Date"] = email.utils.format_datetime(NOW - dt.timedelta(days=1))
    message.set_content("Hi, do you have 15 minutes this week?")
    return message


def without_message_id(data: bytes) -> bytes:
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"message-id:")]
    return b"\r\n".join(lines) + sep + body


def reply_to(
    mid: str | None,
    in_reply_to: str | None,
    sender: str,
    *,
    body: str,
    references: Sequence[str] | None = None,
    to: str = REP,
    headers: dict[str, str] | None = None,
) -> bytes:
    """A reply written an hour before `NOW`; without a Message-ID when `mid` is None."""
    data = build_reply(
        in_reply_to=in_reply_to,
        references=references,
        from_=sender,
        to=to,
        body=body,
        date=NOW - dt.timedelta(hours=1),
        message_id=mid or "<dropped@customer.example>",
        headers=headers,
    )
    return data if mid else without_message_id(data)


class _Mailer:
    """Turns `MailSpec` values into raw messages, given the stamped sends."""

    def __init__(
        self,
        generator: MessageIdGenerator | None,
        sends: Sequence[SentMessage],
        stamped: Sequence[EmailMessage],
    ) -> None:
        self.generator = generator
        self.sends = sends
        self.stamped = stamped
        self.built: list[_Built] = []
        # A signed id of a send no store holds (TOKEN match without a send), or a foreign one.
        self.lost = generator.generate(ref="lost") if generator is not None else None

    def add(self, data: bytes, message_id: str | None, sender: str) -> None:
        self.built.append(_Built(data, message_id, sender))

    def reply(
        self,
        n: str,
        in_reply_to: str | None,
        sender: str,
        *,
        references: Sequence[str] | None = None,
        to: str = REP,
        headers: dict[str, str] | None = None,
    ) -> None:
        mid = f"<m{n}@{email.utils.parseaddr(sender)[1].rpartition('@')[2]}>"
        data = reply_to(
            mid,
            in_reply_to,
            sender,
            body=f"Message {n}.\n",
            references=references,
            to=to,
            headers=headers,
        )
        self.add(data, mid, sender)

    def build(self, n: int, spec: MailSpec) -> None:  # noqa: PLR0915 - one branch per kind
        index = spec.send % len(self.sends)
        sent = self.sends[index]
        sent_id = f"<{sent.message_id}>"
        prospect = sent.to[0]
        kind, v = spec.kind, spec.variant
        if kind == "reply":
            sender = (prospect, sent.cc[0] if sent.cc else PROSPECTS[-1], COLLEAGUE, prospect)[v]
            # A reply to a follow-up that keeps the whole thread in References (variant 3).
            chain = [f"<{s.message_id}>" for s in self.sends[:index]] if v == 3 else None
            self.reply(str(n), sent_id, sender, references=chain)
        elif kind in ("reply_to_incoming", "duplicate"):
            earlier = [b for b in self.built if kind == "duplicate" or b.message_id]
            if not earlier:
                self.reply(str(n), None, "news@vendor.example")  # nothing to answer or copy yet
            elif kind == "duplicate":
                copied = earlier[spec.target % len(earlier)]
                self.add(copied.data, copied.message_id, copied.sender)
            else:
                answered = earlier[spec.target % len(earlier)]
                sender = BOSSES[v % 2] if BOSSES[v % 2] != answered.sender else BOSSES[1 - v % 2]
                self.reply(str(n), answered.message_id, sender)
        elif kind == "early_pair":
            first = f"<m{n}b@{prospect.rpartition('@')[2]}>"
            self.reply(f"{n}a", first, BOSSES[v % 2])  # answers the next one, not yet there
            self.reply(f"{n}b", sent_id, prospect)
        elif kind == "own":
            if v == 0:  # the rep writing in the thread
                self.reply(str(n), sent_id, f"Rep <{REP}>", to=prospect)
            elif v == 1:  # the copy of the send itself (a Bcc to self, a synced Sent folder)
                self.add(self.stamped[index].as_bytes(), sent_id, sent.sender)
            else:  # the send's own sender, not an own address: still own mail
                self.reply(str(n), sent_id, f"Sales <{sent.sender}>", to=prospect)
        elif kind == "unrelated":
            if v == 0:
                self.reply(str(n), None, "news@vendor.example")
            elif v == 1 or self.lost is None:
                self.reply(str(n), f"<unknown{n}@elsewhere.example>", prospect)
            else:
                self.reply(str(n), self.lost, prospect)
        elif kind == "ooo":
            days = (None, 3, -2, 60)[v]
            mid = f"<m{n}@{prospect.rpartition('@')[2]}>"
            data = build_out_of_office(
                language=("en", "de", "fr")[spec.target % 3],
                return_date=None if days is None else (NOW + dt.timedelta(days=days)).date(),
                in_reply_to=sent_id,
                from_=prospect,
                date=NOW - dt.timedelta(hours=1),
                message_id=mid,
            )
            self.add(data, mid, prospect)
        elif kind == "bounce":
            mid = f"<m{n}@mx.sales.example>"
            data = build_bounce(
                recipients=(prospect,),
                original_message_id=sent_id,
                original_from=f"Rep <{sent.sender}>",
                to=sent.sender,
                date=NOW - dt.timedelta(hours=1),
                message_id=mid,
            )
            self.add(data, mid, DAEMON)
        elif kind == "no_id":
            self.reply(str(n), (sent_id, None, sent_id, sent_id)[v], (prospect, COLLEAGUE)[v % 2])
            last = self.built.pop()
            self.add(without_message_id(last.data), None, last.sender)
        elif kind == "thread_index":
            stamped = ThreadIndex.decode(self.stamped[index]["Thread-Index"])
            assert stamped is not None
            child = stamped.child(now=NOW, random=v).encode()
            self.reply(str(n), None, prospect, headers={"Thread-Index": child})
        else:  # pragma: no cover - KINDS is exhaustive
            raise AssertionError(kind)


def build_world(scenario: Scenario) -> World:
    generator = MessageIdGenerator(SALES, secret=KEY) if scenario.signed else None
    stamper = ReplyTracker(MemoryStore(), generator, clock=clock)
    sends: list[SentMessage] = []
    stamped: list[EmailMessage] = []
    for i, spec in enumerate(scenario.sends):
        follow = spec.follow_up and bool(sends)
        message = outgoing(
            PROSPECTS[spec.to],
            None if spec.cc is None else PROSPECTS[spec.cc],
            SENDERS[spec.sender],
            "Re: Quick question" if follow else "Quick question",
        )
        sends.append(
            stamper.stamp(message, ref=f"c1:p{i}", follow_up_of=sends[-1] if follow else None)
        )
        stamped.append(message)
    mailer = _Mailer(generator, sends, stamped)
    for n, mail in enumerate(scenario.mail):
        mailer.build(n, mail)
    stream = [b.data for b in mailer.built]
    for i, j in scenario.moves:
        stream.insert(j, stream.pop(i))
    return World(generator, tuple(sends), tuple(stream))


# -- running it three ways -------------------------------------------------------------------

Row: TypeAlias = tuple[
    str, str, Kind, MatchMethod, Role, Action, dt.date | None, str | None, str | None
]


def row(e: ReplyEvent) -> Row:
    responder = e.responder.addr if e.responder is not None else None
    return (
        e.event_id,
        e.ref,
        e.kind,
        e.method,
        e.role,
        e.action,
        e.resume_on,
        e.message_id,
        responder,
    )


@attrs.frozen
class Outcome:
    events: list[Row]
    stop: list[Row]  # campaign_stop calls, in order
    crm: list[Row]  # crm_log calls, in order


@attrs.frozen
class Counts:
    """What one-at-a-time processing implies for `PollResult`."""

    seen: int
    matched: int
    own: int
    duplicates: int


def tracker_for(
    store: Store, world: World, stop: CapturingHook, crm: CapturingHook
) -> ReplyTracker:
    for sent in world.sends:
        store.record_sent(sent)
    return ReplyTracker(
        store,
        world.generator,
        campaign_stop=stop,
        crm_log=crm,
        own_addresses=[REP],
        clock=clock,
    )


def outcome(events: Sequence[ReplyEvent], stop: CapturingHook, crm: CapturingHook) -> Outcome:
    # A failed hook call would not be recorded: none may fail here.
    assert (stop.calls, crm.calls) == (len(stop.events), len(crm.events))
    return Outcome(
        [row(e) for e in events], [row(e) for e in stop.events], [row(e) for e in crm.events]
    )


def one_at_a_time(store: Store, world: World) -> tuple[Outcome, Counts]:
    stop, crm = CapturingHook(), CapturingHook()
    tracker = tracker_for(store, world, stop, crm)
    events: list[ReplyEvent] = []
    own = duplicates = 0
    for data in world.stream:
        if store.is_processed(_ledger_key(parse_headers(data))):
            duplicates += 1
        elif tracker.correlator.examine(data)[1] is not None:
            own += 1
        events += tracker.process(data)
    return outcome(events, stop, crm), Counts(len(world.stream), len(events), own, duplicates)


def in_batches(store: Store, world: World, batch_size: int) -> Outcome:
    stop, crm = CapturingHook(), CapturingHook()
    tracker = tracker_for(store, world, stop, crm)
    events = tracker.process_many(world.stream, batch_size=batch_size)
    return outcome(events, stop, crm)


def polled(
    store: Store, world: World, limit: int, *, headers_only: bool = False
) -> tuple[Outcome, PollResult]:
    stop, crm = CapturingHook(), CapturingHook()
    tracker = tracker_for(store, world, stop, crm)
    source = MemorySource(world.stream, name="inbox", headers_only=headers_only, clock=clock)
    result = tracker.poll(source, limit=limit)
    # poll returns counts, not events: the CRM hook receives every event (default Policy).
    return outcome(crm.events, stop, crm), result


def check_agreement(
    world: World,
    *,
    batch_size: int,
    limit: int,
    sequential: tuple[Outcome, Counts],
    batched: Outcome,
    poll: tuple[Outcome, PollResult],
) -> None:
    expected, counts = sequential
    assert expected.crm == expected.events  # every event reaches the CRM: poll's view of them
    assert batched == expected, f"process_many(batch_size={batch_size}) differs"
    assert poll[0] == expected, f"poll(limit={limit}) differs"
    result = poll[1]
    n = len(world.stream)
    assert (result.seen, result.matched, result.events) == (n, counts.matched, counts.matched)
    assert (result.own, result.duplicates) == (counts.own, counts.duplicates)
    assert (result.batches, result.errors, result.more) == (max(1, -(-n // limit)), (), False)


# -- the properties --------------------------------------------------------------------------


@QUICK
@given(scenarios())
def test_batches_of_any_size_decide_what_one_at_a_time_decides(scenario: Scenario) -> None:
    world = build_world(scenario)
    assert 1 <= scenario.batch_size <= len(world.stream) + 1
    with MemoryStore() as a, MemoryStore() as b, MemoryStore() as c:
        check_agreement(
            world,
            batch_size=scenario.batch_size,
            limit=scenario.limit,
            sequential=one_at_a_time(a, world),
            batched=in_batches(b, world, scenario.batch_size),
            poll=polled(c, world, scenario.limit, headers_only=scenario.headers_only),
        )


def test_every_kind_of_mail_in_one_batch_on_sqlite(tmp_path: Path) -> None:
    generator = MessageIdGenerator(SALES, secret=KEY)
    stamper = ReplyTracker(MemoryStore(), generator, clock=clock)
    jo, sam, kim = PROSPECTS
    first, follow_up, other = (
        outgoing(jo, sam, REP, "Quick question"),
        outgoing(jo, sam, REP, "Re: Quick question"),
        outgoing(kim, None, SDR, "Pricing"),
    )
    s1 = stamper.stamp(first, ref="c1:jo:s1")
    s2 = stamper.stamp(follow_up, ref="c1:jo:s2", follow_up_of=s1)
    s3 = stamper.stamp(other, ref="c1:kim:s1")
    id1, id2, id3 = (f"<{s.message_id}>" for s in (s1, s2, s3))
    index = ThreadIndex.decode(other["Thread-Index"])
    assert index is not None

    def reply(mid: str | None, in_reply_to: str | None, sender: str, **fields: Any) -> bytes:
        return reply_to(mid, in_reply_to, sender, body=f"From {sender}.\n", **fields)

    r1 = reply("<r1@customer.example>", id1, jo)
    stream = [
        r1,  # the To answers
        reply("<r2@customer.example>", id1, sam),  # the Cc answers
        reply("<r3@customer.example>", id2, COLLEAGUE, references=[id1]),  # a colleague
        reply("<r4@customer.example>", "<r1@customer.example>", BOSSES[0]),  # a reply's reply
        reply("<r5@customer.example>", "<r6@prospect.example>", BOSSES[1]),  # before its parent
        reply("<r6@prospect.example>", id3, kim),  # ... which arrives now
        r1,  # a duplicate
        reply("<o1@sales.example>", id1, f"Rep <{REP}>", to=jo),  # own: an own address
        first.as_bytes(),  # own: the copy of a send
        reply("<o2@sales.example>", id3, f"Sales <{SDR}>", to=kim),  # own: the send's sender
        reply("<n1@vendor.example>", None, "news@vendor.example"),  # a newsletter
        reply("<u1@customer.example>", "<unknown@elsewhere.example>", jo),  # an unknown id
        reply("<u2@customer.example>", generator.generate(ref="lost"), jo),  # a lost send
        build_out_of_office(  # back in a week
            return_date=(NOW + dt.timedelta(days=7)).date(),
            in_reply_to=id2,
            from_=jo,
            message_id="<ooo1@customer.example>",
        ),
        build_out_of_office(  # no return date
            language="de", in_reply_to=id3, from_=kim, message_id="<ooo2@prospect.example>"
        ),
        build_bounce(  # a hard bounce
            recipients=(kim,),
            original_message_id=id3,
            original_from=f"Sales <{SDR}>",
            to=SDR,
            message_id="<b1@mx.sales.example>",
        ),
        reply(None, id1, jo),  # no Message-ID
        reply(  # Outlook, known only by the Thread-Index
            "<t1@prospect.example>",
            None,
            kim,
            headers={"Thread-Index": index.child(now=NOW, random=1).encode()},
        ),
    ]
    world = World(generator, (s1, s2, s3), tuple(stream))
    n = len(stream)
    with (
        SQLiteStore(tmp_path / "one.db") as a,
        SQLiteStore(tmp_path / "many.db") as b,
        SQLiteStore(tmp_path / "poll.db") as c,
    ):
        sequential = one_at_a_time(a, world)
        check_agreement(  # everything in one batch
            world,
            batch_size=n,
            limit=n + 1,
            sequential=sequential,
            batched=in_batches(b, world, n),
            poll=polled(c, world, n + 1),
        )

    expected = [
        ("c1:jo:s1", Kind.REPLY, MatchMethod.TOKEN, Role.RECIPIENT, Action.STOP, jo),
        ("c1:jo:s1", Kind.REPLY, MatchMethod.TOKEN, Role.CC, Action.STOP, sam),
        ("c1:jo:s2", Kind.REPLY, MatchMethod.TOKEN, Role.OTHER, Action.STOP, COLLEAGUE),
        ("c1:jo:s1", Kind.REPLY, MatchMethod.THREAD, Role.OTHER, Action.STOP, BOSSES[0]),
        ("c1:kim:s1", Kind.REPLY, MatchMethod.TOKEN, Role.RECIPIENT, Action.STOP, kim),
        ("lost", Kind.REPLY, MatchMethod.TOKEN, Role.UNKNOWN, Action.STOP, jo),
        ("c1:jo:s2", Kind.OUT_OF_OFFICE, MatchMethod.TOKEN, Role.RECIPIENT, Action.PAUSE, jo),
        ("c1:kim:s1", Kind.OUT_OF_OFFICE, MatchMethod.TOKEN, Role.RECIPIENT, Action.LOG_ONLY, kim),
        ("c1:kim:s1", Kind.BOUNCE, MatchMethod.BOUNCE_ORIGINAL, Role.OTHER, Action.STOP, DAEMON),
        ("c1:jo:s1", Kind.REPLY, MatchMethod.TOKEN, Role.RECIPIENT, Action.STOP, jo),
        ("c1:kim:s1", Kind.REPLY, MatchMethod.THREAD_INDEX, Role.RECIPIENT, Action.STOP, kim),
    ]
    events, counts = sequential[0].events, sequential[1]
    assert [(e[1], e[2], e[3], e[4], e[5], e[8]) for e in events] == expected
    assert (counts.own, counts.duplicates) == (3, 1)
