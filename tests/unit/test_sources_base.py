"""The source base class and values: what an adapter gets for free, and what it must supply."""

from __future__ import annotations

import datetime as dt
import pickle
from collections.abc import Hashable

import pytest

from replytrack.errors import ConfigError, SourceError
from replytrack.sources import BaseSource, Batch, IncomingMessage, InvalidCursor, MailboxSource
from replytrack.sources.base import CURSOR_VERSION, dump_cursor, load_cursor

UTC = dt.timezone.utc
NOW = dt.datetime(2027, 3, 1, 9, 30, tzinfo=UTC)


class ListSource(BaseSource):
    """An adapter as a host writes one: a cursor, a fetch, and nothing else."""

    kind = "list"

    def __init__(self, items: list[bytes], **kwargs: object) -> None:
        super().__init__("list", clock=lambda: NOW, **kwargs)  # type: ignore[arg-type]
        self.items = items
        self.error: Exception | None = None
        self.closes = 0
        self.rescans: list[str] = []

    def _initial_cursor(self, since: dt.datetime | None) -> str:
        self.rescans.append("" if since is None else since.isoformat())
        return self._dump_cursor({"next": 0})

    def _fetch(self, cursor: str, limit: int) -> Batch:
        if self.error is not None:
            raise self.error
        state = self._load_cursor(cursor)
        start = state.get("next")
        if not isinstance(start, int):
            raise InvalidCursor("no position")
        chunk = self.items[start : start + limit]
        messages = tuple(IncomingMessage(d, str(start + i)) for i, d in enumerate(chunk))
        end = start + len(chunk)
        return Batch(messages, self._dump_cursor({"next": end}), end < len(self.items))

    def _close(self) -> None:
        self.closes += 1


def test_a_subclass_is_a_few_lines_and_a_mailbox_source() -> None:
    with ListSource([b"Subject: a\n\n", b"Subject: b\n\n"]) as source:
        assert isinstance(source, MailboxSource)
        batch = source.fetch(None, limit=1)
        assert [m.data for m in batch.messages] == [b"Subject: a\n\n"]
        assert batch.more
        assert source.fetch(batch.cursor).messages[0].source_id == "1"


def test_invalid_cursor_rescans_from_the_window_before_the_clock() -> None:
    source = ListSource([b"x"])
    batch = source.fetch('{"kind": "list", "v": 1}')
    assert batch.rescan
    assert source.rescans == [(NOW - dt.timedelta(days=7)).isoformat()]


def test_rescan_window_is_configurable() -> None:
    source = ListSource([b"x"], rescan_window=dt.timedelta(days=1))
    source.fetch("junk")
    assert source.rescans == [(NOW - dt.timedelta(days=1)).isoformat()]


@pytest.mark.parametrize("error", [OSError("reset"), RuntimeError("client bug"), KeyError("k")])
def test_foreign_errors_become_source_error_with_the_name(error: Exception) -> None:
    source = ListSource([])
    source.error = error
    with pytest.raises(SourceError) as caught:
        source.fetch(None)
    assert caught.value.source == "list"
    assert caught.value.__cause__ is error


def test_source_error_without_a_source_gets_the_name() -> None:
    source = ListSource([])
    source.error = SourceError("quota")
    with pytest.raises(SourceError) as caught:
        source.fetch(None)
    assert caught.value.source == "list"
    assert pickle.loads(pickle.dumps(caught.value)).source == "list"


def test_config_errors_pass_untranslated() -> None:
    source = ListSource([])
    source.error = ConfigError("bad option")
    with pytest.raises(ConfigError):
        source.fetch(None)


def test_close_runs_once() -> None:
    source = ListSource([])
    with source:
        pass
    source.close()
    assert source.closes == 1


def test_incomplete_message_without_fetch_body_is_a_source_error() -> None:
    source = ListSource([])
    with pytest.raises(SourceError):
        source.fetch_body(IncomingMessage(b"Subject: a\n\n", "1", complete=False))


def test_wait_polls_the_probe() -> None:
    class Probed(ListSource):
        wait_interval = 0.001
        value = 0

        def _probe(self) -> Hashable:
            self.value += 1
            return self.value // 3

    assert Probed([]).wait(None, 5) is True


@pytest.mark.parametrize("name", ["", "   ", None, 3])
def test_name_must_be_a_non_empty_str(name: object) -> None:
    with pytest.raises(ConfigError):
        BaseSource.__init__(ListSource.__new__(ListSource), name)  # type: ignore[arg-type]


def test_rescan_window_must_be_positive() -> None:
    with pytest.raises(ConfigError):
        ListSource([], rescan_window=dt.timedelta(0))


def test_naive_clock_is_a_config_error() -> None:
    source = ListSource([])
    source._clock = lambda: dt.datetime(2027, 1, 1)
    with pytest.raises(ConfigError):
        source.fetch("junk")


# --------------------------------------------------------------------------------------------
# Cursors and values
# --------------------------------------------------------------------------------------------


def test_cursor_round_trip() -> None:
    cursor = dump_cursor("list", {"next": 3})
    assert load_cursor("list", cursor) == {"next": 3, "v": CURSOR_VERSION, "kind": "list"}


@pytest.mark.parametrize(
    "cursor", ["", "{", "[]", '{"v": 1, "kind": "other"}', '{"v": 2, "kind": "list"}']
)
def test_foreign_cursors_are_invalid(cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        load_cursor("list", cursor)


def test_incoming_message_normalises_and_checks() -> None:
    message = IncomingMessage(
        bytearray(b"x"),
        "1",
        labels=["\\Seen"],
        received_at=dt.datetime(2027, 1, 1, 10, tzinfo=dt.timezone(dt.timedelta(hours=1))),
    )
    assert message.data == b"x"
    assert message.labels == ("\\Seen",)
    assert message.received_at == dt.datetime(2027, 1, 1, 9, tzinfo=UTC)
    with pytest.raises(ConfigError):
        IncomingMessage("text", "1")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        IncomingMessage(b"x", "")
    with pytest.raises(ConfigError):
        IncomingMessage(b"x", "1", labels="\\Seen")
    with pytest.raises(ConfigError):
        IncomingMessage(b"x", "1", received_at=dt.datetime(2027, 1, 1))


def test_incoming_message_repr_is_short() -> None:
    assert len(repr(IncomingMessage(b"x" * 100_000, "1"))) < 300
