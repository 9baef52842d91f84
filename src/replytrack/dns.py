"""Domain names: IDNA conversion to the ASCII form that goes on the wire.

For now this module only turns a configured domain (for example the right-hand side of the
Message-IDs replytrack generates) into its ASCII, lower-case form. It is the one place that
imports dnspython, so that every ``dns`` exception is translated here.

Rule 1: `to_ascii_domain` returns either a host name that satisfies RFC 1123 §2.1 / RFC 952
(labels of letters, digits and hyphens, not starting or ending with a hyphen, 1-63 octets,
at most 253 octets in all, no trailing dot), lower-cased and with non-ASCII labels converted
to A-labels (``xn--…``, RFC 3490 ToASCII), or it raises `ConfigError`. Nothing else.
Rule 2: no ``dns.*`` exception escapes this module; each is re-raised as `ConfigError` with
the original chained as ``__cause__``.
Rule 3: the result does not depend on which optional packages are installed: IDNA 2003 is
named explicitly (see `_IDNA_CODEC`), and the four characters on which IDNA 2003 and IDNA 2008
disagree are refused instead of being silently mapped to another domain.
"""

from __future__ import annotations

import re
import unicodedata

import dns.exception
import dns.name

from replytrack.errors import ConfigError

__all__ = ["to_ascii_domain"]

# dnspython's default codec is IDNA 2008 when the optional ``idna`` package happens to be
# installed and IDNA 2003 otherwise, so relying on the default would make the same
# configured domain produce different Message-IDs on two machines. IDNA 2003 is implemented
# by the standard library (``encodings.idna``), so naming it pins the behaviour everywhere.
# "Practical" (non-strict) decoding accepts A-labels produced by IDNA 2008 encoders too.
_IDNA_CODEC = dns.name.IDNA_2003

# UTS #46 "deviation" characters: IDNA 2003 maps them away (sharp s to "ss", final sigma to
# sigma, ZWJ and ZWNJ to nothing) while IDNA 2008 keeps them, so "strasse.de" spelt with a
# sharp s names two different registered domains under the two standards. Refuse rather than
# guess; the caller can pass the A-label it means.
_DEVIATIONS = {
    "\u00df": "LATIN SMALL LETTER SHARP S (ß)",
    "\u03c2": "GREEK SMALL LETTER FINAL SIGMA (ς)",
    "\u200c": "ZERO WIDTH NON-JOINER",
    "\u200d": "ZERO WIDTH JOINER",
}

# ASCII characters a host name may contain before IDNA processing: LDH plus the dot. Anything
# else ASCII (space, "@", "_", "\\", "/", ...) is refused before dnspython sees it, because
# dnspython's text parser gives some of them meaning ("\\065" is an escape, "@" the origin).
_ASCII_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")

# One label of the result (already lower-case): RFC 1123 §2.1 LDH, 1-63 octets.
_LDH_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")

_MAX_NAME = 253  # octets in text form without the trailing dot (255 on the wire, RFC 1035 §2.3.4)
_MAX_INPUT = 1024  # refuse absurd input before the per-character work below


