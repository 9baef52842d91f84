"""MboxSource: appends, truncation, replacement, rewrites, partial writes, stdlib boundaries."""

from __future__ import annotations

import datetime as dt
import mailbox
from pathlib import Path

import pytest

from replytrack.errors import SourceError
from replytrack.headers import parse_headers
from replytrack.sources import IncomingMessage, MboxSource
from replytrack.testing import build_reply

UTC = dt.timezone.utc
CORPUS = Path(__file__).parent.parent / "corpus"
SETTLED = dt.timedelta(0)


def entry(n: int, when: str = "Mon Mar  1 09:30:00 2027") -> bytes:
    body = build_reply(message_id=f"<m{n}@x.example>").replace(b"\r\n", b"\n")
    return f"From jo@customer.example {when}\n".encode() + body + b"\n"


def ids(messages: tuple[IncomingMessage, ...]) -> list[int]:
    return [int(str(parse_headers(m.data).message_id).split("@")[0][1:]) for m in messages]


@pytest.fixture
def mbox(tmp_path: Path) -> Path:
    path = tmp_path / "inbox"
    path.write_bytes(entry(1) + entry(2))
    return path


def test_appended_mail_continues_from_the_offset(mbox: Path) -> None:
    source = MboxSource(mbox, settle=SETTLED)
    cursor = source.fetch(None).cursor
    with mbox.open("ab") as handle:
        handle.write(entry(3))
    batch = source.fetch(cursor)
    assert ids(batch.messages) == [3]
    assert not batch.rescan


def test_truncation_rescans_the_window(mbox: Path) -> None:
    source = MboxSource(mbox, settle=SETTLED, clock=lambda: dt.datetime(2027, 3, 2, tzinfo=UTC))
    cursor = source.fetch(None).cursor
    mbox.write_bytes(entry(3))
    batch = source.fetch(cursor)
    assert batch.rescan
    assert ids(batch.messages) == [3]


def test_a_rewrite_that_keeps_the_size_is_detected(mbox: Path) -> None:
    """A client deleting message 1 in place while message 3 arrives: same inode, bigger file."""
    source = MboxSource(mbox, settle=SETTLED, clock=lambda: dt.datetime(2027, 3, 2, tzinfo=UTC))
    cursor = source.fetch(None).cursor
    with mbox.open("r+b") as handle:
        handle.write(entry(2, "Mon Mar  1 09:31:00 2027") + entry(3) + entry(4))
    batch = source.fetch(cursor)
    assert batch.rescan
    assert ids(batch.messages) == [2, 3, 4]


def test_rescan_skips_mail_older_than_the_window(tmp_path: Path) -> None:
    path = tmp_path / "inbox"
    path.write_bytes(entry(1, "Mon Jan  4 09:30:00 2027") + entry(2, "Mon Mar  1 09:30:00 2027"))
    source = MboxSource(path, settle=SETTLED, clock=lambda: dt.datetime(2027, 3, 2, tzinfo=UTC))
    batch = source.fetch("junk")
    assert batch.rescan
    assert ids(batch.messages) == [2]


def test_undated_envelopes_are_always_rescanned(tmp_path: Path) -> None:
    path = tmp_path / "inbox"
    path.write_bytes(entry(1, "yesterday-ish"))
    source = MboxSource(path, settle=SETTLED)
    (incoming,) = source.fetch("junk").messages
    assert incoming.received_at is None


def test_an_unfinished_last_message_is_left_for_later(tmp_path: Path) -> None:
    path = tmp_path / "inbox"
    whole = entry(2)
    path.write_bytes(entry(1) + whole[:200])  # the MDA is still writing message 2
    source = MboxSource(path, settle=SETTLED)
    batch = source.fetch(None)
    assert ids(batch.messages) == [1]
    with path.open("ab") as handle:
        handle.write(whole[200:])
    assert ids(source.fetch(batch.cursor).messages) == [2]


def test_a_last_message_written_just_now_waits_for_settle(mbox: Path) -> None:
    now = dt.datetime.now(UTC)
    fresh = MboxSource(mbox, clock=lambda: now)
    batch = fresh.fetch(None)
    assert ids(batch.messages) == [1]  # message 1 is followed by a From line: complete
    later = MboxSource(mbox, clock=lambda: now + dt.timedelta(seconds=3))
    assert ids(later.fetch(batch.cursor).messages) == [2]


def test_the_separator_line_is_not_part_of_the_message(tmp_path: Path) -> None:
    path = tmp_path / "inbox"
    path.write_bytes(b"From a Mon Mar  1 09:30:00 2027\r\nSubject: x\r\n\r\nbody\r\n\r\n")
    (incoming,) = MboxSource(path, settle=SETTLED).fetch(None).messages
    assert incoming.data == b"Subject: x\r\n\r\nbody\r\n"
    assert incoming.received_at == dt.datetime(2027, 3, 1, 9, 30, tzinfo=UTC)


def test_boundaries_match_the_standard_library(tmp_path: Path) -> None:
    path = tmp_path / "corpus.mbox"
    path.write_bytes(
        b"".join(
            (CORPUS / "mailbits" / "mboxes" / name).read_bytes()
            for name in ("sample.mbox", "rfc822.mbox")
        )
        + entry(1)
        + b"From a Mon Mar  1 09:30:00 2027\nSubject: quoted\n\n>From here on\nbody\n"
    )
    ours = MboxSource(path, settle=SETTLED).fetch(None).messages
    stdlib = mailbox.mbox(path, create=False)
    try:
        theirs = [stdlib.get_bytes(key) for key in stdlib.iterkeys()]
    finally:
        stdlib.close()
    assert [m.data for m in ours] == theirs


def test_source_ids_are_offset_and_digest(mbox: Path) -> None:
    first, second = MboxSource(mbox, settle=SETTLED).fetch(None).messages
    assert first.source_id.startswith("0:")
    assert second.source_id.startswith(f"{len(entry(1))}:")


def test_a_missing_file_is_a_source_error(tmp_path: Path) -> None:
    source = MboxSource(tmp_path / "nothing")
    with pytest.raises(SourceError):
        source.fetch(None)
    with pytest.raises(SourceError):
        source.initial_cursor(since=dt.datetime(2027, 1, 1, tzinfo=UTC))


def test_default_name_is_the_absolute_path(mbox: Path) -> None:
    assert MboxSource(mbox).name == f"mbox:{mbox}"
