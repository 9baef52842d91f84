"""Tie an incoming message to the send it answers.

The correlator reads an incoming message's headers and finds the send (a `SentMessage` in a
`Store`) that it answers, with the evidence that decided. It never looks at who wrote the
reply to decide *whether* it matches: a reply from a colleague, from someone who was only on
Cc, or from the person a prospect forwarded the mail to matches through its headers all the
same, and `Role` says who answered.

Rule 1: own mail is never a reply. A message whose own Message-ID is one of our sends (or
        carries our signed token), whose ``From`` is one of the configured own addresses, or
        whose ``From`` is the sender of the send it matched, correlates to nothing
        (`Correlator.is_own_mail` tells the caller why it was skipped).
Rule 2: the strongest evidence wins, in this order (`MatchMethod`): a signed token in a
        referenced id; ``In-Reply-To``; ``References`` newest first; earlier incoming messages
        already tied to a send; the original Message-ID inside a bounce or complaint; the
        provider's thread id; the Outlook ``Thread-Index`` conversation GUID; and, only when
        enabled, the normalised subject plus a participant (low confidence).
Rule 3: all exact-id lookups of one message go to the store in one call; those of a whole
        batch, in one call too, inside `Correlator.prefetched`.
Rule 4: a message that references two different sends (threads merged by a client) matches
        the newest reference, and the correlation says so in its `notes`.
Rule 5: the core does no I/O of its own: the store is the only collaborator that does.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import email.message
import enum
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence

import attrs

from replytrack.classify import Classification, Kind, classify
from replytrack.dsn import may_be_report
from replytrack.errors import ConfigError
from replytrack.headers import Address, Headers, normalize_subject, parse_headers
from replytrack.msgid import MessageIdGenerator
from replytrack.store import SentMessage, Store
from replytrack.threadindex import ThreadIndex

__all__ = ["Correlation", "Correlator", "MatchMethod", "Role"]


class MatchMethod(enum.Enum):
    """Which evidence tied a message to its send, strongest first."""

    TOKEN = "token"  # noqa: S105 (a method name, not a password)
    IN_REPLY_TO = "in_reply_to"
    REFERENCES = "references"
    THREAD = "thread"
    BOUNCE_ORIGINAL = "bounce_original"
    PROVIDER_THREAD = "provider_thread"
    THREAD_INDEX = "thread_index"
    SUBJECT_PARTICIPANTS = "subject_participants"

    @property
    def low_confidence(self) -> bool:
        """True for the heuristic that may match the wrong send."""
        return self is MatchMethod.SUBJECT_PARTICIPANTS


class Role(enum.Enum):
    """Who answered, relative to the send."""

    RECIPIENT = "recipient"  # was on the send's To
    CC = "cc"  # was on the send's Cc
    OTHER = "other"  # another address: a colleague, an alias, the person it was forwarded to
    UNKNOWN = "unknown"  # a token match whose send is not in the store: who was mailed is unknown


@attrs.frozen
class Correlation:
    """A message tied to the send it answers.

    Attributes:
        ref: the host's ref of the send (from the store, else from the signed token).
        sent: the stored send, or ``None`` for a token match whose send is not in the store.
        method: the evidence that decided.
        responder: the first ``From`` address of the message, or ``None`` when it has none.
        role: the responder's role relative to the send.
        classification: what kind of message it is (reply, out-of-office, bounce ...).
        matched_id: the referenced Message-ID that matched, for the id-based methods.
        notes: remarks worth logging, such as a message referencing two different sends.
    """

    ref: str
    sent: SentMessage | None
    method: MatchMethod
    responder: Address | None
    role: Role
    classification: Classification
    matched_id: str | None = None
    notes: tuple[str, ...] = ()


@attrs.frozen
class _Hit:
    sent: SentMessage | None
    ref: str
    method: MatchMethod
    matched_id: str | None = None
    notes: tuple[str, ...] = ()


@attrs.frozen
class _Lookups:
    """What `Correlator.prefetched` looked up: the ids asked of each table, and the answers."""

    asked: set[str]
    sent: Mapping[str, SentMessage]
    asked_incoming: set[str]
    incoming: dict[str, SentMessage]  # grows by `Correlator.note_incoming`


class Correlator:
    """Find the send an incoming message answers.

    Args:
        store: where sends and earlier incoming messages are recorded.
        generator: enables token matching: a referenced id signed by this generator matches
            even when the store has lost (or never had) the send.
        own_addresses: the addresses of the mailbox owner (the rep); mail from them is never
            a reply. Compared case-insensitively, IDNA domains in ASCII.
        subject_window: enables the low-confidence subject + participant heuristic for sends
            younger than this; ``None`` (the default) leaves it off.
    """

    def __init__(
        self,
        store: Store,
        generator: MessageIdGenerator | None = None,
        *,
        own_addresses: Iterable[str | Address] = (),
        subject_window: _dt.timedelta | None = None,
    ) -> None:
        self._store = store
        self._generator = generator
        self._own = frozenset(
            a if isinstance(a, Address) else Address("", a) for a in own_addresses
        )
        self._subject_window = subject_window
        self._local = threading.local()  # the prefetched lookups of this thread, if any

    @contextlib.contextmanager
    def prefetched(self, headers: Iterable[Headers]) -> Iterator[None]:
        """Look up the ids of many messages at once, for the correlations made in the block.

        Every id the messages name (their own and the ones they reference) is looked up as a
        send in one store call, and the references of the messages that name no send as
        earlier incoming messages in a second one, instead of two calls per message;
        `examine` and `correlate` then answer from those results. A poller correlating a
        batch saves a store round trip or two per message (on PostgreSQL, a network round
        trip each). The lookups made in the block do not see ties recorded in the store
        meanwhile: a caller that ties messages as it goes tells the block with
        `note_incoming`, so that a later message answering an earlier one of the batch
        matches by THREAD. Per thread; blocks do not nest.

        Args:
            headers: the parsed headers of the messages about to be correlated.

        Raises:
            ConfigError: a block is already open in this thread.
        """
        if getattr(self._local, "lookups", None) is not None:
            raise ConfigError("prefetched() blocks do not nest")
        batch = list(headers)
        ids: dict[str, None] = {}
        for h in batch:
            if h.message_id:
                ids[h.message_id] = None
            ids.update(dict.fromkeys(h.in_reply_to))
            ids.update(dict.fromkeys(h.references))
        asked = list(ids)
        sent = self._store.find_sent(asked) if asked else {}
        # `examine` asks for earlier incoming messages (THREAD) only when none of a message's
        # references is a send, and never for its own id: only those ids are looked up.
        threads: dict[str, None] = {}
        for h in batch:
            referenced = (*h.in_reply_to, *h.references)
            if not any(mid in sent for mid in referenced):
                threads.update(dict.fromkeys(referenced))
        asked_incoming = list(threads)
        self._local.lookups = _Lookups(
            set(asked),
            sent,
            set(asked_incoming),
            dict(self._store.find_incoming(asked_incoming)) if asked_incoming else {},
        )
        try:
            yield
        finally:
            self._local.lookups = None

    def _find_sent(self, ids: list[str]) -> Mapping[str, SentMessage]:
        lookups: _Lookups | None = getattr(self._local, "lookups", None)
        if lookups is not None and lookups.asked.issuperset(ids):
            return {mid: lookups.sent[mid] for mid in ids if mid in lookups.sent}
        return self._store.find_sent(ids)

    def _find_incoming(self, ids: list[str]) -> Mapping[str, SentMessage]:
        lookups: _Lookups | None = getattr(self._local, "lookups", None)
        if lookups is None:
            return self._store.find_incoming(ids)
        found = {mid: lookups.incoming[mid] for mid in ids if mid in lookups.incoming}
        unasked = [mid for mid in ids if mid not in lookups.asked_incoming]
        if unasked:
            found.update(self._store.find_incoming(unasked))
        return found

    def note_incoming(self, message_id: str, sent: SentMessage) -> None:
        """Tell this thread's `prefetched` block that `message_id` is now tied to `sent`.

        For a caller that correlates a batch and records its ties
        (`Transaction.record_incoming`) only when the batch is written: a later message of
        the block that references `message_id` then matches by THREAD, as it would had
        each message been correlated and its tie recorded in turn (a colleague answering,
        with only ``In-Reply-To``, a reply that arrived in the same batch). Outside a block
        it does nothing: the store answers once the tie is recorded.

        Args:
            message_id: the incoming message's id, canonical (`Headers.message_id`).
            sent: the send it was tied to.
        """
        lookups: _Lookups | None = getattr(self._local, "lookups", None)
        if lookups is not None:
            lookups.asked_incoming.add(message_id)
            lookups.incoming[message_id] = sent

    def is_own_mail(self, headers: Headers) -> str | None:
        """Say why `headers` belong to our own mail, or ``None`` when they do not.

        Args:
            headers: the parsed headers of an incoming message.

        Returns:
            A short reason ("From is an own address", ...) or ``None``.
        """
        mid = headers.message_id
        return self._own_mail_reason(headers, self._find_sent([mid]) if mid else {})

    def _own_mail_reason(self, headers: Headers, found: Mapping[str, SentMessage]) -> str | None:
        """`is_own_mail`, with the store's answer for the message's own id already at hand."""
        if any(a in self._own for a in headers.from_):
            return "From is an own address"
        mid = headers.message_id
        if mid is None:
            return None
        if mid in found:
            return "Message-ID is a recorded send"
        if self._generator is not None and self._generator.verify(mid) is not None:
            return "Message-ID carries our signed token"
        return None

    def correlate(
        self,
        data: bytes | str | email.message.Message | Headers,
        *,
        headers: Headers | None = None,
        classification: Classification | None = None,
        provider_thread_id: str | None = None,
        now: _dt.datetime | None = None,
    ) -> Correlation | None:
        """Find the send `data` answers.

        Same arguments as `examine`, which also says why own mail was skipped.

        Returns:
            The correlation, or ``None`` when the message answers none of our sends or is our
            own mail.
        """
        return self.examine(
            data,
            headers=headers,
            classification=classification,
            provider_thread_id=provider_thread_id,
            now=now,
        )[0]

    def examine(
        self,
        data: bytes | str | email.message.Message | Headers,
        *,
        headers: Headers | None = None,
        classification: Classification | None = None,
        provider_thread_id: str | None = None,
        now: _dt.datetime | None = None,
    ) -> tuple[Correlation | None, str | None]:
        """Find the send `data` answers, and say why when it is our own mail.

        Args:
            data: the incoming message (raw, parsed by the stdlib, or its parsed `Headers`).
            headers: ``parse_headers(data)`` when the caller already has it.
            classification: the message's classification when the caller already has it.
                Otherwise it is computed with `classify`, only when needed: for a message
                that matched, and for one whose headers say it may be a bounce or report
                (`dsn.may_be_report`). A `Headers` input counts as a human reply, since its
                body is not available.
            provider_thread_id: the provider's thread id of the message (Gmail thread id,
                Graph conversation id), when the source supplies one.
            now: the reference time for the subject heuristic's window (default: the
                message's Date, else the current time).

        Returns:
            ``(correlation, None)``; ``(None, None)`` when the message answers none of our
            sends; ``(None, reason)`` when it is our own mail (see `is_own_mail`).
        """
        if headers is None:
            headers = data if isinstance(data, Headers) else parse_headers(data)
        own_id = headers.message_id
        referenced = list(dict.fromkeys((*headers.in_reply_to, *reversed(headers.references))))
        # Rule 3: the message's own id (Rule 1) and every referenced id in one store call.
        lookup = [own_id, *referenced] if own_id else referenced
        found = self._find_sent(lookup) if lookup else {}
        own = self._own_mail_reason(headers, found)
        if own is not None:
            return None, own

        def classified() -> Classification:
            if isinstance(data, Headers):
                return Classification(kind=Kind.REPLY)
            return classify(data, headers=headers)

        hit = self._by_ids(headers, referenced, found)
        if hit is None:
            # Classifying reads the body, by far the dearest step: only a message that may be
            # a report can match through a report's original Message-ID.
            raw = data if isinstance(data, bytes) else None
            if (
                classification is None
                and not isinstance(data, Headers)
                and may_be_report(headers, raw)
            ):
                classification = classified()
            hit = (
                (classification and self._by_bounce_original(classification))
                or self._by_provider_thread(provider_thread_id)
                or self._by_thread_index(headers)
                or self._by_subject(headers, now)
            )
        if hit is None:
            return None, None
        responder = headers.from_[0] if headers.from_ else None
        if hit.sent is not None and responder == Address("", hit.sent.sender):
            # Rule 1: the rep who sent it, writing in the thread (a follow-up from another
            # client, a copy synced into the inbox), even when own_addresses was not set.
            return None, "From is the sender of the send it answers"
        if classification is None:
            classification = classified()
        correlation = Correlation(
            ref=hit.ref,
            sent=hit.sent,
            method=hit.method,
            responder=responder,
            role=_role(responder, hit.sent),
            classification=classification,
            matched_id=hit.matched_id,
            notes=hit.notes,
        )
        return correlation, None

    # -- the methods, strongest first ---------------------------------------------------------

    def _by_ids(
        self, headers: Headers, ids: list[str], found: Mapping[str, SentMessage]
    ) -> _Hit | None:
        """TOKEN, IN_REPLY_TO, REFERENCES (newest first), then THREAD.

        Args:
            headers: the message's headers.
            ids: the referenced ids, In-Reply-To first, then References newest first.
            found: the store's sends for those ids.
        """
        if not ids:
            return None
        in_reply_to = headers.in_reply_to
        if self._generator is not None:
            for mid in ids:
                token = self._generator.verify(mid)
                if token is not None:
                    sent = found.get(mid)
                    return _Hit(sent, sent.ref if sent else token.ref, MatchMethod.TOKEN, mid)
        found = {mid: found[mid] for mid in ids if mid in found}
        if found:
            matched = [mid for mid in ids if mid in found]
            first = matched[0]
            sent = found[first]
            method = MatchMethod.IN_REPLY_TO if first in in_reply_to else MatchMethod.REFERENCES
            others = {found[mid].message_id for mid in matched} - {sent.message_id}
            notes = (
                (f"references {len(others) + 1} different sends; matched the newest",)
                if others
                else ()
            )
            return _Hit(sent, sent.ref, method, first, notes)
        earlier = self._find_incoming(ids)
        for mid in ids:
            if mid in earlier:
                sent = earlier[mid]
                return _Hit(sent, sent.ref, MatchMethod.THREAD, mid)
        return None

    def _by_bounce_original(self, classification: Classification) -> _Hit | None:
        original = classification.original_message_id
        if original is None:
            return None
        sent = self._store.find_sent([original]).get(original)
        if sent is not None:
            return _Hit(sent, sent.ref, MatchMethod.BOUNCE_ORIGINAL, original)
        token = self._generator.verify(original) if self._generator is not None else None
        if token is not None:
            return _Hit(None, token.ref, MatchMethod.BOUNCE_ORIGINAL, original)
        return None

    def _by_provider_thread(self, thread_id: str | None) -> _Hit | None:
        if not thread_id:
            return None
        sent = self._store.find_sent_by_provider_thread(thread_id)
        return None if sent is None else _Hit(sent, sent.ref, MatchMethod.PROVIDER_THREAD)

    def _by_thread_index(self, headers: Headers) -> _Hit | None:
        value = headers.get("thread-index")
        index = ThreadIndex.decode(value) if value else None
        if index is None:
            return None
        sent = self._store.find_sent_by_thread_index(index.guid)
        return None if sent is None else _Hit(sent, sent.ref, MatchMethod.THREAD_INDEX)

    def _by_subject(self, headers: Headers, now: _dt.datetime | None) -> _Hit | None:
        if self._subject_window is None or not headers.subject or not headers.from_:
            return None
        subject = normalize_subject(headers.subject)
        if not subject:
            return None
        reference = now or headers.date or _dt.datetime.now(_dt.timezone.utc)
        participants = [a.addr for a in (*headers.from_, *headers.to, *headers.cc)]
        candidates = self._store.find_sent_by_subject(
            subject, participants, reference - self._subject_window
        )
        if not candidates:
            return None
        sent = candidates[0]
        notes: tuple[str, ...] = ("matched by subject and participant only: low confidence",)
        if len(candidates) > 1:
            notes += (f"{len(candidates)} sends share this subject; matched the newest",)
        return _Hit(sent, sent.ref, MatchMethod.SUBJECT_PARTICIPANTS, None, notes)


def _role(responder: Address | None, sent: SentMessage | None) -> Role:
    if sent is None:
        return Role.UNKNOWN
    if responder is None:
        return Role.OTHER
    if _contains(sent.to, responder):
        return Role.RECIPIENT
    if _contains(sent.cc, responder):
        return Role.CC
    return Role.OTHER


def _contains(addresses: Sequence[str], who: Address) -> bool:
    return any(Address("", a) == who for a in addresses)
