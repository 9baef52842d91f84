"""Gmail through the Gmail API (google-api-python-client), read-only.

Install the extra: ``pip install 'replytrack[gmail]'``. The source needs only the
``gmail.readonly`` scope (``gmail.metadata`` is not enough: `fetch_body` reads the raw
message). It follows Google's synchronisation guide (developers.google.com/gmail/api/guides/
sync): one full scan with ``users.messages.list``, then ``users.history.list`` from a
``historyId``. A cursor is ``{"user": ADDRESS, "hid": HISTORY_ID, ...}`` plus, while the full
scan runs, ``"scan": {"ids": [...], "page": TOKEN, "since": MICROS}``, or, once it is over,
``"part": N``:

Rule 1: **the mark comes first.** A cursor is made by reading the mailbox's current
        ``historyId`` (``users.getProfile``) and only then listing the first page of
        ``users.messages.list``; the scan delivers what the list holds, then the history from
        the mark delivers everything added after it (base Rule 1). Mail that arrives between
        the two calls is delivered twice, once by each (base Rule 2).
Rule 2: **the scan is resumable and bounded.** ``messages.list`` returns newest first and
        holds no dates, so the scan lists up to `scan_buffer` ids (a *segment*), keeps them in
        the cursor oldest first, and fetches them batch by batch; the list's page token for
        the rest is kept beside them. A scan of up to `scan_buffer` messages (a rescan window
        of a week, a ``since`` of a few days) is delivered strictly oldest first; a longer one
        comes segment by segment, each oldest first but **the newest segment first**: a
        bounded deviation from base Rule 4, traded for a cursor that never exceeds
        `scan_buffer` ids (about 40 KB at the default 2000). ``since`` is sent as
        ``after:EPOCH`` one day early (Gmail may read ``after:`` at day granularity, in its
        own time zone), and messages received before ``since`` are then dropped by their
        ``internalDate``. A page token Gmail refuses (HTTP 400/404) rescans (base Rule 3). A
        message that a deletion moves across a page boundary while the scan pages may be
        listed twice (base Rule 2).
Rule 3: **then the history.** ``history.list(startHistoryId=hid, historyTypes=messageAdded)``
        is read page by page; the cursor moves record by record (``part`` counts the messages
        of the next record already delivered, so a record is split at ``limit`` without loss)
        and, once caught up, to the response's ``historyId``, past records of other types.
        Records at or below ``hid`` are ignored, whichever way Gmail reads "after". A 404
        (Gmail keeps history for at least a week, often longer) raises `InvalidCursor`: the
        base class rescans `rescan_window` by date, so keep the window longer than the
        longest outage. A cursor made for another mailbox (its ``user`` is not this account's
        address) is invalid too: history ids are per mailbox, and another mailbox's could
        silently skip mail.
Rule 4: **own mail is skipped.** Messages labelled ``SENT`` or ``DRAFT`` are the account's own
        (DESIGN.md, "Own mail is never a reply"); that includes ``SENT`` + ``INBOX``, a
        message the rep sent to themselves or to a group they are in: Gmail labels ``SENT``
        only mail sent from this account, so it never answers the rep. The scan excludes them
        in its query (``-in:sent -in:drafts``), the history by the labels it reports, both
        without a ``messages.get``; labels read by ``messages.get`` are checked again. Spam and
        trash are skipped unless `include_spam_trash` (Gmail's own default for
        ``messages.list``), and `label_ids`, when given, must all be on a message.
Rule 5: **header blocks first.** A message is read with ``messages.get(format="metadata",
        metadataHeaders=TRACKING_FIELDS)`` and delivered as an RFC 5322 header block rebuilt
        from ``payload.headers`` (CRLF, in Gmail's order, values folded where they hold line
        breaks, non-ASCII as UTF-8 per RFC 6532, ended by an empty line), ``complete=False``;
        `fetch_body` reads ``format="raw"``. ``source_id`` is the Gmail message id,
        ``provider_thread_id`` the ``threadId``, ``labels`` the ``labelIds``, ``received_at``
        the ``internalDate``; ``folder`` is ``None``, since Gmail has labels, not folders.
Rule 6: **in batches.** `fetch` reads header blocks, and `fetch_bodies` bodies (a poll asks
        for up to 20 at once), by batch requests (developers.google.com/gmail/api/guides/batch;
        the client library's ``new_batch_http_request``, on the service's own authorised
        http) of up to 20 ``messages.get`` calls each: one round trip instead of 20, for the
        same quota (5 units per call). Work per fetch is bounded: at most `limit`
        ``messages.get`` calls, counted one per message whether batched or not, and 10 pages
        of history, so a `Batch` may hold fewer than `limit` messages, with ``more`` True, when
        some were deleted or not wanted; which messages a fetch reads, in which order, and the
        cursor it returns do not depend on batching. A part of a batch fails on its own (a 429
        or 404 inside a 200), and the library retries neither a batch nor its parts (but a 401
        part, once, with refreshed credentials), so whatever a batch does not deliver (a
        failed part, a missing or unusable one, or the batch request failing as a whole) is
        read again with a ``messages.get`` of its own, which has the retries and the errors of
        Rule 7: a batch saves round trips and otherwise behaves as one request per message. A
        message of over 512 KiB (the ``sizeEstimate`` read with its header block) is left out
        of the body batches and read on its own: parsing a batch response, the library holds
        several copies of it, and 20 large messages would take memory that one at a time does
        not.
Rule 7: **errors.** A message deleted between its listing and its ``messages.get`` (404) is
        skipped; one deleted before its body is read is a `SourceError` of `fetch_body` (and
        of `fetch_bodies`, batch or not). Every other failure (``HttpError`` 429, 5xx, 401, a
        socket error) surfaces as `SourceError` with the cause chained (base Rule 6), after
        `num_retries` retries that the client library makes itself, with exponential backoff,
        on 429, 5xx, rate-limit 403 and connection errors. Nothing is ever modified (base
        Rule 5).

Quota (per user: 250 units/s; per project: 1.2 M units/min): ``getProfile`` 1, ``history.list``
2, ``messages.list`` 5, ``messages.get`` 5 units, in a batch or not. A batch of 20 spends 100
units at once, so a long scan on a fast link may meet the per-user rate: the parts Gmail then
answers with 429 are read again one by one, with the library's backoff (Rule 6). `wait` probes
``getProfile`` (1 unit) every `wait_interval` = 5 s rather than every second: a platform
watching 10 000 mailboxes at 1 s would spend half a project's quota on probes alone. Hosts
that need faster wake-ups register ``users.watch`` (Cloud Pub/Sub) and call `BaseSource.wake`
from the push handler.

Limits: a reply that the rep trashes, or that Gmail files as spam, before the source reads it
is not delivered unless `include_spam_trash`; one moved out of spam later is not delivered
either (a label change is not a ``messageAdded``).
"""

