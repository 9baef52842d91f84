r"""Message-IDs that replytrack can recognise again: unique, optionally signed, case-proof.

`MessageIdGenerator.generate` returns an RFC 5322 §3.6.4 ``msg-id`` (``"<" id-left "@"
id-right ">"``, brackets included) whose ``id-left`` is ``dot-atom-text`` (§3.2.3).
`MessageIdGenerator.verify` recognises the signed ones when they come back in ``In-Reply-To``
or ``References`` and returns the `Token` they carry.

Rule 1: the left part uses only ``a-z``, ``0-9`` and ``.``: no ``/ = + " \``, nothing that
needs quoting, nothing whose meaning depends on case. Mail systems have been seen to upper- or
lower-case a whole Message-ID, so every field is in a case-insensitive encoding and `verify`
lower-cases before it looks.
Rule 2: every id carries at least 96 bits from the operating system's CSPRNG (`os.urandom`);
nothing is derived from the host name (no ``socket.getfqdn()``: it leaks the machine's name
and can block on DNS).
Rule 3: a signed id's ref is *encoded, not encrypted*: anyone who sees the id can read it.
Rule 4: the signature (HMAC-SHA256, 80 bits kept) covers the whole left part before the tag,
version marker included, but not the domain: moving to another sending domain, or a relay
that case-folds the domain, does not invalidate ids already out there.
Rule 5: `verify` never raises, whatever it is given; anything it does not recognise as its
own, intact, signed id gives ``None``.
Rule 6: an id is at most `MAX_ID_LENGTH` (250) characters, brackets included; a domain too
long for the longest possible id is refused when the generator is built.

Layout of the left part (all lower case)::

    plain:   <24 base32 chars>                                  120 random bits
    signed:  r1.<time: 7><nonce: 20>[.<ref: hex>].<tag: 16>

* ``r1`` is the format version; a later format gets another marker, so old and new ids can
  be told apart.
* *time*: issue time in whole seconds since the Unix epoch, 7 base32 digits (35 bits, good
  until the year 3058), most significant first.
* *nonce*: 20 random base32 characters (100 bits), so two ids with the same ref issued in the
  same second still differ.
* *ref*: the UTF-8 bytes of the host's ref in lower-case hex (at most 64 bytes, 128 chars),
  omitted when the ref is empty. Hex rather than base32 because ``bytes.hex`` runs in C
  while a base32 encoder costs 1-6 µs per call in pure Python (`base64.b32encode` is pure
  Python); the price is 25 characters of room for the domain.
* *tag*: 80 bits of ``HMAC-SHA256(key, <everything before the last dot>)``, where
  ``key = HMAC-SHA256(secret, salt)`` (itsdangerous' "hmac" key derivation; the default salt
  is ``b"replytrack.msgid"``), once per key of the rotation list.

"base32" above is the RFC 4648 §6 alphabet ``a-z2-7``, lower-cased. The random fields and the
tag are written by mapping each byte to the alphabet by its low 5 bits (``bytes.translate``):
with 256 = 8 * 32 every character is uniformly distributed, so 20 characters carry 100 bits,
and the tag keeps 5 bits from each of the first 16 bytes of the HMAC output — 80 bits, as good
as truncation for a PRF, at a fraction of the cost of a base32 encoder.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from binascii import hexlify
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Final, Protocol, TypeAlias

import attrs
from typing_extensions import Self

from replytrack.dns import to_ascii_domain
from replytrack.errors import ConfigError

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_REF_BYTES",
    "Clock",
    "MessageIdGenerator",
    "Secret",
    "Token",
]

#: The longest Message-ID `MessageIdGenerator` produces, angle brackets included.
MAX_ID_LENGTH: Final = 250
#: The longest ref `MessageIdGenerator.generate` accepts, in UTF-8 bytes.
MAX_REF_BYTES: Final = 64

#: One key, or a rotation list of keys (oldest first, newest last).
Secret: TypeAlias = str | bytes | Sequence[str | bytes]
#: A callable returning "now": POSIX seconds (like `time.time`) or an aware `datetime`.
Clock: TypeAlias = Callable[[], float | datetime]

_VERSION: Final = "r1"
_PREFIX: Final = f"{_VERSION}.".encode()
_DEFAULT_SALT: Final = b"replytrack.msgid"

_PLAIN_CHARS: Final = 24  # 120 random bits: a plain id has room to spare
_TIME_CHARS: Final = 7  # 35 bits of seconds
_NONCE_CHARS: Final = 20  # 100 random bits, above the required 96
_TAG_CHARS: Final = 16  # 80 bits of HMAC-SHA256
_MAX_TIME: Final = 1 << (5 * _TIME_CHARS)

# "r1." time nonce "." ref-hex "." tag
_MAX_LEFT: Final = (
    len(_VERSION) + 1 + _TIME_CHARS + _NONCE_CHARS + 1 + 2 * MAX_REF_BYTES + 1 + _TAG_CHARS
)
#: Longest domain for which every id stays within MAX_ID_LENGTH: "<" left "@" domain ">".
_MAX_DOMAIN: Final = MAX_ID_LENGTH - _MAX_LEFT - 3

_ALPHABET: Final = b"abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648 §6, lower-cased
# bytes.translate table: byte b -> alphabet[b & 31]. 256 is a multiple of 32, so a uniformly
# random byte gives a uniformly random character (5 bits).
_SPREAD: Final = bytes(_ALPHABET[b & 31] for b in range(256))
# For decoding the time field with int(..., 32), whose digits are 0-9a-v.
_TO_INT_DIGITS: Final = str.maketrans(
    _ALPHABET.decode("ascii"), "0123456789abcdefghijklmnopqrstuv"
)

# The whole (lower-cased) left part of a signed v1 id; groups: signed text, time, ref, tag.
# The ref group is optional (empty ref) and whole bytes only.
_SIGNED_LEFT: Final = re.compile(
    rf"({_VERSION}\.([a-z2-7]{{{_TIME_CHARS}}})[a-z2-7]{{{_NONCE_CHARS}}}"
    rf"(?:\.((?:[0-9a-f]{{2}}){{1,{MAX_REF_BYTES}}}))?)"
    rf"\.([a-z2-7]{{{_TAG_CHARS}}})"
)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MAX_VERIFY_INPUT: Final = 998  # RFC 5322 §2.1.1 line limit: nothing longer is a header value

# HMAC-SHA256 (RFC 2104): block size and the two pads, as bytes.translate tables.
_SHA256_BLOCK: Final = 64
_IPAD: Final = bytes(b ^ 0x36 for b in range(256))
_OPAD: Final = bytes(b ^ 0x5C for b in range(256))


class _Hash(Protocol):
    """The part of a hashlib object's interface used here."""

    def copy(self) -> Self: ...
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


