"""Scale out (issue 7): worker processes share mailboxes through one store, and survive a kill.

The issue's evidence: "4 worker processes, 20 Maildir mailboxes, 50,000 incoming messages of
which 20,000 correlate; one worker is killed with SIGKILL mid-run and restarted. Result: every
expected event delivered, no event lost, duplicates only with the same event_id, no mailbox
polled by two workers at once."

How it is shown:

* The mail is written straight into the Maildirs' ``new/`` (80 % before the workers start,
  the rest while they run, through ``tmp/`` and a rename as an MDA delivers), filled in from a
  few templates built with `replytrack.testing`: human replies, out-of-office notices and
  bounces answering 20,000 recorded sends, and 30,000 unrelated messages (newsletters,
  replies in threads that are not ours, the rep's own mail). Which hooks each kind of event
  reaches is learnt by running one message of each template through a tracker first.
* Each worker process runs `replytrack.worker.Worker`; its hooks append ``hook event_id
  message_id`` to a file of its own, and its `PollObserver` appends the start and the end of
  every visit to a source (the worker's clock, microseconds since the epoch).
* Once a random number of events (2,000 to 8,000) has been delivered, one worker is killed
  with SIGKILL while it polls a source, and a replacement is started. The test waits until
  every expected event reached every hook it should and the outbox has nothing pending, then
  stops every worker with SIGTERM (each must exit 0).

What is asserted:

* **no event lost**: the (hook, event_id) pairs delivered are exactly those expected, and each
  event's id is the one its message must have (``make_event_id``); every outbox entry ended
  delivered (none pending, none dead);
* **duplicates only with the same event_id, from the crash**: a pair delivered twice was
  delivered once by the killed worker (a hook it called but had not recorded as delivered);
* **no mailbox polled by two workers at once**: the visits of a source never overlap. A visit
  is [lease granted, last batch over] as the worker saw it; the killed worker's unfinished
  visit is taken to last until the kill (it cannot poll after it is dead), which is what is
  provable without trusting the victim's lease: the replacement may take the source only
  after the lease ran out, so a wrong lease would show as an overlap.

The victim's mailbox is free a lease (10 s) after its last renewal and taken over by the
next worker whose round comes to it; its unrecorded hook calls are retried after the
tracker's ``claim_for`` (10 s); the run ends when the processes have worked through the
mail. Measured on two cores shared with other work (load
average 5-6): about 65 s on SQLite (4 processes on one file) and 140 s on PostgreSQL (the
server on the same two cores), setup included; the timings are printed (``pytest -s``).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import TypedDict

import attrs
import pytest

from replytrack import ReplyTracker
from replytrack.classify import Kind
from replytrack.events import make_event_id
from replytrack.store import MemoryStore, SentMessage, SQLiteStore, Store
from replytrack.testing import CapturingHook, build_bounce, build_out_of_office, build_reply

WORKERS = 4
MAILBOXES = 20
MESSAGES = 50_000
CORRELATING = 20_000
PER_MAILBOX = MESSAGES // MAILBOXES
EARLY = 0.8  # the share of the mail in the Maildirs before the workers start
LEASE = 10.0  # seconds: a killed worker's mailboxes are free this long after its last renewal
CLAIM_FOR = 10.0  # seconds: its unrecorded hook calls are retried by others after this
INTERVAL = 0.2
TIMEOUT = 240.0
OWN = "rep@sales.example"
SRC = Path(__file__).resolve().parents[2] / "src"
SEND = "send-ZQSENDZQ@mail.sales.example"
MID = "in-ZQMIDZQ@prospect.example"
PROSPECT = "pat-ZQSENDZQ@prospect.example"
# The correlating templates by share: 70 % human replies (a tenth of them from a colleague),
# 15 % out-of-office notices, 15 % bounces.
MIX = [0] * 63 + [1] * 7 + [2] * 15 + [3] * 15
Visit = tuple[str, int, int, str]  # source, start, end (microseconds), worker

CHILD = textwrap.dedent(
    """
    import datetime as dt, json, signal, sys, threading
    from pathlib import Path
    from replytrack import ReplyTracker
    from replytrack.sources import MaildirSource
    from replytrack.worker import Worker

    config = json.loads(Path(sys.argv[1]).read_text())
    label = sys.argv[2]
    out = Path(config["out"])
    kind, spec = config["store"]
    if kind == "sqlite":
        from replytrack.store import SQLiteStore
        store = SQLiteStore(spec, synchronous="NORMAL")
    else:
        from replytrack.store.postgres import PostgresStore
        store = PostgresStore(spec, max_size=2)
    EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    deliveries = open(out / f"deliveries-{label}.txt", "a")
    spans = open(out / f"spans-{label}.txt", "a")

    def micros(moment):
        return (moment - EPOCH) // dt.timedelta(microseconds=1)

    def hook(name):
        def call(event):
            deliveries.write(f"{name} {event.event_id} {event.message_id}\\n")
            deliveries.flush()
        return call

    def on_poll(span):
        if span.finished is None:
            spans.write(f"S {span.source} {micros(span.started)}\\n")
        else:
            spans.write(
                f"E {span.source} {micros(span.started)} {micros(span.finished)}"
                f" {int(span.lost)} {span.seen}\\n"
            )
        spans.flush()

    sources = [MaildirSource(path) for path in config["maildirs"]]
    tracker = ReplyTracker(
        store,
        campaign_stop=hook("campaign_stop"),
        crm_log=hook("crm_log"),
        own_addresses=[config["own"]],
        claim_for=dt.timedelta(seconds=config["claim_for"]),
    )
    worker = Worker(
        tracker,
        sources,
        worker_id=label,
        lease=dt.timedelta(seconds=config["lease"]),
        prune_every=None,
        on_poll=on_poll,
    )
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=worker.stop).start())
    (out / f"ready-{label}").touch()
    try:
        worker.run(interval=config["interval"])
    finally:
        for source in sources:
            source.close()
        store.close()
        deliveries.close()
        spans.close()
    """
)


# --------------------------------------------------------------------------------------------
# The mail
# --------------------------------------------------------------------------------------------


@attrs.frozen
class Template:
    """A message with ``ZQSENDZQ`` (the send answered) and ``ZQMIDZQ`` (its own id) to fill."""

    name: str
    raw: bytes
    correlates: bool


class _Answer(TypedDict):
    """The headers every correlating template shares (keyword arguments of the builders)."""

    in_reply_to: str
    message_id: str


def templates() -> list[Template]:
    newsletter = EmailMessage()
    newsletter["From"] = "Freight Weekly <news@freight-weekly.example>"
    newsletter["To"] = OWN
    newsletter["Subject"] = "This week in freight"
    newsletter["Message-ID"] = f"<{MID}>"
    newsletter["List-Id"] = "<weekly.freight-weekly.example>"
    newsletter.set_content("Diesel prices fall for the third week running.")
    answer: _Answer = {"in_reply_to": f"<{SEND}>", "message_id": f"<{MID}>"}
    return [
        Template("reply", build_reply(**answer, from_=PROSPECT, quote=None), True),
        Template(
            "reply_colleague",
            build_reply(**answer, from_="Sam <sam-ZQSENDZQ@prospect.example>", quote=None),
            True,
        ),
        Template(
            "out_of_office",
            build_out_of_office(**answer, from_=PROSPECT, return_date=dt.date(2027, 3, 10)),
            True,
        ),
        Template(
            "bounce",
            build_bounce(
                recipients=[PROSPECT],
                original_message_id=f"<{SEND}>",
                message_id=f"<{MID}>",
                to=OWN,
            ),
            True,
        ),
        Template("newsletter", newsletter.as_bytes(), False),
        Template(
            "foreign_thread",
            build_reply(
                in_reply_to="<thread-ZQMIDZQ@elsewhere.example>",
                message_id=f"<{MID}>",
                from_="Lee <lee@elsewhere.example>",
                quote=None,
            ),
            False,
        ),
        Template(
            "own_mail",
            build_reply(**answer, from_=f"Rep <{OWN}>", to=PROSPECT, quote=None),
            False,
        ),
    ]


def fill(template: Template, send: int, mid: int) -> bytes:
    return template.raw.replace(b"ZQSENDZQ", b"%06d" % send).replace(b"ZQMIDZQ", b"%06d" % mid)


def sent(send: int) -> SentMessage:
    return SentMessage(
        SEND.replace("ZQSENDZQ", f"{send:06d}"),
        f"c1:p{send}",
        OWN,
        PROSPECT.replace("ZQSENDZQ", f"{send:06d}"),
        subject="Quick question",
    )


def hooks_reached(template: Template) -> tuple[str, frozenset[str]]:
    """Run one message of `template` through a tracker: its event's kind, the hooks reached."""
    stop, crm = CapturingHook(), CapturingHook()
    with MemoryStore() as store:
        store.record_sent(sent(0))
        tracker = ReplyTracker(store, campaign_stop=stop, crm_log=crm, own_addresses=[OWN])
        [event] = tracker.process(fill(template, 0, 0))
    names = {"campaign_stop"} if stop.events else set()
    names |= {"crm_log"} if crm.events else set()
    assert event.message_id == MID.replace("ZQMIDZQ", "000000")
    assert event.event_id == make_event_id(event.message_id, "c1:p0", event.kind)
    return event.kind.value, frozenset(names)