from __future__ import annotations

import base64
import collections
import datetime as _dt
import logging
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final

from replytrack.errors import ConfigError, SourceError
from replytrack.headers import TRACKING_FIELDS
from replytrack.sources.base import (
    DEFAULT_RESCAN_WINDOW,
    BaseSource,
    Batch,
    IncomingMessage,
    InvalidCursor,
    cursor_int,
    cursor_optional_int,
    cursor_str,
)
from replytrack.store.base import from_micros, to_micros

try:
    from googleapiclient.errors import HttpError  # type: ignore[import-untyped]
except ImportError as _exc:  # the optional extra is missing
    raise ImportError(
        "replytrack.sources.gmail needs google-api-python-client: pip install 'replytrack[gmail]'"
    ) from _exc

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["GmailSource"]

log: logging.Logger = logging.getLogger("replytrack.sources.gmail")

#: Labels of the account's own mail (Rule 4).
_OWN_LABELS: Final = frozenset({"SENT", "DRAFT"})
#: Labels skipped unless ``include_spam_trash`` (Rule 4).
_JUNK_LABELS: Final = frozenset({"SPAM", "TRASH"})
#: The scan's query: own mail costs no ``messages.get`` (Rule 4).
_OWN_QUERY: Final = "-in:sent -in:drafts"
#: The most ids ``messages.list`` and records ``history.list`` return per page.
_PAGE: Final = 500
#: History pages read by one fetch at most, so a week of a busy rep's sends is bounded work.
_HISTORY_PAGES: Final = 10
#: ``messages.get`` calls per batch request (Rule 6). Gmail takes up to 100 but advises small
#: batches (larger ones draw 429s part by part, and every part of a batch of whole messages
#: is held in memory at once); 20 is also the tracker's ``BODIES_PER_REQUEST``, so each chunk
#: of bodies a poll asks for is one batch.
_BATCH: Final = 20
#: Messages larger than this (Gmail's ``sizeEstimate``) are read on their own, not in a batch
#: (Rule 6): parsing a batch response, the client library holds about eight copies of what it
#: carries (the response as bytes and as text, the MIME parts, each part again as bytes, the
#: JSON), where a single response is held about once.
_BATCH_MESSAGE_BYTES: Final = 512 * 1024
#: How much earlier than ``since`` the scan's ``after:`` reaches (Rule 2).
_AFTER_SLACK: Final = _dt.timedelta(days=1)
#: Gmail history ids are unsigned 64-bit decimals, sent as JSON strings.
_HISTORY_ID: Final = re.compile(r"[0-9]{1,20}")
#: An RFC 5322 field name: printable ASCII but the colon (section 3.6.8).
_FIELD_NAME: Final = re.compile(r"[!-9;-~]+")
_LINE_BREAK: Final = re.compile(r"\r\n|\r|\n")
_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def _status(exc: Exception) -> int | None:
    """The HTTP status of a client library `HttpError`."""
    status = getattr(getattr(exc, "resp", None), "status", None)
    try:
        return int(status) if status is not None else None
    except (TypeError, ValueError):
        return None


