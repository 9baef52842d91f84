"""Microsoft Graph mail: a mailbox read with message delta queries and immutable ids.

A Graph mailbox is read folder by folder with the message delta query
(https://learn.microsoft.com/graph/delta-query-messages). A *round* is the pages one delta
query returns, chained by ``@odata.nextLink``; its last page carries an ``@odata.deltaLink``,
and following that link later starts a round of what changed since. Every request sends
``Prefer: IdType="ImmutableId"``, so a message keeps its id when it is moved
(https://learn.microsoft.com/graph/outlook-immutable-id). A cursor is::

    {"user": U, "folders": {NAME: {"link": L, "delta": D, "since": S, "made": M, "seen": [...]}}}

Rule 1: every folder has its own position. ``link`` is the next page of the current round
        (``D`` false; ``null`` before the round's first request) or the folder's deltaLink
        (``D`` true: caught up). Every page boundary is a resumable position: Graph's skip and
        delta tokens carry the sync state, so a link can be followed again from an older cursor
        (base Rule 2). A fetch goes on until a round that *started in that fetch* ends, so mail
        that arrived before the fetch is in its batch, or ``Batch.more`` is true (base Rule 1).
        A page is asked for with ``odata.maxpagesize`` = the room left in the batch; when Graph
        sends more than that, the rest of the page is fetched again next time and what was
        delivered from it is skipped by ``seen`` (Rule 4).
Rule 2: messages come in the order the delta query lists them (base Rule 4). An incremental
        round lists changes in the order they happened, which for new mail is arrival order. A
        first round (and a rescan) lists the folder in Graph's order, which Graph does not
        document; the only ordering delta accepts, ``$orderby=receivedDateTime desc``, is
        newest first, so none is asked for. Following the same link again gives the same
        order. Folders are read one after the other, in the order of ``folders``.
Rule 3: a ``since`` bound (a first scan, a rescan) is applied here, not by Graph: a delta
        ``$filter=receivedDateTime ge ...`` is carried into every later round and would hide
        for ever a message received before ``since`` and moved into the folder afterwards. A
        message of the first round is skipped when it was received before ``since`` *and* last
        modified before the cursor was made (``made``, the source's clock): a message moved in,
        restored or delivered late after that has a later ``lastModifiedDateTime`` and counts.
        Graph gives times to the second, so a message touched in the second the cursor was
        made counts too. The cost: a first round lists the whole folder (a few fields per
        message, no headers). A host clock ahead of Microsoft's by more than that second can
        hide an old message moved in just after the cursor was made.
Rule 4: ``seen`` keeps short digests of the `remember` ids most recently delivered from the
        folder, and delivery skips them: delta lists a message again on every change (read,
        flagged, categorised), and a remembered one costs no request and no duplicate. A
        message is delivered again when it changes after dropping out of ``seen``, when an
        older cursor is fetched again, or when its folder is rescanned (base Rule 2). A cursor
        is thus bounded: per folder, one link and at most `remember` 12-character digests
        (more only while a page larger than asked for is half delivered).
Rule 5: delta is not asked for headers. Each message to deliver needs its
        ``GET /messages/{id}?$select=internetMessageHeaders``, from which an RFC 5322 header
        block is rebuilt (CRLF, refolded, ending in an empty line); the fields Graph lacks
        (it has none for mail that never crossed the internet: internal mail, a Sent copy) are
        completed from the structured properties. Messages are ``complete=False``;
        `GraphSource.fetch_body` GETs the MIME (``$value``). Both GETs go up to 20 in one
        JSON batch (``POST $batch``, https://learn.microsoft.com/graph/json-batching): a fetch
        asks for the headers of the next entries of a page it would deliver (no more than it
        has room for, so batching changes neither which messages come, nor their order, nor
        the cursor), and `BaseSource.fetch_bodies` for the bodies. An answer the JSON batch
        does not give plainly (an inner 404 or 429, a body that is not base64 or not a JSON
        object, a ``$batch`` refused as a whole) is fetched with a GET of its own: batching
        never does worse than a GET each. Drafts and ``@removed`` entries are skipped, and so
        is a message gone between the listing and its GET (404). Sent mail is delivered when
        a Sent folder is watched (`ReplyTracker.learn_sent` reads one); the tracker itself
        skips own mail. Nothing is changed in the mailbox (base Rule 5).
Rule 6: a lost sync state (410 Gone, or a 400 whose code names the sync state) restarts that
        folder's round bounded by `BaseSource.rescan_window`, and the batch says ``rescan``; a
        cursor that cannot be read rescans every folder (base Rule 3). 429, 503 and 504 are
        retried after ``Retry-After`` (or an exponential delay) up to ``max_retries`` times,
        and a 401 gets one fresh token, for every request, ``$batch`` included. Other HTTP
        errors raise `SourceError` from an ``httpx.HTTPStatusError``; network errors reach
        `BaseSource` as ``httpx.TransportError`` and become `SourceError` with it as
        ``__cause__`` (base Rule 6); httpx chains the socket's ``OSError`` below it.
Rule 7: no probe for `BaseSource.wait`: Graph's only cheap sign of new mail is a change
        notification, which needs a public webhook, and an empty delta request costs what a
        probe would. A host that subscribes to notifications calls `BaseSource.wake` from its
        webhook handler; otherwise `wait` sleeps and the next fetch finds the mail.
Rule 8: a link read from a cursor or a response is followed only when it starts with
        ``base_url``: a cursor is data, and following a link sends the bearer token.
"""