@attrs.frozen
class Mail:
    """The messages of every mailbox, in delivery order, and the (hook, event_id) expected."""

    files: dict[Path, list[tuple[str, bytes]]]
    expected: frozenset[tuple[str, str]]
    event_of: dict[str, str]  # message id -> event id, for correlating messages
    unrelated: list[str]  # some unrelated message ids, to check the ledger


def make_mail(root: Path, rng: random.Random) -> Mail:
    kinds = {}
    correlating = [t for t in templates() if t.correlates]
    unrelated = [t for t in templates() if not t.correlates]
    for template in correlating:
        kinds[template.name] = hooks_reached(template)
    files: dict[Path, list[tuple[str, bytes]]] = {}
    expected: set[tuple[str, str]] = set()
    event_of: dict[str, str] = {}
    unrelated_ids: list[str] = []
    per_box = CORRELATING // MAILBOXES
    mid = 0
    for box in range(MAILBOXES):
        maildir = root / f"rep{box:02d}"
        for sub in ("new", "cur", "tmp"):
            (maildir / sub).mkdir(parents=True)
        messages: list[tuple[str, bytes]] = []
        for j in range(PER_MAILBOX):
            mid += 1
            if j < per_box:
                send = box * per_box + j
                # 70 % human replies (a tenth from a colleague), 15 % out-of-office, 15 % bounces
                template = correlating[MIX[j % 100]]
                kind, reached = kinds[template.name]
                message_id = MID.replace("ZQMIDZQ", f"{mid:06d}")
                event_id = make_event_id(message_id, f"c1:p{send}", Kind(kind))
                event_of[message_id] = event_id
                expected |= {(hook, event_id) for hook in reached}
            else:
                template = unrelated[j % len(unrelated)]
                send = rng.randrange(CORRELATING)
                if len(unrelated_ids) < 2000 and template.name != "own_mail":
                    unrelated_ids.append(MID.replace("ZQMIDZQ", f"{mid:06d}"))
            messages.append((f"{mid:06d}.rep{box:02d}.test", fill(template, send, mid)))
        rng.shuffle(messages)
        files[maildir] = messages
    return Mail(files, frozenset(expected), event_of, unrelated_ids)


