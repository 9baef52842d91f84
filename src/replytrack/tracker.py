"""The tracker: stamps what the host sends, recognises what comes back, and calls the hooks.

`ReplyTracker` is the thin layer a sales platform integrates (DESIGN.md, "The tracker and its
hooks"). It feeds incoming mail through the pure core (parse, correlate, classify), asks the
policy what to do, writes every decision to the store, and only then calls the host's hooks.

Rule 1: decisions are durable before anything else happens. For each incoming message the
        processed ledger, the tie to its send and the outbox entries for its hooks are written
        in one store transaction; when polling, the source's cursor joins that transaction, so
        a batch is acknowledged exactly when its decisions are stored.
Rule 2: hooks run after the commit, and a hook that raises leaves its entry in the outbox with a
        retry time (exponential backoff, capped); after `max_attempts` the entry is parked as
        dead. The outcomes of a batch's hook calls are recorded with the next batch's commit
        (and at the end of `poll` or `process_many`): one durable commit per batch. Nothing is
        lost: a crash anywhere re-delivers at most what was not yet marked delivered, with the
        same ``event_id`` (at-least-once delivery, see `replytrack.hooks`).
Rule 3: processing is idempotent per incoming message: the ledger key is its Message-ID (or a
        digest of its header block when it has none), so the same reply seen in two mailboxes
        or after a resync produces one event.
Rule 4: bodies are read only when needed: a source that delivers header blocks first is asked
        for the full message only for mail that correlated or may be a bounce, a batch's at
        once, `BODIES_PER_REQUEST` per request (`BaseSource.fetch_bodies`).
Rule 5: the tracker reads the time only through its injected clock.
"""

from __future__ import annotations

import datetime as _dt
import email
import email.message
import email.policy
import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final, TypeAlias

import attrs

from replytrack import mime
from replytrack.classify import MAX_PARSE_BYTES, Classification, classify
from replytrack.correlate import Correlation, Correlator
from replytrack.dsn import may_be_report
from replytrack.errors import ConfigError, ParseError, SourceError, StoreError
from replytrack.events import MAX_BODY_TEXT, Action, ReplyEvent, make_event_id
from replytrack.headers import (
    Headers,
    normalize_msg_id,
    parse_addresses,
    parse_headers,
    parse_msg_ids,
    text_to_bytes,
)
from replytrack.hooks import CampaignStopHook, CRMLogHook
from replytrack.msgid import MessageIdGenerator
from replytrack.ooo import body_text
from replytrack.policy import Decision, Policy
from replytrack.sources.base import IncomingMessage, MailboxSource
from replytrack.store import SentMessage, Store
from replytrack.store.base import Transaction, check_limit
from replytrack.threadindex import ThreadIndex, thread_topic

__all__ = ["ORIGIN_HEADER", "LearnResult", "PollResult", "ReplyTracker", "RetryResult"]

log: logging.Logger = logging.getLogger("replytrack")

#: Hook names as stored in the outbox.
CAMPAIGN_STOP: Final = "campaign_stop"
CRM_LOG: Final = "crm_log"
#: Bodies asked of a source in one request (`BaseSource.fetch_bodies`): a batch's replies
#: come in a few requests, and at most this many whole messages are held at once.
BODIES_PER_REQUEST: Final = 20
#: At most this many ids in the References of a follow-up: the first (the thread root) and the
#: newest, as mail clients trim them.
MAX_REFERENCES: Final = 20
# RFC 5322 section 3.6.8: printable ASCII but the colon.
_FIELD_NAME: Final = re.compile(r"[!-9;-~]+")
# What must never reach a header value replytrack writes (header injection).
_UNSAFE_VALUE: Final = re.compile(r"[\r\n\x00]")
#: The header `ReplyTracker.stamp` repeats the Message-ID it minted in, by default. Providers
#: that replace a Message-ID (Microsoft Graph, some relays) keep custom ``X-`` headers, so
#: `ReplyTracker.learn_sent` can tie the copy in the Sent folder back to the send. It is one of
#: `replytrack.headers.TRACKING_FIELDS`, so sources that fetch header fields first fetch it; a
#: host that names another origin header must add it to such a source's fields.
ORIGIN_HEADER: Final = "X-Replytrack-ID"


