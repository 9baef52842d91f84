"""The exceptions replytrack raises.

Every exception derives from `ReplytrackError`, so a host can catch the whole library in one
clause. The tree separates *the caller used the API wrongly* from *the mail is malformed*
(h11's LocalProtocolError / RemoteProtocolError) and from failures of the outside world::

    ReplytrackError
    ├── ConfigError (also ValueError)   the API was called wrongly: bad domain, bad secret, ...
    ├── ParseError  (also ValueError)   a strict helper met malformed mail
    ├── StoreError                      a store could not read or write
    ├── SourceError                     a mailbox source failed (network, auth, provider API)
    ├── DNSError                        a DNS lookup got no answer (timeout, SERVFAIL, ...)
    └── HookError                       a host hook raised; the original is ``__cause__``

Rule 1: lenient parsing (`parse_headers`, `classify`) never raises on mail; it records defects.
Rule 2: adapters translate third-party errors at the boundary (``raise SourceError(...) from
exc``) so no ``imaplib``, ``psycopg`` or ``dns`` exception reaches a host.
Rule 3: exceptions survive pickling with their context attributes, because hosts pass them
through task queues (urllib3's ``__reduce__`` pattern).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "DNSError",
    "HookError",
    "ParseError",
    "ReplytrackError",
    "SourceError",
    "StoreError",
]


class ReplytrackError(Exception):
    """Root of every exception raised by replytrack."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's default reduce replays ``args`` only, which loses keyword-only context
        # attributes; replay the constructor's keywords too.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def _rebuild(cls: type[ReplytrackError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    obj = cls.__new__(cls)
    Exception.__init__(obj, *args)
    obj.__dict__.update(state)
    return obj


class ConfigError(ReplytrackError, ValueError):
    """The API was called wrongly: an invalid argument or configuration.

    This is a bug in the calling code, not a property of some mail.
    """


class ParseError(ReplytrackError, ValueError):
    """A strict parser met malformed input.

    Attributes:
        value: the offending text (possibly truncated), or ``None``.
    """

    def __init__(self, message: str, *, value: str | None = None) -> None:
        super().__init__(message)
        self.value = value


class StoreError(ReplytrackError):
    """A store failed to read or write; the cause is chained as ``__cause__``."""


class SourceError(ReplytrackError):
    """A mailbox source failed: network, authentication or provider API.

    Attributes:
        source: the name of the source that failed, or ``None``.
    """

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(message)
        self.source = source


class DNSError(ReplytrackError):
    """A DNS lookup got no answer: timeout, SERVFAIL, REFUSED or no usable nameserver.

    The outside world failed, not the caller, so this is not a `ConfigError`; it is usually
    transient and a later retry may succeed. replytrack never caches it.

    Attributes:
        domain: the ASCII domain being looked up, or ``None``.
        timeout: ``True`` when the time limit ran out before an answer came.
    """

    def __init__(self, message: str, *, domain: str | None = None, timeout: bool = False) -> None:
        super().__init__(message)
        self.domain = domain
        self.timeout = timeout


class HookError(ReplytrackError):
    """A host hook raised while handling an event.

    Attributes:
        hook: the hook's name (``"campaign_stop"``, ``"crm_log"``), or ``None``.
        event_id: the id of the event being delivered, or ``None``.
    """

    def __init__(
        self, message: str, *, hook: str | None = None, event_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.hook = hook
        self.event_id = event_id
