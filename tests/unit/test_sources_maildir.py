"""MaildirSource: reading in place, client renames (new→cur, flags), folders, bounded cursors."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path

import pytest

from replytrack.errors import ConfigError
from replytrack.sources import MaildirSource
from replytrack.testing import build_reply

UTC = dt.timezone.utc
NO_SLACK = dt.timedelta(0)


def make_maildir(path: Path) -> Path:
    for sub in ("new", "cur", "tmp"):
        (path / sub).mkdir(parents=True)
    return path


def deliver(maildir: Path, key: str, *, into: str = "new", mtime: float | None = None) -> Path:
    tmp = maildir / "tmp" / key.split(":", maxsplit=1)[0]
    tmp.write_bytes(build_reply(message_id=f"<{key.split(':', maxsplit=1)[0]}@x.example>"))
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    target = maildir / into / key
    tmp.rename(target)
    return target


def snapshot(maildir: Path) -> dict[str, float]:
    return {
        str(p.relative_to(maildir)): p.stat().st_mtime for p in maildir.rglob("*") if p.is_file()
    }


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    return make_maildir(tmp_path / "Maildir")


def test_reading_moves_nothing_and_changes_no_flags(maildir: Path) -> None:
    deliver(maildir, "1.a.host")
    deliver(maildir, "2.b.host:2,", into="cur")
    before = snapshot(maildir)
    with MaildirSource(maildir) as source:
        assert len(source.fetch(None).messages) == 2
    assert snapshot(maildir) == before


def test_a_client_moving_new_to_cur_does_not_redeliver(maildir: Path) -> None:
    path = deliver(maildir, "1.a.host")
    source = MaildirSource(maildir, clock_slack=NO_SLACK)
    cursor = source.fetch(None).cursor
    time.sleep(0.02)
    path.rename(maildir / "cur" / "1.a.host:2,S")  # the client showed it: Seen
    (maildir / "cur" / "1.a.host:2,S").rename(maildir / "cur" / "1.a.host:2,RS")  # answered
    assert source.fetch(cursor).messages == ()


def test_a_forgotten_message_renamed_later_is_redelivered_once(maildir: Path) -> None:
    path = deliver(maildir, "1.a.host")
    source = MaildirSource(maildir, clock_slack=NO_SLACK, remember=0)
    cursor = source.fetch(None).cursor
    time.sleep(0.02)
    path.rename(maildir / "cur" / "1.a.host:2,S")
    batch = source.fetch(cursor)
    assert [m.source_id for m in batch.messages] == ["1.a.host"]  # the key, without the info
    assert batch.messages[0].labels == ("\\Seen",)
    assert source.fetch(batch.cursor).messages == ()


def test_a_message_moved_in_with_an_old_date_is_not_missed(maildir: Path) -> None:
    """An IMAP COPY, or a reply moved out of Junk, keeps its old mtime (the received date)."""
    source = MaildirSource(maildir, clock_slack=NO_SLACK)
    cursor = source.fetch(None).cursor
    time.sleep(0.02)
    old = time.time() - 30 * 86_400
    deliver(maildir, "1.a.host:2,S", into="cur", mtime=old)
    (incoming,) = source.fetch(cursor).messages
    assert incoming.received_at is not None
    assert abs(incoming.received_at.timestamp() - old) < 1


def test_flags_become_labels(maildir: Path) -> None:
    deliver(maildir, "1.a.host:2,DFPRST", into="cur")
    (incoming,) = MaildirSource(maildir).fetch(None).messages
    assert incoming.labels == (
        "\\Draft",
        "\\Flagged",
        "$Forwarded",
        "\\Answered",
        "\\Seen",
        "\\Deleted",
    )
    assert incoming.folder == "INBOX"


def test_folders_are_maildir_plus_plus(maildir: Path) -> None:
    make_maildir(maildir / ".Archive.2027")
    deliver(maildir, "1.a.host")
    deliver(maildir / ".Archive.2027", "2.b.host")
    source = MaildirSource(maildir, folders=("", "Archive.2027"))
    assert source.name == f"maildir:{maildir}#,Archive.2027"
    batch = source.fetch(None)
    assert {(m.folder, m.source_id) for m in batch.messages} == {
        ("INBOX", "1.a.host"),
        ("Archive.2027", "Archive.2027/2.b.host"),
    }


def test_dotfiles_tmp_and_directories_are_not_messages(maildir: Path) -> None:
    (maildir / "tmp" / "3.c.host").write_bytes(b"Subject: half\r\n")
    (maildir / "new" / ".hidden").write_bytes(b"Subject: no\r\n\r\n")
    (maildir / "cur" / "subdir").mkdir()
    deliver(maildir, "1.a.host")
    assert [m.source_id for m in MaildirSource(maildir).fetch(None).messages] == ["1.a.host"]


def test_include_cur_false_reads_new_only(maildir: Path) -> None:
    deliver(maildir, "1.a.host")
    deliver(maildir, "2.b.host:2,S", into="cur")
    batch = MaildirSource(maildir, include_cur=False).fetch(None)
    assert [m.source_id for m in batch.messages] == ["1.a.host"]


def test_a_file_renamed_between_listing_and_reading_is_found(
    maildir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = deliver(maildir, "1.a.host")
    source = MaildirSource(maildir)
    listed = source._list

    def list_then_rename() -> list:  # type: ignore[type-arg]
        files = listed()
        path.rename(maildir / "cur" / "1.a.host:2,S")
        return files

    monkeypatch.setattr(source, "_list", list_then_rename)
    (incoming,) = source.fetch(None).messages
    assert incoming.labels == ("\\Seen",)


def test_a_file_deleted_between_listing_and_reading_is_skipped(
    maildir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = deliver(maildir, "1.a.host")
    deliver(maildir, "2.b.host")
    source = MaildirSource(maildir)
    listed = source._list

    def list_then_delete() -> list:  # type: ignore[type-arg]
        files = listed()
        path.unlink()
        return files

    monkeypatch.setattr(source, "_list", list_then_delete)
    assert [m.source_id for m in source.fetch(None).messages] == ["2.b.host"]


def test_the_cursor_stays_bounded(maildir: Path) -> None:
    for n in range(300):
        deliver(maildir, f"{n:05d}.k.host")
    source = MaildirSource(maildir, clock_slack=NO_SLACK, remember=50)
    time.sleep(0.02)
    cursor = None
    for _ in range(10):
        batch = source.fetch(cursor, limit=100)
        cursor = batch.cursor
        if not batch.more:
            break
    assert cursor is not None
    assert len(json.loads(cursor)["seen"]) <= 50


def test_messages_in_the_clock_slack_are_not_delivered_twice(maildir: Path) -> None:
    deliver(maildir, "1.a.host")
    source = MaildirSource(maildir, clock_slack=dt.timedelta(minutes=5))
    cursor = source.fetch(None).cursor
    for _ in range(3):
        batch = source.fetch(cursor)
        assert batch.messages == ()
        cursor = batch.cursor


def test_default_name_is_the_absolute_path(maildir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(maildir.parent)
    assert MaildirSource("Maildir").name == f"maildir:{maildir}"


@pytest.mark.parametrize("folders", ["", (), ("a/b",), ("x", "x"), ("..",)])
def test_bad_folders_are_config_errors(maildir: Path, folders: object) -> None:
    with pytest.raises(ConfigError):
        MaildirSource(maildir, folders=folders)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [{"remember": -1}, {"clock_slack": dt.timedelta(seconds=-1)}, {"colon": "::"}],
)
def test_bad_options_are_config_errors(maildir: Path, kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        MaildirSource(maildir, **kwargs)  # type: ignore[arg-type]