@attrs.frozen
class PollResult:
    """What one `ReplyTracker.poll` did.

    Attributes:
        seen: messages fetched from the source.
        matched: messages tied to one of our sends.
        events: events created (one per matched message).
        own: messages skipped as our own mail.
        duplicates: messages already processed before (another mailbox, a resync).
        batches: batches committed.
        errors: human-readable failures; the batch that failed was not acknowledged, so its
            messages come again at the next poll.
        more: True when the poll stopped at `max_batches` while the source had more to give:
            poll again at once.
    """

    seen: int = 0
    matched: int = 0
    events: int = 0
    own: int = 0
    duplicates: int = 0
    batches: int = 0
    errors: tuple[str, ...] = ()
    more: bool = False


@attrs.frozen
class LearnResult:
    """What one `ReplyTracker.learn_sent` did.

    Attributes:
        seen: messages read from the Sent folder.
        learned: sends that got a new alias: the provider had replaced our Message-ID.
        known: messages whose Message-ID is already a recorded send or alias.
        threads: sends that got their provider thread id (Gmail ``threadId``, Graph
            ``conversationId``) from the Sent copy.
        unmatched: messages that are not a send of ours (mail the rep wrote by hand) or
            whose send the store does not hold.
        batches: batches committed.
        errors: human-readable failures; the batch that failed comes again next time.
    """

    seen: int = 0
    learned: int = 0
    known: int = 0
    threads: int = 0
    unmatched: int = 0
    batches: int = 0
    errors: tuple[str, ...] = ()


@attrs.frozen
class RetryResult:
    """What one `ReplyTracker.retry_pending` did: entries delivered, failed again, parked dead."""

    delivered: int = 0
    failed: int = 0
    dead: int = 0


# (entry id, "delivered" | "failed" | "dead", error, when: delivered/dead time or retry time)
_Outcome: TypeAlias = tuple[int, str, "str | None", _dt.datetime]


@attrs.frozen
class _Decided:
    """The outcome of one message before it is written: what the transaction must store."""

    key: str
    own: bool = False
    duplicate: bool = False
    event: ReplyEvent | None = None
    incoming_id: str | None = None
    sent_id: str | None = None
    hooks: tuple[str, ...] = ()


