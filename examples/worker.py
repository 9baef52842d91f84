"""A worker: poll a Maildir, retry failed hooks, sleep until new mail may be there.

Run it with ``python examples/worker.py [--maildir DIR] [--store FILE] [--iterations N]``.
Without ``--maildir`` it builds a demo Maildir with one reply in a temporary directory. The CRM
hook fails on its first call, as an outage would: the event stays in the store's outbox and
the next iteration's ``retry_pending`` delivers it (with ``retry_base`` shortened so the demo
does not wait 30 seconds).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import tempfile
from email.message import EmailMessage

from replytrack import MessageIdGenerator, ReplyEvent, ReplyTracker, SQLiteStore
from replytrack.sources import MaildirSource
from replytrack.testing import build_reply


class FlakyCRM:
    """A CRM hook whose first call fails."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, event: ReplyEvent) -> None:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("CRM unavailable")
        print(f"crm_log: logged {event.kind.value} for {event.ref} ({event.event_id})")


def run(maildir: str, store_path: str, iterations: int, interval: float) -> None:
    store = SQLiteStore(store_path)
    crm = FlakyCRM()
    tracker = ReplyTracker(
        store,
        MessageIdGenerator("mail.sales.example", secret=b"demo-key-use-a-real-secret-32byte"),
        crm_log=crm,
        retry_base=_dt.timedelta(milliseconds=10),
    )
    if not os.listdir(os.path.join(maildir, "new")):
        seed(tracker, maildir)
    with MaildirSource(maildir) as source:
        for iteration in range(1, iterations + 1):
            polled = tracker.poll(source)
            retried = tracker.retry_pending()
            print(
                f"iteration {iteration}: {polled.seen} new, {polled.events} events, "
                f"{retried.delivered} retried ok, {retried.failed} failed again"
            )
            if iteration < iterations:
                # Returns early when the Maildir changes; the fetch after it is the truth.
                source.wait(None, interval)
    store.close()


def seed(tracker: ReplyTracker, maildir: str) -> None:
    """Stamp one send and deliver a reply to it into the Maildir."""
    outgoing = EmailMessage()
    outgoing["From"] = "Rep <rep@sales.example>"
    outgoing["To"] = "jo@customer.example"
    outgoing["Subject"] = "Quick question"
    outgoing.set_content("Hi Jo, 15 minutes this week?")
    sent = tracker.stamp(outgoing, ref="c42:p7")
    with open(os.path.join(maildir, "new", "1.reply.worker-demo"), "wb") as file:
        file.write(build_reply(in_reply_to=sent.message_id))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maildir", help="a Maildir to watch (default: a demo one)")
    parser.add_argument("--store", help="the SQLite store (default: in the temporary dir)")
    parser.add_argument("--iterations", type=int, default=2, help="loops before exiting")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between polls")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="replytrack-worker-") as tmp:
        maildir = args.maildir or os.path.join(tmp, "Maildir")
        for sub in ("new", "cur", "tmp"):
            os.makedirs(os.path.join(maildir, sub), exist_ok=True)
        store = args.store or os.path.join(tmp, "replytrack.sqlite3")
        run(maildir, store, args.iterations, args.interval)


if __name__ == "__main__":
    main()