def deliver(maildir: Path, name: str, data: bytes) -> None:
    """As an MDA does: write into tmp/, then rename into new/."""
    tmp = maildir / "tmp" / name
    tmp.write_bytes(data)
    tmp.rename(maildir / "new" / name)


def deliver_later(files: dict[Path, list[tuple[str, bytes]]], stop: threading.Event) -> None:
    """Deliver the rest of the mail in small chunks while the workers run (about 5 s)."""
    late = {box: messages[int(len(messages) * EARLY) :] for box, messages in files.items()}
    while any(late.values()) and not stop.is_set():
        for box, messages in late.items():
            for name, data in messages[:5]:
                deliver(box, name, data)
            del messages[:5]
        stop.wait(0.05)


# --------------------------------------------------------------------------------------------
# The workers
# --------------------------------------------------------------------------------------------


class Tail:
    """The complete lines appended to a file since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""

    def read(self) -> list[str]:
        try:
            with self.path.open("rb") as file:
                file.seek(self.offset)
                data = file.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self.partial + data
        complete, _, self.partial = data.rpartition(b"\n")
        return complete.decode().splitlines() if complete else []


class Fleet:
    """The worker processes, their files, and what they delivered so far."""

    def __init__(self, out: Path, config: Path) -> None:
        self.out = out
        self.config = config
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.deliveries: dict[str, Tail] = {}
        self.spans: dict[str, Tail] = {}
        self.delivered: Counter[tuple[str, str]] = Counter()
        self.by_worker: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
        self.message_events: dict[str, set[str]] = defaultdict(set)
        self.last_span: dict[str, str] = {}

    def start(self, label: str) -> None:
        stderr = (self.out / f"stderr-{label}.txt").open("wb")
        with stderr:
            self.procs[label] = subprocess.Popen(
                [sys.executable, "-c", CHILD, str(self.config), label],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        self.deliveries[label] = Tail(self.out / f"deliveries-{label}.txt")
        self.spans[label] = Tail(self.out / f"spans-{label}.txt")

    def wait_ready(self, labels: list[str], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not all((self.out / f"ready-{label}").exists() for label in labels):
            for label in labels:
                assert self.procs[label].poll() is None, self.stderr(label)
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.05)

    def poll(self) -> None:
        for label, tail in self.deliveries.items():
            for line in tail.read():
                hook, event_id, message_id = line.split()
                self.delivered[(hook, event_id)] += 1
                self.by_worker[label][(hook, event_id)] += 1
                self.message_events[message_id].add(event_id)
        for label, tail in self.spans.items():
            lines = tail.read()
            if lines:
                self.last_span[label] = lines[-1]

    def stderr(self, label: str, *, tail: int = 3000) -> str:
        return (self.out / f"stderr-{label}.txt").read_text()[-tail:]

    def stop(self) -> dict[str, int]:
        live = {label: proc for label, proc in self.procs.items() if proc.returncode is None}
        for proc in live.values():
            proc.send_signal(signal.SIGTERM)
        codes = {}
        for label, proc in live.items():
            try:
                codes[label] = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                codes[label] = -9
        return codes

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def visits(out: Path, labels: list[str], victim: str, killed_at: int) -> list[Visit]:
    """Every visit as (source, start, end, worker); the victim's open one ends at its kill."""
    found = []
    for label in labels:
        path = out / f"spans-{label}.txt"
        open_: dict[str, int] = {}
        for line in path.read_text().splitlines():
            fields = line.split()
            if fields[0] == "S":
                assert fields[1] not in open_, line
                open_[fields[1]] = int(fields[2])
            else:
                start = open_.pop(fields[1])
                assert start == int(fields[2]), line
                found.append((fields[1], start, int(fields[3]), label))
        if label == victim:
            assert len(open_) <= 1
            found += [(source, start, killed_at, label) for source, start in open_.items()]
        else:
            assert not open_, f"{label} left a visit open: {open_}"
    return found