class ReplyTracker:
    """Track replies to the mail a host sends, and tell the host through its hooks.

    Args:
        store: where sends, decisions and pending hook deliveries are kept.
        generator: mints the Message-IDs of `stamp`; with a secret, ids carry a signed token
            that matches replies even when the store lost the send.
        campaign_stop: called for STOP and PAUSE events (see `CampaignStopHook`).
        crm_log: called for every correlated event the policy sends to the CRM.
        own_addresses: the reps' addresses: mail from them is never a reply.
        policy: maps what came back to an action (default: `Policy()`).
        clock: returns the current aware time (default: UTC now).
        max_attempts: hook attempts before an outbox entry is parked as dead.
        retry_base: the first retry delay; it doubles with each attempt ...
        retry_cap: ... up to this.
        claim_for: how long a hook delivery is reserved for the worker making it: the one
            that processed the message, or the one whose `retry_pending` took it. Past that
            (the worker died), another worker's `retry_pending` delivers it. Keep it well
            above the time a hook call takes.
        subject_window: enables the low-confidence subject heuristic of the `Correlator`.
        origin_header: the header `stamp` repeats the minted Message-ID in, for
            `learn_sent` (default `ORIGIN_HEADER`); ``None`` leaves it out, and then
            `learn_sent` can only confirm ids the provider kept.

    Raises:
        ConfigError: on an invalid argument.
    """

    def __init__(
        self,
        store: Store,
        generator: MessageIdGenerator | None = None,
        *,
        campaign_stop: CampaignStopHook | None = None,
        crm_log: CRMLogHook | None = None,
        own_addresses: Iterable[str] = (),
        policy: Policy | None = None,
        clock: Callable[[], _dt.datetime] | None = None,
        max_attempts: int = 8,
        retry_base: _dt.timedelta = _dt.timedelta(seconds=30),
        retry_cap: _dt.timedelta = _dt.timedelta(hours=6),
        claim_for: _dt.timedelta = _dt.timedelta(minutes=5),
        subject_window: _dt.timedelta | None = None,
        origin_header: str | None = ORIGIN_HEADER,
    ) -> None:
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, not {max_attempts}")
        if retry_base <= _dt.timedelta(0) or retry_cap < retry_base:
            raise ConfigError("retry_base must be positive and retry_cap at least retry_base")
        if claim_for <= _dt.timedelta(0):
            raise ConfigError(f"claim_for must be positive, not {claim_for!r}")
        for name, hook in (("campaign_stop", campaign_stop), ("crm_log", crm_log)):
            if hook is not None and not callable(hook):
                raise ConfigError(f"{name} must be callable, not {type(hook).__name__}")
        self.store = store
        self.generator = generator
        self.policy: Policy = policy if policy is not None else Policy()
        self._hooks: dict[str, Callable[[ReplyEvent], None]] = {}
        if campaign_stop is not None:
            self._hooks[CAMPAIGN_STOP] = campaign_stop
        if crm_log is not None:
            self._hooks[CRM_LOG] = crm_log
        self._clock = clock or (lambda: _dt.datetime.now(_dt.timezone.utc))
        self._max_attempts = max_attempts
        self._retry_base = retry_base
        self._retry_cap = retry_cap
        self._claim_for = claim_for
        self.correlator: Correlator = Correlator(
            store, generator, own_addresses=own_addresses, subject_window=subject_window
        )
        self._plain_generators: dict[str, MessageIdGenerator] = {}
        if origin_header is not None and not _FIELD_NAME.fullmatch(origin_header):
            raise ConfigError(f"origin_header must be a header field name, not {origin_header!r}")
        self._origin_header = origin_header

    # -- sending ---------------------------------------------------------------------------------

    def stamp(
        self,
        message: email.message.EmailMessage,
        ref: str,
        *,
        follow_up_of: SentMessage | Sequence[SentMessage] | None = None,
    ) -> SentMessage:
        """Give an outgoing message its identity, and record it as a send.

        Sets ``Message-ID`` (a signed token when the generator has a secret), the origin
        header (``X-Replytrack-ID``, the same id again, for `learn_sent`),
        ``Thread-Index`` and ``Thread-Topic`` (so Outlook threads the sequence), and for a
        follow-up step ``In-Reply-To`` and ``References`` to the previous step plus a child
        ``Thread-Index``. The message's policy is widened to RFC 5322's 998-character lines,
        because Python's default 78 folds long ids into RFC 2047 encoded-words that many clients
        fail to thread.

        Args:
            message: the message about to be sent; changed in place.
            ref: the host's identifier of this send (campaign, prospect, step ...).
            follow_up_of: for a threaded follow-up, the previous step of the sequence, or
                every earlier step oldest first: then ``References`` keeps the first step (the
                thread root, which clients thread by) and the ``Thread-Index`` grows one child
                block per step, as Outlook's own replies do.

        Returns:
            The recorded `SentMessage`.

        Raises:
            ConfigError: the message has no From or no To, or `ref` is unusable.
        """
        senders = parse_addresses(message.get("From", ""))
        to = parse_addresses(", ".join(message.get_all("To", [])))
        cc = parse_addresses(", ".join(message.get_all("Cc", [])))
        if not senders or not senders[0].domain:
            raise ConfigError("stamp() needs a message with a From address")
        if not to:
            raise ConfigError("stamp() needs a message with at least one To address")
        now = self._now()
        generator = self.generator or self._plain_generator(senders[0].domain)
        mid = generator.generate(ref=ref) if generator.can_sign else generator.generate()
        subject = message.get("Subject")

        steps = [follow_up_of] if isinstance(follow_up_of, SentMessage) else follow_up_of
        if steps:
            root = steps[0]
            index = ThreadIndex.new(
                now=root.sent_at or now, guid=root.thread_index or ThreadIndex.new(now=now).guid
            )
            for step in (*steps[1:], None):
                index = index.child(now=step.sent_at if step and step.sent_at else now)
            parent = f"<{steps[-1].message_id}>"
            earlier = [f"<{step.message_id}>" for step in steps]
            references = _bounded_references([*_existing_ids(message), *earlier])
        else:
            index = ThreadIndex.new(now=now)
            parent = None
            references = []

        if message.policy.max_line_length is not None and message.policy.max_line_length < 998:
            message.policy = message.policy.clone(max_line_length=998)
        _set(message, "Message-ID", mid)
        if self._origin_header is not None:
            _set(message, self._origin_header, mid)
        _set(message, "Thread-Index", index.encode())
        if subject:
            _set(message, "Thread-Topic", thread_topic(str(subject)))
        if parent is not None:
            _set(message, "In-Reply-To", parent)
            _set(message, "References", " ".join(references))

        sent = SentMessage(
            message_id=mid,
            ref=ref,
            sender=senders[0].addr,
            to=tuple(a.addr for a in to if a.domain),
            cc=tuple(a.addr for a in cc if a.domain),
            subject=str(subject) if subject is not None else None,
            sent_at=now,
            thread_index=index.guid,
        )
        self.store.record_sent(sent)
        return sent

    def record_sent(self, sent: SentMessage) -> None:
        """Record a send made without `stamp` (a provider that assigns its own id)."""
        self.store.record_sent(sent)

    def record_alias(self, ref_or_sent: str | SentMessage, message_id: str) -> None:
        """Add the Message-ID a provider actually used for a send (Graph may replace ours).

        Args:
            ref_or_sent: the send, or its ref (the newest send with that ref).
            message_id: the id the provider reports, with or without brackets.

        Raises:
            ConfigError: no send has that ref, or the id is not an id.
        """
        sent = ref_or_sent
        if isinstance(sent, str):
            found = self.store.find_sent_by_ref(sent)
            if found is None:
                raise ConfigError(f"no send recorded with ref {sent!r}")
            sent = found
        alias = normalize_msg_id(message_id)
        if alias is None:
            raise ConfigError(f"not a Message-ID: {message_id!r}")
        if alias != sent.message_id:
            self.store.record_alias(sent.message_id, alias)

    # -- receiving -------------------------------------------------------------------------------

    def process(
        self,
        data: bytes | str | email.message.Message,
        *,
        provider_thread_id: str | None = None,
        received_at: _dt.datetime | None = None,
    ) -> list[ReplyEvent]:
        """Recognise one incoming message, record the decision, and call the hooks.

        Idempotent: the same message processed again (from this mailbox or another) yields no
        new event.

        Args:
            data: the raw message, or one parsed by the standard library.
            provider_thread_id: the provider's thread id, when the source supplies one.
            received_at: when the mailbox received it (default: the message's Date).

        Returns:
            The new events: one when the message answers one of our sends, else none.

        Raises:
            StoreError: the store failed; nothing was recorded, so processing again is safe.
            ConfigError: `received_at` is a naive datetime.
        """
        if received_at is not None and received_at.utcoffset() is None:
            raise ConfigError("received_at must be an aware datetime")
        incoming = IncomingMessage(
            data=data if isinstance(data, bytes) else _as_bytes(data),
            source_id="process",
            provider_thread_id=provider_thread_id,
            received_at=received_at,
        )
        return self.process_many([incoming])

    def process_many(
        self,
        messages: Iterable[bytes | str | email.message.Message | IncomingMessage],
        *,
        batch_size: int = 100,
    ) -> list[ReplyEvent]:
        """`process` several messages, committing them `batch_size` at a time.

        Each batch's decisions are written in one transaction, then its hooks are called,
        exactly as `poll` does with a source's batch: the same guarantees as `process`, with
        one durable commit per batch instead of one per message (much faster on a store that
        syncs every commit to disk). For a host that receives mail in bulk, from a webhook
        or a queue. Pass `IncomingMessage` values to supply provider thread ids and
        receive times.

        Args:
            messages: raw messages, messages parsed by the standard library, or
                `IncomingMessage` values (their header block at least).
            batch_size: messages per transaction.

        Returns:
            The new events, in the order of the messages.

        Raises:
            StoreError: the store failed; the batches committed before stay committed, the
                failed one left no trace, so processing the rest again is safe.
            ConfigError: `batch_size` is not a positive int.
        """
        check_limit(batch_size, "batch_size")
        events: list[ReplyEvent] = []
        batch: list[IncomingMessage] = []
        outcomes: list[_Outcome] = []  # hook outcomes the next commit records
        try:
            for message in messages:
                batch.append(_incoming(message))
                if len(batch) == batch_size:
                    events += self._process_batch(batch, outcomes)
                    batch = []
            if batch:
                events += self._process_batch(batch, outcomes)
        except BaseException:
            self._record_quietly(outcomes)
            raise
        self._record(outcomes)
        return events

    def _process_batch(
        self, batch: Sequence[IncomingMessage], outcomes: list[_Outcome]
    ) -> list[ReplyEvent]:
        """Decide, commit with the previous `outcomes`, call the hooks into `outcomes`."""
        decided = self._decide_batch(batch, None)
        queued = self._commit(decided, None, outcomes)
        outcomes.clear()  # recorded by that commit: never record them twice
        outcomes.extend(self._dispatch(queued))
        return [d.event for d in decided if d.event is not None]

    def poll(
        self, source: MailboxSource, *, limit: int = 100, max_batches: int | None = None
    ) -> PollResult:
        """Fetch what is new in `source` since its saved cursor, and process it.

        Each batch is processed and then committed in one transaction together with the
        source's new cursor; hooks run after the commit. A failure of the source or the store
        stops the poll: the failed batch was not acknowledged and comes again next time.

        Args:
            source: the mailbox to read.
            limit: messages per batch.
            max_batches: stop after this many batches (default: until the source has no more).

        Returns:
            The counts of what happened.
        """
        counts = {"seen": 0, "matched": 0, "events": 0, "own": 0, "duplicates": 0, "batches": 0}
        errors: list[str] = []
        more = False
        cursor = self.store.load_cursor(source.name)
        outcomes: list[_Outcome] = []  # hook outcomes the next commit records
        while max_batches is None or counts["batches"] < max_batches:
            try:
                batch = source.fetch(cursor, limit)
                decided = self._decide_batch(batch.messages, source)
                queued = self._commit(decided, (source.name, batch.cursor), outcomes)
                outcomes.clear()  # recorded by that commit: never record them twice
            except (SourceError, StoreError) as exc:
                log.warning("poll of %s stopped: %s", source.name, exc)
                errors.append(f"{type(exc).__name__}: {exc}")
                more = False  # poll again later, not at once
                break
            except BaseException:
                self._record_quietly(outcomes)
                raise
            cursor = batch.cursor
            counts["batches"] += 1
            counts["seen"] += len(decided)
            counts["own"] += sum(d.own for d in decided)
            counts["duplicates"] += sum(d.duplicate for d in decided)
            matched = [d for d in decided if d.event is not None]
            counts["matched"] += len(matched)
            counts["events"] += len(matched)
            outcomes.extend(self._dispatch(queued))
            more = batch.more
            if not more:
                break
        if errors:
            self._record_quietly(outcomes)
        else:
            self._record(outcomes)
        return PollResult(**counts, errors=tuple(errors), more=more)

    def learn_sent(
        self, source: MailboxSource, *, limit: int = 100, max_batches: int | None = None
    ) -> LearnResult:
        """Read a Sent folder and record the Message-IDs our sends actually went out with.

        Some providers replace the Message-ID of what they send (Microsoft Graph, relays
        that rewrite it); replies then reference an id the store does not know. The copy in
        the rep's Sent folder carries the id actually used and, in the origin header that
        `stamp` added, the id we minted: that pair becomes an alias of the send. A Sent copy
        also tells the provider's thread of a send (Gmail ``threadId``, Graph
        ``conversationId``), which is recorded when the send has none, for the correlator's
        provider-thread hint. Mail the rep wrote by hand is counted as unmatched and left
        alone.

        Like `poll`, it reads from the source's saved cursor and commits each batch's
        writes together with the new cursor, so give the Sent folder a source name of its
        own. Running it again over the same mail changes nothing.

        Args:
            source: the rep's Sent folder.
            limit: messages per batch.
            max_batches: stop after this many batches (default: until the source has no more).

        Returns:
            The counts of what happened.
        """
        counts = {"learned": 0, "known": 0, "threads": 0, "unmatched": 0}
        batches = 0
        errors: list[str] = []
        cursor = self.store.load_cursor(source.name)
        while max_batches is None or batches < max_batches:
            try:
                batch = source.fetch(cursor, limit)
                aliases: dict[str, str] = {}
                updated: dict[str, SentMessage] = {}
                for incoming in batch.messages:
                    outcome, thread = self._learn(incoming, aliases, updated)
                    counts[outcome] += 1
                    counts["threads"] += thread
                with self.store.transaction() as tx:
                    for sent in updated.values():
                        tx.record_sent(sent)
                    for alias, message_id in aliases.items():
                        tx.record_alias(message_id, alias)
                    tx.save_cursor(source.name, batch.cursor)
            except (SourceError, StoreError) as exc:
                log.warning("learn_sent of %s stopped: %s", source.name, exc)
                errors.append(f"{type(exc).__name__}: {exc}")
                break
            cursor = batch.cursor
            batches += 1
            if not batch.more:
                break
        seen = counts["learned"] + counts["known"] + counts["unmatched"]
        return LearnResult(seen=seen, **counts, batches=batches, errors=tuple(errors))

    def retry_pending(self, *, limit: int = 100) -> RetryResult:
        """Deliver again the outbox entries whose hooks failed and whose retry time has come.

        Also delivers entries whose worker died between storing a decision and calling the
        hooks, once their claim (`claim_for`) ran out. Entries are claimed first
        (`Store.claim_outbox`), so workers sharing a store never deliver the same entry at
        once.

        Args:
            limit: the most entries to try in this call.

        Returns:
            How many were delivered, failed again, or were parked as dead.
        """
        outcomes: list[_Outcome] = []
        now = self._now()
        for entry in self.store.claim_outbox(now, now + self._claim_for, limit):
            try:
                event = ReplyEvent.from_json(entry.payload)
            except ParseError as exc:
                # A payload this version cannot read (written by a newer one?): park it, keep it.
                outcomes.append(
                    (entry.entry_id, "dead", f"unreadable payload: {exc}", self._now())
                )
                continue
            outcomes.append(self._call(entry.entry_id, entry.hook, event, entry.attempts))
        self._record(outcomes)
        states = [state for _, state, _, _ in outcomes]
        return RetryResult(states.count("delivered"), states.count("failed"), states.count("dead"))

    # -- internals -------------------------------------------------------------------------------

    def _now(self) -> _dt.datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ConfigError("the tracker's clock returned a naive datetime")
        return now

    def _learn(
        self, incoming: IncomingMessage, aliases: dict[str, str], updated: dict[str, SentMessage]
    ) -> tuple[str, bool]:
        """What one Sent copy teaches: ("known" | "learned" | "unmatched", thread recorded).

        New aliases go into `aliases` (actual id -> our id) and sends that gain a provider
        thread id into `updated`, for `learn_sent` to write in one transaction.
        """
        headers = parse_headers(incoming.data)
        actual = headers.message_id
        if actual is None:
            return "unmatched", False
        sent = self.store.find_sent([actual]).get(actual)
        outcome = "known"
        if sent is None:
            origin = headers.get(self._origin_header) if self._origin_header else None
            minted = normalize_msg_id(origin) if origin else None
            sent = self.store.find_sent([minted]).get(minted) if minted else None
            if sent is None or aliases.setdefault(actual, sent.message_id) != sent.message_id:
                return "unmatched", False  # not ours, or one id on two of our sends
            outcome = "learned"
        sent = updated.get(sent.message_id, sent)
        thread = incoming.provider_thread_id
        if thread is None or sent.provider_thread_id is not None:
            return outcome, False
        updated[sent.message_id] = attrs.evolve(sent, provider_thread_id=thread)
        return outcome, True

    def _plain_generator(self, domain: str) -> MessageIdGenerator:
        generator = self._plain_generators.get(domain)
        if generator is None:
            generator = self._plain_generators[domain] = MessageIdGenerator(domain)
        return generator

    def _decide_batch(
        self, batch: Sequence[IncomingMessage], source: MailboxSource | None
    ) -> list[_Decided]:
        """Work out what each message of `batch` means, without writing anything.

        The ledger is asked about the whole batch at once, the ids the new messages name are
        looked up at once (`Correlator.prefetched`), and the bodies a source that delivered
        header blocks must give are asked for at once (Rule 4): a few store calls and source
        requests per batch instead of a few per message.
        """
        parsed = [parse_headers(incoming.data) for incoming in batch]
        keys = [_ledger_key(headers) for headers in parsed]
        done = self.store.find_processed(keys)
        fresh: list[int] = []
        seen: set[str] = set()
        for i, key in enumerate(keys):
            if key not in done and key not in seen:
                seen.add(key)
                fresh.append(i)
        decided = [_Decided(key, duplicate=True) for key in keys]
        whole = {i: batch[i].data for i in fresh if batch[i].complete}
        if source is not None:
            # A report matches through the original Message-ID in its body.
            reports = [i for i in fresh if i not in whole and may_be_report(parsed[i])]
            whole.update(_fetch_bodies(source, batch, reports))
        matched: list[tuple[int, Correlation]] = []
        with self.correlator.prefetched(parsed[i] for i in fresh):
            for i in fresh:
                headers = parsed[i]
                correlation, own = self.correlator.examine(
                    whole.get(i, headers),
                    headers=headers,
                    provider_thread_id=batch[i].provider_thread_id,
                )
                if correlation is None:
                    decided[i] = _Decided(keys[i], own=own is not None)
                    continue
                matched.append((i, correlation))
                if headers.message_id and correlation.sent is not None:
                    # Tied at the commit: later messages of the batch see the tie now, as
                    # they would had each message been processed and committed in turn.
                    self.correlator.note_incoming(headers.message_id, correlation.sent)
        late = {i: c for i, c in matched if i not in whole} if source is not None else {}
        for i, correlation in matched:
            if i not in late:
                decided[i] = self._decided(
                    keys[i], correlation, parsed[i], whole.get(i, batch[i].data), batch[i]
                )
        if source is not None:
            for i, body in _fetch_bodies(source, batch, list(late)):
                # Correlated on its headers: classified on its body now.
                classification = classify(body, headers=parsed[i])
                correlation = attrs.evolve(late[i], classification=classification)
                decided[i] = self._decided(keys[i], correlation, parsed[i], body, batch[i])
        return decided

    def _decided(
        self,
        key: str,
        correlation: Correlation,
        headers: Headers,
        data: bytes,
        incoming: IncomingMessage,
    ) -> _Decided:
        """What a correlated message becomes: its event and the hooks it goes to."""
        decision = self.policy.decide(correlation, today=self._now().date())
        event = self._event(
            key,
            correlation,
            decision,
            headers=headers,
            data=data,
            received_at=incoming.received_at,
        )
        hooks = []
        if CAMPAIGN_STOP in self._hooks and event.action in (Action.STOP, Action.PAUSE):
            hooks.append(CAMPAIGN_STOP)
        if CRM_LOG in self._hooks and decision.notify_crm:
            hooks.append(CRM_LOG)
        sent = correlation.sent
        return _Decided(
            key,
            event=event,
            incoming_id=headers.message_id,
            sent_id=sent.message_id if sent is not None else None,
            hooks=tuple(hooks),
        )

    def _event(
        self,
        key: str,
        correlation: Correlation,
        decision: Decision,
        *,
        headers: Headers,
        data: bytes,
        received_at: _dt.datetime | None,
    ) -> ReplyEvent:
        c: Classification = correlation.classification
        return ReplyEvent(
            event_id=make_event_id(key, correlation.ref, c.kind),
            kind=c.kind,
            action=decision.action,
            resume_on=decision.resume_on,
            ref=correlation.ref,
            sent=correlation.sent,
            message_id=headers.message_id,
            responder=correlation.responder,
            role=correlation.role,
            method=correlation.method,
            received_at=received_at or headers.date,
            subject=headers.subject,
            bounce=c.bounce,
            body_text=_plain_text(data, c),
            reasons=(*c.reasons, f"matched by {correlation.method.value}", decision.reason),
            scope=decision.scope.value,
            account_domain=decision.account_domain,
        )

    def _commit(
        self,
        decided: Sequence[_Decided],
        cursor: tuple[str, str] | None,
        outcomes: Sequence[_Outcome] = (),
    ) -> list[tuple[int, str, ReplyEvent]]:
        """Write the ledger, incoming ties and outbox of `decided` (and the cursor) at once.

        The hook outcomes of the previous batch (`outcomes`) are recorded in the same
        transaction: one durable commit per batch instead of two.

        Returns:
            The outbox entries queued, as (entry id, hook, event), for `_dispatch`.
        """
        now = self._now()
        # Due only once this worker's claim runs out: it calls the hooks itself right after
        # the commit, and no other worker's retry should meanwhile.
        due_at = now + self._claim_for
        queued: list[tuple[int, str, ReplyEvent]] = []
        with self.store.transaction() as tx:
            _record_outcomes(tx, outcomes)
            for d in decided:
                if d.duplicate:
                    continue
                tx.mark_processed(d.key, now)
                if d.event is None:
                    continue
                if d.incoming_id and d.sent_id:
                    tx.record_incoming(d.incoming_id, d.sent_id)
                payload = d.event.to_json()
                for hook in d.hooks:
                    entry_id = tx.enqueue(d.event.event_id, hook, payload, now, due_at=due_at)
                    if entry_id is not None:
                        queued.append((entry_id, hook, d.event))
            if cursor is not None:
                tx.save_cursor(*cursor)
        return queued

    def _dispatch(self, queued: Sequence[tuple[int, str, ReplyEvent]]) -> list[_Outcome]:
        """Call the hooks of freshly queued entries; return the outcomes to record.

        The caller records them with its next commit, or with `_record` at the end. A crash
        before that re-delivers those entries later, with the same event_id (Rule 2).
        """
        return [self._call(entry_id, hook, event, 0) for entry_id, hook, event in queued]

    def _call(self, entry_id: int, hook_name: str, event: ReplyEvent, attempts: int) -> _Outcome:
        """Call one hook; return what to record, without writing it."""
        hook = self._hooks.get(hook_name)
        now = self._now()
        if hook is None:
            # The host no longer configures this hook: park the entry rather than lose it.
            return (entry_id, "dead", f"no {hook_name} hook configured", now)
        try:
            hook(event)
        except Exception as exc:  # the host's code: any failure stays in the outbox
            error = f"{type(exc).__name__}: {exc}"[:1000]
            log.warning("hook %s failed for %s: %s", hook_name, event.event_id, error)
            if attempts + 1 >= self._max_attempts:
                return (entry_id, "dead", error, now)
            delay = min(self._retry_base * 2**attempts, self._retry_cap)
            return (entry_id, "failed", error, now + delay)
        return (entry_id, "delivered", None, now)

    def _record(self, outcomes: Sequence[_Outcome]) -> None:
        if not outcomes:
            return
        with self.store.transaction() as tx:
            _record_outcomes(tx, outcomes)

    def _record_quietly(self, outcomes: Sequence[_Outcome]) -> None:
        """`_record` on the way out of a failure: a store error here must not hide that one.

        Entries left unrecorded stay pending and are delivered again once their claim runs
        out (at least once, same event_id).
        """
        try:
            self._record(outcomes)
        except StoreError as exc:
            log.warning("could not record %d hook outcomes: %s", len(outcomes), exc)


