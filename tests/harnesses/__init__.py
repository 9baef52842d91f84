"""Harnesses for the mailbox source contract suite (``tests/unit/test_source_contract.py``).

A harness owns one source under test and knows how to drive the mailbox behind it: deliver
mail, invalidate a cursor the way that mailbox can, break it part-way through a fetch. The
contract suite runs every test once per harness listed in its ``HARNESSES``; a new source joins
with one harness class in a module of this package. ``tests`` is on ``sys.path`` (pytest's
``pythonpath`` setting), so test modules import ``harnesses`` directly.
"""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

import pytest

from replytrack.headers import parse_headers
from replytrack.sources import Batch, IncomingMessage, MailboxSource
from replytrack.sources.base import BaseSource
from replytrack.testing import build_reply

__all__ = ["Harness", "drain", "ids", "message"]


def message(n: int) -> bytes:
    """Test message number `n`: a reply whose Message-ID is ``<m{n}@prospect.example>``."""
    return build_reply(message_id=f"<m{n}@prospect.example>", subject=f"Re: question {n}")


def ids(batch: Batch | list[IncomingMessage] | tuple[IncomingMessage, ...]) -> list[int]:
    """The numbers of the test messages in `batch`, in order."""
    messages = batch.messages if isinstance(batch, Batch) else batch
    out = []
    for m in messages:
        mid = parse_headers(m.data).message_id
        assert mid is not None
        out.append(int(mid.split("@")[0][1:]))
    return out


def drain(source: MailboxSource, cursor: str | None, limit: int = 100) -> tuple[list[int], str]:
    """Fetch until caught up; the numbers delivered and the final cursor."""
    out: list[int] = []
    for _ in range(1000):
        batch = source.fetch(cursor, limit)
        out += ids(batch)
        cursor = batch.cursor
        if not batch.more:
            return out, cursor
    raise AssertionError("the source never caught up")


class Harness:
    """One source under test, and the means to drive the mailbox behind it.

    Subclasses take ``(tmp_path, request)``: a fresh directory and the pytest request, from
    which a harness may get a server fixture (``request.getfixturevalue("dovecot")``) or skip.
    """

    #: Whether `deliver` can date a message in the past (so rescan windows can be checked).
    dated: ClassVar[bool] = True

    #: The type of the outside world's exception that `inject_fault` causes: the cause the
    #: source's `SourceError` must chain (``OSError`` for files and sockets; a client
    #: library's own error type where the library wraps the socket's).
    fault_type: ClassVar[type[BaseException]] = OSError

    source: BaseSource

    def deliver(self, n: int, *, received_at: dt.datetime | None = None) -> None:
        """Put test message `n` into the mailbox, received at `received_at` (default now)."""
        raise NotImplementedError

    def invalidate(self, cursor: str) -> str:
        """Make `cursor` invalid the way this mailbox can; return the cursor to fetch from."""
        raise NotImplementedError

    def inject_fault(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make the next fetch fail part-way through with an exception of the outside world.

        The exception reaching the source is a `fault_type`.
        """
        raise NotImplementedError

    def break_mailbox(self) -> None:
        """Make the mailbox unreadable (gone)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the harness holds beyond the source (called after each test)."""