# --------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "sqlite":
        return ("sqlite", str(tmp_path / "replytrack.sqlite3"))
    return ("postgres", request.getfixturevalue("postgres_dsn"))


def open_store(spec: tuple[str, str]) -> Store:
    if spec[0] == "sqlite":
        return SQLiteStore(spec[1], synchronous="NORMAL")
    from replytrack.store.postgres import PostgresStore  # noqa: PLC0415 (the postgres extra)

    return PostgresStore(spec[1], max_size=2)


@pytest.fixture
def store(store_spec: tuple[str, str]) -> Iterator[Store]:
    with open_store(store_spec) as opened:
        yield opened


@attrs.define
class Run:
    """What happened while the workers ran."""

    fleet: Fleet
    labels: list[str]
    victim: str
    threshold: int
    killed_at: int = 0  # microseconds since the epoch
    victim_before_kill: int = 0  # deliveries the victim made before it was killed
    codes: dict[str, int] = attrs.Factory(dict)
    timings: dict[str, float] = attrs.Factory(dict)


def run_workers(store: Store, mail: Mail, run: Run) -> None:
    """Start the workers, kill one mid-visit, start another, wait until all is delivered."""
    fleet = run.fleet
    stop_delivering = threading.Event()
    late = threading.Thread(target=deliver_later, args=(mail.files, stop_delivering))
    started = time.monotonic()
    try:
        for label in run.labels:
            fleet.start(label)
        fleet.wait_ready(run.labels)
        late.start()

        # Kill the victim in the middle of a visit, once enough events went out.
        while not run.killed_at:
            fleet.poll()
            events = sum(1 for hook, _ in fleet.delivered if hook == "crm_log")
            assert time.monotonic() - started < TIMEOUT, "no kill point"
            if events >= run.threshold and fleet.last_span.get(run.victim, "").startswith("S "):
                fleet.procs[run.victim].send_signal(signal.SIGKILL)
                fleet.procs[run.victim].wait()
                run.killed_at = time.time_ns() // 1000
                run.timings["kill"] = time.monotonic() - started
            else:
                time.sleep(0.01)
        run.victim_before_kill = sum(fleet.by_worker[run.victim].values())
        fleet.start("w-replacement")
        run.labels.append("w-replacement")
        fleet.wait_ready(["w-replacement"])

        # Wait until every expected delivery was made and nothing is pending.
        while True:
            fleet.poll()
            elapsed = time.monotonic() - started
            missing = mail.expected - set(fleet.delivered)
            assert elapsed < TIMEOUT, f"{len(missing)} deliveries missing after {elapsed:.0f} s"
            if not missing and not late.is_alive():
                far = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
                if not store.due_outbox(far, limit=1):
                    break
            for label, proc in fleet.procs.items():
                if label != run.victim:
                    assert proc.poll() is None, f"{label} died: {fleet.stderr(label)}"
            time.sleep(0.25)
        run.timings["all delivered"] = time.monotonic() - started
        run.codes = fleet.stop()
        run.timings["stopped"] = time.monotonic() - started
        fleet.poll()
    finally:
        stop_delivering.set()
        if late.ident is not None:
            late.join()
        fleet.kill_all()