def _record_outcomes(tx: Transaction, outcomes: Sequence[_Outcome]) -> None:
    for entry_id, state, error, when in outcomes:
        if state == "delivered":
            tx.mark_delivered(entry_id, when)
        elif state == "failed":
            tx.mark_failed(entry_id, error or "", when)
        else:
            tx.mark_dead(entry_id, error or "", when)


def _set(message: email.message.Message, name: str, value: str) -> None:
    """Replace header `name`; a value that could inject a header (CR, LF, NUL) is refused.

    ``policy.default`` refuses CR and LF itself, but ``compat32`` messages accept anything.
    """
    if _UNSAFE_VALUE.search(value):
        raise ConfigError(
            f"refusing to write {name}: its value holds CR, LF or NUL: {value!r:.200}"
        )
    del message[name]
    message[name] = value


def _existing_ids(message: email.message.Message) -> list[str]:
    return [f"<{i}>" for i in parse_msg_ids(" ".join(message.get_all("References", [])))]


def _bounded_references(ids: list[str]) -> list[str]:
    unique = list(dict.fromkeys(ids))
    if len(unique) <= MAX_REFERENCES:
        return unique
    return [unique[0], *unique[-(MAX_REFERENCES - 1) :]]


def _ledger_key(headers: Headers) -> str:
    if headers.message_id:
        return headers.message_id
    digest = hashlib.sha256()
    for name, value in headers.fields:
        digest.update(f"{name}:{value}\n".encode("utf-8", "surrogateescape"))
    return "sha256:" + digest.hexdigest()


