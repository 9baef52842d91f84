"""An mbox file read from where the last fetch stopped, without locking or changing it.

An mbox (RFC 4155) is one file of messages, each starting with a ``From `` envelope line at
the start of a line; delivery appends. Message boundaries are found exactly as `mailbox.mbox`
finds them (a line starting with ``From ``; body lines that start so are ``>From``-quoted by
the writer and are kept as they are). A cursor is ``{"offset": O, "dev", "ino", "head", "last",
"lasth"}``: the byte offset of the next message, and the identity of the file it is valid in
(device and inode, a digest of the first line, and the offset and a digest of the ``From``
line of the last message delivered).

Rule 1: the file's size is read *before* scanning (the high-water mark); only bytes below it
        are read, so a message appended during the scan is left for the next fetch.
Rule 2: only complete messages are consumed. A message is complete when the next ``From``
        line follows it, or, for the last one, when it ends with a line break and the file's
        mtime is at least `settle` old (nothing has been written for that long: writers append
        a message in one go, holding their lock). An incomplete tail stays after the cursor.
Rule 3: appended mail continues from the offset. A file that was replaced (another inode), or
        truncated (smaller than the offset), or rewritten (its first line, the ``From`` line
        of the last delivered message, or a message boundary at the offset changed - mail
        clients rewrite an mbox when they delete or flag a message) invalidates the cursor,
        which rescans the window by the ``From`` lines' dates (base Rule 3). A message whose
        date cannot be read is always rescanned: an unknown date cannot prove it is old.
Rule 4: a ``since`` bound (an initial cursor or a rescan) filters only the messages below the
        size at which it was made (``until``); mail appended later is always delivered.
Rule 5: a message's id is ``"OFFSET:DIGEST"``, the offset of its ``From`` line and a digest of
        its bytes; ``received_at`` is the ``From`` line's date, read as UTC when it has no
        zone (the traditional format has none, so it may be off by the writer's UTC offset).

Limits: a writer that stalls for longer than `settle` in the middle of the last message gets
that message consumed half; the next fetch then finds no boundary at the offset and rescans
(Rule 3), so the whole message is delivered again. Reading needs no lock, so a host must not
point this source at a file that a client rewrites in place *while* it is being read; a
rewrite between fetches is detected as above.
"""

from __future__ import annotations

import datetime as _dt
import email.utils
import hashlib
import os
from collections.abc import Hashable
from typing import IO, TYPE_CHECKING, Final

import attrs

from replytrack.errors import ConfigError
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

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["MboxSource"]

# Lines are read in pieces of at most this size, so a huge line does not have to fit in memory.
_CHUNK: Final = 1 << 16


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _line_digest(line: bytes) -> str:
    return _digest(line.rstrip(b"\r\n"))


def _envelope_date(line: bytes) -> _dt.datetime | None:
    # "From sender@example.com Mon Jan  1 00:00:00 2024" (asctime, sometimes with a zone).
    parts = line.decode("latin-1").split(None, 2)
    if len(parts) < 3:
        return None
    parsed = email.utils.parsedate_tz(parts[2].strip())
    if parsed is None:
        return None
    try:
        zone = _dt.timezone(_dt.timedelta(seconds=parsed[9] or 0))
        return _dt.datetime(*parsed[:6], tzinfo=zone).astimezone(_dt.timezone.utc)
    except (ValueError, OverflowError):
        return None


def _strip_separator(data: bytes) -> bytes:
    # The empty line before the next "From " belongs to the format, not to the message
    # (mailbox.mbox drops it too).
    if data.endswith(b"\r\n\r\n"):
        return data[:-2]
    if data.endswith(b"\n\n"):
        return data[:-1]
    return data


@attrs.define
class _Pending:
    start: int
    envelope: bytes
    received_at: _dt.datetime | None
    skipped: bool
    chunks: list[bytes] = attrs.Factory(list)


@attrs.frozen
class _Identity:
    dev: int
    ino: int
    head: str | None


