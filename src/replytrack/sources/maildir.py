"""A Maildir (and Maildir++ folders) read in place, without marking anything read.

A Maildir (https://cr.yp.to/proto/maildir.html) keeps one file per message: delivery writes it
into ``tmp/`` and renames it into ``new/``; a mail client later renames it into ``cur/`` with
an info suffix (``KEY:2,FLAGS``) and renames it again when the flags change. The *key* (the
name up to the colon) never changes, which is what `mailbox.Maildir` keys on too.

A message's **stamp** is the later of its file's ctime and mtime, in nanoseconds. A file gets
a fresh ctime whenever it enters a directory (delivery, a move from another folder, an IMAP
COPY that keeps the old mtime as the received date), so the stamp orders arrivals even when the
mtime was set into the past. A cursor is ``{"mark": M, "seen": [[id, stamp], ...]}``:

Rule 1: a message is due when its stamp is at least ``M`` and its id is not in ``seen``.
        Messages are delivered in (stamp, id) order, oldest first (base Rule 4).
Rule 2: the mark is taken *before* listing the directories: the clock minus `clock_slack`,
        because file systems stamp files with a coarse clock that can lag the system clock by
        a tick (and a network file system by the skew between hosts). A file that appears
        during or after the listing is stamped at or after the mark, so it is due next time.
        A batch cut short by ``limit`` moves the mark only up to the stamp of its last
        message; messages sharing that stamp are told apart by ``seen``.
Rule 3: ``seen`` holds every delivered id whose stamp is at or after the mark (needed: without
        them the slack zone would be delivered again on every fetch) plus the
        ``remember`` most recently stamped others (an optimisation: a client moving a message
        from ``new/`` to ``cur/``, or changing its flags, renames the file and so bumps its
        ctime; a remembered id is recognised and not delivered again). The cursor is
        therefore bounded: ``remember`` ids plus those stamped within the slack.
Rule 4: duplicates are bounded: a message is delivered again only when its file is renamed
        (read, flagged, moved) after it dropped out of ``seen`` - once per such rename - or
        when an older cursor is fetched again. The tracker's ledger drops them.
Rule 5: nothing is written: no new→cur move, no flag change, no lock, nothing in ``tmp/``.
Rule 6: a file that vanishes between the listing and the read was renamed or deleted: it is
        looked up again by key in ``new/`` and ``cur/``; a deleted message is skipped.

Limits: on a file system that does not update ctime on rename (POSIX allows that), a message
moved in from another folder keeps its old stamp and is missed when that stamp is behind the
mark; Linux file systems, APFS and tmpfs do update it. A system clock that jumps back by more
than `clock_slack` can hide messages delivered in that gap until their stamp passes the mark.
Every fetch lists and stats every file of the watched folders (O(n)).
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs

from replytrack.errors import ConfigError
from replytrack.sources.base import (
    DEFAULT_RESCAN_WINDOW,
    BaseSource,
    Batch,
    IncomingMessage,
    InvalidCursor,
    cursor_int,
)
from replytrack.store.base import from_micros, to_micros

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["MaildirSource"]

# Maildir flags (the letters after ":2,") as the IMAP system flags Dovecot maps them to.
_FLAGS: Final = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "P": "$Forwarded",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",
}


@attrs.frozen
class _File:
    folder: str
    source_id: str
    key: str
    path: str
    stamp: int
    mtime: int
    flags: str


def _labels(flags: str) -> tuple[str, ...]:
    return tuple(_FLAGS[f] for f in sorted(flags) if f in _FLAGS)


def _check_folders(folders: Sequence[str]) -> tuple[str, ...]:
    if isinstance(folders, str):
        raise ConfigError("folders must be a collection of folder names, not one str")
    names = tuple(folders)
    if not names:
        raise ConfigError("folders must name at least one folder ('' is the Maildir itself)")
    for name in names:
        if not isinstance(name, str) or "/" in name or os.sep in name or name in {".", ".."}:
            raise ConfigError(f"not a Maildir++ folder name: {name!r}")
    if len(set(names)) != len(names):
        raise ConfigError(f"folders are listed twice: {names!r}")
    return names


class MaildirSource(BaseSource):
    """New mail in a Maildir; see the module's rules.

    Args:
        path: the Maildir (the directory holding ``new/``, ``cur/`` and ``tmp/``).
        name: the source's name; default ``"maildir:/abs/path"`` (``#folder,...`` appended
            when `folders` is not the default).
        folders: Maildir++ folders to watch: ``""`` is the Maildir itself (reported as folder
            ``"INBOX"``), ``"Sent"`` its ``.Sent`` folder, ``"Archive.2024"`` a nested one.
        include_cur: also read ``cur/``. Turn it off only when no mail client reads the
            Maildir: a client moves messages out of ``new/``, possibly before they are read.
        remember: how many delivered ids beyond the required ones a cursor keeps (Rule 3).
        clock_slack: how far the mark stays behind the clock (Rule 2).
        colon: the separator of the info suffix; ``"!"`` on file systems without colons.
        rescan_window: how far back an unreadable cursor rescans.
        clock: the current aware time; it must agree with the file system's.

    Raises:
        ConfigError: an argument is malformed.
    """

    kind = "maildir"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        folders: Sequence[str] = ("",),
        include_cur: bool = True,
        remember: int = 128,
        clock_slack: _dt.timedelta = _dt.timedelta(seconds=10),
        colon: str = ":",
        rescan_window: _dt.timedelta = DEFAULT_RESCAN_WINDOW,
        clock: Callable[[], _dt.datetime] | None = None,
    ) -> None:
        self._path = os.path.abspath(os.fspath(path))
        self._folders = _check_folders(folders)
        if isinstance(remember, bool) or not isinstance(remember, int) or remember < 0:
            raise ConfigError(f"remember must be an int >= 0, got {remember!r}")
        if not isinstance(clock_slack, _dt.timedelta) or clock_slack < _dt.timedelta(0):
            raise ConfigError(f"clock_slack must be a timedelta >= 0, got {clock_slack!r}")
        if not isinstance(colon, str) or len(colon) != 1:
            raise ConfigError(f"colon must be one character, got {colon!r}")
        if name is None:
            name = f"maildir:{self._path}"
            if self._folders != ("",):
                name += "#" + ",".join(self._folders)
        super().__init__(name, rescan_window=rescan_window, clock=clock)
        self._subdirs = ("new", "cur") if include_cur else ("new",)
        self._remember = remember
        self._slack_ns = _ns(clock_slack)
        self._colon = colon

    @property
    def path(self) -> str:
        """The Maildir's absolute path."""
        return self._path

    # -- cursors -----------------------------------------------------------------------------

    def _initial_cursor(self, since: _dt.datetime | None) -> str:
        mark = 0 if since is None else to_micros(since) * 1000
        return self._dump_cursor({"mark": mark, "seen": []})

    def _read_cursor(self, cursor: str) -> tuple[int, dict[str, int]]:
        state = self._load_cursor(cursor)
        mark = cursor_int(state, "mark")
        entries: Any = state.get("seen")
        if not isinstance(entries, list):
            raise InvalidCursor("cursor field 'seen' is not a list")
        seen: dict[str, int] = {}
        for entry in entries:
            if not (
                isinstance(entry, list)
                and len(entry) == 2
                and isinstance(entry[0], str)
                and isinstance(entry[1], int)
                and not isinstance(entry[1], bool)
            ):
                raise InvalidCursor(f"cursor field 'seen' holds {entry!r:.80}")
            seen[entry[0]] = entry[1]
        return mark, seen

    # -- fetching ------------------------------------------------------------------------------

    def _fetch(self, cursor: str, limit: int) -> Batch:
        mark, seen = self._read_cursor(cursor)
        high = _ns_of(self.now()) - self._slack_ns  # before listing (Rule 2)
        files = self._list()
        done: dict[str, int] = dict(seen)
        due: list[_File] = []
        for file in files:
            if file.stamp < mark:
                continue
            if file.source_id in seen:
                done[file.source_id] = file.stamp  # renamed since: remember the new stamp
            else:
                due.append(file)
        due.sort(key=lambda f: (f.stamp, f.source_id))
        out: list[IncomingMessage] = []
        for file in due[:limit]:
            message = self._read(file)
            if message is not None:
                out.append(message)
            done[file.source_id] = file.stamp
        more = len(due) > limit
        # Rule 2: a batch cut short marks no further than its last message.
        new_mark = max(mark, min(due[limit - 1].stamp, high) if more else high)
        return Batch(tuple(out), self._cursor(new_mark, done), more)

    def _cursor(self, mark: int, done: dict[str, int]) -> str:
        required = {i: s for i, s in done.items() if s >= mark}
        others = sorted(((s, i) for i, s in done.items() if s < mark), reverse=True)
        kept = [(i, s) for s, i in others[: self._remember]]
        seen = sorted([*required.items(), *kept], key=lambda e: (e[1], e[0]))
        return self._dump_cursor({"mark": mark, "seen": [[i, s] for i, s in seen]})

    def _folder_path(self, folder: str) -> str:
        return self._path if folder == "" else os.path.join(self._path, "." + folder)

    def _split(self, filename: str) -> tuple[str, str]:
        key, _, info = filename.partition(self._colon)
        flags = info[2:] if info.startswith("2,") else ""
        return key, flags

    def _list(self) -> list[_File]:
        files: dict[str, _File] = {}
        for folder in self._folders:
            base = self._folder_path(folder)
            for subdir in self._subdirs:
                directory = os.path.join(base, subdir)
                with os.scandir(directory) as entries:
                    for entry in entries:
                        file = self._entry(folder, directory, entry)
                        # A file renamed new→cur while we listed can show up twice.
                        if file is not None and file.source_id not in files:
                            files[file.source_id] = file
        return list(files.values())

    def _entry(self, folder: str, directory: str, entry: os.DirEntry[str]) -> _File | None:
        if entry.name.startswith("."):
            return None  # not a message: dotfiles are reserved (the Maildir spec)
        try:
            if not entry.is_file():
                return None
            st = entry.stat()
        except FileNotFoundError:
            return None  # renamed or deleted since the listing: Rule 6, and Rule 2's mark
        key, flags = self._split(entry.name)
        return _File(
            folder=folder,
            source_id=key if folder == "" else f"{folder}/{key}",
            key=key,
            path=os.path.join(directory, entry.name),
            stamp=max(st.st_ctime_ns, st.st_mtime_ns),
            mtime=st.st_mtime_ns,
            flags=flags,
        )

    def _read(self, file: _File) -> IncomingMessage | None:
        path, flags = file.path, file.flags
        data = self._read_file(path)
        if data is None:
            found = self._locate(file)  # Rule 6
            if found is None:
                return None
            path, flags = found
            data = self._read_file(path)
            if data is None:
                return None
        return IncomingMessage(
            data,
            file.source_id,
            folder=file.folder or "INBOX",
            labels=_labels(flags),
            received_at=from_micros(file.mtime // 1000),
        )

    def _read_file(self, path: str) -> bytes | None:
        """The bytes of `path`, or ``None`` when it is gone. Tests inject faults here."""
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def _locate(self, file: _File) -> tuple[str, str] | None:
        for subdir in self._subdirs:
            directory = os.path.join(self._folder_path(file.folder), subdir)
            for filename in os.listdir(directory):
                key, flags = self._split(filename)
                if key == file.key:
                    return os.path.join(directory, filename), flags
        return None

    def _probe(self) -> Hashable:
        # A directory's mtime changes whenever an entry is added, removed or renamed.
        return tuple(
            os.stat(os.path.join(self._folder_path(folder), subdir)).st_mtime_ns
            for folder in self._folders
            for subdir in self._subdirs
        )


def _ns(delta: _dt.timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _ns_of(moment: _dt.datetime) -> int:
    return to_micros(moment) * 1000
