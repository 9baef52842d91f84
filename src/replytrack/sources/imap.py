r"""An IMAP mailbox read through IMAPClient, without marking anything read (RFC 3501, RFC 9051).

Install the extra: ``pip install 'replytrack[imap]'``. `IMAPSource` keeps one connection open
between calls and watches one or more folders. A cursor holds, per watched folder, the folder's
UIDVALIDITY and the last UID handled (``{"folders": {"INBOX": {"uv": 1795728730, "last": 41}},
"since": null}``); UIDs are assigned in strictly ascending order of arrival within a
UIDVALIDITY (RFC 3501 section 2.3.1.1), so "the UIDs above ``last``" is exactly "what is new".

Rule 1: **order.** Folders are read one after another, in the order given; within a folder
        messages come in UID order, oldest first (base Rule 4). A fetch finishes a folder (up
        to the mark of Rule 2) before it reads the next, so across folders a batch is ordered
        by folder first: a message of the second folder can come after a newer one of the
        first. The order is stable across fetches.
Rule 2: **the high-water mark is taken before listing** (base Rule 1): every fetch opens each
        folder with ``EXAMINE``, even one still open from the last call, and takes its
        UIDNEXT; mail arriving later gets a higher UID and is read by the next fetch. A
        fresh ``EXAMINE`` rather than ``NOOP`` on the open folder: it shows new mail as
        ``NOOP`` does, in one round trip where ``NOOP`` needs a second for the highest UID,
        and it shows a folder deleted and created again, which Dovecot's ``NOOP``, ``SEARCH``
        and ``STATUS`` on the open folder do not (they keep answering from the old one, so new
        mail would never be seen). A range ``n:*`` always includes the newest message even
        when its UID is below ``n`` (RFC 3501 section 6.4.8): UIDs at or below ``last`` are
        dropped wherever they come from.
Rule 3: **large folders are read in windows.** UIDs are fetched in sets of at most `window`
        (``UID FETCH 1:*`` of a 100,000-message folder is never sent). Dense UIDs are fetched
        as ranges; once a range comes back with holes (expunged mail), the UIDs are listed
        with ``UID SEARCH`` over spans that double while they find fewer than needed, so long
        runs of deleted mail cost a few round trips.
Rule 4: **a ``since`` bound** filters only what was in a folder when the cursor was made: an
        initial cursor records each folder's UIDNEXT (``until``); below it, messages are
        listed with ``SEARCH SINCE`` the day before (SEARCH compares dates, not times, in
        the server's zone) and then kept only when their INTERNALDATE is at or after
        ``since``; at or above it, mail always counts. A folder the cursor does not know yet
        (one added to `folders` later) is read as the first scan was: from the cursor's
        ``since``, or from its first message.
Rule 5: **UIDVALIDITY changes rescan that folder by date.** When a folder's UIDVALIDITY is not
        the cursor's, its UIDs mean nothing any more: that folder alone starts again at
        `BaseSource.rescan_window` before the clock (as Rule 4, ``until`` its UIDNEXT), and
        the batch says ``rescan``; the tracker's ledger drops what it had already seen. An
        unreadable cursor rescans every folder (base Rule 3). A folder that does not exist
        (deleted, renamed, mistyped) raises `SourceError` naming it and changes nothing: the
        host must fix the configuration; silently skipping the folder would lose its mail.
Rule 6: **nothing is changed** (base Rule 5): folders are opened with ``EXAMINE`` (read-only,
        so not even ``\Recent`` is cleared) and everything is fetched with ``BODY.PEEK``.
Rule 7: **headers first.** A fetch reads ``BODY.PEEK[HEADER.FIELDS (...)]`` (`header_fields`,
        by default `replytrack.headers.TRACKING_FIELDS`), ``INTERNALDATE`` and ``FLAGS``:
        messages come with ``complete=False``. `fetch_body` reads ``BODY.PEEK[]`` of the
        message's UID in its folder after checking that the folder's UIDVALIDITY is still
        the one in its ``source_id`` (``Archive;UIDVALIDITY=1795728730/;UID=41``, as an
        RFC 5092 IMAP URL).
        A message deleted or moved away in between raises `SourceError`: the tracker's poll
        stops without committing the batch, and the next poll reads the batch again, without
        that message.
Rule 8: **connections.** After any failure the connection is closed and the next call opens
        a new one; a failed call loses nothing, fetching again from the same cursor works.
        A connection found dead at the first command of a call (closed by the server, a NAT
        or a restart while it was unused) is replaced at once and the call goes on (once per
        call); a connection that dies later in a call fails that call. Failed *connection attempts*
        (network, TLS, login) are spaced by exponential backoff: after the n-th failure in a
        row, no attempt is made for ``reconnect_delay * 2 ** (n - 1)`` seconds, at most
        `max_reconnect_delay`, and after a failed login at least `login_retry_delay` (a wrong
        password does not fix itself, and providers lock accounts that keep failing). Calls
        made meanwhile raise `SourceError` at once, naming the last failure, without touching
        the network; a successful login resets the count.
Rule 9: **IDLE is a hint** (RFC 2177): `wait` opens the first watched folder, returns True at
        once when it holds mail past the cursor, and otherwise IDLEs on it, polling the
        socket in slices of `wait_interval` seconds so that `wake` (from any thread) and
        `close` interrupt it quickly, until ``EXISTS``/``RECENT`` arrives (True) or the time
        is up (False). IDLE is renewed every 25 minutes (servers may drop a 30-minute IDLE)
        and ended with ``DONE`` under a short socket timeout. Any failure drops the
        connection and the rest of the wait is slept. Servers without IDLE, a connection in
        backoff, or ``idle=False`` give `BaseSource.wait`'s sleep. Mail in the other folders
        is found by the next fetch.
Rule 10: **Gmail** (capability ``X-GM-EXT-1``): by default the source watches the folder whose
        LIST attributes hold ``\All`` (RFC 6154 SPECIAL-USE: All Mail, whatever its localized
        name) rather than INBOX, where Gmail's filters and the reps' archiving take replies
        away; messages labelled ``\Sent`` or ``\Draft`` are skipped (the rep's own mail);
        ``X-GM-THRID`` becomes ``provider_thread_id``; ``X-GM-MSGID`` ends the ``source_id``;
        ``X-GM-LABELS`` join the flags in ``labels``. Any folder given as ``\Name`` is found
        by that attribute, on any server.

Limits: `wait` watches the first folder only. A server that made a message visible after one
with a higher UID (RFC 3501 section 2.3.1.1 forbids it) could have it skipped. A source is used
by one thread at a time (base port); `wake` and `close` may come from another thread.
"""