class MboxSource(BaseSource):
    """New mail appended to an mbox file; see the module's rules.

    Args:
        path: the mbox file.
        name: the source's name; default ``"mbox:/abs/path"``.
        settle: how long the file must have been left alone before its last message counts
            as complete (Rule 2).
        rescan_window: how far back an invalid cursor rescans.
        clock: the current aware time; it must agree with the file system's.

    Raises:
        ConfigError: an argument is malformed.
    """

    kind = "mbox"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        settle: _dt.timedelta = _dt.timedelta(seconds=2),
        rescan_window: _dt.timedelta = DEFAULT_RESCAN_WINDOW,
        clock: Callable[[], _dt.datetime] | None = None,
    ) -> None:
        self._path = os.path.abspath(os.fspath(path))
        if not isinstance(settle, _dt.timedelta) or settle < _dt.timedelta(0):
            raise ConfigError(f"settle must be a timedelta >= 0, got {settle!r}")
        super().__init__(
            name if name is not None else f"mbox:{self._path}",
            rescan_window=rescan_window,
            clock=clock,
        )
        self._settle = settle

    @property
    def path(self) -> str:
        """The mbox file's absolute path."""
        return self._path

    # -- cursors -----------------------------------------------------------------------------

    def _initial_cursor(self, since: _dt.datetime | None) -> str:
        if since is None:
            return self._dump_cursor({"offset": 0})
        size = os.stat(self._path).st_size  # Rule 4: the bound covers what is there now
        return self._dump_cursor({"offset": 0, "since": to_micros(since), "until": size})

    def _open(self) -> IO[bytes]:
        """Open the mbox for reading. Tests inject faults here."""
        return open(self._path, "rb")  # the caller closes it in a with block

    # -- fetching ------------------------------------------------------------------------------

    def _fetch(self, cursor: str, limit: int) -> Batch:
        state = self._load_cursor(cursor)
        offset = cursor_int(state, "offset")
        since_micros = cursor_optional_int(state, "since")
        until = cursor_optional_int(state, "until") or 0
        since = None if since_micros is None else from_micros(since_micros)
        with self._open() as handle:
            st = os.fstat(handle.fileno())
            size = st.st_size  # the high-water mark, before scanning (Rule 1)
            identity = _Identity(st.st_dev, st.st_ino, self._head(handle))
            if offset > 0:
                self._check(handle, state, identity, offset, size)
            settled = self.now() - from_micros(st.st_mtime_ns // 1000) >= self._settle
            messages, next_offset, last, more = self._scan(
                handle, offset, size, limit, since=since, until=until, settled=settled
            )
        fields: dict[str, object] = {
            "offset": next_offset,
            "dev": identity.dev,
            "ino": identity.ino,
            "head": identity.head,
        }
        if last is not None:
            fields["last"], fields["lasth"] = last
        elif (previous := cursor_optional_int(state, "last")) is not None and next_offset > 0:
            # Nothing consumed this time: the last consumed message is still the old one.
            fields["last"], fields["lasth"] = previous, cursor_str(state, "lasth")
        if since_micros is not None and next_offset < until:
            fields["since"], fields["until"] = since_micros, until  # Rule 4
        return Batch(tuple(messages), self._dump_cursor(fields), more)

    @staticmethod
    def _head(handle: IO[bytes]) -> str | None:
        handle.seek(0)
        line = handle.readline(_CHUNK)
        return _line_digest(line) if line else None

    def _check(
        self,
        handle: IO[bytes],
        state: dict[str, object],
        identity: _Identity,
        offset: int,
        size: int,
    ) -> None:
        """Raise `InvalidCursor` unless the cursor still fits the file (Rule 3)."""
        dev, ino = cursor_optional_int(state, "dev"), cursor_optional_int(state, "ino")
        if (dev, ino) != (None, None) and (dev, ino) != (identity.dev, identity.ino):
            raise InvalidCursor("the mbox file was replaced")
        if size < offset:
            raise InvalidCursor(f"the mbox file was truncated ({size} < {offset} bytes)")
        if cursor_str(state, "head") not in (None, identity.head):
            raise InvalidCursor("the mbox file was rewritten (its first line changed)")
        last, last_digest = cursor_optional_int(state, "last"), cursor_str(state, "lasth")
        if last is not None and last_digest is not None:
            handle.seek(last)
            if _line_digest(handle.readline(_CHUNK)) != last_digest:
                raise InvalidCursor("the mbox file was rewritten (the last message moved)")
        if offset < size:
            handle.seek(offset - 1)
            if handle.read(6) != b"\nFrom ":
                raise InvalidCursor(f"no message starts at offset {offset}")

    def _scan(
        self,
        handle: IO[bytes],
        offset: int,
        size: int,
        limit: int,
        *,
        since: _dt.datetime | None,
        until: int,
        settled: bool,
    ) -> tuple[list[IncomingMessage], int, tuple[int, str] | None, bool]:
        """Read complete messages from `offset` up to `size`, at most `limit` of them.

        Returns:
            The messages delivered; the offset after the last message consumed (delivered or
            skipped by the ``since`` bound); that message's offset and envelope digest, or
            ``None`` when none was consumed; and whether more may follow.
        """
        out: list[IncomingMessage] = []
        last: tuple[int, str] | None = None
        current: _Pending | None = None
        handle.seek(offset)
        pos = offset
        at_line_start = True
        ends_with_newline = True
        while pos < size:
            line = handle.readline(min(_CHUNK, size - pos))
            if not line:
                break  # the file shrank under us; the next fetch's checks will tell
            if at_line_start and line.startswith(b"From "):
                if current is not None:
                    if not current.skipped:
                        if len(out) == limit:
                            return out, current.start, last, True
                        out.append(self._message(current))
                    last = (current.start, _line_digest(current.envelope))
                received_at = _envelope_date(line)
                skipped = (
                    since is not None
                    and pos < until
                    and received_at is not None
                    and received_at < since
                )
                current = _Pending(pos, line, received_at, skipped)
            elif current is not None and not current.skipped:
                current.chunks.append(line)
            pos += len(line)
            at_line_start = ends_with_newline = line.endswith(b"\n")
        if current is None:
            return out, offset, last, False  # not one "From " line: nothing to consume
        if not (settled and ends_with_newline and pos == size):
            return out, current.start, last, False  # Rule 2: the tail may still be written
        if not current.skipped:
            if len(out) == limit:
                return out, current.start, last, True
            out.append(self._message(current))
        return out, size, (current.start, _line_digest(current.envelope)), False

    @staticmethod
    def _message(pending: _Pending) -> IncomingMessage:
        data = _strip_separator(b"".join(pending.chunks))
        return IncomingMessage(
            data, f"{pending.start}:{_digest(data)}", received_at=pending.received_at
        )

    def _probe(self) -> Hashable:
        st = os.stat(self._path)
        return (st.st_ino, st.st_size, st.st_mtime_ns)