from __future__ import annotations

import base64
import datetime as _dt
import email.utils
import hashlib
import logging
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Final, NoReturn, TypeVar

import attrs

from replytrack.errors import ConfigError, SourceError
from replytrack.sources.base import (
    DEFAULT_RESCAN_WINDOW,
    BaseSource,
    Batch,
    IncomingMessage,
    InvalidCursor,
    cursor_optional_int,
    cursor_str,
)
from replytrack.store.base import from_micros, to_micros

try:
    import httpx
except ImportError as _exc:  # pragma: no cover - exercised by a test that hides httpx
    raise ImportError(
        "replytrack.sources.graph needs httpx: pip install 'replytrack[graph]'"
    ) from _exc

__all__ = ["DEFAULT_BASE_URL", "GraphSource"]

log: logging.Logger = logging.getLogger("replytrack.sources.graph")

_T = TypeVar("_T")

#: Microsoft Graph v1.0 in the global cloud; national clouds have their own host.
DEFAULT_BASE_URL: Final = "https://graph.microsoft.com/v1.0"

# The fields a delta page carries: enough to skip drafts, apply `since` (Rule 3) and complete
# a header block Graph gives no fields for (Rule 5).
_DELTA_FIELDS: Final = (
    "id",
    "internetMessageId",
    "conversationId",
    "conversationIndex",
    "receivedDateTime",
    "sentDateTime",
    "lastModifiedDateTime",
    "subject",
    "from",
    "sender",
    "toRecipients",
    "ccRecipients",
    "replyTo",
    "isDraft",
    "parentFolderId",
)

_IMMUTABLE: Final = 'IdType="ImmutableId"'
_RETRIED: Final = frozenset({429, 503, 504})  # throttled, or busy: Graph's retry guidance
# Error codes of a lost sync state on a 400 rather than a 410 (Graph's delta docs: "a 40X-
# series error with error codes such as syncStateNotFound"), compared case-insensitively.
_SYNC_STATE_CODES: Final = frozenset(
    {"syncstatenotfound", "syncstateinvalid", "resyncrequired", "errorinvalidsyncstatedata"}
)
# Fields whose values are a transport's, not the author's: their presence says the message
# crossed the internet and Graph has its real header block (Rule 5).
_TRANSPORT_FIELDS: Final = frozenset({"received", "message-id", "date", "from"})
_FIELD_NAME: Final = re.compile(r"[!-9;-~]+")
_LINE_BREAK: Final = re.compile(r"\r\n|\r|\n")
_MAX_LINE: Final = 998  # RFC 5322 section 2.1.1, without the CRLF
_GRAPH_TIME: Final = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)?\Z"
)
# The largest page asked for: Graph pages messages by at most 1000.
_MAX_PAGE: Final = 1000
# Requests in one JSON batch at most: Graph's limit (https://learn.microsoft.com/graph/json-
# batching, "JSON batch requests are currently limited to 20 individual requests"), and the
# tracker's `BODIES_PER_REQUEST`: a batch's bodies come in one request; headers too (Rule 5).
_BATCH_SIZE: Final = 20
# Pages walked by one fetch at most (a first round may skip long runs of old mail, Rule 3):
# the batch then returns with ``more`` so hosts commit progress and stay responsive.
_PAGES_PER_FETCH: Final = 50


class _SyncStateLost(Exception):  # noqa: N818 (an internal signal, like InvalidCursor)
    """A folder's delta link was refused: its sync state is gone (Rule 6)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code} {' '.join(_error_of(response)).strip()}")
        self.response = response


@attrs.frozen
class _Folder:
    """One folder's position (Rule 1) and memory (Rule 4)."""

    link: str | None = None
    delta: bool = False
    since: int | None = None
    made: int | None = None
    seen: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "link": self.link,
            "delta": self.delta,
            "since": self.since,
            "made": self.made,
            "seen": list(self.seen),
        }


def _digest(message_id: str) -> str:
    # 72 bits: a collision would skip one message among the few hundred remembered.
    return base64.urlsafe_b64encode(hashlib.sha256(message_id.encode()).digest()[:9]).decode()


def _check_folders(folders: Sequence[str]) -> tuple[str, ...]:
    if isinstance(folders, str):
        raise ConfigError("folders must be a collection of folder names or ids, not one str")
    names = tuple(folders)
    if not names:
        raise ConfigError("folders must name at least one folder")
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"not a folder name or id: {name!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"folders are listed twice: {names!r}")
    return names


def _check_count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be an int >= 0, got {value!r}")
    return value