# (inner, outer): SHA-256 objects that have already absorbed key^ipad and key^opad.
_Keyed: TypeAlias = tuple[_Hash, _Hash]

_urandom = os.urandom  # module global: one dict lookup on the hot path instead of two


@attrs.frozen
class Token:
    """What a signed Message-ID carries.

    Attributes:
        ref: the host-chosen ref passed to `MessageIdGenerator.generate`.
        issued_at: when the id was generated, to the second, as an aware UTC datetime.
    """

    ref: str
    issued_at: datetime


class MessageIdGenerator:
    """Generate RFC 5322 Message-IDs for one sending domain, and recognise signed ones.

    A generator holds no global state and is safe to share between threads; each call reads
    the clock and the CSPRNG afresh (so it is also safe across ``fork``).

    Args:
        domain: the right-hand side of every id, e.g. ``"mail.example.com"``. Converted to
            its lower-case ASCII form (IDNA 2003 A-labels, see `to_ascii_domain`). It must
            leave room for the longest signed id: at most 71 characters once converted.
        secret: ``None`` for plain ids only; or a key (``bytes``, or ``str`` taken as UTF-8);
            or a sequence of keys for rotation, oldest first: ids are signed with the last
            key and verified with all of them. Use at least 32 random bytes.
        clock: returns "now", either as POSIX seconds (a ``float`` or ``int``, like
            `time.time`, the default) or as an aware `datetime`. Injected by tests; read once
            per signed id.
        salt: the purpose the keys are derived for (itsdangerous' "salt"). Two generators
            with the same secret and different salts do not accept each other's ids.

    Raises:
        ConfigError: if the domain is invalid (see `to_ascii_domain`) or too long, if a key
            is empty or of the wrong type, if the sequence of keys is empty, or if *clock*
            is not callable or *salt* is empty.

    Example::

        gen = MessageIdGenerator("mail.example.com", secret=[old_key, new_key])
        mid = gen.generate(ref="c42:p7")   # '<r1.....@mail.example.com>'
        gen.verify(mid)                    # Token(ref='c42:p7', issued_at=...)
    """

    __slots__ = ("_clock", "_domain", "_signer", "_stamp", "_suffix", "_verifiers")

    def __init__(
        self,
        domain: str,
        secret: Secret | None = None,
        *,
        clock: Clock | None = None,
        salt: str | bytes = _DEFAULT_SALT,
    ) -> None:
        ascii_domain = to_ascii_domain(domain)
        if len(ascii_domain) > _MAX_DOMAIN:
            raise ConfigError(
                f"domain {ascii_domain!r} is too long for Message-IDs: with the longest ref an "
                f"id would be {len(ascii_domain) + _MAX_LEFT + 3} characters, over the limit of "
                f"{MAX_ID_LENGTH}; use a domain of at most {_MAX_DOMAIN} characters"
            )
        if clock is None:
            clock = time.time
        elif not callable(clock):
            raise ConfigError(f"clock must be callable, not {type(clock).__name__}")
        salt_bytes = _to_key_bytes(salt, what="salt")

        # itsdangerous' "hmac" key derivation: the signing key is HMAC(secret, salt), so the
        # same secret used elsewhere in the host (or with another salt) yields unrelated keys.
        verifiers = tuple(
            _keyed_sha256(hmac.digest(key, salt_bytes, "sha256"))
            for key in _normalise_secret(secret)
        )

        self._domain = ascii_domain
        self._suffix = f"@{ascii_domain}>"
        self._clock: Clock = clock
        # Newest last in the argument; tried newest first when verifying, since fresh ids are
        # the common case.
        self._verifiers = verifiers[::-1]
        self._signer = verifiers[-1] if verifiers else None
        # (second, encoded time field) for the last second seen: the time field changes once
        # a second, so it is encoded once a second. Replaced as a whole tuple, so threads
        # racing on it each see a consistent pair.
        self._stamp: tuple[int, bytes] = (-1, b"")

    @property
    def domain(self) -> str:
        """The lower-case ASCII domain every generated id ends with."""
        return self._domain

    @property
    def can_sign(self) -> bool:
        """Whether the generator has a secret, so `generate(ref=...)` can sign ids."""
        return self._signer is not None

    def __repr__(self) -> str:
        # Never the secret, nor anything derived from it.
        return f"<MessageIdGenerator domain={self._domain!r} keys={len(self._verifiers)}>"

    def generate(self, ref: str | None = None) -> str:
        """Return a new, unique Message-ID, angle brackets included.

        Without *ref* the id is 120 random bits and nothing else; `verify` returns ``None``
        for it. With *ref* (which needs a secret) the id also carries *ref* and the issue
        time, signed, and `verify` returns them.

        **The ref is encoded, not encrypted: everyone who receives the mail, and every system
        it passes through, can read it.** Put an opaque identifier in it, never personal data
        or anything secret.

        Args:
            ref: ``None`` for a plain id; otherwise any text of at most `MAX_REF_BYTES` (64)
                bytes in UTF-8. The empty string is allowed: the id is then signed and dated
                but carries no ref.

        Returns:
            ``"<left@domain>"``, at most `MAX_ID_LENGTH` characters.

        Raises:
            ConfigError: if *ref* is given but the generator has no secret, if *ref* is not a
                str, is longer than 64 bytes in UTF-8, or cannot be encoded as UTF-8 (lone
                surrogates), or if the clock returns something that is not a time between
                1970 and 3058.
        """
        if ref is None:
            return f"<{_urandom(_PLAIN_CHARS).translate(_SPREAD).decode()}{self._suffix}"

        signer = self._signer
        if signer is None:
            raise ConfigError("generate(ref=...) needs a secret: pass secret= to the generator")
        if not isinstance(ref, str):
            raise ConfigError(f"ref must be a str, not {type(ref).__name__}")
        try:
            raw = ref.encode()
        except UnicodeEncodeError as exc:
            raise ConfigError("ref must be encodable as UTF-8 (no lone surrogates)") from exc
        if len(raw) > MAX_REF_BYTES:
            raise ConfigError(
                f"ref is {len(raw)} bytes in UTF-8, longer than {MAX_REF_BYTES}; "
                "store a longer key on the host side and put a short id in the ref"
            )

        now = self._clock()
        # The default clock returns a float in range; everything else takes the slow path.
        seconds = int(now) if type(now) is float and 0 <= now < _MAX_TIME else _to_seconds(now)
        stamp = self._stamp
        if stamp[0] != seconds:
            stamp = (seconds, _encode_time(seconds))
            self._stamp = stamp

        body = _PREFIX + stamp[1] + _urandom(_NONCE_CHARS).translate(_SPREAD)
        if raw:
            body += b"." + hexlify(raw)
        return f"<{body.decode()}.{_tag(signer, body).decode()}{self._suffix}"

    def verify(self, message_id: str | bytes | None) -> Token | None:
        """Return the `Token` in one of our signed Message-IDs, or ``None``.

        Accepts the id with or without angle brackets, with surrounding whitespace, and after
        the whole id was upper- or lower-cased by some mail system. The domain is not checked
        (it is not signed): an id keeps verifying after a change of sending domain. Every key
        of the rotation list is tried; tags are compared in constant time.

        Args:
            message_id: the id as ``str``, or as ``bytes`` straight from a raw header (ASCII;
                anything else gives ``None``). Any other value, ``None`` included, gives
                ``None``, so a missing header can be passed as is.

        Returns:
            The ref and issue time, or ``None`` if the id is foreign, malformed, a plain
            (unsigned) id, signed with a key this generator does not have, tampered with, or
            if the generator has no secret. Never raises.
        """
        if not self._verifiers:
            return None
        if isinstance(message_id, bytes):
            try:
                message_id = message_id.decode("ascii")
            except UnicodeDecodeError:
                return None
        if not isinstance(message_id, str):
            return None
        text = message_id.strip()
        # Our ids are pure ASCII; refusing anything else up front also keeps str.lower() from
        # turning look-alikes into ASCII (KELVIN SIGN lower-cases to "k").
        if len(text) > _MAX_VERIFY_INPUT or not text.isascii():
            return None
        text = text.lower()
        if text.startswith("<"):
            text = text[1:]
        if text.endswith(">"):
            text = text[:-1]
        left, at, right = text.partition("@")
        if not at or not right:
            return None
        match = _SIGNED_LEFT.fullmatch(left)
        if match is None:
            return None
        signed, stamp, ref_hex, tag = match.groups()

        signed_bytes = signed.encode("ascii")
        tag_bytes = tag.encode("ascii")
        for verifier in self._verifiers:
            if hmac.compare_digest(_tag(verifier, signed_bytes), tag_bytes):
                break
        else:
            return None

        # Only authenticated text gets this far, so the decoding below cannot fail for ids we
        # made; it stays defensive because "never raises" is the contract.
        try:
            ref = bytes.fromhex(ref_hex).decode("utf-8") if ref_hex else ""
        except ValueError:
            return None
        seconds = int(stamp.translate(_TO_INT_DIGITS), 32)
        # Arithmetic rather than datetime.fromtimestamp(), which goes through the platform's
        # gmtime() and fails past the year 3000 on Windows.
        return Token(ref=ref, issued_at=_EPOCH + timedelta(seconds=seconds))