def _history_id(value: object, what: str) -> int:
    """A history id sent by Gmail, or kept in a cursor, as an int."""
    if isinstance(value, str) and _HISTORY_ID.fullmatch(value):
        return int(value)
    raise InvalidCursor(f"{what} is not a history id: {value!r:.80}")


def _str_list(value: object, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SourceError(f"unexpected Gmail API response: {what} is {value!r:.200}")
    return value


def _fold(value: str) -> str:
    """A header value safe to write on a line of its own: breaks become folds (RFC 5322 2.2.3).

    Gmail sends values unfolded, but a line break inside one must not end the header block
    (an empty line) or start a line that is not a continuation.
    """
    if "\r" not in value and "\n" not in value:
        return value
    first, *rest = _LINE_BREAK.split(value)
    # Blank lines are dropped: one would end the header block.
    folded = [line if line[:1] in (" ", "\t") else " " + line for line in rest if line.strip()]
    return "\r\n".join([first, *folded])


def _header_block(headers: Iterable[tuple[str, str]]) -> bytes:
    """Rebuild a raw header block from the ``payload.headers`` of a Gmail message (Rule 5).

    Args:
        headers: (name, value) pairs, in the message's order. Names that are not RFC 5322
            field names are dropped.

    Returns:
        The fields as ``Name: value`` lines with CRLF, UTF-8 encoded (RFC 6532), followed by
        the empty line that ends a header block.
    """
    lines = [
        f"{name}: {_fold(value)}\r\n" for name, value in headers if _FIELD_NAME.fullmatch(name)
    ]
    # A lone surrogate can come from JSON ("\ud800"); it is not text, so it becomes U+FFFD.
    return ("".join(lines) + "\r\n").encode("utf-8", "replace")


def _headers(payload: object) -> list[tuple[str, str]]:
    if payload is None:
        return []
    fields = payload.get("headers") if isinstance(payload, dict) else None
    if fields is None:
        return []
    if not isinstance(fields, list):
        raise SourceError(f"unexpected Gmail API response: payload.headers is {fields!r:.200}")
    out: list[tuple[str, str]] = []
    for field in fields:
        name = field.get("name") if isinstance(field, dict) else None
        value = field.get("value", "") if isinstance(field, dict) else None
        if not isinstance(name, str) or not isinstance(value, str):
            raise SourceError(f"unexpected Gmail API response: a header is {field!r:.200}")
        out.append((name, value))
    return out


def _raw(body: object) -> bytes:
    """The whole message in a ``messages.get(format="raw")`` response (Rule 5).

    Raises:
        SourceError: the response holds no ``raw`` string.
        ValueError: ``raw`` is not base64url.
    """
    raw = body.get("raw") if isinstance(body, dict) else None
    if not isinstance(raw, str):
        raise SourceError(f"unexpected Gmail API response: raw is {raw!r:.80}")
    # base64url (RFC 4648 section 5); Gmail may leave out the padding.
    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))


