"""Outlook's ``Thread-Index``: decode it, start a conversation, append a reply's child block.

Outlook and Exchange thread a conversation by ``Thread-Index``, the base64 form of the MAPI
property PidTagConversationIndex ([MS-OXOMSG] §2.2.1.3), not by ``References``. Its value is a
22-byte *header block* followed by one 5-byte *child block* per reply::

    header:  time (6 bytes, see the layouts below)  conversation GUID (16 bytes)
    child:   DeltaCode (1 bit) | TimeDelta (31 bits) | random and sequence bits (8 bits)

Two header layouts are seen in the wild, told apart by the second byte:

* `Layout.CLASSIC` (Outlook 2003 to 2016, e.g. ``AcZN8UUm...``): the first six bytes are the
  64-bit FILETIME of the conversation's start with its low 16 bits dropped. The first byte is
  the one [MS-OXOMSG] calls "Reserved, 0x01": it is the FILETIME's top byte, which is 0x01 for
  every date from 1829 to 2057. The times decoded this way match the messages' ``Date``
  fields (see the corpus tests).
* `Layout.PREFIXED` (Exchange Online and recent Outlook, e.g. ``AQHZ...``): a 0x01 byte, then
  the FILETIME's top five bytes (low 24 bits dropped, so the second byte is the FILETIME's top
  byte, 0x01 again). A classic header cannot have 0x01 as its second byte before 2057 (that
  would be a date around 1830), so the second byte decides.

In both layouts the GUID sits at bytes 6 to 22. A header variant of 27 bytes is sometimes
mentioned for the prefixed form; it would read here as a 22-byte header plus one opaque child
block, with the same GUID, which is all correlation compares.

Rule 1: `ThreadIndex.decode` never raises: anything that is not base64 of a 22-byte header
        with a 0x01 first byte plus whole 5-byte blocks gives ``None``.
Rule 2: child blocks are opaque: they are kept byte for byte and re-encoded unchanged, so
        ``decode(v).encode()`` gives back ``v`` for every canonical base64 value.
Rule 3: conversations are compared by the raw 16 bytes of `ThreadIndex.guid`, never by a
        formatted UUID (byte order of the first fields differs between formatters).
Rule 4: a reply *appends* a block (`ThreadIndex.child`). Sending the parent's value unchanged
        does not thread in Outlook: the message is taken as the same position in the
        conversation.
Rule 5: the time delta of a child block follows [MS-OXOMSG] §2.2.1.3: the difference between
        now and the header's time; when its top 15 bits are zero (under about 1.78 years),
        DeltaCode is 0 and TimeDelta holds bits 18 to 48, otherwise DeltaCode is 1 and
        TimeDelta holds bits 23 to 53 (saturated past that, about 57 years).

No I/O happens here: the clock and the randomness are parameters, and default to
``datetime.now(timezone.utc)``, `uuid.uuid4` and `os.urandom` only when not given.
"""

from __future__ import annotations

import base64
import binascii
import enum
import os
import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Final

import attrs

from replytrack.errors import ConfigError
from replytrack.headers import normalize_subject

__all__ = [
    "CHILD_BLOCK_BYTES",
    "HEADER_BYTES",
    "Layout",
    "ThreadIndex",
    "child_delta",
    "thread_topic",
]

#: Bytes in a header block (time and GUID).
HEADER_BYTES: Final = 22
#: Bytes in a child block (one per reply).
CHILD_BLOCK_BYTES: Final = 5
_GUID_BYTES: Final = 16
_GUID_START: Final = HEADER_BYTES - _GUID_BYTES

# FILETIME: 100-nanosecond ticks since 1601-01-01 UTC.
_FILETIME_EPOCH: Final = datetime(1601, 1, 1, tzinfo=timezone.utc)
_TOP_BYTE: Final = 0x01 << 56  # the FILETIME top byte of every date from 1829 to 2057
_CLASSIC_DROP: Final = 16  # low bits a classic header drops
_PREFIXED_DROP: Final = 24  # low bits a prefixed header drops

# [MS-OXOMSG] §2.2.1.3, the child block's time delta.
_SHORT_DELTA_LIMIT: Final = 1 << 49  # "the high 15 bits of the time difference are zero"
_SHORT_DELTA_SHIFT: Final = 18
_LONG_DELTA_SHIFT: Final = 23
_TIME_DELTA_MASK: Final = 0x7FFF_FFFF

# Canonical base64: whole quanta, padding only at the end. Whitespace is removed first, as a
# folded header may carry some.
_BASE64: Final = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_WHITESPACE: Final = re.compile(r"[ \t\r\n]+")


class Layout(enum.Enum):
    """How a header block stores its time (see the module docstring)."""

    #: The six first bytes are FILETIME >> 16 (first byte 0x01 until 2057).
    CLASSIC = "classic"
    #: A 0x01 byte, then FILETIME >> 24 in five bytes (whose first is 0x01 until 2057).
    PREFIXED = "prefixed"


