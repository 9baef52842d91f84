"""``replytrack worker`` and ``replytrack prune``: events, processes, signals, exit statuses."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from replytrack import ReplyEvent, SQLiteStore
from replytrack.cli import SECRET_ENV, main
from replytrack.errors import SourceError
from replytrack.sources import MaildirSource
from replytrack.store import OutboxState, SentMessage
from replytrack.testing import build_reply

UTC = dt.timezone.utc
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(autouse=True)
def _no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def deliver(store_path: Path, maildir: Path, count: int, *, start: int = 0) -> list[str]:
    """Record `count` sends and drop a reply to each into `maildir`; the replies' ids."""
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    ids = []
    with SQLiteStore(store_path) as store, store.transaction() as tx:
        for i in range(start, start + count):
            send = f"{maildir.name}-{i}@sales.example"
            tx.record_sent(
                SentMessage(send, f"{maildir.name}:{i}", "rep@sales.example", ("jo@c.example",))
            )
            reply = f"{maildir.name}-reply-{i}@customer.example"
            data = build_reply(in_reply_to=send, message_id=reply)
            tmp = maildir / "tmp" / f"{i}.test"
            tmp.write_bytes(data)
            tmp.rename(maildir / "new" / f"{i}.test")
            ids.append(reply)
    return ids


def message_ids(out: str) -> list[str]:
    return [ReplyEvent.from_json(line).message_id or "" for line in out.splitlines()]


def lease_is_free(store_path: Path, source: str) -> bool:
    now = dt.datetime.now(UTC)
    with SQLiteStore(store_path) as store:
        granted = store.claim_source(source, "probe", now, now + dt.timedelta(seconds=1))
        if granted:
            store.release_source(source, "probe")
    return granted


def env() -> dict[str, str]:
    """The environment of a child ``python -m replytrack``: this source tree first."""
    environ = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), environ.get("PYTHONPATH")]))
    return environ


def start(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "replytrack", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )


def read_lines(proc: subprocess.Popen[str], count: int) -> list[str]:
    assert proc.stdout is not None
    return [proc.stdout.readline() for _ in range(count)]


# --------------------------------------------------------------------------------------------
# worker --once
# --------------------------------------------------------------------------------------------