from __future__ import annotations

import datetime as _dt
import imaplib
import ipaddress
import logging
import re
import ssl as _ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, TypeVar

import attrs

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
)
from replytrack.store.base import from_micros, to_micros

try:
    import imapclient  # type: ignore[import-untyped]  # no py.typed: Any stays at this edge
    from imapclient import imap_utf7
    from imapclient.exceptions import LoginError  # type: ignore[import-untyped]
except ImportError as _exc:  # the extra is missing (a test hides the module to check this)
    raise ImportError(
        "replytrack.sources.imap needs IMAPClient: pip install 'replytrack[imap]'",
        name="imapclient",
    ) from _exc

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "DEFAULT_HEADER_FIELDS",
    "DEFAULT_WINDOW",
    "IMAPSource",
]

log: logging.Logger = logging.getLogger("replytrack.sources.imap")

#: The header fields of the first pass (module Rule 7).
DEFAULT_HEADER_FIELDS: Final = TRACKING_FIELDS

#: UIDs per FETCH command, and the first span of a UID SEARCH (module Rule 3).
DEFAULT_WINDOW: Final = 250

# A UID SEARCH span stops doubling here (in windows): at most this many UIDs per answer.
_MAX_SPAN_WINDOWS: Final = 256
# RFC 2177: clients should end IDLE and issue it again at least every 29 minutes.
_IDLE_RENEW: Final = 25 * 60.0
# The longest wait for the server to end IDLE after DONE.
_DONE_TIMEOUT: Final = 10.0
# Gmail labels that mark the rep's own mail (module Rule 10), casefolded.
_OWN_MAIL_LABELS: Final = frozenset({"\\sent", "\\draft"})
_GMAIL_EXTRA_ITEMS: Final = ("X-GM-MSGID", "X-GM-THRID", "X-GM-LABELS")
_SOURCE_ID: Final = re.compile(
    r"(?P<folder>[^;]*);UIDVALIDITY=(?P<uv>[0-9]+)/;UID=(?P<uid>[0-9]+)(?:;X-GM-MSGID=[0-9]+)?"
)
_FIELD_NAME: Final = re.compile(r"[!-9;-~]+")  # RFC 5322 section 3.6.8 ftext
_UTC: Final = _dt.timezone.utc
# A connection that fails in one of these ways is gone: reopen it (module Rule 8).
_DISCONNECTS: Final = (imaplib.IMAP4.abort, OSError, EOFError)

_T = TypeVar("_T")


@attrs.frozen
class _Folder:
    """One folder's place in a cursor (module Rules 2, 4, 5)."""

    uv: int
    last: int
    since: int | None = None  # microseconds; with `until`, the bound of Rule 4
    until: int | None = None

    def state(self) -> dict[str, int]:
        out = {"uv": self.uv, "last": self.last}
        if self.since is not None and self.until is not None:
            out["since"], out["until"] = self.since, self.until
        return out


@attrs.frozen
class _View:
    """A folder as one call sees it: its UIDVALIDITY and its highest UID (0: empty)."""

    uv: int
    top: int


