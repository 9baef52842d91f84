"""Workers: N processes share M mailboxes through one store, then stop cleanly on SIGTERM.

Run it with ``python examples/workers.py [--workers N] [--mailboxes M] [--replies R]
[--store FILE | --store postgresql://USER@HOST/DB]``. It builds M demo Maildirs in a temporary
directory, each with R replies to recorded sends and a few unrelated messages, and starts N
worker processes over all of them against one store (an SQLite file by default). Each mailbox
is polled by one worker at a time - the one holding its lease in the store - so the replies
are shared out and every hook fires once. When every reply was delivered, each worker gets a
SIGTERM: it finishes its batch, gives its leases back and exits. The summary says who did what.

For PostgreSQL, install the extra (``pip install 'replytrack[postgres]'``) and put the
password in PGPASSWORD, not in the URL.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from replytrack import ReplyEvent, ReplyTracker, SQLiteStore
from replytrack.sources import MaildirSource
from replytrack.store import SentMessage, Store
from replytrack.testing import build_reply
from replytrack.worker import PollSpan, Worker


def open_store(spec: str) -> Store:
    if spec.startswith(("postgresql://", "postgres://")):
        from replytrack.store.postgres import PostgresStore  # noqa: PLC0415 (an optional extra)

        return PostgresStore(spec)
    return SQLiteStore(spec)


class Recorder:
    """The host's hooks: append "hook event_id" to this process's file, one line per call."""

    def __init__(self, path: Path, hook: str) -> None:
        self.path = path
        self.hook = hook

    def __call__(self, event: ReplyEvent) -> None:
        # A real host would stop the sequence or log to the CRM here, idempotently on event_id.
        with self.path.open("a") as file:
            file.write(f"{self.hook} {event.event_id}\n")


def work(store_spec: str, maildirs: list[str], workdir: str) -> None:
    """One worker process: poll the mailboxes until SIGTERM."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us with SIGTERM
    deliveries = Path(workdir, f"deliveries-{os.getpid()}.txt")
    visits = Path(workdir, f"visits-{os.getpid()}.txt")

    def on_poll(span: PollSpan) -> None:
        if span.finished is not None:
            with visits.open("a") as file:
                file.write(f"{span.source} {span.seen}\n")

    store = open_store(store_spec)
    sources = [MaildirSource(path) for path in maildirs]
    try:
        tracker = ReplyTracker(
            store,
            campaign_stop=Recorder(deliveries, "campaign_stop"),
            crm_log=Recorder(deliveries, "crm_log"),
            own_addresses=["rep@sales.example"],
        )
        worker = Worker(
            tracker, sources, lease=_dt.timedelta(seconds=30), batch_size=5, on_poll=on_poll
        )
        # Stop in another thread: the handler must not touch the worker's Event itself.
        signal.signal(
            signal.SIGTERM, lambda signum, frame: threading.Thread(target=worker.stop).start()
        )
        Path(workdir, f"ready-{os.getpid()}.txt").touch()  # from now on SIGTERM stops cleanly
        worker.run(interval=0.1)
    finally:
        for source in sources:
            source.close()
        store.close()


def seed(store_spec: str, root: Path, mailboxes: int, replies: int) -> tuple[list[str], int]:
    """Make the Maildirs and record the sends; return the Maildirs and the number of replies."""
    maildirs = []
    with open_store(store_spec) as store, store.transaction() as tx:
        for m in range(mailboxes):
            maildir = root / f"rep{m}"
            for sub in ("new", "cur", "tmp"):
                (maildir / sub).mkdir(parents=True)
            for r in range(replies):
                send = f"<c1.rep{m}.p{r}@mail.sales.example>"
                tx.record_sent(
                    SentMessage(send, f"c1:rep{m}:p{r}", "rep@sales.example", f"p{r}@x.example")
                )
                reply = build_reply(in_reply_to=send, from_=f"Prospect {r} <p{r}@x.example>")
                (maildir / "new" / f"{r}.reply").write_bytes(reply)
            for u in range(replies // 2):  # mail that answers none of our sends
                other = build_reply(in_reply_to=f"<thread{u}@elsewhere.example>", body="FYI")
                (maildir / "new" / f"{u}.other").write_bytes(other)
            maildirs.append(str(maildir))
    return maildirs, mailboxes * replies


def lines(root: Path, prefix: str) -> dict[int, list[str]]:
    """The lines of every worker's file `prefix`-PID.txt, by pid."""
    found = {}
    for path in root.glob(f"{prefix}-*.txt"):
        found[int(path.stem.rsplit("-", 1)[1])] = path.read_text().splitlines()
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3, help="worker processes")
    parser.add_argument("--mailboxes", type=int, default=6, help="Maildirs")
    parser.add_argument("--replies", type=int, default=20, help="replies per Maildir")
    parser.add_argument("--store", help="an SQLite file or a postgresql:// URL (default: temp)")
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for all")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="replytrack-workers-") as tmp:
        root = Path(tmp)
        store_spec = args.store or str(root / "replytrack.sqlite3")
        maildirs, expected = seed(store_spec, root / "mail", args.mailboxes, args.replies)
        print(
            f"{args.workers} workers, {args.mailboxes} mailboxes, {expected} replies "
            f"(+ {args.mailboxes * (args.replies // 2)} unrelated messages)"
        )
        # spawn: each worker opens its own store (a store must not cross a fork).
        context = multiprocessing.get_context("spawn")
        processes = [
            context.Process(target=work, args=(store_spec, maildirs, tmp))
            for _ in range(args.workers)
        ]
        started = time.monotonic()
        for process in processes:
            process.start()
        try:
            delivered: set[str] = set()
            while time.monotonic() - started < args.timeout:
                delivered = {
                    line.split()[1]
                    for found in lines(root, "deliveries").values()
                    for line in found
                    if line.startswith("crm_log ")
                }
                ready = len(list(root.glob("ready-*.txt")))
                if len(delivered) >= expected and ready == len(processes):
                    break
                time.sleep(0.05)
            elapsed = time.monotonic() - started
        finally:
            for process in processes:
                process.terminate()  # SIGTERM: finish the batch, release the leases, exit
            for process in processes:
                process.join(timeout=30)

        deliveries = lines(root, "deliveries")
        visits = lines(root, "visits")
        for number, process in enumerate(processes, start=1):
            mine = deliveries.get(process.pid or 0, [])
            polled = {line.split()[0] for line in visits.get(process.pid or 0, [])}
            print(
                f"worker {number}: {sum(x.startswith('crm_log') for x in mine)} replies "
                f"delivered from {len(polled)} mailboxes, exit code {process.exitcode}"
            )
        calls = Counter(line for found in deliveries.values() for line in found)
        hooks = Counter(line.split()[0] for line in calls.elements())
        duplicates = sum(count - 1 for count in calls.values())
        print(
            f"all {len(delivered)} of {expected} replies delivered in {elapsed:.1f} s: "
            f"{hooks['campaign_stop']} campaign_stop and {hooks['crm_log']} crm_log calls, "
            f"{duplicates} duplicates"
            if len(delivered) == expected
            else f"only {len(delivered)} of {expected} replies delivered"
        )
        clean = all(process.exitcode == 0 for process in processes)
        print(
            "every worker exited cleanly on SIGTERM" if clean else "a worker did not exit cleanly"
        )
        return 0 if clean and len(delivered) == expected else 1


if __name__ == "__main__":
    sys.exit(main())