def test_worker_once_prints_every_event_as_a_json_line_then_nothing_new(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store = tmp_path / "s.db"
    expected = deliver(store, tmp_path / "a", 3) + deliver(store, tmp_path / "b", 2)
    argv = ["worker", "--once", "--store", str(store), str(tmp_path / "a"), str(tmp_path / "b")]
    status, out, err = run(capsys, *argv)
    assert status == 0
    assert sorted(message_ids(out)) == sorted(expected)
    assert out.isascii()
    assert "stopped after 1 round: 5 messages, 5 events, 0 retried, 0 errors" in err
    status, out, err = run(capsys, *argv)
    assert (status, out) == (0, "")
    assert "0 events" in err
    assert lease_is_free(store, f"maildir:{tmp_path / 'a'}")


def test_worker_once_polls_a_big_mailbox_until_caught_up(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store = tmp_path / "s.db"
    expected = deliver(store, tmp_path / "a", 1050)  # more than max_batches x batch_size
    status, out, err = run(capsys, "worker", "--once", "--store", str(store), str(tmp_path / "a"))
    assert status == 0
    assert sorted(message_ids(out)) == sorted(expected)
    assert "stopped after 2 rounds: 1050 messages" in err


def test_worker_own_addresses_are_not_replies(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store = tmp_path / "s.db"
    deliver(store, tmp_path / "a", 1)
    mine = build_reply(in_reply_to="a-0@sales.example", from_="Rep <rep@sales.example>")
    (tmp_path / "a" / "new" / "mine.test").write_bytes(mine)
    status, out, _ = run(
        capsys, "worker", "--once", "--store", str(store), str(tmp_path / "a"),
        "--own", "rep@sales.example",
    )  # fmt: skip
    assert status == 0
    assert message_ids(out) == ["a-reply-0@customer.example"]


def test_worker_once_exits_1_when_a_source_fails_and_polls_the_others(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "s.db"
    deliver(store, tmp_path / "a", 1)
    deliver(store, tmp_path / "b", 1)
    original = MaildirSource.fetch

    def fetch(self: MaildirSource, cursor: str | None, limit: int = 100) -> object:
        if self.name.endswith("/a"):
            raise SourceError("disk on fire", source=self.name)
        return original(self, cursor, limit)

    monkeypatch.setattr(MaildirSource, "fetch", fetch)
    status, out, err = run(
        capsys, "worker", "--once", "--store", str(store), str(tmp_path / "a"), str(tmp_path / "b")
    )
    assert status == 1
    assert message_ids(out) == ["b-reply-0@customer.example"]
    assert "/a: SourceError: disk on fire" in err
    assert "Traceback" not in err


def test_worker_processes_share_the_sources_and_relay_each_event_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", env()["PYTHONPATH"])
    store = tmp_path / "s.db"
    expected = []
    for name in "abcd":
        expected += deliver(store, tmp_path / name, 40)
    sources = [str(tmp_path / name) for name in "abcd"]
    status, out, _ = run(
        capsys, "worker", "--once", "--processes", "3", "--store", str(store), *sources
    )
    assert status == 0
    counts = Counter(message_ids(out))
    assert sorted(counts) == sorted(expected)
    assert set(counts.values()) == {1}


# --------------------------------------------------------------------------------------------
# A long-running worker and its signals
# --------------------------------------------------------------------------------------------


def test_worker_runs_until_sigterm_then_releases_its_leases_and_exits_0(tmp_path: Path) -> None:
    store = tmp_path / "s.db"
    deliver(store, tmp_path / "a", 2)
    proc = start("worker", "--store", str(store), "--interval", "0.1", str(tmp_path / "a"))
    try:
        first = read_lines(proc, 2)
        deliver(store, tmp_path / "a", 1, start=2)  # new mail, picked up by a later round
        later = read_lines(proc, 1)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert sorted(message_ids("".join(first + later))) == [
        "a-reply-0@customer.example",
        "a-reply-1@customer.example",
        "a-reply-2@customer.example",
    ]
    assert out == ""
    assert "stopped after" in err
    assert "Traceback" not in err
    assert lease_is_free(store, f"maildir:{tmp_path / 'a'}")


def test_worker_processes_stop_cleanly_on_sigterm(tmp_path: Path) -> None:
    store = tmp_path / "s.db"
    expected = deliver(store, tmp_path / "a", 3) + deliver(store, tmp_path / "b", 3)
    proc = start(
        "worker", "--processes", "2", "--interval", "0.1", "--store", str(store),
        str(tmp_path / "a"), str(tmp_path / "b"),
    )  # fmt: skip
    assert proc.stderr is not None
    progress: list[str] = []
    try:
        lines = read_lines(proc, 6)
        while sum("started" in line for line in progress) < 2:  # both children run
            progress.append(proc.stderr.readline())
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert sorted(message_ids("".join(lines) + out)) == sorted(expected)
    assert err.count("stopped after") == 2
    assert lease_is_free(store, f"maildir:{tmp_path / 'a'}")
    assert lease_is_free(store, f"maildir:{tmp_path / 'b'}")


def test_worker_stops_when_its_reader_goes_away_and_keeps_the_event(tmp_path: Path) -> None:
    store = tmp_path / "s.db"
    deliver(store, tmp_path / "a", 1)
    proc = start("worker", "--store", str(store), "--interval", "0.1", str(tmp_path / "a"))
    assert proc.stdout is not None
    try:
        read_lines(proc, 1)
        proc.stdout.close()  # `| head -1`
        deliver(store, tmp_path / "a", 1, start=1)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.stderr.close()
    assert proc.returncode == 1, err
    with SQLiteStore(store) as s:
        [entry] = [
            e
            for e in s.due_outbox(dt.datetime.now(UTC) + dt.timedelta(days=1))
            if b"a-reply-1@customer.example" in e.payload
        ]
    assert entry.state is OutboxState.PENDING  # for the next worker: nothing is lost
    assert entry.attempts == 1


# --------------------------------------------------------------------------------------------
# Usage errors
# --------------------------------------------------------------------------------------------


def test_worker_needs_sources_and_a_store(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "worker", "--store", "s.db")
    assert status == 2
    assert "SOURCE" in err


def test_worker_bad_source_is_a_clean_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    status, out, err = run(
        capsys, "worker", "--once", "--store", str(tmp_path / "s.db"), str(tmp_path / "nope")
    )
    assert (status, out) == (2, "")
    assert err.startswith("replytrack: error: no such file or directory")
    assert "Traceback" not in err


@pytest.mark.parametrize("value", ["0", "-1", "soon", "inf", "nan"])
def test_worker_interval_and_lease_must_be_positive_seconds(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, value: str
) -> None:
    for option in ("--interval", "--lease"):
        status, _, err = run(capsys, "worker", "--store", "s.db", option, value, str(tmp_path))
        assert status == 2
        assert option in err


def test_worker_refuses_a_password_in_a_postgresql_url(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    deliver(tmp_path / "unused.db", tmp_path / "a", 0)
    store = "postgresql://app:hunter2@db.example/replytrack"
    status, _, err = run(capsys, "worker", "--once", "--store", store, str(tmp_path / "a"))
    assert status == 2
    assert "PGPASSWORD" in err
    assert "hunter2" not in err


def test_a_postgresql_store_needs_the_extra(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "replytrack.store.postgres", None)  # not installed
    deliver(tmp_path / "unused.db", tmp_path / "a", 0)
    store = "postgresql://app@db.example/replytrack"
    status, _, err = run(capsys, "worker", "--once", "--store", store, str(tmp_path / "a"))
    assert status == 2
    assert "pip install 'replytrack[postgres]'" in err


def test_worker_help_documents_leases_processes_and_signals(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, _ = run(capsys, "worker", "--help")
    assert status == 0
    for text in ("--processes N", "lease", "SIGTERM", "postgresql://", "event_id", "--once"):
        assert text in out
    assert "--child" not in out


# --------------------------------------------------------------------------------------------
# prune
# --------------------------------------------------------------------------------------------


def test_prune_deletes_old_ledger_keys_and_keeps_recent_ones(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store = tmp_path / "s.db"
    now = dt.datetime.now(UTC)
    with SQLiteStore(store) as s, s.transaction() as tx:
        tx.mark_processed("old@x.example", now - dt.timedelta(days=40))
        tx.mark_processed("new@x.example", now - dt.timedelta(days=20))
    status, out, err = run(capsys, "prune", "--store", str(store))
    assert (status, err) == (0, "")
    assert out.startswith("pruned 1 ledger keys and 0 delivered events from before ")
    with SQLiteStore(store) as s:
        assert not s.is_processed("old@x.example")
        assert s.is_processed("new@x.example")
    status, out, err = run(capsys, "prune", "--store", str(store), "--older-than", "3")
    assert status == 0
    assert out.startswith("pruned 1 ledger keys")
    assert "rescan window" in err


def test_prune_days_must_be_a_positive_whole_number(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(capsys, "prune", "--store", "s.db", "--older-than", "0")
    assert status == 2
    assert "--older-than" in err


def test_the_first_signal_stops_and_the_second_exits_at_once() -> None:
    from replytrack import cli  # noqa: PLC0415 (the private helper under test)

    class Stoppable:
        def __init__(self) -> None:
            self.stopped = False

        def stop(self) -> None:
            self.stopped = True

    worker = Stoppable()
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        cli._first_stop(worker)  # type: ignore[arg-type]
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        for _ in range(100):
            if worker.stopped:
                break
            time.sleep(0.01)
        assert worker.stopped
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def test_json_lines_are_the_canonical_payload(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    store = tmp_path / "s.db"
    deliver(store, tmp_path / "a", 1)
    _, out, _ = run(capsys, "worker", "--once", "--store", str(store), str(tmp_path / "a"))
    event = ReplyEvent.from_json(out.strip())
    assert json.loads(out) == json.loads(event.to_json())
    assert event.ref == "a:0"
