"""Mailbox sources: where replytrack reads incoming mail from.

`MailboxSource` is the port (a `typing.Protocol`) and `BaseSource` the base class that makes an
adapter a few methods; both, with the values they exchange (`IncomingMessage`, `Batch`) and
the contract every source keeps (no miss, bounded duplicates, invalid cursors rescan a window),
are described in `replytrack.sources.base`. The standard-library sources live here:
`MemorySource` (the test double), `MaildirSource` and `MboxSource`. Provider adapters (IMAP,
Gmail, Microsoft Graph) are submodules behind extras. Every source passes the same contract
suite (``tests/unit/test_source_contract.py``).
"""

from __future__ import annotations

from replytrack.sources.base import (
    DEFAULT_RESCAN_WINDOW,
    BaseSource,
    Batch,
    IncomingMessage,
    InvalidCursor,
    MailboxSource,
)
from replytrack.sources.maildir import MaildirSource
from replytrack.sources.mbox import MboxSource
from replytrack.sources.memory import MemorySource

__all__ = [
    "DEFAULT_RESCAN_WINDOW",
    "BaseSource",
    "Batch",
    "IncomingMessage",
    "InvalidCursor",
    "MailboxSource",
    "MaildirSource",
    "MboxSource",
    "MemorySource",
]