def _check_guid(_instance: object, _attribute: object, value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != _GUID_BYTES:
        raise ConfigError(f"guid must be {_GUID_BYTES} bytes, not {value!r}")


def _check_children(_instance: object, _attribute: object, value: tuple[bytes, ...]) -> None:
    for block in value:
        if not isinstance(block, bytes) or len(block) != CHILD_BLOCK_BYTES:
            raise ConfigError(f"a child block must be {CHILD_BLOCK_BYTES} bytes, not {block!r}")


@attrs.frozen
class ThreadIndex:
    """A decoded ``Thread-Index`` value: the conversation's header and its reply blocks.

    Build one with `decode`, `new` or `child`; the constructor checks that the value can be
    encoded and decoded back to itself.

    Attributes:
        guid: the conversation GUID, raw 16 bytes; compare these, not a formatted UUID.
        filetime: the header's time as a FILETIME (100 ns ticks since 1601-01-01 UTC), with
            the low bits the layout drops set to zero.
        children: the child blocks, 5 opaque bytes each, oldest first.
        layout: the header layout.
    """

    guid: bytes = attrs.field(validator=_check_guid)
    filetime: int
    children: tuple[bytes, ...] = attrs.field(default=(), validator=_check_children)
    layout: Layout = Layout.CLASSIC

    def __attrs_post_init__(self) -> None:
        drop = _CLASSIC_DROP if self.layout is Layout.CLASSIC else _PREFIXED_DROP
        ok = (
            isinstance(self.filetime, int)
            and self.filetime >> 56 == 0x01
            and self.filetime & ((1 << drop) - 1) == 0
        )
        # A classic header whose second byte is 0x01 would decode as a prefixed one.
        if ok and self.layout is Layout.CLASSIC:
            ok = (self.filetime >> 48) & 0xFF != 0x01
        if not ok:
            raise ConfigError(
                f"filetime {self.filetime!r} cannot be stored in a {self.layout.value} header: "
                "it must be a date from 1831 to 2057 with its low bits cleared"
            )

    # -- reading ------------------------------------------------------------------------------

    @classmethod
    def decode(cls, value: str | bytes | None) -> ThreadIndex | None:
        """Decode a ``Thread-Index`` header value.

        Args:
            value: the field value (base64; whitespace from folding is ignored), or ``None``
                for an absent field, so ``decode(headers.get("Thread-Index"))`` just works.

        Returns:
            The decoded value, or ``None`` when it is not a Thread-Index: not base64, too
            short, not a header plus whole child blocks, or a first byte other than 0x01.
            Never raises.
        """
        if value is None:
            return None
        if isinstance(value, bytes):
            try:
                value = value.decode("ascii")
            except UnicodeDecodeError:
                return None
        text = _WHITESPACE.sub("", value)
        if not _BASE64.fullmatch(text):
            return None
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):  # pragma: no cover - the regex vetted the text
            return None
        return cls.from_bytes(raw)

    @classmethod
    def from_bytes(cls, raw: bytes) -> ThreadIndex | None:
        """Decode the binary form (PidTagConversationIndex as MAPI stores it).

        Args:
            raw: the bytes.

        Returns:
            The decoded value, or ``None`` when the bytes are not a conversation index.
            Never raises.
        """
        if (
            len(raw) < HEADER_BYTES
            or (len(raw) - HEADER_BYTES) % CHILD_BLOCK_BYTES
            or raw[0] != 0x01
        ):
            return None
        if raw[1] == 0x01:
            layout = Layout.PREFIXED
            filetime = int.from_bytes(raw[1:6], "big") << _PREFIXED_DROP
        else:
            layout = Layout.CLASSIC
            filetime = int.from_bytes(raw[0:6], "big") << _CLASSIC_DROP
        children = tuple(
            raw[i : i + CHILD_BLOCK_BYTES]
            for i in range(HEADER_BYTES, len(raw), CHILD_BLOCK_BYTES)
        )
        return cls(
            guid=bytes(raw[_GUID_START:HEADER_BYTES]),
            filetime=filetime,
            children=children,
            layout=layout,
        )

    @property
    def header_time(self) -> datetime:
        """When the conversation started, to 6.5 ms (classic) or 1.7 s (prefixed), in UTC.

        Always meaningful: a header that decodes at all holds a date from 1829 to 2057.
        """
        return _FILETIME_EPOCH + timedelta(microseconds=self.filetime // 10)

    @property
    def child_count(self) -> int:
        """How many replies deep this message is in the conversation (0 for its first)."""
        return len(self.children)

    @property
    def header(self) -> bytes:
        """The 22-byte header block, which every message of the conversation shares."""
        if self.layout is Layout.CLASSIC:
            time_bytes = (self.filetime >> _CLASSIC_DROP).to_bytes(6, "big")
        else:
            time_bytes = b"\x01" + (self.filetime >> _PREFIXED_DROP).to_bytes(5, "big")
        return time_bytes + self.guid

    def to_bytes(self) -> bytes:
        """Return the binary form: the header block, then every child block."""
        return self.header + b"".join(self.children)

    def encode(self) -> str:
        """Return the ``Thread-Index`` header value (canonical base64, no line breaks)."""
        return base64.b64encode(self.to_bytes()).decode("ascii")

    def same_conversation(self, other: ThreadIndex) -> bool:
        """Whether `other` belongs to the same conversation (equal raw GUIDs)."""
        return self.guid == other.guid

    # -- writing ------------------------------------------------------------------------------

    @classmethod
    def new(
        cls,
        now: datetime | None = None,
        guid: bytes | None = None,
        *,
        layout: Layout = Layout.CLASSIC,
    ) -> ThreadIndex:
        """Start a new conversation: a header block and no child block.

        Args:
            now: the conversation's start, an aware datetime; the current time by default.
            guid: 16 bytes; ``uuid.uuid4().bytes`` by default.
            layout: the header layout to write. Classic by default: it is the one
                [MS-OXOMSG] describes and keeps the time to 6.5 ms.

        Returns:
            The new index.

        Raises:
            ConfigError: `now` is naive or outside 1831-2057, or `guid` is not 16 bytes.
        """
        ticks = _to_filetime(datetime.now(timezone.utc) if now is None else now)
        drop = _CLASSIC_DROP if layout is Layout.CLASSIC else _PREFIXED_DROP
        return cls(
            guid=uuid.uuid4().bytes if guid is None else guid,
            filetime=(ticks >> drop) << drop,
            layout=layout,
        )

    def child(self, now: datetime | None = None, *, random: int | None = None) -> ThreadIndex:
        """Return the index of a reply to this message: the same header plus one more block.

        Args:
            now: when the reply is written, an aware datetime; the current time by default.
                A time before the header's (a skewed clock) counts as no delay at all.
            random: the block's last byte (random bits and a sequence count in
                [MS-OXOMSG]; nothing reads it back); one byte of `os.urandom` by default.

        Returns:
            The reply's index.

        Raises:
            ConfigError: `now` is naive or out of range, or `random` is not in 0-255.
        """
        ticks = _to_filetime(datetime.now(timezone.utc) if now is None else now)
        if random is None:
            random = os.urandom(1)[0]
        elif not isinstance(random, int) or not 0 <= random <= 0xFF:
            raise ConfigError(f"random must be an int from 0 to 255, not {random!r}")
        block = _child_block(max(0, ticks - self.filetime), random)
        return attrs.evolve(self, children=(*self.children, block))


def child_delta(block: bytes) -> timedelta:
    """Read the time delta of a child block, to the precision it was stored with.

    Args:
        block: one 5-byte child block.

    Returns:
        The time between the conversation's start and the reply, truncated.

    Raises:
        ConfigError: `block` is not 5 bytes.
    """
    if len(block) != CHILD_BLOCK_BYTES:
        raise ConfigError(f"a child block is {CHILD_BLOCK_BYTES} bytes, not {len(block)}")
    word = int.from_bytes(block[:4], "big")
    shift = _LONG_DELTA_SHIFT if word >> 31 else _SHORT_DELTA_SHIFT
    return timedelta(microseconds=((word & _TIME_DELTA_MASK) << shift) // 10)


# C0 controls and DEL: never part of a header value replytrack writes.
_CONTROLS: Final = re.compile(r"[\x00-\x1f\x7f]")


def thread_topic(subject: str | None) -> str:
    """Return the ``Thread-Topic`` Outlook writes for a subject: the subject without prefixes.

    Args:
        subject: the decoded subject, or ``None``.

    Returns:
        The bare subject (``"Re: AW: Pricing"`` gives ``"Pricing"``); empty for ``None``.
        Control characters (CR, LF, NUL ...) become spaces: the result is always safe as a
        header value.
    """
    if not subject:
        return ""
    return normalize_subject(_CONTROLS.sub(" ", subject))


def _child_block(delta: int, random: int) -> bytes:
    """Encode a child block for `delta` FILETIME ticks after the header ([MS-OXOMSG])."""
    if delta < _SHORT_DELTA_LIMIT:
        word = (delta >> _SHORT_DELTA_SHIFT) & _TIME_DELTA_MASK
    else:
        # Saturate rather than wrap: a wrapped delta would claim an earlier reply.
        word = (1 << 31) | min(delta >> _LONG_DELTA_SHIFT, _TIME_DELTA_MASK)
    return word.to_bytes(4, "big") + bytes((random,))


def _to_filetime(now: datetime) -> int:
    if not isinstance(now, datetime):
        raise ConfigError(f"now must be an aware datetime, not {type(now).__name__}")
    if now.tzinfo is None or now.utcoffset() is None:
        raise ConfigError("now is a naive datetime; pass an aware one")
    return (now - _FILETIME_EPOCH) // timedelta(microseconds=1) * 10
