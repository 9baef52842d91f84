"""replytrack: email reply tracking for sales platforms.

Give every send a unique, optionally signed Message-ID, parse incoming mail's headers, and match
replies to the sends they answer through ``In-Reply-To`` / ``References``. See DESIGN.md for the
architecture; everything public is importable from here.
"""

from __future__ import annotations

from replytrack.errors import (
    ConfigError,
    HookError,
    ParseError,
    ReplytrackError,
    SourceError,
    StoreError,
)

__all__ = [
    "ConfigError",
    "HookError",
    "ParseError",
    "ReplytrackError",
    "SourceError",
    "StoreError",
]