def _keyed_sha256(key: bytes) -> _Keyed:
    """Return the SHA-256 states keyed for HMAC with *key* (RFC 2104 §2), ready to copy.

    This is what `hmac.HMAC` keeps internally; holding the two hashlib objects directly and
    copying them per id costs about half of ``hmac.HMAC.copy()`` + ``update`` + ``digest``,
    whose Python-level wrapper dominates for messages this short. `_tag` finishes the
    computation; the unit tests check the result against `hmac.digest`.
    """
    if len(key) > _SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_SHA256_BLOCK, b"\0")
    return hashlib.sha256(key.translate(_IPAD)), hashlib.sha256(key.translate(_OPAD))


def _tag(keyed: _Keyed, data: bytes) -> bytes:
    """Return the tag of *data*: 80 bits of HMAC-SHA256 in the base32 alphabet (16 chars)."""
    inner, outer = keyed
    mac = inner.copy()
    mac.update(data)
    mac_outer = outer.copy()
    mac_outer.update(mac.digest())
    return mac_outer.digest()[:_TAG_CHARS].translate(_SPREAD)


def _to_key_bytes(value: object, *, what: str) -> bytes:
    """Return a key or salt as bytes (str as UTF-8).

    Raises:
        ConfigError: if *value* is not str/bytes, is empty, or is not encodable as UTF-8.
    """
    if isinstance(value, str):
        try:
            data = value.encode()
        except UnicodeEncodeError as exc:
            raise ConfigError(f"{what} must be encodable as UTF-8") from exc
    elif isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    else:
        raise ConfigError(f"{what} must be bytes or str, not {type(value).__name__}")
    if not data:
        raise ConfigError(f"{what} must not be empty")
    return data