def to_ascii_domain(name: str) -> str:
    """Convert a domain name to its ASCII (A-label), lower-case form.

    Non-ASCII labels are converted with IDNA 2003 (RFC 3490 ToASCII with Nameprep), so
    ``"Bücher.Example."`` becomes ``"xn--bcher-kva.example"``. A trailing dot is dropped.

    Args:
        name: the domain, in Unicode or ASCII, with or without a trailing dot.

    Returns:
        The lower-case ASCII host name, without a trailing dot.

    Raises:
        ConfigError: if *name* is not a str, is empty, contains whitespace, CR/LF or other
            control characters, contains a character with no place in a host name, contains
            a character on which IDNA 2003 and IDNA 2008 disagree (ß, ς, ZWJ, ZWNJ), has a
            label that is not a valid host-name label (letters, digits and hyphens, not
            starting or ending with a hyphen, at most 63 octets), is longer than 253 octets,
            or is otherwise rejected by dnspython.
    """
    if not isinstance(name, str):
        raise ConfigError(f"domain must be a str, not {type(name).__name__}")
    if not name or name == ".":
        raise ConfigError("domain must not be empty")
    if len(name) > _MAX_INPUT:
        raise ConfigError(f"domain is longer than {_MAX_NAME} octets")
    _check_characters(name)

    try:
        parsed = dns.name.from_text(name, origin=None, idna_codec=_IDNA_CODEC)
        # Decoding back validates A-labels given as input: "xn--zz" is not valid Punycode and
        # "xn--abc-" decodes to plain ASCII, so neither is a real A-label.
        parsed.to_unicode(idna_codec=_IDNA_CODEC)
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise ConfigError(f"invalid domain {name!r}: {_explain(exc)}") from exc

    labels = [label.decode("latin-1").lower() for label in parsed.labels if label]
    if not labels:
        # "。" (an ideographic full stop) is the root name once parsed.
        raise ConfigError("domain must not be empty")
    text = ".".join(labels)
    if len(text) > _MAX_NAME:
        raise ConfigError(
            f"invalid domain {name!r}: it is {len(text)} octets long, "
            f"longer than {_MAX_NAME} octets"
        )
    for label in labels:
        # Nameprep (NFKC) can turn non-ASCII input into forbidden ASCII (U+FF0F FULLWIDTH
        # SOLIDUS becomes "/"), and dnspython accepts any octet in a label, so the result is
        # checked as well.
        if len(label) > 63:
            raise ConfigError(f"invalid domain {name!r}: label {label!r} is longer than 63 octets")
        if not _LDH_LABEL.fullmatch(label):
            raise ConfigError(
                f"invalid domain {name!r}: label {label!r} is not a valid host-name label "
                "(letters, digits and hyphens, not starting or ending with a hyphen)"
            )
    return text


def _explain(exc: Exception) -> str:
    """Say in words why dnspython refused a name.

    dnspython raises LabelTooLong for every IDNA 2003 encoding failure (an empty label after
    Nameprep, a non-ASCII label starting with "xn--", ...), so its own message would mislead.
    """
    if isinstance(exc, dns.name.EmptyLabel):
        return "it has an empty label (two dots in a row, or a leading dot)"
    if isinstance(exc, dns.name.NameTooLong):
        return f"it is longer than {_MAX_NAME} octets"
    if isinstance(exc, dns.name.LabelTooLong):
        return (
            "a label is longer than 63 octets or cannot be converted to ASCII with IDNA 2003 "
            "(for example it is empty after Nameprep, or mixes 'xn--' with non-ASCII)"
        )
    if isinstance(exc, dns.name.IDNAException):
        return f"a label starting with 'xn--' is not a valid A-label ({exc})"
    return f"dnspython refused it ({exc})"


def _check_characters(name: str) -> None:
    """Refuse characters that must never reach dnspython or a header.

    Raises:
        ConfigError: on whitespace, control characters, IDNA deviation characters, or
            ASCII characters outside letters, digits, hyphen and dot.
    """
    for char in name:
        if char.isascii():
            if char in _ASCII_ALLOWED:
                continue
            if char.isspace() or not char.isprintable():
                # CR/LF in particular: a domain ends up in a header, and "x\r\nBcc: y" would
                # inject one.
                raise ConfigError(
                    f"invalid domain {name!r}: contains whitespace or a control character"
                )
            raise ConfigError(f"invalid domain {name!r}: {char!r} is not allowed in a host name")
        if char.isspace() or unicodedata.category(char) == "Cc":
            raise ConfigError(
                f"invalid domain {name!r}: contains whitespace or a control character"
            )
        if char in _DEVIATIONS:
            raise ConfigError(
                f"invalid domain {name!r}: contains {_DEVIATIONS[char]}, which IDNA 2003 and "
                "IDNA 2008 convert differently; pass the intended A-label (xn--...) instead"
            )