class _Session:
    """One logged-in connection and what is known about it.

    Every client call goes through here, so that `progress` counts the commands that
    succeeded: a call whose first command fails on a reused connection may be retried
    (module Rule 8).
    """

    def __init__(self, client: Any, *, gmail: bool, idle: bool, specs: tuple[str, ...]) -> None:
        self.client = client
        self.gmail = gmail
        self.idle = idle
        self.specs = specs
        self.progress = 0
        self.selected: str | None = None
        self.selected_uv = 0
        self._special: dict[str, str] | None = None

    def resolve(self, spec: str) -> str:
        """The folder name of `spec`: itself, or the folder with that SPECIAL-USE attribute."""
        if not spec.startswith("\\"):
            return spec
        if self._special is None:
            listed = self.client.list_folders()
            self.progress += 1
            special: dict[str, str] = {}
            for flags, _delimiter, name in listed:
                for flag in flags:
                    key = _text(flag).casefold()
                    if key.startswith("\\"):
                        special.setdefault(key, str(name))
            self._special = special
        found = self._special.get(spec.casefold())
        if found is None:
            raise SourceError(f"no IMAP folder has the SPECIAL-USE attribute {spec} (RFC 6154)")
        return found

    def open(self, folder: str, *, reuse: bool = False) -> _View:
        """EXAMINE `folder` (read-only) and return its UIDVALIDITY and highest UID (Rule 2).

        With `reuse`, a folder still open is only sent ``NOOP`` (it makes the server report
        expunges) and its highest UID is not asked for (``top`` is 0).

        Raises:
            SourceError: the server refused to open it (it does not exist).
        """
        if reuse and self.selected == folder:
            _, responses = self.client.noop()
            self.progress += 1
            _forget_untagged(self.client)
            if not any(_troubled(response) for response in responses):
                return _View(self.selected_uv, 0)
            # A NO or a new UIDVALIDITY about the open folder: open it afresh.
        self.selected = None
        try:
            info = self.client.select_folder(folder, readonly=True)
        except imaplib.IMAP4.error as exc:
            if type(exc) is not imaplib.IMAP4.error:
                raise  # abort, a protocol error ...: not an answer about the folder
            raise SourceError(f"the IMAP folder {folder!r} cannot be opened: {exc}") from exc
        self.progress += 1
        uv = info.get(b"UIDVALIDITY")
        if not isinstance(uv, int) or isinstance(uv, bool) or uv < 1:
            raise SourceError(f"the IMAP server sent no UIDVALIDITY for {folder!r}")
        self.selected, self.selected_uv = folder, uv
        uidnext = info.get(b"UIDNEXT")
        if isinstance(uidnext, int) and not isinstance(uidnext, bool) and uidnext >= 1:
            return _View(uv, uidnext - 1)
        # RFC 3501 lets a server leave UIDNEXT out: ask for the highest UID instead.
        return _View(uv, self.highest_uid())

    def highest_uid(self) -> int:
        """The highest UID in the selected folder; 0 when it is empty."""
        return max(self.search(["UID", "*"]), default=0)

    def search(self, criteria: list[Any]) -> list[int]:
        found = self.client.search(criteria)
        self.progress += 1
        return [int(uid) for uid in found]

    def fetch(self, uids: Sequence[int], items: Sequence[str]) -> dict[int, dict[bytes, Any]]:
        fetched = self.client.fetch(list(uids), list(items))
        self.progress += 1
        return {int(uid): dict(item) for uid, item in fetched.items()}


