"""Mailbox sources: where replytrack reads incoming mail from.

`MailboxSource` is the port (a `typing.Protocol`) and `BaseSource` the base class that makes an
adapter a few methods; both, with the values they exchange (`IncomingMessage`, `Batch`) and
the contract every source keeps (no miss, bounded duplicates, invalid cursors rescan a window),
are described in `replytrack.sources.base`. The standard-library sources live here:
`MemorySource` (the test double), `MaildirSource` and `MboxSource`. The provider adapters
live in submodules behind extras: `IMAPSource` (``replytrack.sources.imap``, extra
``imap``), `GmailSource` (``replytrack.sources.gmail``, extra ``gmail``) and `GraphSource`
(``replytrack.sources.graph``, extra ``graph``). They are importable from here too, imported
on first use, so ``import replytrack.sources`` needs none of the extras; without its extra, an
adapter's import raises ImportError naming the ``pip install`` that fixes it. Every source
passes the same contract suite (``tests/unit/test_source_contract.py``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from replytrack.sources.gmail import GmailSource
    from replytrack.sources.graph import GraphSource
    from replytrack.sources.imap import IMAPSource

# The adapters, by the submodule that defines them (imported on first use: PEP 562).
_ADAPTERS = {"GmailSource": "gmail", "GraphSource": "graph", "IMAPSource": "imap"}

__all__ = [
    "DEFAULT_RESCAN_WINDOW",
    "BaseSource",
    "Batch",
    "GmailSource",
    "GraphSource",
    "IMAPSource",
    "IncomingMessage",
    "InvalidCursor",
    "MailboxSource",
    "MaildirSource",
    "MboxSource",
    "MemorySource",
]


def __getattr__(name: str) -> Any:
    module = _ADAPTERS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
