"""Stores: where replytrack keeps sends, incoming ties, the ledger, the outbox and cursors.

`Store` is the port (a `typing.Protocol`); `MemoryStore` keeps everything in memory and
`SQLiteStore` in one SQLite file (the embedded default). A PostgreSQL store for fleets of
workers lives in ``replytrack.store.postgres`` behind the ``postgres`` extra. Every store
passes the same contract suite (``tests/unit/test_store_contract.py``).
"""

from __future__ import annotations

from replytrack.store.base import (
    BaseStore,
    Migration,
    OutboxEntry,
    OutboxState,
    Pruned,
    SentMessage,
    Store,
    Transaction,
)
from replytrack.store.memory import MemoryStore
from replytrack.store.sqlite import SQLiteStore

__all__ = [
    "BaseStore",
    "MemoryStore",
    "Migration",
    "OutboxEntry",
    "OutboxState",
    "Pruned",
    "SQLiteStore",
    "SentMessage",
    "Store",
    "Transaction",
]