def assert_nothing_lost(store: Store, mail: Mail, run: Run) -> None:
    """Exactly the expected (hook, event_id) pairs, each message with its one event id."""
    assert set(run.fleet.delivered) == mail.expected
    for message_id, event_ids in run.fleet.message_events.items():
        assert event_ids == {mail.event_of[message_id]}, (message_id, event_ids)
    # Every outbox entry ended delivered: none pending, none dead.
    far = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    assert store.due_outbox(far, limit=1) == []
    assert store.dead_outbox(limit=1) == []
    # Unrelated mail was processed too (a sample of the ledger).
    assert all(store.is_processed(message_id) for message_id in mail.unrelated[:300])


def assert_no_mailbox_polled_twice_at_once(run: Run) -> dict[str, list[Visit]]:
    """Visits of one source never overlap; the victim's open one was taken over after it."""
    spans = visits(run.fleet.out, run.labels, run.victim, run.killed_at)
    by_source: dict[str, list[Visit]] = defaultdict(list)
    for span in spans:
        by_source[span[0]].append(span)
    assert len(by_source) == MAILBOXES
    for source, found in by_source.items():
        found.sort(key=lambda span: span[1])
        for before, after in itertools.pairwise(found):
            assert before[2] <= after[1], (source, before, after)
    # The victim was killed while it held a mailbox, and that mailbox was taken over once
    # the lease ran out: the victim's last renewal came at the earliest when its claim was
    # asked, at most half a lease before the visit started (worker Rule 2).
    [open_visit] = [s for s in spans if s[3] == run.victim and s[2] == run.killed_at]
    takeover = min(s[1] for s in by_source[open_visit[0]] if s[1] > open_visit[1])
    assert takeover >= open_visit[1] + int(LEASE * 1_000_000) // 2
    assert takeover > run.killed_at
    run.timings["takeover after kill"] = (takeover - run.killed_at) / 1e6
    return by_source


