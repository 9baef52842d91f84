"""Crash safety: `poll` killed with SIGKILL at random points, again and again, loses nothing.

A child process polls a Maildir of 5,000 messages into an SQLite store, with hooks that fail
30 % of the time; the parent kills it with SIGKILL at a random moment, 100 times, starting a
new child each time, then lets a last child finish. Every event the mail calls for must have
been delivered at least once, no other event may have been delivered, and every repeated
delivery carries the same ``event_id`` as the first (DESIGN.md, "Durability"; the tracker's
Rules 1-3). The number of kills survived is reported in docs/robustness.md.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from email.message import EmailMessage
from pathlib import Path

from replytrack import MemoryStore, ReplyTracker, SQLiteStore
from replytrack.testing import build_bounce, build_out_of_office, build_reply

MESSAGES = 5_000
KILLS = 100
SENDS = 400
#: Bytes of one line of the delivery log: an event id ("evt_" and 32 hex digits) and "\n".
EVENT_LINE = 37
REP = "rep@sales.example"

CHILD = textwrap.dedent(
    """
    import datetime as dt, os, random, sys
    from replytrack import ReplyTracker, SQLiteStore
    from replytrack.sources import MaildirSource

    store_path, maildir, log_path, seed = sys.argv[1:5]
    rng = random.Random(int(seed))
    log = open(log_path, "a", buffering=1)

    def hook(event):
        if rng.random() < 0.3:
            raise RuntimeError("the CRM is down")
        log.write(event.event_id + "\\n")  # delivered: the hook returned

    with SQLiteStore(store_path) as store, MaildirSource(maildir, name="inbox") as source:
        tracker = ReplyTracker(
            store,
            campaign_stop=hook,
            crm_log=hook,
            own_addresses=["rep@sales.example"],
            max_attempts=1000,
            retry_base=dt.timedelta(milliseconds=1),
            retry_cap=dt.timedelta(milliseconds=5),
            claim_for=dt.timedelta(milliseconds=200),
        )
        while True:
            result = tracker.poll(source, limit=rng.randint(1, 60), max_batches=1)
            tracker.retry_pending(limit=50)
            far = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
            if not result.more and result.seen == 0 and not store.due_outbox(far, 1):
                break
    print("done")
    """
)


def outgoing(n: int) -> EmailMessage:
    message = EmailMessage()
    message["From"] = f"Rep <{REP}>"
    message["To"] = f"p{n}@prospect{n % 50}.example"
    message["Subject"] = f"Quick question {n}"
    message.set_content("Do you have 15 minutes this week?")
    return message


def inbox(sends: list[str], rng: random.Random) -> list[bytes]:
    """5,000 messages: replies, out-of-offices and bounces to the sends, and unrelated mail."""
    mail = []
    for n in range(MESSAGES):
        send = sends[rng.randrange(len(sends))]
        mid = f"<m{n}@mail{n % 97}.example>"
        roll = rng.random()
        if roll < 0.3:
            mail.append(build_reply(in_reply_to=send, message_id=mid, from_=f"x{n}@c.example"))
        elif roll < 0.35:
            mail.append(build_out_of_office(in_reply_to=send, message_id=mid))
        elif roll < 0.38:
            mail.append(build_bounce(original_message_id=send, message_id=mid))
        else:
            mail.append(build_reply(in_reply_to=f"<other{n}@elsewhere.example>", message_id=mid))
    return mail


def test_polling_killed_a_hundred_times_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(8)  # noqa: S311 (a reproducible schedule, not a secret)
    store_path, maildir, log_path = tmp_path / "s.db", tmp_path / "Maildir", tmp_path / "log"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)

    with SQLiteStore(store_path) as store:
        tracker = ReplyTracker(store, own_addresses=[REP])
        sends = [tracker.stamp(outgoing(n), f"c1:p{n}") for n in range(SENDS)]
    mail = inbox([f"<{s.message_id}>" for s in sends], rng)
    for n, data in enumerate(mail):
        (maildir / "new" / f"{n:05d}.crash.test").write_bytes(data)

    with MemoryStore() as reference:
        ref_tracker = ReplyTracker(reference, own_addresses=[REP])
        for s in sends:
            reference.record_sent(s)
        expected = {e.event_id for m in mail for e in ref_tracker.process(m)}
    assert len(expected) > 1_500

    def child(seed: int) -> subprocess.Popen[bytes]:
        args = [sys.executable, "-c", CHILD, str(store_path), str(maildir), str(log_path)]
        return subprocess.Popen([*args, str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def deliveries() -> int:
        return log_path.stat().st_size if log_path.exists() else 0

    kills = 0
    started = time.monotonic()
    for seed in range(KILLS):
        # Kill at a random point of the work, not of the clock: after a random number of
        # hook deliveries (so that every kill lands mid-work, however fast the machine),
        # plus a random few milliseconds (so that it lands anywhere in a batch).
        before, target = deliveries(), rng.randint(5, 25) * EVENT_LINE
        proc = child(seed)
        deadline = time.monotonic() + 60
        while proc.poll() is None and deliveries() - before < target:
            assert time.monotonic() < deadline, "the child made no progress"
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.02))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=60)
    last = child(KILLS)
    out, err = last.communicate(timeout=300)
    assert last.returncode == 0, err.decode()
    assert out.strip() == b"done"

    delivered = Counter(log_path.read_text().split())
    # Every expected event came, nothing else did; an event comes once per hook, and again
    # only when a kill fell between a hook's return and the mark of its delivery.
    assert set(delivered) == expected
    with SQLiteStore(store_path) as store:
        far = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=365)
        assert store.due_outbox(far, 1) == []
        assert store.dead_outbox(1) == []
        processed = sum(store.is_processed(f"m{n}@mail{n % 97}.example") for n in range(MESSAGES))
    assert processed == MESSAGES
    assert kills >= KILLS * 0.95  # the children were really killed mid-work
    print(
        json.dumps(
            {
                "kills": kills,
                "expected_events": len(expected),
                "deliveries": sum(delivered.values()),
                "events_delivered_more_than_twice": sum(1 for c in delivered.values() if c > 2),
                "seconds": round(time.monotonic() - started, 1),
            }
        )
    )
