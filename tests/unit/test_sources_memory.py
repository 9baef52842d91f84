"""MemorySource: the test double hosts use (generations, header-first delivery, failures)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from replytrack.errors import ConfigError, SourceError
from replytrack.sources import IncomingMessage, MemorySource
from replytrack.sources.memory import header_block
from replytrack.testing import build_reply

UTC = dt.timezone.utc
NOW = dt.datetime(2027, 3, 1, 9, 30, tzinfo=UTC)


def test_headers_only_delivers_header_blocks_and_fetch_body_the_rest() -> None:
    data = build_reply()
    source = MemorySource([data], headers_only=True)
    (incoming,) = source.fetch(None).messages
    assert not incoming.complete
    assert incoming.data == header_block(data)
    assert incoming.data.endswith(b"\r\n\r\n")
    assert source.fetch_body(incoming) == data
    assert source.body_fetches == 1


def test_prepared_messages_keep_their_provider_fields() -> None:
    prepared = IncomingMessage(
        build_reply(), "uid-7", folder="INBOX", provider_thread_id="t1", labels=("\\Seen",)
    )
    source = MemorySource([prepared])
    (incoming,) = source.fetch(None).messages
    assert (incoming.source_id, incoming.folder, incoming.provider_thread_id) == (
        "uid-7",
        "INBOX",
        "t1",
    )
    assert incoming.labels == ("\\Seen",)


def test_add_dates_messages_by_the_injected_clock() -> None:
    source = MemorySource(clock=lambda: NOW)
    assert source.add(b"Subject: x\r\n\r\n").received_at == NOW


def test_invalidate_without_keep_empties_the_mailbox() -> None:
    source = MemorySource([build_reply()])
    cursor = source.fetch(None).cursor
    source.invalidate(keep=False)
    batch = source.fetch(cursor)
    assert batch.rescan
    assert batch.messages == ()


def test_fail_next_fails_that_many_fetches_then_recovers() -> None:
    source = MemorySource([build_reply()])
    source.fail_next(2)
    for _ in range(2):
        with pytest.raises(SourceError):
            source.fetch(None)
    assert len(source.fetch(None).messages) == 1


def test_fail_next_checks_its_count() -> None:
    with pytest.raises(ConfigError):
        MemorySource().fail_next(0)


def test_add_from_another_thread_wakes_wait() -> None:
    source = MemorySource()
    cursor = source.fetch(None).cursor
    timer = threading.Timer(0.05, source.add, args=(build_reply(),))
    timer.start()
    try:
        assert source.wait(cursor, 10) is True
    finally:
        timer.join()


def test_message_without_a_date_is_always_rescanned() -> None:
    source = MemorySource([IncomingMessage(build_reply(), "1")])
    cursor = source.fetch(None).cursor
    source.invalidate()
    assert len(source.fetch(cursor).messages) == 1


def test_labels_must_not_be_one_str() -> None:
    with pytest.raises(ConfigError):
        MemorySource().add(b"x", labels="\\Seen")


def test_header_block_of_a_message_without_body() -> None:
    assert header_block(b"Subject: x\n") == b"Subject: x\n"
    assert header_block(b"Subject: x\n\nbody") == b"Subject: x\n\n"