def _fetch_bodies(
    source: MailboxSource, batch: Sequence[IncomingMessage], indexes: Sequence[int]
) -> Iterator[tuple[int, bytes]]:
    """The messages at `indexes` of `batch`, whole, as (index, data): a request per chunk.

    `BODIES_PER_REQUEST` at a time through `BaseSource.fetch_bodies`, so that at most that
    many whole messages (attachments included) are held at once; a source written without
    `BaseSource` (the method is not part of the `MailboxSource` protocol) is asked one
    message at a time. Each body is cut to the `MAX_PARSE_BYTES` the tracker reads.
    """
    fetch_bodies = getattr(source, "fetch_bodies", None)
    for start in range(0, len(indexes), BODIES_PER_REQUEST):
        chunk = indexes[start : start + BODIES_PER_REQUEST]
        messages = [batch[i] for i in chunk]
        if fetch_bodies is None:
            bodies = [source.fetch_body(message) for message in messages]
        else:
            bodies = list(fetch_bodies(messages))
            if len(bodies) != len(messages):
                raise SourceError(
                    f"{source.name}: fetch_bodies gave {len(bodies)} bodies for"
                    f" {len(messages)} messages",
                    source=source.name,
                )
        for i, body in zip(chunk, bodies, strict=True):
            yield i, body[:MAX_PARSE_BYTES]


def _incoming(message: bytes | str | email.message.Message | IncomingMessage) -> IncomingMessage:
    if isinstance(message, IncomingMessage):
        return message
    data = message if isinstance(message, bytes) else _as_bytes(message)
    return IncomingMessage(data=data, source_id="process")


def _as_bytes(data: str | email.message.Message) -> bytes:
    if isinstance(data, str):
        return text_to_bytes(data)
    return data.as_bytes(policy=email.policy.compat32)


def _plain_text(data: bytes, classification: Classification) -> str | None:
    """The reply's text for the event: the body `classify` read, else read now."""
    text = classification.body_text
    if text is None:
        data = data[:MAX_PARSE_BYTES]
        try:
            # The fast reader gives the stdlib's answer or none; the bounded stdlib parser
            # is the fallback.
            text = mime.body_text(data)
            if text is None:
                message = mime.parse(data)
                text = body_text(message) if message is not None else None
        except Exception:  # never let the CRM convenience break processing
            return None
    return text[:MAX_BODY_TEXT] if text else None