class IMAPSource(BaseSource):
    r"""New mail in IMAP folders; see the module's rules.

    Args:
        host: the IMAP server.
        port: its port; default 993 with implicit TLS, else 143.
        username: the account to log in as.
        password: its password (``LOGIN``); give this or `oauth2_token`.
        oauth2_token: a callable returning a fresh OAuth 2.0 access token, called at every
            (re)connection, for ``AUTHENTICATE XOAUTH2`` (Gmail, Outlook.com, Microsoft
            365) or ``OAUTHBEARER`` (RFC 7628).
        oauth2_mechanism: ``"XOAUTH2"`` or ``"OAUTHBEARER"``.
        ssl: connect with implicit TLS (port 993). ``ssl=False`` without `starttls` sends
            everything, password included, in plain text: use it only on loopback.
        starttls: connect in plain text and upgrade with STARTTLS (RFC 2595) before logging
            in; then `ssl` is not used. A server that does not offer it fails the connection:
            there is no fallback to plain text.
        ssl_context: the TLS settings (certificate checks, CA file); default: Python's
            verifying defaults.
        folders: the folders to watch, in reading order (module Rule 1). ``"\\All"`` (any
            name starting with a backslash) is the folder with that SPECIAL-USE attribute.
            Default: ``("\\All",)`` on Gmail, else ``("INBOX",)``.
        name: the source's name (its cursor key); default ``"imap:USER@HOST"``, with
            ``"#FOLDER,..."`` appended when `folders` is given and is not ``("INBOX",)``.
        timeout: seconds for connecting and for every read and write on the socket.
        window: UIDs per FETCH command (module Rule 3).
        header_fields: the header fields of the first pass; ``None`` fetches the whole
            header block.
        gmail: use the Gmail extensions; default: when the server announces X-GM-EXT-1.
        idle: let `wait` use IDLE when the server offers it.
        reconnect_delay: the first backoff delay after a failed connection attempt, seconds.
        max_reconnect_delay: the longest backoff delay, seconds.
        login_retry_delay: the shortest delay after a failed login, seconds.
        monotonic: the clock of the backoff (seconds, like `time.monotonic`); for tests.
        client_factory: returns a connected, not yet logged-in client with IMAPClient's
            interface; default: ``IMAPClient(host, port, ssl=..., ssl_context=...,
            timeout=...)``. For proxies, and for tests.
        rescan_window: how far back an invalid cursor rescans (module Rule 5).
        clock: the current aware time, for rescans.

    Raises:
        ConfigError: an argument is missing or malformed.
    """

    kind = "imap"

    #: Seconds between two checks for `wake` while `wait` IDLEs (module Rule 9).
    wait_interval: ClassVar[float] = 0.25

    def __init__(
        self,
        host: str,
        *,
        port: int | None = None,
        username: str,
        password: str | None = None,
        oauth2_token: Callable[[], str] | None = None,
        oauth2_mechanism: Literal["XOAUTH2", "OAUTHBEARER"] = "XOAUTH2",
        ssl: bool = True,
        starttls: bool = False,
        ssl_context: _ssl.SSLContext | None = None,
        folders: Sequence[str] | None = None,
        name: str | None = None,
        timeout: float = 30.0,
        window: int = DEFAULT_WINDOW,
        header_fields: Sequence[str] | None = DEFAULT_HEADER_FIELDS,
        gmail: bool | None = None,
        idle: bool = True,
        reconnect_delay: float = 1.0,
        max_reconnect_delay: float = 300.0,
        login_retry_delay: float = 60.0,
        monotonic: Callable[[], float] | None = None,
        client_factory: Callable[[], Any] | None = None,
        rescan_window: _dt.timedelta = DEFAULT_RESCAN_WINDOW,
        clock: Callable[[], _dt.datetime] | None = None,
    ) -> None:
        _check_str(host, "host")
        _check_str(username, "username")
        _check_login(password, oauth2_token, oauth2_mechanism)
        port, implicit_tls = _check_transport(port, ssl, starttls, ssl_context)
        specs = None if folders is None else _check_folders(folders)
        fields = None if header_fields is None else _check_fields(header_fields)
        _check_numbers(
            timeout=timeout,
            window=window,
            reconnect_delay=reconnect_delay,
            max_reconnect_delay=max_reconnect_delay,
            login_retry_delay=login_retry_delay,
        )
        for value, what in ((idle, "idle"), (gmail, "gmail")):
            if value is not None and not isinstance(value, bool):
                raise ConfigError(f"{what} must be a bool, got {value!r}")
        for function, what in ((monotonic, "monotonic"), (client_factory, "client_factory")):
            if function is not None and not callable(function):
                raise ConfigError(f"{what} must be callable")
        if name is None:
            name = f"imap:{username}@{host}"
            if specs is not None and specs != ("INBOX",):
                name += "#" + ",".join(specs)
        super().__init__(name, rescan_window=rescan_window, clock=clock)
        if not (implicit_tls or starttls) and not _is_loopback(host):
            log.warning("%s: IMAP without TLS to %s: the password goes in plain text", name, host)
        self._host = host
        self._port = port
        self._username = username
        self._password = password
        self._oauth2_token = oauth2_token
        self._oauth2_mechanism = oauth2_mechanism
        self._implicit_tls = implicit_tls
        self._starttls = starttls
        self._ssl_context = ssl_context
        self._specs = specs
        self._timeout = float(timeout)
        self._window = window
        if fields is None:
            self._header_item = "BODY.PEEK[HEADER]"
        else:
            self._header_item = f"BODY.PEEK[HEADER.FIELDS ({' '.join(fields)})]"
        self._gmail = gmail
        self._idle = idle
        self._reconnect_delay = float(reconnect_delay)
        self._max_reconnect_delay = float(max_reconnect_delay)
        self._login_retry_delay = float(login_retry_delay)
        self._monotonic = monotonic or time.monotonic
        self._client_factory = client_factory
        self._lock = threading.RLock()
        self._session: _Session | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._last_failure: BaseException | None = None
        self._last_failure_text = ""

    # -- properties ------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The IMAP server."""
        return self._host

    @property
    def port(self) -> int:
        """The server's port."""
        return self._port

    @property
    def username(self) -> str:
        """The account the source logs in as."""
        return self._username

    @property
    def connected(self) -> bool:
        """Whether a connection is open now (it opens at first use)."""
        return self._session is not None

    # -- cursors ---------------------------------------------------------------------------------

    def _initial_cursor(self, since: _dt.datetime | None) -> str:
        if since is None:
            # Every folder is read from its first message: nothing to ask the server.
            return self._dump({}, None)
        micros = to_micros(since)

        def mark(session: _Session) -> dict[str, _Folder]:
            # Rule 4: the UIDNEXT of each folder now; mail at or above it always counts.
            states = {}
            for spec in session.specs:
                view = session.open(session.resolve(spec))
                states[spec] = _Folder(view.uv, 0, micros, view.top + 1)
            return states

        with self._lock:
            return self._dump(self._run("initial_cursor", mark), micros)

    def _dump(self, folders: dict[str, _Folder], since: int | None) -> str:
        return self._dump_cursor(
            {"folders": {spec: state.state() for spec, state in folders.items()}, "since": since}
        )

    def _read_cursor(self, cursor: str) -> tuple[dict[str, _Folder], int | None]:
        state = self._load_cursor(cursor)
        since = cursor_optional_int(state, "since")
        if since is not None:
            _check_micros(since)
        entries = state.get("folders")
        if not isinstance(entries, dict):
            raise InvalidCursor("cursor field 'folders' is not an object")
        folders: dict[str, _Folder] = {}
        for spec, entry in entries.items():
            if not isinstance(entry, dict):
                raise InvalidCursor(f"cursor folder {spec!r:.80} is not an object")
            uv = cursor_int(entry, "uv", minimum=1)
            last = cursor_int(entry, "last")
            folder_since = cursor_optional_int(entry, "since")
            until = cursor_optional_int(entry, "until")
            if (folder_since is None) != (until is None) or (until is not None and until < 1):
                raise InvalidCursor(f"cursor folder {spec!r:.80} has a malformed since bound")
            if folder_since is not None:
                _check_micros(folder_since)
            folders[spec] = _Folder(uv, last, folder_since, until)
        return folders, since

    # -- fetching --------------------------------------------------------------------------------

    def _fetch(self, cursor: str, limit: int) -> Batch:
        folders, since = self._read_cursor(cursor)
        with self._lock:
            return self._run("fetch", lambda s: self._fetch_in(s, folders, since, limit))

    def _fetch_in(
        self, session: _Session, folders: dict[str, _Folder], since: int | None, limit: int
    ) -> Batch:
        out: list[IncomingMessage] = []
        states: dict[str, _Folder] = {}
        more = rescan = False
        for spec in session.specs:
            state = folders.get(spec)
            if len(out) >= limit:
                more = True  # folders not read yet (they may well be empty)
                if state is not None:
                    states[spec] = state
                continue
            folder = session.resolve(spec)
            view = session.open(folder)
            if state is None:  # Rule 4: a folder new to the cursor starts as the first scan
                state = _Folder(view.uv, 0, since, None if since is None else view.top + 1)
            elif state.uv != view.uv:
                log.warning(
                    "%s: UIDVALIDITY of %r changed (%d -> %d); rescanning %s",
                    self.name,
                    folder,
                    state.uv,
                    view.uv,
                    self.rescan_window,
                )
                rescan = True
                start = to_micros(self.now() - self.rescan_window)
                state = _Folder(view.uv, 0, start, view.top + 1)
            messages, state = self._read_folder(session, folder, state, view, limit - len(out))
            out += messages
            states[spec] = state
            more = more or state.last < view.top
        return Batch(tuple(out), self._dump(states, since), more, rescan)

    def _read_folder(
        self, session: _Session, folder: str, state: _Folder, view: _View, need: int
    ) -> tuple[list[IncomingMessage], _Folder]:
        """Read up to `need` messages of the open `folder` after `state` (Rules 2-4)."""
        out: list[IncomingMessage] = []
        last = state.last
        since = None if state.since is None else from_micros(state.since)
        # SEARCH SINCE compares dates in the server's zone: a day earlier covers every zone.
        since_day = None if since is None else since.date() - _dt.timedelta(days=1)
        until = state.until or 0
        dense = True  # fetch UID ranges as they are until one turns out to have holes
        span = self._window
        max_span = self._window * _MAX_SPAN_WINDOWS
        while len(out) < need and last < view.top:
            lo = last + 1
            filtered = since is not None and lo < until
            end = min(view.top, until - 1) if filtered else view.top
            want = need - len(out)
            if dense and not filtered:
                hi = min(lo + min(want, self._window) - 1, end)
                take = list(range(lo, hi + 1))
                whole = True
            else:
                hi = min(lo + span - 1, end)
                criteria: list[Any] = ["UID", f"{lo}:{hi}"]
                if filtered and since_day is not None:
                    criteria += ["SINCE", since_day]
                # Rule 2: a UID at or below `last` can come back; so can one beyond `hi`.
                found = sorted({uid for uid in session.search(criteria) if lo <= uid <= hi})
                if len(found) < want:
                    span = min(span * 2, max_span)
                take, whole = found[:want], len(found) <= want
            existed = 0
            for chunk in _chunks(take, self._window):
                fetched = session.fetch(chunk, self._items(session))
                for uid in chunk:
                    item = fetched.get(uid)
                    if item is None:
                        continue  # no such UID (a hole), or expunged since the search
                    existed += 1
                    message = self._message(session, folder, view.uv, uid, item)
                    if message is None:
                        continue
                    received = message.received_at
                    if (
                        filtered
                        and received is not None
                        and since is not None
                        and received < since
                    ):
                        continue  # Rule 4; an unknown date cannot prove a message is old
                    out.append(message)
            if dense and not filtered and existed < len(take):
                dense = False  # Rule 3: holes; list the UIDs from now on
            last = hi if whole else take[-1]
        if state.until is not None and last >= state.until - 1:
            return out, _Folder(view.uv, last)  # the bound is behind us (Rule 4)
        return out, _Folder(view.uv, last, state.since, state.until)

    def _items(self, session: _Session) -> list[str]:
        items = [self._header_item, "INTERNALDATE", "FLAGS"]
        if session.gmail:
            items += _GMAIL_EXTRA_ITEMS
        return items

    def _message(
        self, session: _Session, folder: str, uv: int, uid: int, item: dict[bytes, Any]
    ) -> IncomingMessage | None:
        """The message of one FETCH response item; ``None`` for the rep's own mail on Gmail."""
        labels = [_text(flag) for flag in item.get(b"FLAGS") or ()]
        # \Recent belongs to one session (RFC 3501 section 2.3.2), not to the message.
        labels = [flag for flag in labels if flag.casefold() != "\\recent"]
        source_id = _source_id(folder, uv, uid)
        thread = None
        if session.gmail:
            gmail_labels = [_label(label) for label in item.get(b"X-GM-LABELS") or ()]
            if any(label.casefold() in _OWN_MAIL_LABELS for label in gmail_labels):
                return None  # Rule 10: the rep's sent mail and drafts are not replies
            msgid = item.get(b"X-GM-MSGID")
            if msgid is not None:
                source_id += f";X-GM-MSGID={int(msgid)}"
            thrid = item.get(b"X-GM-THRID")
            thread = None if thrid is None else str(int(thrid))
            labels += gmail_labels
        return IncomingMessage(
            _header_block(item),
            source_id,
            folder=folder,
            provider_thread_id=thread,
            labels=tuple(dict.fromkeys(labels)),
            received_at=_internaldate(item.get(b"INTERNALDATE")),
            complete=False,
        )

    def _fetch_body(self, message: IncomingMessage) -> bytes:
        return self._fetch_bodies([message])[0]

    def _fetch_bodies(self, messages: Sequence[IncomingMessage]) -> list[bytes]:
        # One UID FETCH per folder for the whole lot: a poll asks for a batch's bodies at
        # once, and a round trip per message is what a remote server makes slow.
        places: list[tuple[str, int, int]] = []
        for message in messages:
            match = _SOURCE_ID.fullmatch(message.source_id)
            if match is None:
                raise SourceError(f"not a message of an IMAP source: {message.source_id!r:.120}")
            places.append(
                (urllib.parse.unquote(match["folder"]), int(match["uv"]), int(match["uid"]))
            )
        by_folder: dict[tuple[str, int], list[int]] = {}
        for folder, uv, uid in places:
            by_folder.setdefault((folder, uv), []).append(uid)

        def bodies(session: _Session) -> dict[tuple[str, int], bytes]:
            found: dict[tuple[str, int], bytes] = {}
            for (folder, uv), uids in by_folder.items():
                # NOOP (or EXAMINE) first: an expunge by another session must be seen (Rule 7).
                view = session.open(folder, reuse=True)
                if view.uv != uv:
                    raise SourceError(
                        f"UIDVALIDITY of IMAP folder {folder!r} changed ({uv} -> {view.uv}): "
                        f"message {uids[0]} cannot be read; the next fetch rescans the folder"
                    )
                items = session.fetch(uids, ["BODY.PEEK[]"])
                for uid in uids:
                    item = items.get(uid)
                    data = None if item is None else item.get(b"BODY[]")
                    if not isinstance(data, bytes):
                        raise SourceError(
                            f"message {uid} is no longer in IMAP folder {folder!r}"
                            " (deleted or moved)"
                        )
                    found[folder, uid] = data
            return found

        with self._lock:
            found = self._run("fetch_body", bodies)
        return [found[folder, uid] for folder, _, uid in places]

    # -- waiting ---------------------------------------------------------------------------------

    def wait(self, cursor: str | None, timeout: float) -> bool:
        """Block up to `timeout` seconds or until new mail may be there (module Rule 9).

        Returns:
            True when new mail was announced, mail past `cursor` is in the first folder, or
            `wake` was called; False on timeout or when the source was closed.

        Raises:
            ConfigError: `timeout` is negative or not a number.
        """
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
            raise ConfigError(f"timeout must be a number >= 0, got {timeout!r}")
        if self._closed:
            return False
        if self._wakeup.is_set():
            self._wakeup.clear()
            return not self._closed
        deadline = time.monotonic() + timeout
        outcome: bool | None = None
        if self._idle:
            with self._lock:
                if self._is_closed():  # closed from another thread meanwhile
                    return False
                try:
                    outcome = self._idle_wait(cursor, deadline)
                except Exception as exc:  # a hint only: never fail the caller (Rule 9)
                    log.info(
                        "%s: IDLE failed (%s: %s); sleeping instead",
                        self.name,
                        type(exc).__name__,
                        exc,
                    )
                    self._drop()
                except BaseException:  # KeyboardInterrupt: the server still awaits DONE
                    self._drop()
                    raise
        if outcome is not None:
            return outcome
        return super().wait(cursor, max(0.0, deadline - time.monotonic()))

    def _is_closed(self) -> bool:
        return self._closed

    def _idle_wait(self, cursor: str | None, deadline: float) -> bool | None:
        """IDLE on the first folder; ``None`` when IDLE cannot be used now."""
        if self._session is None and self._monotonic() < self._retry_at:
            return None  # in backoff: do not reconnect from wait

        def look(session: _Session) -> bool | None:
            if not session.idle:
                return None
            spec = session.specs[0]
            return self._news(cursor, spec, session.open(session.resolve(spec)))

        news = self._run("wait", look)
        if news is None or news or self._session is None:
            return news
        client = self._session.client
        client.idle()
        renew = time.monotonic() + _IDLE_RENEW
        woke = False
        while True:
            if self._wakeup.is_set():
                self._wakeup.clear()
                woke = not self._closed
                break
            now = time.monotonic()
            if now >= deadline:
                break
            if now >= renew:
                self._idle_done(client)
                client.idle()
                renew = now + _IDLE_RENEW
            responses = client.idle_check(
                timeout=max(0.0, min(self.wait_interval, deadline - now))
            )
            if any(_is_bye(response) for response in responses):
                raise imaplib.IMAP4.abort("the server ended the connection during IDLE")
            if any(_is_new_mail(response) for response in responses):
                woke = True
                break
        self._idle_done(client)
        return woke

    def _idle_done(self, client: Any) -> None:
        # DONE under a short deadline: a server that does not answer must not hold the
        # caller for the whole socket timeout.
        sock = client.socket()
        sock.settimeout(min(self._timeout, _DONE_TIMEOUT))
        try:
            _, responses = client.idle_done()
        finally:
            sock.settimeout(self._timeout)
        _forget_untagged(client)
        if any(_is_bye(response) for response in responses):
            raise imaplib.IMAP4.abort("the server ended the connection after IDLE")

    def _news(self, cursor: str | None, spec: str, view: _View) -> bool:
        """Whether the open first folder holds mail past `cursor` (or has another UIDVALIDITY)."""
        if cursor is None:
            return False
        try:
            folders, _since = self._read_cursor(cursor)
        except InvalidCursor:
            return False  # the next fetch rescans; IDLE meanwhile
        state = folders.get(spec)
        if state is None:
            return view.top > 0
        return state.uv != view.uv or view.top > state.last

    # -- connections -----------------------------------------------------------------------------

    def _run(self, operation: str, work: Callable[[_Session], _T]) -> _T:
        """Run `work` on the connection, opening it when needed (module Rule 8)."""
        retried = False
        while True:
            reused = self._session is not None
            session = self._session or self._connect()
            before = session.progress
            try:
                return work(session)
            except SourceError:
                raise  # the server answered and refused (no such folder ...): keep the connection
            except Exception as exc:
                self._drop()
                if (
                    reused
                    and not retried
                    and session.progress == before
                    and isinstance(exc, _DISCONNECTS)
                ):
                    log.info(
                        "%s: the IMAP connection had closed (%s: %s); reconnecting",
                        self.name,
                        type(exc).__name__,
                        exc,
                    )
                    retried = True
                    continue
                raise SourceError(
                    f"IMAP {operation} on {self._host} failed: {type(exc).__name__}: {exc}",
                    source=self.name,
                ) from exc
            except BaseException:  # KeyboardInterrupt mid-command leaves a reply half read
                self._drop()
                raise

    def _connect(self) -> _Session:
        """Open and log in a connection, or fail fast while backing off (module Rule 8).

        Raises:
            SourceError: the attempt failed, or the last one failed too recently.
        """
        now = self._monotonic()
        if now < self._retry_at:
            raise SourceError(
                f"{self._last_failure_text} (next attempt in {self._retry_at - now:.0f} s)",
                source=self.name,
            ) from self._last_failure
        client = None
        try:
            client = self._open_client()
            if self._starttls:
                client.starttls(self._ssl_context)
            self._login(client)
            client.normalise_times = False  # aware INTERNALDATEs, not local naive ones
            capabilities = {_text(c).upper() for c in client.capabilities()}
        except Exception as exc:
            if client is not None:
                _shutdown(client)
            self._attempt_failed(exc)
            raise SourceError(self._last_failure_text, source=self.name) from exc
        gmail = "X-GM-EXT-1" in capabilities if self._gmail is None else self._gmail
        specs = self._specs or (("\\All",) if gmail else ("INBOX",))
        self._failures, self._retry_at = 0, 0.0
        self._last_failure, self._last_failure_text = None, ""
        self._session = _Session(client, gmail=gmail, idle="IDLE" in capabilities, specs=specs)
        return self._session

    def _open_client(self) -> Any:
        if self._client_factory is not None:
            return self._client_factory()
        return imapclient.IMAPClient(
            self._host,
            port=self._port,
            ssl=self._implicit_tls,
            ssl_context=self._ssl_context,
            timeout=imapclient.SocketTimeout(connect=self._timeout, read=self._timeout),
        )

    def _login(self, client: Any) -> None:
        if self._oauth2_token is None:
            client.login(self._username, self._password)
            return
        try:
            token = self._oauth2_token()
        except Exception as exc:  # the host's code: report it as what it is
            raise _TokenError(
                f"the oauth2_token callable failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(token, str) or not token:
            raise _TokenError(
                f"the oauth2_token callable returned {type(token).__name__}, not a token"
            )
        if self._oauth2_mechanism == "OAUTHBEARER":
            client.oauthbearer_login(self._username, token)
        else:
            client.oauth2_login(self._username, token)

    def _attempt_failed(self, exc: BaseException) -> None:
        self._failures += 1
        delay = min(
            self._reconnect_delay * 2 ** min(self._failures - 1, 32), self._max_reconnect_delay
        )
        if isinstance(exc, LoginError):
            delay = max(delay, self._login_retry_delay)
            text = f"IMAP login failed for user {self._username!r} on {self._host}: {_reason(exc)}"
        elif isinstance(exc, _TokenError):
            text = f"IMAP login for user {self._username!r} on {self._host}: {exc}"
        else:
            text = (
                f"cannot connect to IMAP server {self._host}:{self._port}: "
                f"{type(exc).__name__}: {exc}"
            )
        self._retry_at = self._monotonic() + delay
        self._last_failure, self._last_failure_text = exc, text
        log.warning("%s: %s; next attempt in %.0f s", self.name, text, delay)

    def _drop(self) -> None:
        """Close the connection after a failure, without a word to the server."""
        session, self._session = self._session, None
        if session is not None:
            _shutdown(session.client)

    def _close(self) -> None:
        with self._lock:
            session, self._session = self._session, None
            if session is None:
                return
            try:
                session.client.socket().settimeout(min(self._timeout, _DONE_TIMEOUT))
                session.client.logout()
            except Exception:  # a dead connection cannot say goodbye; close it anyway
                _shutdown(session.client)


class _TokenError(Exception):
    """The host's oauth2_token callable failed or returned no token."""


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def _check_str(value: object, name: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a non-empty str, got {value!r}")


def _check_login(
    password: str | None, oauth2_token: Callable[[], str] | None, mechanism: str
) -> None:
    if (password is None) == (oauth2_token is None):
        raise ConfigError("give exactly one of password and oauth2_token")
    if password is not None and not isinstance(password, str):
        raise ConfigError(f"password must be a str, not {type(password).__name__}")
    if oauth2_token is not None and not callable(oauth2_token):
        raise ConfigError("oauth2_token must be a callable returning an access token")
    if mechanism not in ("XOAUTH2", "OAUTHBEARER"):
        raise ConfigError(f"oauth2_mechanism must be XOAUTH2 or OAUTHBEARER, got {mechanism!r}")


def _check_transport(
    port: int | None, ssl: bool, starttls: bool, ssl_context: _ssl.SSLContext | None
) -> tuple[int, bool]:
    """The port and whether TLS is implicit."""
    for flag, what in ((ssl, "ssl"), (starttls, "starttls")):
        if not isinstance(flag, bool):
            raise ConfigError(f"{what} must be a bool, got {flag!r}")
    implicit_tls = ssl and not starttls
    if port is None:
        port = 993 if implicit_tls else 143
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"port must be an int from 1 to 65535, got {port!r}")
    if ssl_context is not None:
        if not isinstance(ssl_context, _ssl.SSLContext):
            raise ConfigError("ssl_context must be an ssl.SSLContext")
        if not (implicit_tls or starttls):
            raise ConfigError("ssl_context needs ssl=True or starttls=True")
    return port, implicit_tls


def _check_numbers(
    *,
    timeout: float,
    window: int,
    reconnect_delay: float,
    max_reconnect_delay: float,
    login_retry_delay: float,
) -> None:
    _check_positive(timeout, "timeout")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ConfigError(f"window must be a positive int, got {window!r}")
    _check_positive(reconnect_delay, "reconnect_delay")
    _check_positive(max_reconnect_delay, "max_reconnect_delay")
    if max_reconnect_delay < reconnect_delay:
        raise ConfigError("max_reconnect_delay must be at least reconnect_delay")
    if (
        isinstance(login_retry_delay, bool)
        or not isinstance(login_retry_delay, (int, float))
        or login_retry_delay < 0
    ):
        raise ConfigError(f"login_retry_delay must be a number >= 0, got {login_retry_delay!r}")


def _check_positive(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")


def _check_folders(folders: Sequence[str]) -> tuple[str, ...]:
    if isinstance(folders, str):
        raise ConfigError("folders must be a collection of folder names, not one str")
    names = tuple(folders)
    if not names:
        raise ConfigError("folders must name at least one folder")
    for name in names:
        if not isinstance(name, str) or not name or name != name.strip():
            raise ConfigError(f"not an IMAP folder name: {name!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"folders are listed twice: {names!r}")
    return names


def _check_fields(fields: Sequence[str]) -> tuple[str, ...]:
    if isinstance(fields, str):
        raise ConfigError("header_fields must be a collection of field names, not one str")
    names = tuple(fields)
    if not names or not all(isinstance(n, str) and _FIELD_NAME.fullmatch(n) for n in names):
        raise ConfigError(f"header_fields must be header field names, got {names!r:.200}")
    return names


def _check_micros(value: int) -> None:
    try:
        from_micros(value)
    except OverflowError as exc:
        raise InvalidCursor(f"cursor time out of range: {value}") from exc


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _label(value: object) -> str:
    # Gmail labels come in modified UTF-7 (RFC 3501 section 5.1.3), like folder names; a
    # label of digits only is parsed as a number by IMAPClient.
    if isinstance(value, bytes):
        return str(imap_utf7.decode(value))
    return str(value)


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if text.startswith(("b'", 'b"')):  # IMAPClient's LoginError carries the bytes' repr
        text = text[2:-1]
    return text


def _source_id(folder: str, uv: int, uid: int) -> str:
    # RFC 5092 IMAP URL syntax: percent-encoded UTF-8 folder name, UIDVALIDITY, UID.
    return f"{urllib.parse.quote(folder, safe='')};UIDVALIDITY={uv}/;UID={uid}"


def _header_block(item: dict[bytes, Any]) -> bytes:
    """The header block of a FETCH item, ending with the empty line that ends a header block.

    The response key echoes the request (``BODY[HEADER.FIELDS (...)]``) in the server's own
    spelling, so it is found by its prefix.
    """
    data = None
    for key, value in item.items():
        if isinstance(key, bytes) and key.upper().startswith(b"BODY[HEADER"):
            data = value if isinstance(value, bytes) else b""  # NIL: no such fields
            break
    if data is None:
        log.warning("the IMAP server sent no header section: %r", sorted(item)[:8])
        data = b""
    if data.endswith((b"\r\n\r\n", b"\n\n")):
        return data
    if data.endswith(b"\n"):
        return data + (b"\r\n" if data.endswith(b"\r\n") else b"\n")
    return data + b"\r\n\r\n" if data else b"\r\n"


def _internaldate(value: object) -> _dt.datetime | None:
    if not isinstance(value, _dt.datetime):
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=_UTC)  # INTERNALDATE always has a zone; be lenient
    return value.astimezone(_UTC)


def _troubled(response: object) -> bool:
    """Whether an untagged response of NOOP says the open folder's view may be stale.

    Dovecot answers NOOP on a folder deleted and created again with an untagged ``NO``; a
    server may announce ``OK [UIDVALIDITY n]``.
    """
    if not isinstance(response, tuple) or not response:
        return False
    if isinstance(response[0], bytes) and response[0].upper() in (b"NO", b"BAD", b"BYE"):
        return True
    return any(isinstance(part, bytes) and b"UIDVALIDITY" in part.upper() for part in response)


def _is_new_mail(response: object) -> bool:
    return (
        isinstance(response, tuple)
        and len(response) >= 2
        and isinstance(response[1], bytes)
        and response[1].upper() in (b"EXISTS", b"RECENT")
    )


def _is_bye(response: object) -> bool:
    return (
        isinstance(response, tuple)
        and len(response) >= 1
        and isinstance(response[0], bytes)
        and response[0].upper() == b"BYE"
    )


def _forget_untagged(client: Any) -> None:
    # imaplib keeps every untagged response it reads until the next SELECT; on a folder kept
    # open for days, NOOP and IDLE would grow that dict without end.
    responses = getattr(getattr(client, "_imap", None), "untagged_responses", None)
    if isinstance(responses, dict):
        for key in ("EXISTS", "RECENT", "EXPUNGE", "FETCH"):
            responses.pop(key, None)


def _shutdown(client: Any) -> None:
    try:
        client.shutdown()
    except Exception as exc:  # closing a broken connection: nothing more to do
        log.debug("closing an IMAP connection: %s: %s", type(exc).__name__, exc)
