"""The mailbox source contract: every `MailboxSource` passes this same suite.

Each test takes the ``mailbox`` fixture, a `Harness` (``tests/harnesses``) that owns one
source and knows how to deliver mail into it, invalidate its cursors and break it, once per
entry of `HARNESSES`. A new source joins with one harness class. Behaviour only one source
has (Maildir renames, mbox partial writes) is tested beside that source, in
``test_sources_*.py``.

The contract (``replytrack.sources.base``): no miss, bounded duplicates, invalid cursors rescan
a window by date and never jump to "now", oldest first, failures as `SourceError`.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harnesses import Harness, drain, ids
from harnesses.stdlib import MaildirHarness, MboxHarness, MemoryHarness
from replytrack.errors import ConfigError, SourceError
from replytrack.headers import parse_headers
from replytrack.sources import MailboxSource

UTC = dt.timezone.utc
FAST_WAIT = 0.01


def _adapter(module: str, name: str) -> Callable[[Path, pytest.FixtureRequest], Harness]:
    """A harness of a provider adapter, imported when used (its extra may be missing)."""

    def make(tmp_path: Path, request: pytest.FixtureRequest) -> Harness:
        harness: Callable[[Path, pytest.FixtureRequest], Harness]
        harness = getattr(importlib.import_module(f"harnesses.{module}"), name)
        return harness(tmp_path, request)

    return make


HARNESSES: dict[str, Callable[[Path, pytest.FixtureRequest], Harness]] = {
    "memory": MemoryHarness,
    "maildir": MaildirHarness,
    "mbox": MboxHarness,
    "imap": _adapter("imap", "IMAPHarness"),
    "gmail": _adapter("gmail", "GmailHarness"),
    "graph": _adapter("graph", "GraphHarness"),
}


@pytest.fixture(params=sorted(HARNESSES))
def mailbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    harness = HARNESSES[request.param](tmp_path, request)
    harness.source.wait_interval = FAST_WAIT  # type: ignore[misc]
    try:
        with harness.source:
            yield harness
    finally:
        harness.close()


# --------------------------------------------------------------------------------------------
# The port
# --------------------------------------------------------------------------------------------


def test_is_a_mailbox_source(mailbox: Harness) -> None:
    assert isinstance(mailbox.source, MailboxSource)
    assert mailbox.source.name


def test_cursor_is_versioned_json(mailbox: Harness) -> None:
    cursor = mailbox.source.fetch(None).cursor
    state = json.loads(cursor)
    assert state["v"] == 1
    assert state["kind"] == type(mailbox.source).kind


def test_empty_mailbox_gives_an_empty_batch(mailbox: Harness) -> None:
    batch = mailbox.source.fetch(None)
    assert batch.messages == ()
    assert batch.more is False
    assert batch.rescan is False


def test_fetch_none_starts_from_the_initial_cursor(mailbox: Harness) -> None:
    mailbox.deliver(1)
    mailbox.deliver(2)
    assert ids(mailbox.source.fetch(None)) == [1, 2]
    assert ids(mailbox.source.fetch(mailbox.source.initial_cursor())) == [1, 2]


def test_messages_carry_the_header_block_and_fetch_body_the_whole(mailbox: Harness) -> None:
    mailbox.deliver(1)
    (incoming,) = mailbox.source.fetch(None).messages
    assert parse_headers(incoming.data).message_id == "m1@prospect.example"
    whole = mailbox.source.fetch_body(incoming)
    assert b"Could we talk on Tuesday?" in whole
    if incoming.complete:
        assert whole == incoming.data
    else:  # headers first: the header block is the start of the whole message
        assert whole.startswith(incoming.data.rstrip(b"\r\n"))
    assert incoming.received_at is None or incoming.received_at.tzinfo is not None


def test_source_ids_are_stable_across_fetches(mailbox: Harness) -> None:
    mailbox.deliver(1)
    first = mailbox.source.fetch(None).messages
    again = mailbox.source.fetch(None).messages
    assert [m.source_id for m in first] == [m.source_id for m in again]


# --------------------------------------------------------------------------------------------
# No miss, bounded duplicates
# --------------------------------------------------------------------------------------------


def test_new_mail_across_fetches(mailbox: Harness) -> None:
    mailbox.deliver(1)
    batch = mailbox.source.fetch(None)
    assert ids(batch) == [1]
    mailbox.deliver(2)
    mailbox.deliver(3)
    batch = mailbox.source.fetch(batch.cursor)
    assert ids(batch) == [2, 3]
    assert mailbox.source.fetch(batch.cursor).messages == ()


def test_caught_up_fetches_deliver_nothing_again(mailbox: Harness) -> None:
    mailbox.deliver(1)
    cursor = mailbox.source.fetch(None).cursor
    for _ in range(3):
        batch = mailbox.source.fetch(cursor)
        assert batch.messages == ()
        assert batch.more is False
        cursor = batch.cursor


def test_limit_splits_oldest_first(mailbox: Harness) -> None:
    for n in range(1, 8):
        mailbox.deliver(n)
    seen: list[list[int]] = []
    cursor = None
    while True:
        batch = mailbox.source.fetch(cursor, limit=3)
        seen.append(ids(batch))
        cursor = batch.cursor
        if not batch.more:
            break
    assert [n for part in seen for n in part] == list(range(1, 8))
    assert all(len(part) <= 3 for part in seen)
    assert seen[0] == [1, 2, 3]


def test_resume_from_a_committed_cursor_gets_what_arrived_meanwhile(mailbox: Harness) -> None:
    mailbox.deliver(1)
    mailbox.deliver(2)
    committed = mailbox.source.fetch(None, limit=1).cursor
    mailbox.deliver(3)
    got, _ = drain(mailbox.source, committed)
    assert got == [2, 3]


def test_refetch_from_an_older_cursor_redelivers_boundedly(mailbox: Harness) -> None:
    mailbox.deliver(1)
    old = mailbox.source.fetch(None).cursor
    mailbox.deliver(2)
    mailbox.deliver(3)
    first, newest = drain(mailbox.source, old)
    again, _ = drain(mailbox.source, old)
    assert first == again == [2, 3]  # re-delivered, and nothing before the old cursor
    assert drain(mailbox.source, newest)[0] == []


def test_random_interleaving_never_misses(mailbox: Harness) -> None:
    """Deliveries, fetches of any size and crashes (a batch not committed), in any order."""
    rng = random.Random(6)  # noqa: S311 (a reproducible schedule, not a secret)
    delivered: list[int] = []
    received: list[int] = []
    committed: str | None = None
    uncommitted = 0
    for step in range(60):
        if rng.random() < 0.5:
            delivered.append(step)
            mailbox.deliver(step)
            continue
        batch = mailbox.source.fetch(committed, limit=rng.randint(1, 4))
        received += ids(batch)
        if rng.random() < 0.2:
            uncommitted += len(batch.messages)  # the host crashed before committing
        else:
            committed = batch.cursor
    rest, _ = drain(mailbox.source, committed)
    received += rest
    assert set(received) == set(delivered)
    assert len(received) - len(set(received)) <= uncommitted  # bounded duplicates
    firsts = sorted(set(received), key=received.index)
    assert firsts == delivered  # oldest first


# --------------------------------------------------------------------------------------------
# Invalid cursors rescan a window, never jump to "now"
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not a cursor",
        "[1, 2]",
        '{"v": 1, "kind": "some-other-source", "offset": 0}',
        '{"v": 99, "kind": "KIND"}',
        '{"v": 1, "kind": "KIND", "offset": "x", "mark": "x", "gen": "x", "next": -1}',
    ],
)
def test_unreadable_cursor_rescans_the_window(mailbox: Harness, cursor: str) -> None:
    mailbox.deliver(1)
    mailbox.deliver(2)
    batch = mailbox.source.fetch(cursor.replace("KIND", type(mailbox.source).kind))
    assert batch.rescan is True
    assert ids(batch) == [1, 2]
    assert mailbox.source.fetch(batch.cursor).rescan is False


def test_invalidated_cursor_rescans_instead_of_jumping_to_now(mailbox: Harness) -> None:
    mailbox.deliver(1)
    cursor = mailbox.source.fetch(None).cursor
    mailbox.deliver(2)
    cursor = mailbox.invalidate(cursor)
    batch = mailbox.source.fetch(cursor)
    assert batch.rescan is True
    assert 2 in ids(batch)  # what arrived since the cursor is not lost
    mailbox.deliver(3)
    assert ids(mailbox.source.fetch(batch.cursor)) == [3]


def test_rescan_is_bounded_by_the_window(mailbox: Harness) -> None:
    if not mailbox.dated:
        pytest.skip("this mailbox cannot date a message in the past")
    now = dt.datetime.now(UTC)
    mailbox.deliver(1, received_at=now - dt.timedelta(days=30))
    mailbox.deliver(2, received_at=now - dt.timedelta(days=2))
    batch = mailbox.source.fetch(mailbox.invalidate(mailbox.source.fetch(None).cursor))
    assert batch.rescan is True
    assert ids(batch) == [2]


def test_since_bounds_only_the_first_scan(mailbox: Harness) -> None:
    if not mailbox.dated:
        pytest.skip("this mailbox cannot date a message in the past")
    now = dt.datetime.now(UTC)
    mailbox.deliver(1, received_at=now - dt.timedelta(days=30))
    mailbox.deliver(2, received_at=now - dt.timedelta(days=2))
    cursor = mailbox.source.initial_cursor(since=now - dt.timedelta(days=7))
    # Late, with an old date (a message moved in, a slow relay): it arrived after the
    # cursor was made, so it counts.
    mailbox.deliver(3, received_at=now - dt.timedelta(days=30))
    got, _ = drain(mailbox.source, cursor, limit=1)
    assert got == [2, 3]


def test_since_in_the_future_is_taken_as_now(mailbox: Harness) -> None:
    cursor = mailbox.source.initial_cursor(since=dt.datetime.now(UTC) + dt.timedelta(days=1))
    time.sleep(0.02)
    mailbox.deliver(1)
    assert drain(mailbox.source, cursor)[0] == [1]


# --------------------------------------------------------------------------------------------
# Failures
# --------------------------------------------------------------------------------------------


def test_a_failed_fetch_loses_nothing(mailbox: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(1, 4):
        mailbox.deliver(n)
    cursor = mailbox.source.fetch(None, limit=1).cursor
    for n in range(4, 7):
        mailbox.deliver(n)
    mailbox.inject_fault(monkeypatch)
    with pytest.raises(SourceError) as caught:
        mailbox.source.fetch(cursor)
    assert caught.value.source == mailbox.source.name
    assert isinstance(caught.value.__cause__, mailbox.fault_type)
    assert drain(mailbox.source, cursor)[0] == [2, 3, 4, 5, 6]


def test_an_unreadable_mailbox_raises_source_error(mailbox: Harness) -> None:
    cursor = mailbox.source.fetch(None).cursor
    mailbox.break_mailbox()
    with pytest.raises(SourceError) as caught:
        mailbox.source.fetch(cursor)
    assert caught.value.source == mailbox.source.name
    assert caught.value.__cause__ is not None


def test_misuse_raises_config_error(mailbox: Harness) -> None:
    with pytest.raises(ConfigError):
        mailbox.source.fetch(None, limit=0)
    with pytest.raises(ConfigError):
        mailbox.source.fetch(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        mailbox.source.initial_cursor(since=dt.datetime(2026, 1, 1))
    with pytest.raises(ConfigError):
        mailbox.source.wait(None, -1)


# --------------------------------------------------------------------------------------------
# wait, close
# --------------------------------------------------------------------------------------------


def test_wait_times_out_without_mail(mailbox: Harness) -> None:
    cursor = mailbox.source.fetch(None).cursor
    started = time.monotonic()
    assert mailbox.source.wait(cursor, 0.05) is False
    assert time.monotonic() - started >= 0.04


def test_wait_wakes_when_mail_arrived_since_the_last_fetch(mailbox: Harness) -> None:
    cursor = mailbox.source.fetch(None).cursor
    time.sleep(0.02)  # a directory's mtime must be able to change
    mailbox.deliver(1)
    assert mailbox.source.wait(cursor, 5) is True


def test_wake_interrupts_wait(mailbox: Harness) -> None:
    mailbox.source.wake()
    assert mailbox.source.wait(None, 5) is True


def test_close_is_idempotent_and_ends_use(mailbox: Harness) -> None:
    mailbox.source.close()
    mailbox.source.close()
    assert mailbox.source.closed
    assert mailbox.source.wait(None, 5) is False
    with pytest.raises(ConfigError):
        mailbox.source.fetch(None)
    with pytest.raises(ConfigError), mailbox.source:
        pass