def _normalise_secret(secret: object) -> list[bytes]:
    """Return the rotation list of keys, oldest first.

    Raises:
        ConfigError: if *secret* is neither None, a key, nor a non-empty sequence of keys.
    """
    if secret is None:
        return []
    if isinstance(secret, (str, bytes, bytearray)):
        return [_to_key_bytes(secret, what="secret")]
    # A set or an iterator has no "newest last" order, so only real sequences are accepted.
    if not isinstance(secret, Sequence):
        raise ConfigError(
            f"secret must be bytes, str or a sequence of them, not {type(secret).__name__}"
        )
    if not secret:
        raise ConfigError("secret is an empty sequence; pass None for a generator without keys")
    return [_to_key_bytes(key, what="each secret") for key in secret]


def _to_seconds(now: object) -> int:
    """Return a clock reading as whole POSIX seconds.

    Raises:
        ConfigError: if *now* is not a number or an aware datetime, or lies outside the
            range the time field can hold (1970 up to 2**35 seconds later).
    """
    if isinstance(now, datetime):
        if now.tzinfo is None or now.utcoffset() is None:
            raise ConfigError("clock returned a naive datetime; return an aware one")
        value: float = now.timestamp()
    elif isinstance(now, (int, float)) and not isinstance(now, bool):
        value = now
    else:
        raise ConfigError(
            f"clock must return POSIX seconds or an aware datetime, not {type(now).__name__}"
        )
    # The comparisons are false for NaN, which lands here too.
    if not 0 <= value < _MAX_TIME:
        raise ConfigError(f"clock returned {now!r}, outside the range a Message-ID can hold")
    return int(value)


def _encode_time(seconds: int) -> bytes:
    """Return *seconds* as `_TIME_CHARS` base32 digits, most significant first."""
    out = bytearray(_TIME_CHARS)
    for i in range(_TIME_CHARS - 1, -1, -1):
        out[i] = _ALPHABET[seconds & 31]
        seconds >>= 5
    return bytes(out)
