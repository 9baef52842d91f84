"""Harnesses for the standard-library sources: memory, Maildir, mbox."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from pathlib import Path
from typing import IO, Any

import pytest

from harnesses import Harness, message
from replytrack.sources import MaildirSource, MboxSource, MemorySource

__all__ = ["MaildirHarness", "MboxHarness", "MemoryHarness"]

UTC = dt.timezone.utc


class MemoryHarness(Harness):
    def __init__(self, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.source = MemorySource()

    def deliver(self, n: int, *, received_at: dt.datetime | None = None) -> None:
        assert isinstance(self.source, MemorySource)
        self.source.add(message(n), received_at=received_at)

    def invalidate(self, cursor: str) -> str:
        assert isinstance(self.source, MemorySource)
        self.source.invalidate()
        return cursor

    def inject_fault(self, monkeypatch: pytest.MonkeyPatch) -> None:
        assert isinstance(self.source, MemorySource)
        self.source.fail_next(1, OSError("connection reset"))

    def break_mailbox(self) -> None:
        assert isinstance(self.source, MemorySource)
        self.source.fail_next(100, OSError("gone"))


class MaildirHarness(Harness):
    # A file's stamp is its ctime, which a test cannot set into the past.
    dated = False

    def __init__(self, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.path = tmp_path / "Maildir"
        for sub in ("new", "cur", "tmp"):
            (self.path / sub).mkdir(parents=True)
        self.source = MaildirSource(self.path)
        self.count = 0

    def deliver(self, n: int, *, received_at: dt.datetime | None = None) -> None:
        # As an MDA does: write into tmp/, then rename into new/.
        self.count += 1
        key = f"{int(time.time())}.{self.count:08d}.testhost"
        tmp = self.path / "tmp" / key
        tmp.write_bytes(message(n))
        if received_at is not None:
            stamp = received_at.timestamp()
            os.utime(tmp, (stamp, stamp))
        tmp.rename(self.path / "new" / key)

    def invalidate(self, cursor: str) -> str:
        return "not a cursor"  # a Maildir has no UIDVALIDITY: an unreadable cursor it is

    def inject_fault(self, monkeypatch: pytest.MonkeyPatch) -> None:
        assert isinstance(self.source, MaildirSource)
        original = self.source._read_file
        calls = iter(range(1_000_000))

        def failing(path: str) -> bytes | None:
            if next(calls) == 1:
                raise OSError("I/O error")
            return original(path)

        monkeypatch.setattr(self.source, "_read_file", failing)

    def break_mailbox(self) -> None:
        shutil.rmtree(self.path)


class MboxHarness(Harness):
    def __init__(self, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.path = tmp_path / "inbox.mbox"
        self.path.write_bytes(b"")
        self.source = MboxSource(self.path, settle=dt.timedelta(0))

    def deliver(self, n: int, *, received_at: dt.datetime | None = None) -> None:
        when = (received_at or dt.datetime.now(UTC)).astimezone(UTC)
        envelope = f"From jo@customer.example {when:%a %b %d %H:%M:%S %Y}\n".encode()
        with self.path.open("ab") as handle:
            handle.write(envelope + message(n).replace(b"\r\n", b"\n") + b"\n")

    def invalidate(self, cursor: str) -> str:
        # Replaced, as a mail client compacting the file does: a new inode, same content.
        copy = self.path.with_suffix(".new")
        shutil.copyfile(self.path, copy)
        copy.replace(self.path)
        return cursor

    def inject_fault(self, monkeypatch: pytest.MonkeyPatch) -> None:
        assert isinstance(self.source, MboxSource)
        original = self.source._open

        def failing_open() -> IO[bytes]:
            monkeypatch.setattr(self.source, "_open", original)  # fail once
            return _FailingReader(original(), after=40)  # type: ignore[return-value]

        monkeypatch.setattr(self.source, "_open", failing_open)

    def break_mailbox(self) -> None:
        self.path.unlink()


class _FailingReader:
    """A file whose reads fail after a few lines, as a disk or a network mount may."""

    def __init__(self, handle: IO[bytes], *, after: int) -> None:
        self._handle = handle
        self._left = after

    def __enter__(self) -> _FailingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()

    def readline(self, size: int = -1) -> bytes:
        self._left -= 1
        if self._left < 0:
            raise OSError("I/O error")
        return self._handle.readline(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)