def _internal_date(value: object) -> _dt.datetime | None:
    # "internalDate": "1700000000000", epoch milliseconds as a string.
    if value is None:
        return None
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        try:
            return _EPOCH + _dt.timedelta(milliseconds=int(value))
        except (ValueError, OverflowError):
            pass
    raise SourceError(f"unexpected Gmail API response: internalDate is {value!r:.80}")


class GmailSource(BaseSource):
    """A Gmail mailbox through the Gmail API; see the module's rules.

    Args:
        service: a ``googleapiclient.discovery.Resource`` for Gmail v1, as hosts already
            build it (``build("gmail", "v1", credentials=...)``). The host keeps owning it:
            `close` does not close it.
        credentials: instead of `service`, google-auth credentials (``gmail.readonly`` scope);
            the source then builds the service itself, from the discovery document bundled
            with the client library (no network), and closes it on `close`.
        user_id: the mailbox: ``"me"`` (the credentials' user) or an address the credentials
            may read (domain-wide delegation).
        name: the source's name (the cursor key in the store); default ``"gmail:USER_ID"``.
            A host that watches several mailboxes, each as ``"me"``, must give each its own.
        label_ids: read only messages that carry every one of these label ids (``("INBOX",)``:
            the inbox only); default: all mail but own mail, spam and trash.
        include_spam_trash: also read spam and trash.
        num_retries: retries of a request on 429, 5xx and connection errors, with the client
            library's exponential backoff; 0 to fail at once.
        scan_buffer: the most message ids a cursor holds during a full scan (Rule 2).
        rescan_window: how far back an invalid cursor rescans.
        clock: the current aware time, for rescans.

    Raises:
        ConfigError: neither or both of `service` and `credentials` are given, or an argument
            is malformed.
    """

    kind = "gmail"
    wait_interval: ClassVar[float] = 5.0

    def __init__(
        self,
        service: Any = None,
        *,
        credentials: Any = None,
        user_id: str = "me",
        name: str | None = None,
        label_ids: Iterable[str] = (),
        include_spam_trash: bool = False,
        num_retries: int = 3,
        scan_buffer: int = 2000,
        rescan_window: _dt.timedelta = DEFAULT_RESCAN_WINDOW,
        clock: Callable[[], _dt.datetime] | None = None,
    ) -> None:
        if not isinstance(user_id, str) or not user_id.strip():
            raise ConfigError(f"user_id must be a non-empty str, got {user_id!r}")
        labels = () if isinstance(label_ids, str) else tuple(label_ids)
        if isinstance(label_ids, str) or not all(isinstance(v, str) and v for v in labels):
            raise ConfigError(f"label_ids must be a collection of label ids, got {label_ids!r}")
        if not isinstance(include_spam_trash, bool):
            raise ConfigError(f"include_spam_trash must be a bool, got {include_spam_trash!r}")
        if isinstance(num_retries, bool) or not isinstance(num_retries, int) or num_retries < 0:
            raise ConfigError(f"num_retries must be an int >= 0, got {num_retries!r}")
        if isinstance(scan_buffer, bool) or not isinstance(scan_buffer, int) or scan_buffer < 1:
            raise ConfigError(f"scan_buffer must be a positive int, got {scan_buffer!r}")
        if (service is None) == (credentials is None):
            raise ConfigError("GmailSource takes a Gmail API service or credentials (one of them)")
        super().__init__(
            f"gmail:{user_id}" if name is None else name,
            rescan_window=rescan_window,
            clock=clock,
        )
        self._owns_service = service is None
        if service is None:
            service = _build(credentials)
        if not callable(getattr(service, "users", None)):
            raise ConfigError(
                "service must be a Gmail API Resource: build('gmail', 'v1', credentials=...)"
            )
        self._service: Any = service
        self._user_id = user_id
        self._label_ids = labels
        self._include_spam_trash = include_spam_trash
        self._num_retries = num_retries
        self._scan_buffer = scan_buffer
        # The account's address, learnt from the first users.getProfile (Rule 3).
        self._email: str | None = None
        # The sizeEstimate of the messages the last fetch delivered (Rule 6).
        self._sizes: dict[str, int] = {}

    @property
    def user_id(self) -> str:
        """The mailbox read: ``"me"`` or an address."""
        return self._user_id

    # -- the API, Any kept inside --------------------------------------------------------------

    def _call(self, request: Any) -> dict[str, Any]:
        """Execute one API request; the JSON object it returns."""
        body = request.execute(num_retries=self._num_retries)
        if not isinstance(body, dict):
            raise SourceError(f"unexpected Gmail API response: {body!r:.200}")
        return body

    def _users(self) -> Any:
        return self._service.users()

    def _messages(self) -> Any:
        return self._service.users().messages()

    def _profile(self) -> tuple[str, int]:
        """The account's address and current history id (``users.getProfile``, 1 unit)."""
        body = self._call(self._users().getProfile(userId=self._user_id))
        email = body.get("emailAddress")
        if not isinstance(email, str) or not email:
            raise SourceError(f"unexpected Gmail API response: emailAddress is {email!r:.80}")
        history_id = _response_history_id(body.get("historyId"))
        self._email = email
        return email, history_id

    def _wanted(self, labels: Iterable[str]) -> bool:
        """Whether a message with these labels is delivered (Rule 4)."""
        present = set(labels)
        if present & _OWN_LABELS:
            return False
        if not self._include_spam_trash and present & _JUNK_LABELS:
            return False
        return all(label in present for label in self._label_ids)

    def _list(self, since: _dt.datetime | None, page: str | None) -> tuple[list[str], str | None]:
        """List the next segment of the scan (Rule 2).

        Returns:
            Up to `scan_buffer` ids, oldest first, and the page token of the rest (``None``:
            the list is over).

        Raises:
            InvalidCursor: Gmail refused the page token of a cursor.
        """
        query = _OWN_QUERY
        if since is not None:
            after = max(0, int((since - _AFTER_SLACK - _EPOCH).total_seconds()))
            query += f" after:{after}"
        found: dict[str, None] = {}  # newest first, without the repeats of shifted pages
        while len(found) < self._scan_buffer:
            params: dict[str, Any] = {
                "userId": self._user_id,
                "q": query,
                "maxResults": min(_PAGE, self._scan_buffer - len(found)),
                "includeSpamTrash": self._include_spam_trash,
            }
            if self._label_ids:
                params["labelIds"] = list(self._label_ids)
            if page is not None:
                params["pageToken"] = page
            try:
                body = self._call(self._messages().list(**params))
            except HttpError as exc:
                if page is not None and _status(exc) in (400, 404):
                    raise InvalidCursor(f"Gmail refused the scan's page token: {exc}") from exc
                raise
            # An empty result has no "messages" at all, only "resultSizeEstimate": 0.
            items = body.get("messages") or []
            if not isinstance(items, list):
                raise SourceError(f"unexpected Gmail API response: messages is {items!r:.200}")
            for item in items:
                message_id = item.get("id") if isinstance(item, dict) else None
                if not isinstance(message_id, str) or not message_id:
                    raise SourceError(f"unexpected Gmail API response: a message is {item!r:.80}")
                found[message_id] = None
            token = body.get("nextPageToken")
            page = token if isinstance(token, str) and token else None
            if page is None:
                break
        return list(reversed(found)), page

    def _metadata_request(self, message_id: str) -> Any:
        return self._messages().get(
            userId=self._user_id,
            id=message_id,
            format="metadata",
            metadataHeaders=list(TRACKING_FIELDS),
        )

    def _get_many(self, message_ids: Sequence[str]) -> list[IncomingMessage | None]:
        """`_get` of each of `message_ids`, in order, `_BATCH` to a batch request (Rule 6)."""
        out: list[IncomingMessage | None] = []
        for start in range(0, len(message_ids), _BATCH):
            chunk = message_ids[start : start + _BATCH]
            answers: Sequence[dict[str, Any] | None] = [None] * len(chunk)
            if len(chunk) > 1:  # a batch of one would be one request too, without retries
                requests = [(i, self._metadata_request(i)) for i in chunk]
                answers = self._batch(requests, "header blocks")
            out += [self._get(i, answer) for i, answer in zip(chunk, answers, strict=True)]
        return out

    def _get(
        self, message_id: str, answer: dict[str, Any] | None = None
    ) -> IncomingMessage | None:
        """Read one message's header block; ``None`` when it is gone or not wanted (Rule 5).

        Args:
            message_id: the message.
            answer: a batch's response to the same request (`_get_many`), if it gave one;
                without one, or with one that is unusable, the message is read on its own.
        """
        if answer is not None:
            try:
                return self._message(answer, message_id)
            except SourceError as exc:
                log.info("%s: a batch part is unusable, read on its own: %s", self.name, exc)
        try:
            body = self._call(self._metadata_request(message_id))
        except HttpError as exc:
            if _status(exc) == 404:
                return None  # deleted since it was listed (Rule 7)
            raise
        return self._message(body, message_id)

    def _message(self, body: Mapping[str, Any], message_id: str) -> IncomingMessage | None:
        labels = _str_list(body.get("labelIds"), "labelIds")
        if not self._wanted(labels):
            return None  # its labels changed since it was listed (Rule 4)
        size = body.get("sizeEstimate")
        if isinstance(size, int) and not isinstance(size, bool):
            self._sizes[message_id] = size
        thread_id = body.get("threadId")
        return IncomingMessage(
            _header_block(_headers(body.get("payload"))),
            message_id,
            provider_thread_id=thread_id if isinstance(thread_id, str) and thread_id else None,
            labels=labels,
            received_at=_internal_date(body.get("internalDate")),
            complete=False,
        )

    # -- cursors -------------------------------------------------------------------------------

    def _scan_cursor(
        self,
        user: str,
        mark: int,
        since: _dt.datetime | None,
        ids: list[str],
        page: str | None,
    ) -> str:
        if not ids and page is None:
            return self._history_cursor(user, mark, 0)  # nothing left to scan
        scan = {"ids": ids, "page": page, "since": None if since is None else to_micros(since)}
        return self._dump_cursor({"user": user, "hid": str(mark), "scan": scan})

    def _history_cursor(self, user: str, history_id: int, part: int) -> str:
        return self._dump_cursor({"user": user, "hid": str(history_id), "part": part})

    def _initial_cursor(self, since: _dt.datetime | None) -> str:
        user, mark = self._profile()  # the mark, before the list (Rule 1)
        ids, page = self._list(since, None)
        return self._scan_cursor(user, mark, since, ids, page)

    # -- fetching ------------------------------------------------------------------------------

    def _fetch(self, cursor: str, limit: int) -> Batch:
        self._sizes.clear()  # those of the batch before: its bodies were asked for already
        state = self._load_cursor(cursor)
        user = cursor_str(state, "user")
        history_id = _history_id(state.get("hid"), "cursor field 'hid'")
        scan = state.get("scan")
        email = self._email if self._email is not None else self._profile()[0]
        if user != email:
            raise InvalidCursor(f"a cursor of another mailbox: {user!r:.80}")
        out: list[IncomingMessage] = []
        budget = limit  # messages.get calls, so that work per fetch is bounded
        if scan is not None:
            if not isinstance(scan, dict):
                raise InvalidCursor(f"cursor field 'scan' is not an object: {scan!r:.80}")
            since_micros = cursor_optional_int(scan, "since")
            since = None if since_micros is None else from_micros(since_micros)
            ids = scan.get("ids")
            if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
                raise InvalidCursor(f"cursor field 'ids' is not a list of ids: {ids!r:.80}")
            page = cursor_str(scan, "page")
            while budget > 0 and (ids or page is not None):
                if not ids:
                    ids, page = self._list(since, page)  # the next, older, segment (Rule 2)
                    if not ids:
                        budget -= 1  # a run of empty pages is bounded work too
                    continue
                # The ids the loop would read one by one, at most `budget`, read in batches.
                taken, ids = ids[:budget], ids[budget:]
                budget -= len(taken)
                fetched = self._get_many(taken)
                out += [m for m in fetched if m is not None and not _before(m, since)]
            if ids or page is not None:
                cursor = self._scan_cursor(user, history_id, since, ids, page)
                return Batch(tuple(out), cursor, more=True)
            if budget == 0:  # the scan is over; the history is read by the next fetch
                return Batch(tuple(out), self._history_cursor(user, history_id, 0), more=True)
            part = 0
        else:
            part = cursor_int(state, "part") if "part" in state else 0
        wanted: list[str] = []
        history_id, part, more = self._history(history_id, part, budget, wanted)
        out += [m for m in self._get_many(wanted) if m is not None]
        return Batch(tuple(out), self._history_cursor(user, history_id, part), more)

    def _history(
        self, start: int, part: int, budget: int, wanted: list[str]
    ) -> tuple[int, int, bool]:
        """Find what was added after history id `start` (Rule 3): the ids to read, in order.

        The reads themselves are the caller's, in batches (Rule 6): what is read does not
        depend on what the reads return, only the calls count (one per id, gone or not).

        Args:
            start: the last history record handled.
            part: messages of the next record already delivered.
            budget: the most ``messages.get`` calls to make (ids to add to `wanted`).
            wanted: where the ids to read go.

        Returns:
            The new (history id, part) position, and whether there may be more.

        Raises:
            InvalidCursor: Gmail no longer has history from `start` (404).
        """
        done, skip = start, part  # records up to `done` handled, and `skip` of the next one
        page: str | None = None
        for _ in range(_HISTORY_PAGES):
            params: dict[str, Any] = {
                "userId": self._user_id,
                "startHistoryId": str(start),
                "historyTypes": ["messageAdded"],
                "maxResults": _PAGE,
            }
            if page is not None:
                params["pageToken"] = page
            try:
                body = self._call(self._users().history().list(**params))
            except HttpError as exc:
                if _status(exc) == 404:
                    raise InvalidCursor(
                        f"Gmail no longer has history from {start} (it keeps a week or more)"
                    ) from exc
                raise
            records = body.get("history") or []
            if not isinstance(records, list):
                raise SourceError(f"unexpected Gmail API response: history is {records!r:.200}")
            for record in records:
                if not isinstance(record, dict):
                    raise SourceError(f"unexpected Gmail API response: a record is {record!r:.80}")
                record_id = _response_history_id(record.get("id"))
                if record_id <= done:
                    continue  # handled already (a "startHistoryId" read inclusively)
                added = record.get("messagesAdded") or []
                if not isinstance(added, list):
                    raise SourceError(f"unexpected Gmail API response: {added!r:.200}")
                for index in range(skip, len(added)):
                    if budget == 0:
                        return done, index, True
                    message_id = self._to_read(added[index])
                    if message_id is not None:
                        wanted.append(message_id)
                        budget -= 1
                done, skip = record_id, 0
            token = body.get("nextPageToken")
            page = token if isinstance(token, str) and token else None
            if page is None:
                # Caught up: move to the mailbox's history id, past records of other types.
                return max(done, _response_history_id(body.get("historyId"))), 0, False
        return done, skip, True

    def _to_read(self, entry: object) -> str | None:
        """The message of a ``messagesAdded`` entry to read; ``None``: own mail, not read."""
        message = entry.get("message") if isinstance(entry, dict) else None
        message_id = message.get("id") if isinstance(message, dict) else None
        if not isinstance(message, dict) or not isinstance(message_id, str) or not message_id:
            raise SourceError(f"unexpected Gmail API response: messagesAdded {entry!r:.200}")
        labels = message.get("labelIds")
        # Own mail needs no messages.get (Rule 4); without labels, the get's labels decide.
        if labels is not None and not self._wanted(_str_list(labels, "labelIds")):
            return None
        return message_id

    def _raw_request(self, message: IncomingMessage) -> Any:
        return self._messages().get(userId=self._user_id, id=message.source_id, format="raw")

    def _fetch_body(self, message: IncomingMessage) -> bytes:
        return self._body(message)

    def _body(self, message: IncomingMessage, answer: dict[str, Any] | None = None) -> bytes:
        """Read one message whole; from `answer`, a batch's response, when it is usable."""
        if answer is not None:
            try:
                return _raw(answer)
            except (SourceError, ValueError) as exc:
                log.info("%s: a batch part is unusable, read on its own: %s", self.name, exc)
        return _raw(self._call(self._raw_request(message)))

    def _fetch_bodies(self, messages: Sequence[IncomingMessage]) -> list[bytes]:
        # Rule 6: a batch request per `_BATCH` messages, for those not too large; whatever it
        # does not deliver is read on its own, with the retries and errors of `fetch_body`.
        bodies: list[bytes] = []
        for start in range(0, len(messages), _BATCH):
            chunk = messages[start : start + _BATCH]
            small = [
                i
                for i, message in enumerate(chunk)
                if self._sizes.get(message.source_id, 0) <= _BATCH_MESSAGE_BYTES
            ]
            answers: list[dict[str, Any] | None] = [None] * len(chunk)
            if len(small) > 1:  # a batch of one would be one request too, without retries
                requests = [(chunk[i].source_id, self._raw_request(chunk[i])) for i in small]
                for i, answer in zip(small, self._batch(requests, "bodies"), strict=True):
                    answers[i] = answer
            bodies += [self._body(m, answer) for m, answer in zip(chunk, answers, strict=True)]
        return bodies

    def _batch(
        self, requests: Sequence[tuple[str, Any]], what: str
    ) -> list[dict[str, Any] | None]:
        """Send `requests`, (message id, ``messages.get`` request) pairs, as one batch (Rule 6).

        Args:
            requests: at most `_BATCH` of them.
            what: what they read, for the log.

        Returns:
            Each request's JSON response, in order; ``None`` where the batch did not answer
            cleanly (a failed part, a missing one, one of another message, or the batch
            request failing as a whole): the reasons are logged, never raised. Decoding a
            response is the caller's.
        """
        answers: list[dict[str, Any] | None] = [None] * len(requests)
        answered: set[int] = set()
        reasons: collections.Counter[str] = collections.Counter()

        def part(request_id: str, response: Any, exception: Exception | None) -> None:
            # Called by the client library for each part, with an HttpError for a non-2xx
            # part; should it raise, `execute` stops and the parts left are read one by one.
            index = int(request_id)
            answered.add(index)
            if exception is not None:
                reasons[f"HTTP {_status(exception)}"] += 1
            # The id is checked too: a response is never taken for another message's.
            elif not isinstance(response, dict) or response.get("id") != requests[index][0]:
                reasons["a part of another message"] += 1
            else:
                answers[index] = response

        try:
            batch = self._service.new_batch_http_request(callback=part)
            for index, (_, request) in enumerate(requests):
                # The request ids are indexes: unique even when a message is asked for twice.
                batch.add(request, request_id=str(index))
            # No http given: the library takes the requests' own, the service's authorised
            # http that `_call` uses (it applies the credentials to the batch and each part).
            batch.execute()
        except Exception as exc:  # whatever failed, the messages are read one by one
            reasons[f"the batch failed: {type(exc).__name__}: {exc!s:.200}"] += 1
        else:
            if len(answered) < len(requests):
                reasons["parts missing"] += len(requests) - len(answered)
        got = sum(answer is not None for answer in answers)
        if got < len(requests):
            log.info(
                "%s: a batch request gave %d of %d %s, the others are read one by one: %s",
                self.name,
                got,
                len(requests),
                what,
                ", ".join(f"{reason} ({n})" for reason, n in reasons.items()),
            )
        return answers

    def _probe(self) -> Hashable:
        return self._profile()[1]

    def _close(self) -> None:
        if self._owns_service:
            self._service.close()


def _response_history_id(value: object) -> int:
    try:
        return _history_id(value, "historyId")
    except InvalidCursor as exc:  # a response, not a cursor: the outside world failed
        raise SourceError(f"unexpected Gmail API response: {exc}") from None


def _before(message: IncomingMessage, since: _dt.datetime | None) -> bool:
    # A message without a date is kept: an unknown date cannot prove it is old.
    return since is not None and message.received_at is not None and message.received_at < since


def _build(credentials: Any) -> Any:
    """Build a Gmail v1 service from credentials, from the bundled discovery document."""
    from googleapiclient.discovery import build  # type: ignore[import-untyped]  # noqa: PLC0415 (heavy; only this path needs it)

    try:
        return build(
            "gmail", "v1", credentials=credentials, cache_discovery=False, static_discovery=True
        )
    except Exception as exc:  # the client library's checks of the credentials
        raise ConfigError(f"cannot build a Gmail service from these credentials: {exc}") from exc