def _check_seconds(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _parse_time(value: object) -> tuple[_dt.datetime, _dt.timedelta] | None:
    """Read a Graph ``DateTimeOffset`` and its precision; ``None`` when it is not one.

    Graph writes ``2027-03-01T09:30:00Z`` for messages (seconds), elsewhere up to seven
    fractional digits; `datetime.fromisoformat` of Python 3.10 reads neither ``Z`` nor seven
    digits. A value without a zone is UTC, as Graph means it.

    Returns:
        The aware UTC time and the width of the interval it stands for (one second when there
        are no fractional digits), or ``None``.
    """
    if not isinstance(value, str):
        return None
    match = _GRAPH_TIME.match(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, zone = match.group(7), match.group(8)
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    tz = _dt.timezone.utc
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        tz = _dt.timezone(sign * _dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        moment = _dt.datetime(year, month, day, hour, minute, second, micros, tzinfo=tz)
        moment = moment.astimezone(_dt.timezone.utc)
    except (ValueError, OverflowError):  # 2027-02-30, or year 1 shifted before year 1
        return None
    width = _dt.timedelta(seconds=10 ** -len(fraction)) if fraction else _dt.timedelta(seconds=1)
    return moment, max(width, _dt.timedelta(microseconds=1))


def _recipients(value: object) -> list[tuple[str, str]]:
    """``[(name, address), ...]`` of a Graph recipient or recipient collection."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        address = item.get("emailAddress") if isinstance(item, dict) else None
        if not isinstance(address, dict):
            continue
        name, addr = address.get("name"), address.get("address")
        name = name if isinstance(name, str) else ""
        addr = addr if isinstance(addr, str) else ""
        if addr or name:
            out.append((name if name != addr else "", addr))
    return out


def _address_field(value: object) -> str | None:
    pairs = _recipients(value)
    # formataddr RFC 2047-encodes a non-ASCII display name and quotes specials.
    return ", ".join(email.utils.formataddr(p) for p in pairs) if pairs else None


def _fold(name: str, value: str) -> bytes:
    """One header field, CRLF-terminated: line breaks kept as folds, long lines folded.

    Graph returns values unfolded, sometimes with their original folding; a break not
    followed by white space (or an empty continuation line, which would end the header
    block) is turned into a fold.
    """
    parts = [p for p in _LINE_BREAK.split(value) if p.strip()]
    if not parts:
        return f"{name}:\r\n".encode()
    lines = _split_long(f"{name}: {parts[0].lstrip()}")
    for part in parts[1:]:
        lines += _split_long(part if part[0] in " \t" else " " + part)
    # A lone surrogate (JSON can carry one) cannot be UTF-8: it becomes "?".
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "replace")


def _split_long(line: str) -> list[str]:
    """Fold `line` at white space so no line exceeds RFC 5322's 998 characters (if it can)."""
    out: list[str] = []
    while len(line.encode("utf-8", "replace")) > _MAX_LINE:
        # A character is at most 4 bytes in UTF-8: 249 characters always fit in 998 bytes.
        cut = max(line.rfind(" ", 1, _MAX_LINE // 4), line.rfind("\t", 1, _MAX_LINE // 4))
        if cut <= 0:
            cut = line.find(" ", 1)
            if cut <= 0:
                break  # one unbreakable token: leave it long rather than change it
        out.append(line[:cut])
        line = line[cut:]
    out.append(line)
    return out


def _header_block(item: Mapping[str, Any], headers: object) -> bytes:
    """Rebuild a message's RFC 5322 header block from what Graph gives (Rule 5).

    Args:
        item: the message as a delta page lists it (the structured properties).
        headers: its ``internetMessageHeaders``: ``[{"name": ..., "value": ...}, ...]``.

    Returns:
        The header block: CRLF line ends, ending in an empty line. Values Graph returns as
        Unicode are written as UTF-8 (RFC 6532), which `replytrack.parse_headers` reads.
    """
    fields: list[tuple[str, str]] = []
    for entry in headers if isinstance(headers, list) else ():
        if not isinstance(entry, dict):
            continue
        name, value = entry.get("name"), entry.get("value")
        if isinstance(name, str) and _FIELD_NAME.fullmatch(name) and isinstance(value, str):
            fields.append((name, value))
    present = {name.lower() for name, _ in fields}
    transported = bool(present & _TRANSPORT_FIELDS)
    message_id = item.get("internetMessageId")
    sent = _parse_time(item.get("sentDateTime"))
    subject = item.get("subject")
    author = _address_field(item.get("from"))
    sender = _address_field(item.get("sender"))
    index = item.get("conversationIndex")
    completions: list[tuple[str, str | None]] = [
        ("From", author),
        ("To", _address_field(item.get("toRecipients"))),
        ("Cc", _address_field(item.get("ccRecipients"))),
        ("Subject", subject if isinstance(subject, str) else None),
        ("Date", email.utils.format_datetime(sent[0]) if sent else None),
        ("Message-ID", message_id if isinstance(message_id, str) else None),
    ]
    if not transported:
        # Mail that never crossed the internet: Graph's properties are the whole truth, the
        # conversation index included (Outlook's Thread-Index). For internet mail they are not
        # added: Exchange derives its own index, which the sender never wrote.
        completions += [
            ("Sender", sender if sender != author else None),
            ("Reply-To", _address_field(item.get("replyTo"))),
            ("Thread-Index", index if isinstance(index, str) else None),
        ]
    for name, value in completions:
        if value and name.lower() not in present:
            fields.append((name, value))
    return b"".join(_fold(name, value) for name, value in fields) + b"\r\n"


def _error_of(response: httpx.Response) -> tuple[str, str]:
    """Graph's error code and message (``{"error": {"code": ..., "message": ...}}``)."""
    try:
        body = response.json()
    except ValueError:
        return "", response.text[:200]
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", response.text[:200]
    code, message = error.get("code"), error.get("message")
    return (code if isinstance(code, str) else "", message if isinstance(message, str) else "")


class GraphSource(BaseSource):
    """A Microsoft 365 / Outlook.com mailbox read through Microsoft Graph; see the module.

    Needs the ``Mail.Read`` permission: delegated for ``user="me"``, application for any
    ``user``. ``Mail.ReadBasic`` is not enough: it gives neither headers nor MIME.

    Args:
        client: an ``httpx.Client`` to send requests with (tests pass one with
            ``httpx.MockTransport``). It is the host's: `close` leaves it open. Without one the
            source makes its own, with `timeout`, and closes it in `close`.
        token: returns a bearer access token; called before every request and once more
            after a 401 (so a callable backed by a token cache should refresh expired tokens,
            as MSAL's ``acquire_token_silent`` does). ``None`` only with a `client` that
            authenticates by itself (an ``httpx.Auth``).
        user: ``"me"`` (the signed-in user) or a user id or user principal name.
        folders: well-known folder names (``"inbox"``, ``"junkemail"``, ``"sentitems"``) or
            folder ids; each gets its own delta link.
        name: the source's name; default ``"graph:USER"`` (``#folder,...`` appended when
            `folders` is not the default).
        base_url: the Graph endpoint, e.g. ``https://graph.microsoft.us/v1.0``.
        timeout: seconds per request, for a client the source makes itself.
        max_retries: retries of a throttled (429) or busy (503, 504) request.
        max_retry_wait: the longest ``Retry-After`` waited out; a longer one fails at once
            (the host retries later) rather than blocking the poller.
        remember: how many delivered ids per folder the cursor remembers (Rule 4).
        sleep: waits between retries; injected so tests do not sleep.
        rescan_window: how far back a lost sync state or unreadable cursor rescans.
        clock: the current aware time; it should agree with Microsoft's (Rule 3).

    Raises:
        ConfigError: an argument is malformed.
    """

    kind: ClassVar[str] = "graph"

    def __init__(
        self,
        client: httpx.Client | None = None,
        *,
        token: Callable[[], str] | None = None,
        user: str = "me",
        folders: Sequence[str] = ("inbox",),
        name: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 30.0,
        max_retries: int = 4,
        max_retry_wait: float = 120.0,
        remember: int = 128,
        sleep: Callable[[float], None] = time.sleep,
        rescan_window: _dt.timedelta = DEFAULT_RESCAN_WINDOW,
        clock: Callable[[], _dt.datetime] | None = None,
    ) -> None:
        if client is not None and not isinstance(client, httpx.Client):
            raise ConfigError(f"client must be an httpx.Client, not {type(client).__name__}")
        if token is not None and not callable(token):
            raise ConfigError("token must be a callable returning a bearer access token")
        if token is None and client is None:
            raise ConfigError(
                "GraphSource needs a token callable (or a client that authenticates)"
            )
        if not isinstance(user, str) or not user.strip() or "/" in user:
            raise ConfigError(f"user must be 'me', a user id or a user principal name: {user!r}")
        self._folders = _check_folders(folders)
        if not isinstance(base_url, str) or urllib.parse.urlsplit(base_url).scheme not in (
            "https",
            "http",
        ):
            raise ConfigError(f"base_url must be an http(s) URL, got {base_url!r}")
        if not callable(sleep):
            raise ConfigError("sleep must be a callable taking seconds")
        if name is None:
            name = f"graph:{user}"
            if self._folders != ("inbox",):
                name += "#" + ",".join(self._folders)
        super().__init__(name, rescan_window=rescan_window, clock=clock)
        self._token = token
        self._user = user
        self._base = base_url.rstrip("/")
        self._root = (
            f"{self._base}/me" if user == "me" else f"{self._base}/users/{_quote(user, '@')}"
        )
        self._max_retries = _check_count(max_retries, "max_retries")
        self._max_retry_wait = _check_seconds(max_retry_wait, "max_retry_wait")
        self._remember = _check_count(remember, "remember")
        self._sleep = sleep
        timeout = _check_seconds(timeout, "timeout")
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout)

    @property
    def user(self) -> str:
        """The mailbox read: ``"me"``, a user id or a user principal name."""
        return self._user

    @property
    def folders(self) -> tuple[str, ...]:
        """The folders watched, as given."""
        return self._folders

    # -- cursors -------------------------------------------------------------------------------

    def _initial_cursor(self, since: _dt.datetime | None) -> str:
        # No request: the round starts at the first fetch, and everything present then is in
        # it; `made` tells what was there when the cursor was made (Rule 3).
        made = None if since is None else to_micros(self.now())
        start = _Folder(since=None if since is None else to_micros(since), made=made)
        return self._dump(dict.fromkeys(self._folders, start))

    def _fresh(self) -> _Folder:
        now = self.now()
        return _Folder(since=to_micros(now - self.rescan_window), made=to_micros(now))

    def _dump(self, folders: Mapping[str, _Folder]) -> str:
        return self._dump_cursor(
            {"user": self._user, "folders": {n: f.to_json() for n, f in folders.items()}}
        )

    def _read_cursor(self, cursor: str) -> dict[str, _Folder]:
        state = self._load_cursor(cursor)
        if state.get("user") != self._user:
            raise InvalidCursor(f"a cursor of another mailbox: {state.get('user')!r:.80}")
        entries = state.get("folders")
        if not isinstance(entries, dict):
            raise InvalidCursor("cursor field 'folders' is not an object")
        folders: dict[str, _Folder] = {}
        for name in self._folders:
            entry = entries.get(name)
            if entry is None:
                # A folder added to the configuration: its recent window, like a rescan.
                log.info("%s: folder %r is new to the cursor; reading its recent mail", self, name)
                folders[name] = self._fresh()
                continue
            if not isinstance(entry, dict):
                raise InvalidCursor(f"cursor entry of folder {name!r} is not an object")
            link = cursor_str(entry, "link")
            delta = entry.get("delta")
            seen = entry.get("seen")
            if not isinstance(delta, bool) or (delta and link is None):
                raise InvalidCursor(f"cursor entry of folder {name!r} has no valid 'delta'")
            if not isinstance(seen, list) or not all(isinstance(s, str) for s in seen):
                raise InvalidCursor(f"cursor entry of folder {name!r} has no valid 'seen'")
            if link is not None and not self._ours(link):
                raise InvalidCursor(f"cursor link of folder {name!r} is not under {self._base}")
            folders[name] = _Folder(
                link=link,
                delta=delta,
                since=_cursor_time(entry, "since"),
                made=_cursor_time(entry, "made"),
                seen=tuple(seen),
            )
        return folders

    def _ours(self, link: str) -> bool:
        return link.startswith(self._base + "/")  # Rule 8

    # -- fetching ------------------------------------------------------------------------------

    def _fetch(self, cursor: str, limit: int) -> Batch:
        folders = self._read_cursor(cursor)
        out: list[IncomingMessage] = []
        more = rescan = False
        for name in self._folders:
            if len(out) >= limit:
                more = True  # a folder not visited may hold mail
                break
            folder, pending, lost = self._fetch_folder(name, folders[name], limit, out)
            folders[name] = folder
            more = more or pending
            rescan = rescan or lost
        return Batch(tuple(out), self._dump(folders), more, rescan)

    def _fetch_folder(
        self, name: str, folder: _Folder, limit: int, out: list[IncomingMessage]
    ) -> tuple[_Folder, bool, bool]:
        """Deliver from one folder into `out`, up to `limit` in all.

        Returns:
            The folder's new position, whether it may hold more, whether it was rescanned.
        """
        # A round that is under way started before this fetch: after it ends, its deltaLink is
        # followed too, so that what arrived before this fetch is seen (Rule 1).
        started_here = folder.link is None or folder.delta
        rescanned = False
        seen = list(folder.seen)
        for _ in range(_PAGES_PER_FETCH):
            room = min(limit - len(out), _MAX_PAGE)
            url = folder.link or self._delta_url(name)
            try:
                page = self._get_json(url, what=f"delta of folder {name!r}", page_size=room)
            except _SyncStateLost as exc:
                if folder.link is None:  # a new round cannot have lost its state
                    self._raise(exc.response, f"delta of folder {name!r}")
                log.warning(
                    "%s: sync state of folder %r lost (%s); rescanning %s",
                    self.name,
                    name,
                    exc,
                    self.rescan_window,
                )
                folder, seen, rescanned, started_here = self._fresh(), [], True, True
                continue
            items = page.get("value")
            if not isinstance(items, list):
                raise SourceError(f"{self.name}: a delta page without 'value': {url}")
            batched: dict[str, dict[str, Any] | None] = {}  # by id: a $batch's answer (Rule 5)
            for index, item in enumerate(items):
                if not isinstance(item, dict) or not self._due(item, folder, seen):
                    continue
                if len(out) >= limit:
                    # Graph sent more than asked (Rule 1): this page again next time. What was
                    # delivered from it, by this fetch or by the earlier ones that stopped in
                    # it too, is the newest of `seen` (`_due` moved the remembered ones to the
                    # end) and must all stay, whatever `remember` says, or it comes again.
                    page_ids = {_digest(i["id"]) for i in items[:index] if _has_id(i)}
                    delivered = len(page_ids.intersection(seen))
                    folder = attrs.evolve(folder, link=url, seen=self._tail(seen, delivered))
                    return folder, True, rescanned
                if item["id"] not in batched:
                    room = min(limit - len(out), _BATCH_SIZE)
                    batched.update(self._batch_headers(items[index:], folder, seen, room))
                message = self._message(name, item, batched.get(item["id"]))
                if message is None:
                    continue  # deleted since the page was made
                out.append(message)
                seen.append(_digest(message.source_id))
            next_link = page.get("@odata.nextLink")
            delta_link = page.get("@odata.deltaLink")
            if isinstance(next_link, str):
                folder = attrs.evolve(
                    folder, link=self._checked(next_link), delta=False, seen=self._tail(seen)
                )
                if len(out) >= limit:
                    return folder, True, rescanned
                continue
            if not isinstance(delta_link, str):
                raise SourceError(f"{self.name}: a delta page with neither nextLink nor deltaLink")
            folder = _Folder(link=self._checked(delta_link), delta=True, seen=self._tail(seen))
            if started_here:
                return folder, False, rescanned
            started_here = True
            if len(out) >= limit:
                return folder, True, rescanned
        return folder, True, rescanned  # the page budget is spent: come back (more)

    def _due(
        self, item: Mapping[str, Any], folder: _Folder, seen: list[str], *, touch: bool = True
    ) -> bool:
        """Whether a delta entry is a message to deliver, without asking Graph anything.

        A remembered entry is moved to the end of `seen` (Rule 4), unless `touch` is false.
        """
        if "@removed" in item or item.get("isDraft") is True or not _has_id(item):
            return False
        digest = _digest(item["id"])
        if digest in seen:
            if touch:
                # Listed again because it changed (read, flagged): keep it remembered (Rule 4).
                seen.remove(digest)
                seen.append(digest)
            return False
        if folder.since is None or folder.made is None:
            return True
        received = _parse_time(item.get("receivedDateTime"))
        modified = _parse_time(item.get("lastModifiedDateTime"))
        if received is None or modified is None or received[0] >= from_micros(folder.since):
            return True
        # Rule 3: old, and untouched since before the cursor was made (to Graph's precision).
        return modified[0] > from_micros(folder.made) - modified[1]

    def _batch_headers(
        self, items: Sequence[object], folder: _Folder, seen: list[str], room: int
    ) -> dict[str, dict[str, Any] | None]:
        """Ask for the headers of the next `room` messages to deliver in one ``$batch`` (Rule 5).

        They are the first `room` entries `_due` accepts in `items`, the rest of a delta page
        from an entry it just accepted, each id once: the entries the delta loop meets next if
        none is gone (a delivery changes `_due` only for the id delivered).

        Returns:
            By id, the answer to the GET `_message` sends, or ``None`` for `_message` to send it.
        """
        chosen: list[str] = []
        for item in items:
            if len(chosen) >= room:
                break
            if not isinstance(item, dict) or not self._due(item, folder, seen, touch=False):
                continue
            if item["id"] not in chosen:
                chosen.append(item["id"])
        if len(chosen) < 2:
            return dict.fromkeys(chosen)  # one request either way
        answers = self._batch([self._headers_url(i) for i in chosen], _json_object, "headers")
        return dict(zip(chosen, answers, strict=True))

    def _message(
        self, folder: str, item: Mapping[str, Any], body: dict[str, Any] | None = None
    ) -> IncomingMessage | None:
        """The message of a delta entry, or ``None`` when it is gone (a 404).

        Its headers are `body`, the answer to their GET from a ``$batch``, or a GET's own.
        """
        source_id: str = item["id"]
        if body is None:
            response = self._send("GET", self._headers_url(source_id))
            if response.status_code == 404:
                log.info("%s: message %s is gone; skipped", self.name, source_id[:40])
                return None
            body = self._json(response, what=f"headers of message {source_id[:40]}")
        received = _parse_time(item.get("receivedDateTime"))
        thread = item.get("conversationId")
        return IncomingMessage(
            _header_block(item, body.get("internetMessageHeaders")),
            source_id,
            folder=folder,
            provider_thread_id=thread if isinstance(thread, str) and thread else None,
            received_at=received[0] if received else None,
            complete=False,
        )

    def _fetch_body(self, message: IncomingMessage) -> bytes:
        response = self._send("GET", self._value_url(message.source_id))
        if response.status_code != 200:
            self._raise(response, f"MIME of message {message.source_id[:40]}")
        return response.content

    def _fetch_bodies(self, messages: Sequence[IncomingMessage]) -> list[bytes]:
        """The MIME of each message, in order: `_BATCH_SIZE` per ``$batch`` request (Rule 5).

        A body the batch does not give plainly is fetched by `_fetch_body`, which retries a
        throttled GET and raises `SourceError` for a message deleted meanwhile.
        """
        bodies: list[bytes] = []
        for start in range(0, len(messages), _BATCH_SIZE):
            chunk = messages[start : start + _BATCH_SIZE]
            if len(chunk) == 1:
                bodies.append(self._fetch_body(chunk[0]))  # one request either way
                continue
            urls = [self._value_url(m.source_id) for m in chunk]
            batched = self._batch(urls, _base64, "bodies")
            bodies += [
                self._fetch_body(message) if body is None else body
                for message, body in zip(chunk, batched, strict=True)
            ]
        return bodies

    def _batch(
        self,
        urls: Sequence[str],
        read: Callable[[object, bool], tuple[_T | None, str]],
        what: str,
    ) -> list[_T | None]:
        """Send a GET of each of `urls` (under ``base_url``) in one ``$batch`` request (Rule 5).

        Each inner request is the GET `_send` sends for its URL, the URL relative to
        ``base_url`` and the id its position from 1. Graph answers 200 with ``{"responses": [{"id",
        "status", "headers", "body"}, ...]}`` in any order, a body that is JSON as that JSON
        value, any other (the MIME) in base64 (https://learn.microsoft.com/graph/json-batching).

        Args:
            urls: the GETs, at most `_BATCH_SIZE`.
            read: reads an inner 200's body, given whether its headers say it is JSON: the
                answer, or ``None`` and why it is not what the GET gives.
            what: what the GETs give, for the log (``"bodies"``).

        Returns:
            Each GET's answer read, or ``None`` where the batch did not give it plainly: the
            batch refused (after `_send`'s retries), its id missing or answered twice, or its
            answer not a 200 that `read` reads. The reasons are logged, once.
        """
        requests = [
            {
                "id": str(n),
                "method": "GET",
                "url": self._relative(url),
                "headers": {"Prefer": _IMMUTABLE},
            }
            for n, url in enumerate(urls, 1)
        ]
        response = self._send("POST", f"{self._base}/$batch", body={"requests": requests})
        missing: list[_T | None] = [None] * len(urls)
        if response.status_code != 200:
            code = " ".join(_error_of(response)).strip()
            log.info(
                "%s: $batch failed: HTTP %d %s; fetching %d %s one by one",
                self.name,
                response.status_code,
                code[:120],
                len(urls),
                what,
            )
            return missing
        try:
            payload = response.json()
        except ValueError:  # not JSON, or not UTF-8
            payload = None
        items = payload.get("responses") if isinstance(payload, dict) else None
        if not isinstance(items, list):
            log.info(
                "%s: $batch answered without a 'responses' list; fetching %d %s one by one",
                self.name,
                len(urls),
                what,
            )
            return missing
        # A "nextLink" Graph may add for answers still to come is not followed: the ids it
        # would answer are missing here, and their GETs are sent on their own.
        answers: dict[str, object] = {}
        twice: set[str] = set()
        for item in items:
            key = item.get("id") if isinstance(item, dict) else None
            if isinstance(key, str):
                if key in answers:
                    twice.add(key)
                answers[key] = item
        results: list[_T | None] = []
        reasons: dict[str, int] = {}
        for n in range(1, len(urls) + 1):
            key = str(n)
            result, reason = (
                (None, "answered twice") if key in twice else _batched(answers.get(key), read)
            )
            results.append(result)
            if result is None:
                reasons[reason] = reasons.get(reason, 0) + 1
        if reasons:
            log.debug(
                "%s: $batch gave %d of %d %s; fetching the rest one by one (%s)",
                self.name,
                len(urls) - sum(reasons.values()),
                len(urls),
                what,
                ", ".join(f"{reason}: {count}" for reason, count in reasons.items()),
            )
        return results

    # -- HTTP ------------------------------------------------------------------------------------

    def _delta_url(self, folder: str) -> str:
        return (
            f"{self._root}/mailFolders/{_quote(folder)}/messages/delta"
            f"?$select={','.join(_DELTA_FIELDS)}"
        )

    def _message_url(self, source_id: str) -> str:
        return f"{self._root}/messages/{_quote(source_id)}"

    def _headers_url(self, source_id: str) -> str:
        return f"{self._message_url(source_id)}?$select=internetMessageHeaders"

    def _value_url(self, source_id: str) -> str:
        return f"{self._message_url(source_id)}/$value"

    def _checked(self, link: str) -> str:
        if not self._ours(link):
            raise SourceError(f"{self.name}: Graph sent a link outside {self._base}: {link:.120}")
        return link

    def _relative(self, link: str) -> str:
        """`link`, which is under ``base_url``, relative to it: a ``$batch`` request's URL."""
        return self._checked(link)[len(self._base) :]

    def _get_json(self, url: str, *, what: str, page_size: int | None = None) -> dict[str, Any]:
        response = self._send("GET", url, page_size=page_size)
        if response.status_code == 410 or (
            response.status_code == 400 and _error_of(response)[0].lower() in _SYNC_STATE_CODES
        ):
            raise _SyncStateLost(response)
        return self._json(response, what=what)

    def _json(self, response: httpx.Response, *, what: str) -> dict[str, Any]:
        if response.status_code != 200:
            self._raise(response, what)
        body = response.json()
        if not isinstance(body, dict):
            raise SourceError(f"{self.name}: {what}: the response is not a JSON object")
        return body

    def _raise(self, response: httpx.Response, what: str) -> NoReturn:
        """Raise `SourceError` for an HTTP error, from an ``httpx.HTTPStatusError``."""
        code, text = _error_of(response)
        status = response.status_code
        message = f"{self.name}: {what}: HTTP {status}"
        if code or text:
            message += f" {code}: {text}".rstrip(": ")
        if status in _RETRIED:
            message += f" (gave up; Retry-After: {response.headers.get('Retry-After', '-')})"
        cause = httpx.HTTPStatusError(message, request=response.request, response=response)
        raise SourceError(message, source=self.name) from cause

    def _send(
        self,
        method: str,
        url: str,
        *,
        page_size: int | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """Send one request: the token, the Prefer header, one 401 refresh, throttling retries.

        `body`, when given, is sent as JSON (``Content-Type: application/json``).
        """
        prefer = (
            _IMMUTABLE if page_size is None else f"{_IMMUTABLE}, odata.maxpagesize={page_size}"
        )
        refreshed = False
        retries = 0
        while True:
            headers = {"Prefer": prefer}
            if self._token is not None:
                headers["Authorization"] = f"Bearer {_bearer(self._token)}"
            response = self._client.request(method, url, headers=headers, json=body)
            status = response.status_code
            if status == 401 and self._token is not None and not refreshed:
                refreshed = True  # an expired token: ask for a fresh one, once
                continue
            if status in _RETRIED and retries < self._max_retries:
                delay = self._retry_delay(response, retries)
                if delay is not None:
                    retries += 1
                    log.info("%s: HTTP %d; retrying in %.1f s", self.name, status, delay)
                    self._sleep(delay)
                    continue
            return response

    def _retry_delay(self, response: httpx.Response, retries: int) -> float | None:
        """Seconds to wait before retrying, or ``None`` when that is longer than allowed."""
        header = response.headers.get("Retry-After", "").strip()
        delay: float = min(2.0**retries, self._max_retry_wait)  # Graph sends one; if not
        if header.isdigit():
            delay = float(header)
        elif header:
            try:
                when = email.utils.parsedate_to_datetime(header)  # RFC 9110 allows a date
            except (TypeError, ValueError):
                pass
            else:
                if when.tzinfo is not None:
                    delay = max(0.0, (when - self.now()).total_seconds())
        return delay if delay <= self._max_retry_wait else None

    def _tail(self, seen: list[str], required: int = 0) -> tuple[str, ...]:
        """The digests a cursor keeps: the `remember` newest, never fewer than `required`."""
        keep = max(self._remember, required)
        return tuple(seen[-keep:]) if keep else ()

    def _close(self) -> None:
        if self._owns_client:
            self._client.close()


def _has_id(item: object) -> bool:
    """Whether a delta entry names a message: a dict with a non-empty ``id`` string."""
    return isinstance(item, dict) and isinstance(item.get("id"), str) and bool(item["id"])


def _cursor_time(entry: Mapping[str, Any], key: str) -> int | None:
    value = cursor_optional_int(entry, key)
    if value is not None:
        try:
            from_micros(value)
        except OverflowError as exc:
            raise InvalidCursor(f"cursor field {key!r} is not a time: {value}") from exc
    return value


def _batched(
    item: object, read: Callable[[object, bool], tuple[_T | None, str]]
) -> tuple[_T | None, str]:
    """What an inner ``$batch`` response carries, read, or ``None`` and why it is not used.

    Only a 200 is read: `read` gets its body and whether its headers say the body is JSON.
    """
    if not isinstance(item, dict):
        return None, "no answer"
    status = item.get("status")
    if not isinstance(status, int) or status != 200:
        return None, f"HTTP {status}" if isinstance(status, int) else "no status"
    headers = item.get("headers")
    json = isinstance(headers, dict) and any(
        str(name).lower() == "content-type" and "json" in str(value).lower()
        for name, value in headers.items()
    )
    return read(item.get("body"), json)


def _base64(body: object, json: bool) -> tuple[bytes | None, str]:
    """The MIME an inner 200 carries: a string of strict base64, not a JSON value."""
    if json:
        return None, "a JSON body"
    if not isinstance(body, str):
        return None, "a body that is not a string"
    try:
        return base64.b64decode(body, validate=True), ""
    except ValueError:  # binascii.Error, or a character that is not ASCII
        return None, "a body that is not base64"


def _json_object(body: object, json: bool) -> tuple[dict[str, Any] | None, str]:
    """The JSON object an inner 200 carries: Graph puts a JSON answer itself in ``body``."""
    return (body, "") if isinstance(body, dict) else (None, "a body that is not a JSON object")


def _bearer(token: Callable[[], str]) -> str:
    value = token()
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"the token callable returned {type(value).__name__}, not a token")
    return value.strip()


def _quote(segment: str, safe: str = "") -> str:
    return urllib.parse.quote(segment, safe=safe)