def test_workers_share_mailboxes_and_survive_a_killed_worker(
    tmp_path: Path, store_spec: tuple[str, str], store: Store
) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)  # noqa: S311 (test data and timing, not secrets)
    began = time.monotonic()
    mail = make_mail(tmp_path / "mail", rng)
    for box, messages in mail.files.items():
        for name, data in messages[: int(len(messages) * EARLY)]:
            (box / "new" / name).write_bytes(data)  # no reader yet: no need for tmp/
    for start in range(0, CORRELATING, 2000):
        with store.transaction() as tx:
            for send in range(start, start + 2000):
                tx.record_sent(sent(send))
    out = tmp_path / "out"
    out.mkdir()
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "store": list(store_spec),
                "maildirs": [str(box) for box in mail.files],
                "out": str(out),
                "own": OWN,
                "lease": LEASE,
                "claim_for": CLAIM_FOR,
                "interval": INTERVAL,
            }
        )
    )
    labels = [f"w{i}" for i in range(WORKERS)]
    run = Run(Fleet(out, config), labels, rng.choice(labels), rng.randrange(2000, 8000))
    run.timings["setup"] = time.monotonic() - began
    note = f"seed {seed}, store {store_spec[0]}, victim {run.victim} after {run.threshold}"

    run_workers(store, mail, run)

    # Every worker but the victim stopped cleanly on SIGTERM.
    expected_codes = dict.fromkeys([label for label in run.labels if label != run.victim], 0)
    assert run.codes == expected_codes, {label: run.fleet.stderr(label) for label in run.codes}
    assert_nothing_lost(store, mail, run)
    # Duplicates only come from the killed worker's unrecorded hook calls.
    duplicates = {pair: count for pair, count in run.fleet.delivered.items() if count > 1}
    for pair in duplicates:
        assert run.fleet.by_worker[run.victim][pair] >= 1, (pair, note)
    assert run.victim_before_kill > 0
    by_source = assert_no_mailbox_polled_twice_at_once(run)

    run.timings["total"] = time.monotonic() - began
    workers = Counter(len({span[3] for span in found}) for found in by_source.values())
    slow = sum(
        run.fleet.stderr(label, tail=10**9).count("more than half the lease")
        for label in run.labels
    )
    print(
        f"\nworkers scale ({note}): {MESSAGES} messages, {len(mail.expected)} deliveries"
        f" expected, {sum(run.fleet.delivered.values())} made"
        f" ({sum(c - 1 for c in duplicates.values())} duplicates);"
        f" {sum(len(found) for found in by_source.values())} visits;"
        f" mailboxes by number of workers that polled them {sorted(workers.items())};"
        f" {slow} batches over half the lease;"
        f" timings (s) {json.dumps({k: round(v, 1) for k, v in run.timings.items()})}"
    )


def test_the_worker_command_shares_mailboxes_on_postgresql(
    tmp_path: Path, postgres_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``replytrack worker --processes 2 --store postgresql://...`` over a few Maildirs."""
    from replytrack.cli import main  # noqa: PLC0415

    fields = dict(item.split("=", 1) for item in postgres_dsn.split())
    url = f"postgresql://{fields['user']}@{fields['host']}:{fields['port']}/{fields['dbname']}"
    expected = set()
    with open_store(("postgres", postgres_dsn)) as store, store.transaction() as tx:
        template = templates()[0]
        for box in range(3):
            maildir = tmp_path / f"rep{box}"
            for sub in ("new", "cur", "tmp"):
                (maildir / sub).mkdir(parents=True)
            for j in range(10):
                number = box * 10 + j
                tx.record_sent(sent(number))
                deliver(maildir, f"{number}.test", fill(template, number, number))
                expected.add(MID.replace("ZQMIDZQ", f"{number:06d}"))
    pythonpath = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", pythonpath)
        status = main(
            ["worker", "--once", "--processes", "2", "--store", url]
            + [str(tmp_path / f"rep{box}") for box in range(3)]
        )
    out = capsys.readouterr().out
    assert status == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert sorted(event["message_id"] for event in events) == sorted(expected)
