"""Domain names and mailbox-provider detection: the one module that imports dnspython.

Two services live here. `to_ascii_domain` turns a configured domain (for example the
right-hand side of the Message-IDs replytrack generates) into its ASCII, lower-case form.
`detect_provider` / `ProviderDetector` look up a domain's MX records (RFC 5321 §5.1) and say
which mailbox provider receives its mail, so that a host knows which mailbox adapter a rep's
mailbox needs. Keeping every dnspython call in this module keeps every ``dns`` exception here.

Rule 1: `to_ascii_domain` returns either a host name that satisfies RFC 1123 §2.1 / RFC 952
(labels of letters, digits and hyphens, not starting or ending with a hyphen, 1-63 octets,
at most 253 octets in all, no trailing dot), lower-cased and with non-ASCII labels converted
to A-labels (``xn--…``, RFC 3490 ToASCII), or it raises `ConfigError`. Nothing else.
Rule 2: no ``dns.*`` exception escapes this module. Bad input becomes `ConfigError` (the
caller's mistake); a lookup that got no answer (timeout, SERVFAIL, REFUSED, no usable
nameserver, no resolver configuration) becomes `DNSError` (the outside world failed). The
original is chained as ``__cause__`` in both cases.
Rule 3: the result does not depend on which optional packages are installed: IDNA 2003 is
named explicitly (see `_IDNA_CODEC`), and the four characters on which IDNA 2003 and IDNA 2008
disagree are refused instead of being silently mapped to another domain.
Rule 4: every answer DNS gives is a `ProviderInfo`, including "this domain does not exist"
(NXDOMAIN) and "this domain accepts no mail" (RFC 7505 null MX, or neither MX nor address);
`DNSError` means only that no answer came, so it is never cached and a retry may succeed.
Rule 5: one detection shares one ``timeout`` among all its queries (MX, then A and AAAA for
an implicit MX, or TXT for the SPF hint behind a gateway): no query starts after the deadline
and none waits for an answer past it. dnspython sleeps a back-off between retry rounds
(0.1 s, doubling) before it checks its time limit, so a lookup that times out may overrun by
that sleep.
Rule 6: host names are matched against the provider tables by whole labels from the right,
never by substring: ``evil-google.com.attacker.net`` is not Google.
Rule 7: queries go only to the resolver the detector was given; the system resolver
(``/etc/resolv.conf``) is read only when none was, and only on the first lookup.
"""

from __future__ import annotations

import collections
import enum
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, Literal, TypeVar

import attrs
import dns.exception
import dns.name

from replytrack.errors import ConfigError, DNSError

if TYPE_CHECKING:
    # dns.resolver adds about 35 ms (an eighth) to `import replytrack` and pulls in dns.query,
    # which imports httpx when httpx and h2 are installed (DNS over HTTPS); only lookups need
    # it, so it is imported on first use.
    import dns.resolver

__all__ = [
    "DNSError",
    "MailRoute",
    "Provider",
    "ProviderDetector",
    "ProviderInfo",
    "detect_provider",
    "to_ascii_domain",
]

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


# --------------------------------------------------------------------------------------------
# Mailbox-provider detection
# --------------------------------------------------------------------------------------------


class Provider(enum.Enum):
    """Who receives a domain's mail, as far as its MX records tell."""

    GOOGLE = "google"
    """Google Workspace or Gmail."""
    MICROSOFT = "microsoft"
    """Microsoft 365 / Exchange Online, or Outlook.com / Hotmail."""
    YAHOO = "yahoo"
    """Yahoo Mail (AOL mail too: it runs on Yahoo's servers)."""
    ZOHO = "zoho"
    """Zoho Mail, in any of its regions."""
    OTHER = "other"
    """The domain receives mail, at servers not in the tables (self-hosted, a smaller
    provider, or a security gateway that hides the provider: see `ProviderInfo.gateway`)."""
    NONE = "none"
    """The domain receives no mail: it does not exist, has a null MX, or has no mail host."""


class MailRoute(enum.Enum):
    """How DNS routes mail for a domain (RFC 5321 §5.1, RFC 7505)."""

    MX = "mx"
    """The domain publishes MX records naming its mail hosts."""
    IMPLICIT_MX = "implicit-mx"
    """No MX records, but the domain has an address (A or AAAA): RFC 5321 §5.1 makes the
    domain itself its only mail host."""
    NULL_MX = "null-mx"
    """A single MX naming the root (``0 .``): RFC 7505, the domain accepts no mail."""
    NO_MAIL_HOST = "no-mail-host"
    """The domain exists but has neither MX records nor an address."""
    NXDOMAIN = "nxdomain"
    """The domain does not exist (usually a misspelt address)."""


_ADAPTERS: Final[dict[Provider, Literal["gmail", "graph", "imap"]]] = {
    Provider.GOOGLE: "gmail",
    Provider.MICROSOFT: "graph",  # Graph serves Microsoft 365 and personal Outlook.com mailboxes
    Provider.YAHOO: "imap",
    Provider.ZOHO: "imap",
    Provider.OTHER: "imap",
}


@attrs.frozen
class ProviderInfo:
    """What the MX records of a domain say about who receives its mail.

    Attributes:
        domain: the domain looked up, in ASCII (A-label) lower-case form.
        provider: the mailbox provider; `Provider.NONE` exactly when the domain receives no
            mail (`route` is `MailRoute.NULL_MX`, `MailRoute.NO_MAIL_HOST` or
            `MailRoute.NXDOMAIN`).
        route: how DNS routes the domain's mail.
        mx_hosts: the mail hosts, most preferred first (equal preferences by name), lower-case
            and without the trailing dot; ``(domain,)`` for an implicit MX, ``()`` when the
            domain receives no mail.
        gateway: the email security gateway in front of the mailboxes (``"mimecast"``,
            ``"proofpoint"``, ``"barracuda"``, ``"cisco"``, ``"symantec"``,
            ``"forcepoint"``, ``"trendmicro"``, ``"sophos"``, ``"hornetsecurity"``,
            ``"spamexperts"``), or ``None``.
        inferred: ``True`` when a gateway hid the provider and it was inferred from a backup
            MX or from the domain's SPF record: weaker evidence than the primary MX.
        reasons: the evidence, human readable.
    """

    domain: str
    provider: Provider
    route: MailRoute
    mx_hosts: tuple[str, ...] = ()
    gateway: str | None = None
    inferred: bool = False
    reasons: tuple[str, ...] = ()

    @property
    def adapter(self) -> Literal["gmail", "graph", "imap"] | None:
        """The replytrack mailbox source that fits, or ``None`` when no mail is received.

        ``"gmail"`` is `GmailSource`, ``"graph"`` `GraphSource`, ``"imap"`` `IMAPSource`:
        Yahoo, Zoho and unrecognised hosts are read over IMAP.
        """
        return _ADAPTERS.get(self.provider)


_T = TypeVar("_T")
_Labels = tuple[str, ...]


def _table(entries: dict[str, _T]) -> dict[_Labels, _T]:
    """Key a table of domain suffixes by their labels, for whole-label suffix matching."""
    return {tuple(suffix.split(".")): value for suffix, value in entries.items()}


def _match(labels: _Labels, table: dict[_Labels, _T]) -> _T | None:
    """Return the value of the longest suffix of *labels* found in *table* (Rule 6)."""
    for start in range(len(labels)):
        found = table.get(labels[start:])
        if found is not None:
            return found
    return None


# Domains under which the providers run their inbound mail servers. Each is a domain the
# provider owns, so every host under it is theirs; the longest suffix wins. Keep it sorted by
# provider, and cite an example host for each entry.
_PROVIDER_MX: Final = _table(
    {
        # aspmx.l.google.com and altN.aspmx.l.google.com (Workspace), smtp.google.com (the
        # single MX offered to Workspace domains set up since 2023), gmail-smtp-in.l.google.com
        # (gmail.com itself).
        "google.com": Provider.GOOGLE,
        "googlemail.com": Provider.GOOGLE,  # aspmx2.googlemail.com ...: legacy Workspace backups
        # <tenant>.mail.protection.outlook.com (Exchange Online) and
        # <domain>.olc.protection.outlook.com (outlook.com, hotmail.com, live.com mailboxes).
        "outlook.com": Provider.MICROSOFT,
        # <tenant>.<id>.mx.microsoft: Exchange Online with inbound DNSSEC and DANE (2024+).
        "mx.microsoft": Provider.MICROSOFT,
        "hotmail.com": Provider.MICROSOFT,  # mx1.hotmail.com ...: the consumer MX before 2013
        "outlook.cn": Provider.MICROSOFT,  # <tenant>.mail.protection.partner.outlook.cn (21Vianet)
        "office365.us": Provider.MICROSOFT,  # <tenant>.mail.protection.office365.us (GCC High)
        # mta5.am0.yahoodns.net (yahoo.com) and mx-aol.mail.gm0.yahoodns.net (aol.com).
        "yahoodns.net": Provider.YAHOO,
        "yahoo.com": Provider.YAHOO,
        # mx.zoho.com, mx2.zoho.com, mx3.zoho.com, and the same names in each data centre.
        "zoho.com": Provider.ZOHO,
        "zoho.eu": Provider.ZOHO,
        "zoho.in": Provider.ZOHO,
        "zoho.com.au": Provider.ZOHO,
        "zoho.jp": Provider.ZOHO,
        "zoho.com.cn": Provider.ZOHO,
        "zoho.sa": Provider.ZOHO,
        "zohocloud.ca": Provider.ZOHO,
    }
)

# Email security gateways: their MX accepts the mail, filters it and relays it to mailboxes
# that may be anywhere, so they hide the provider (see `ProviderDetector._behind_gateway`).
_GATEWAY_MX: Final = _table(
    {
        "mimecast.com": "mimecast",  # eu-smtp-inbound-1.mimecast.com, us-smtp-inbound-2...
        "mimecast.co.za": "mimecast",  # za-smtp-inbound-1.mimecast.co.za
        "pphosted.com": "proofpoint",  # mx0a-00123401.pphosted.com (Proofpoint on Demand)
        "ppe-hosted.com": "proofpoint",  # mx1-us1.ppe-hosted.com (Proofpoint Essentials)
        "barracudanetworks.com": "barracuda",  # d123456a.ess.barracudanetworks.com
        "iphmx.com": "cisco",  # mx1.hc1234-56.iphmx.com (Cisco Secure Email, ex IronPort)
        "messagelabs.com": "symantec",  # cluster1.eu.messagelabs.com (Broadcom Email Security)
        "mailcontrol.com": "forcepoint",  # cluster-a.mailcontrol.com
        "tmes.trendmicro.com": "trendmicro",  # <id>.in.tmes.trendmicro.com
        "tmes.trendmicro.eu": "trendmicro",  # <id>.in.tmes.trendmicro.eu
        "hydra.sophos.com": "sophos",  # mx-01-eu-central-1.prod.hydra.sophos.com
        "hornetsecurity.com": "hornetsecurity",  # mx-cluster1.hornetsecurity.com
        "antispamcloud.com": "spamexperts",  # mx.eu1.antispamcloud.com (N-able SpamExperts)
    }
)

# The two tables share no suffix (a test checks it), so merging them loses nothing.
_MX_TABLE: Final[dict[_Labels, Provider | str]] = {**_PROVIDER_MX, **_GATEWAY_MX}

# SPF targets (RFC 7208 include: and redirect=) that only a provider's customers use. A
# domain includes its provider's SPF so that its users' outgoing mail passes; behind a
# gateway that is the best remaining hint. Yahoo has no such business include.
_PROVIDER_SPF: Final = _table(
    {
        "_spf.google.com": Provider.GOOGLE,
        "spf.protection.outlook.com": Provider.MICROSOFT,
        "spf.protection.partner.outlook.cn": Provider.MICROSOFT,
        "spf.protection.office365.us": Provider.MICROSOFT,
        # zoho.com, one.zoho.com, and the regional equivalents.
        "zoho.com": Provider.ZOHO,
        "zoho.eu": Provider.ZOHO,
        "zoho.in": Provider.ZOHO,
        "zoho.com.au": Provider.ZOHO,
        "zoho.jp": Provider.ZOHO,
        "zoho.com.cn": Provider.ZOHO,
        "zoho.sa": Provider.ZOHO,
        "zohocloud.ca": Provider.ZOHO,
    }
)

_PROVIDER_NAMES: Final = {
    Provider.GOOGLE: "Google",
    Provider.MICROSOFT: "Microsoft",
    Provider.YAHOO: "Yahoo",
    Provider.ZOHO: "Zoho",
}

# RFC 5322 §3.2.3 atext, for the dot-atom form of a local part.
_ATEXT: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
)


@attrs.frozen
class _MX:
    """One mail host: its preference, its name as text, and its lower-case labels."""

    preference: int
    host: str
    labels: _Labels

    def describe(self) -> str:
        return f"mail host {self.host} (preference {self.preference})"


@attrs.frozen
class _Lookup:
    """What one query returned: the records (empty for NODATA) and their TTL."""

    records: tuple[object, ...]
    ttl: int


class ProviderDetector:
    """Detect the mailbox provider of domains, with a cache.

    A detector is thread-safe: lookups run in parallel, the cache is shared under a lock.
    Concurrent first lookups of the same domain each query DNS (no request coalescing).

    The cache is a bounded LRU keyed by the ASCII domain. A result lives for the TTL of the
    records it rests on, capped by *max_ttl*; a domain that receives no mail because it does
    not exist or has no mail host, and a result degraded by a failed SPF lookup, live at most
    *negative_ttl* (RFC 2308 negative caching, simplified). `DNSError` is never cached.

    Args:
        resolver: the dnspython resolver to query. ``None`` creates one from the system
            configuration (``/etc/resolv.conf``) on the first lookup. The resolver is not
            modified: the time limit is passed to each query.
        timeout: seconds one `detect` may spend waiting for DNS, all queries together
            (Rule 5). Each attempt also stops after the resolver's own ``timeout``, after
            which dnspython retries.
        cache_size: how many domains to remember; ``0`` disables the cache.
        max_ttl: the longest time, in seconds, a result is reused; ``0`` disables the cache.
        negative_ttl: the longest time, in seconds, a negative or degraded result is reused.
        spf_fallback: when the primary MX is a security gateway and no backup MX names a
            provider, read the domain's SPF record (one TXT query, within *timeout*).
        clock: monotonic seconds, for cache expiry only (tests inject a fake one).

    Raises:
        ConfigError: if an argument is out of range.
    """

    def __init__(
        self,
        resolver: dns.resolver.Resolver | None = None,
        *,
        timeout: float = 5.0,
        cache_size: int = 1024,
        max_ttl: float = 3600.0,
        negative_ttl: float = 300.0,
        spf_fallback: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not _is_number(timeout) or not 0 < timeout < float("inf"):
            raise ConfigError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise ConfigError(f"cache_size must be an int >= 0, not {cache_size!r}")
        for name, value in (("max_ttl", max_ttl), ("negative_ttl", negative_ttl)):
            if not _is_number(value) or not 0 <= value < float("inf"):
                raise ConfigError(f"{name} must be a number of seconds >= 0, not {value!r}")
        self._resolver = resolver
        self._resolver_lock = threading.Lock()
        self._timeout = float(timeout)
        self._cache_size = cache_size
        self._max_ttl = float(max_ttl)
        self._negative_ttl = float(negative_ttl)
        self._spf_fallback = spf_fallback
        self._clock = clock
        self._cache: collections.OrderedDict[str, tuple[float, ProviderInfo]] = (
            collections.OrderedDict()
        )
        self._cache_lock = threading.Lock()

    def detect(self, email_or_domain: str) -> ProviderInfo:
        """Say which mailbox provider receives mail for an address or a domain.

        Args:
            email_or_domain: an addr-spec (``"jo@example.com"``, no display name) or a domain
                (``"example.com"``, ``"bücher.example"``).

        Returns:
            The provider, the mail hosts and the evidence. A domain that does not exist or
            accepts no mail gives `Provider.NONE`, not an error (Rule 4).

        Raises:
            ConfigError: if the argument is not an address or a domain.
            DNSError: if DNS gave no answer within the time limit (timeout, SERVFAIL, ...).
        """
        domain = _domain_of(email_or_domain)
        cached = self._cache_get(domain)
        if cached is not None:
            return cached
        info, ttl = self._lookup(domain)
        self._cache_put(domain, info, min(ttl, self._max_ttl))
        return info

    def clear_cache(self) -> None:
        """Forget every cached result."""
        with self._cache_lock:
            self._cache.clear()

    # -- cache ---------------------------------------------------------------------------------

    def _cache_get(self, domain: str) -> ProviderInfo | None:
        with self._cache_lock:
            entry = self._cache.get(domain)
            if entry is None:
                return None
            expires, info = entry
            if self._clock() >= expires:
                del self._cache[domain]
                return None
            self._cache.move_to_end(domain)
            return info

    def _cache_put(self, domain: str, info: ProviderInfo, ttl: float) -> None:
        if ttl <= 0 or self._cache_size == 0:
            return
        with self._cache_lock:
            self._cache[domain] = (self._clock() + ttl, info)
            self._cache.move_to_end(domain)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    # -- lookups -------------------------------------------------------------------------------

    def _lookup(self, domain: str) -> tuple[ProviderInfo, float]:
        """Run the queries for *domain*; return the result and how long it may be cached."""
        import dns.rdtypes.mxbase  # noqa: PLC0415 - lazy, see the TYPE_CHECKING import

        # The deadline uses the real monotonic clock: the injected clock is for the cache.
        deadline = time.monotonic() + self._timeout
        mx = self._query(domain, "MX", deadline)
        if mx is None:
            return self._nxdomain(domain)
        hosts = sorted(
            (
                _mx_host(record.preference, record.exchange)
                for record in mx.records
                if isinstance(record, dns.rdtypes.mxbase.MXBase)
            ),
            key=lambda mx_host: (mx_host.preference, mx_host.host),
        )
        if not hosts:
            return self._implicit_mx(domain, deadline)
        real = [host for host in hosts if host.labels]
        if not real:
            reason = f"{domain} publishes a null MX (RFC 7505): it accepts no mail"
            info = ProviderInfo(domain, Provider.NONE, MailRoute.NULL_MX, reasons=(reason,))
            return info, mx.ttl
        reasons = []
        if len(real) < len(hosts):
            # RFC 7505 §3: a domain with a null MX MUST NOT publish other MX records. Senders
            # will still use the real hosts, so they are what counts.
            reasons.append(f"{domain} publishes a null MX beside other MX records; ignored it")
        return self._decide(
            domain, real, MailRoute.MX, ttl=mx.ttl, deadline=deadline, reasons=reasons
        )

    def _implicit_mx(self, domain: str, deadline: float) -> tuple[ProviderInfo, float]:
        """RFC 5321 §5.1: with no MX records, the domain's own address receives its mail."""
        for rdtype in ("A", "AAAA"):
            found = self._query(domain, rdtype, deadline)
            if found is None:
                return self._nxdomain(domain)
            if found.records:
                reason = (
                    f"{domain} has no MX records; its {rdtype} record makes it its own mail "
                    "host (RFC 5321 §5.1 implicit MX)"
                )
                host = _MX(0, domain, tuple(domain.split(".")))
                # The absence of MX records is a negative answer, so negative_ttl caps it too.
                ttl = min(found.ttl, self._negative_ttl)
                return self._decide(
                    domain,
                    [host],
                    MailRoute.IMPLICIT_MX,
                    ttl=ttl,
                    deadline=deadline,
                    reasons=[reason],
                )
        reason = f"{domain} has neither MX records nor an address: it receives no mail"
        info = ProviderInfo(domain, Provider.NONE, MailRoute.NO_MAIL_HOST, reasons=(reason,))
        return info, self._negative_ttl

    def _nxdomain(self, domain: str) -> tuple[ProviderInfo, float]:
        reason = f"{domain} does not exist (NXDOMAIN)"
        info = ProviderInfo(domain, Provider.NONE, MailRoute.NXDOMAIN, reasons=(reason,))
        return info, self._negative_ttl

    def _decide(
        self,
        domain: str,
        hosts: list[_MX],
        route: MailRoute,
        *,
        ttl: float,
        deadline: float,
        reasons: list[str],
    ) -> tuple[ProviderInfo, float]:
        """Name the provider from the mail hosts, most preferred first.

        The most preferred hosts decide: senders deliver there, and backups only take mail
        when those are down. When several hosts share the lowest preference, senders spread
        mail across them, so they must agree; any host not in the tables, or two providers,
        gives `Provider.OTHER`. When they are all security gateways, the provider is sought
        behind them (`_behind_gateway`).
        """
        top = [host for host in hosts if host.preference == hosts[0].preference]
        backups = hosts[len(top) :]
        providers: dict[Provider, _MX] = {}
        gateways: dict[str, _MX] = {}
        unknown = False
        for host in top:
            found = _match(host.labels, _MX_TABLE)
            if isinstance(found, Provider):
                providers.setdefault(found, host)
                reasons.append(f"{host.describe()} belongs to {_PROVIDER_NAMES[found]}")
            elif found is not None:
                gateways.setdefault(found, host)
                reasons.append(f"{host.describe()} is the {found} email security gateway")
            else:
                unknown = True
                reasons.append(f"{host.describe()} is not a known mailbox provider")
        gateway = next(iter(gateways), None)
        provider = Provider.OTHER
        inferred = False
        if not unknown and len(providers) == 1:
            (provider,) = providers
        elif not unknown and not providers and gateway is not None:
            behind, spf_ttl, degraded = self._behind_gateway(domain, backups, deadline, reasons)
            if behind is not None:
                provider, inferred = behind, True
            if spf_ttl is not None:
                ttl = min(ttl, spf_ttl)
            if degraded:
                ttl = min(ttl, self._negative_ttl)
        elif len(top) > 1:
            reasons.append("the most preferred mail hosts disagree, so no provider is named")
        info = ProviderInfo(
            domain,
            provider,
            route,
            mx_hosts=tuple(host.host for host in hosts),
            gateway=gateway,
            inferred=inferred,
            reasons=tuple(reasons),
        )
        return info, ttl

    def _behind_gateway(
        self, domain: str, backups: Sequence[_MX], deadline: float, reasons: list[str]
    ) -> tuple[Provider | None, int | None, bool]:
        """Look for the provider a security gateway hides.

        First the backup MX hosts: a gateway customer often keeps the provider's own MX as a
        backup (Microsoft documents it for Exchange Online behind a third-party filter). Else
        the SPF record, which names the provider whose servers send the domain's mail: one
        TXT query, within the same deadline. A failed TXT query does not fail the detection;
        the result is then cached for *negative_ttl* only.

        Returns:
            The provider (or ``None``), the TTL of the SPF record if one was read, and
            whether the SPF lookup failed.
        """
        import dns.rdtypes.txtbase  # noqa: PLC0415 - lazy, see the TYPE_CHECKING import

        named: dict[Provider, _MX] = {}
        for host in backups:
            found = _match(host.labels, _MX_TABLE)
            if isinstance(found, Provider):
                named.setdefault(found, host)
        if len(named) == 1:
            ((provider, host),) = named.items()
            reasons.append(
                f"backup {host.describe()} belongs to {_PROVIDER_NAMES[provider]}: the "
                "gateway most likely delivers there"
            )
            return provider, None, False
        if named:
            reasons.append("the backup mail hosts belong to several providers")
        if not self._spf_fallback:
            return None, None, False
        try:
            txt = self._query(domain, "TXT", deadline)
        except DNSError as exc:
            reasons.append(f"could not read the SPF record: {exc}")
            return None, None, True
        if txt is None:
            return None, None, False
        texts = [
            b"".join(record.strings).decode("ascii", "replace")
            for record in txt.records
            if isinstance(record, dns.rdtypes.txtbase.TXTBase)
        ]
        spf = [text for text in texts if _is_spf(text)]
        if len(spf) != 1:
            # RFC 7208 §4.5: with several SPF records none applies.
            reasons.append("no single SPF record to read" if spf else "no SPF record")
            return None, txt.ttl, False
        included = _spf_providers(spf[0])
        if len(included) == 1:
            ((provider, target),) = included.items()
            reasons.append(
                f"the SPF record includes {target}, which belongs to {_PROVIDER_NAMES[provider]}"
            )
            return provider, txt.ttl, False
        if included:
            names = ", ".join(sorted(_PROVIDER_NAMES[provider] for provider in included))
            reasons.append(f"the SPF record includes several providers ({names})")
        else:
            reasons.append("the SPF record names no known provider")
        return None, txt.ttl, False

    def _query(self, domain: str, rdtype: str, deadline: float) -> _Lookup | None:
        """Query *rdtype* records of *domain* with the time left before *deadline*.

        Returns:
            The records (empty when the name exists without such records), or ``None`` when
            the name does not exist (NXDOMAIN).

        Raises:
            DNSError: on every failure to get an answer (Rule 2).
        """
        import dns.resolver  # noqa: PLC0415 - lazy, see the TYPE_CHECKING import

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DNSError(
                f"DNS lookup for {domain} timed out after {self._timeout:g} s "
                f"(before the {rdtype} query)",
                domain=domain,
                timeout=True,
            )
        resolver = self._get_resolver()
        try:
            answer = resolver.resolve(
                dns.name.from_text(domain + "."),
                rdtype,
                raise_on_no_answer=False,
                lifetime=remaining,
                search=False,
            )
        except dns.resolver.NXDOMAIN:
            return None
        except dns.exception.Timeout as exc:
            raise DNSError(
                f"DNS lookup for {domain} timed out after {self._timeout:g} s "
                f"(no answer to the {rdtype} query)",
                domain=domain,
                timeout=True,
            ) from exc
        except dns.resolver.NoNameservers as exc:
            raise DNSError(
                f"no nameserver answered the {rdtype} query for {domain} "
                f"(SERVFAIL, REFUSED or unreachable): {exc}",
                domain=domain,
            ) from exc
        except (dns.exception.DNSException, OSError) as exc:
            raise DNSError(
                f"the {rdtype} query for {domain} failed: {exc}", domain=domain
            ) from exc
        if answer.rrset is None:
            return _Lookup((), 0)
        return _Lookup(tuple(answer.rrset), answer.rrset.ttl)

    def _get_resolver(self) -> dns.resolver.Resolver:
        with self._resolver_lock:
            if self._resolver is None:
                import dns.resolver  # noqa: PLC0415 - lazy, see the TYPE_CHECKING import

                try:
                    self._resolver = dns.resolver.Resolver()
                except (dns.exception.DNSException, OSError) as exc:
                    raise DNSError(f"no usable system DNS configuration: {exc}") from exc
            return self._resolver


_default_detector: ProviderDetector | None = None
_default_lock = threading.Lock()


def detect_provider(email_or_domain: str) -> ProviderInfo:
    """Say which mailbox provider receives mail for an address or a domain.

    Uses a process-wide `ProviderDetector` with the system resolver and the default time
    limit (5 s) and cache; build your own detector to choose them.

    Args:
        email_or_domain: an addr-spec (``"jo@example.com"``, no display name) or a domain.

    Returns:
        The provider, the mail hosts and the evidence; `ProviderInfo.adapter` names the
        mailbox source to use.

    Raises:
        ConfigError: if the argument is not an address or a domain.
        DNSError: if DNS gave no answer within the time limit (timeout, SERVFAIL, ...).
    """
    global _default_detector  # noqa: PLW0603 - one lazily built, process-wide detector
    with _default_lock:
        if _default_detector is None:
            _default_detector = ProviderDetector()
        detector = _default_detector
    return detector.detect(email_or_domain)


def _mx_host(preference: int, exchange: dns.name.Name) -> _MX:
    # Lower-case the raw octets (ASCII only, as DNS compares names, RFC 4343) before
    # decoding; latin-1 maps every octet, so odd bytes cannot raise. A label holding an
    # escaped dot stays one label and so never matches a table entry.
    labels = tuple(label.lower().decode("latin-1") for label in exchange.labels if label)
    return _MX(preference, exchange.to_text(omit_final_dot=True).lower(), labels)


def _is_spf(text: str) -> bool:
    """RFC 7208 §4.5: an SPF record is "v=spf1" alone or followed by a space."""
    lowered = text.lower()
    return lowered == "v=spf1" or lowered.startswith("v=spf1 ")


def _spf_providers(record: str) -> dict[Provider, str]:
    """Map each provider whose SPF an SPF record includes (or redirects to) to that target."""
    found: dict[Provider, str] = {}
    for term in record.lower().split()[1:]:
        qualifier = term[0] if term[0] in "+-~?" else "+"
        term = term.lstrip("+-~?")  # noqa: PLW2901 - the term without its qualifier
        if term.startswith("include:") and qualifier != "-":
            target = term[len("include:") :]
        elif term.startswith("redirect="):
            target = term[len("redirect=") :]
        else:
            continue
        target = target.rstrip(".")
        provider = _match(tuple(target.split(".")), _PROVIDER_SPF)
        if provider is not None:
            found.setdefault(provider, target)
    return found


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _domain_of(value: object) -> str:
    """Return the ASCII domain of an addr-spec or a domain.

    Raises:
        ConfigError: if *value* is neither.
    """
    if not isinstance(value, str):
        raise ConfigError(f"expected an email address or a domain, not {type(value).__name__}")
    local, at, domain = value.rpartition("@")
    if not at:
        return to_ascii_domain(value)
    _check_local_part(value, local)
    if not domain:
        raise ConfigError(f"invalid address {value[:100]!r}: the domain is empty")
    if domain.startswith("["):
        raise ConfigError(
            f"invalid address {value[:100]!r}: an address literal has no MX records to look up"
        )
    return to_ascii_domain(domain)


def _check_local_part(value: str, local: str) -> None:
    """Refuse a local part that is neither a dot-atom nor a quoted string (RFC 5322 §3.4.1).

    Non-ASCII is allowed (RFC 6532). This catches a display name or a list passed where one
    address was expected: ``"Jo <jo@example.com>"`` fails on its domain, ``"jo@x, jo@y"``
    and ``"Jo jo@example.com"`` fail here.
    """
    problem = None
    if not local:
        problem = "the local part is empty"
    elif len(local) >= 2 and local[0] == local[-1] == '"':
        escaped = False
        for char in local[1:-1]:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"' or (char != " " and not char.isprintable()):
                problem = "the quoted local part is malformed"
                break
        if escaped:
            problem = "the quoted local part is malformed"
    elif any(not atom for atom in local.split(".")):
        problem = "the local part has an empty dot-separated part"
    elif any(
        char not in _ATEXT and (char.isascii() or char.isspace() or not char.isprintable())
        for char in local
        if char != "."
    ):
        problem = "the local part contains a character that needs quoting"
    if problem is not None:
        raise ConfigError(f"invalid address {value[:100]!r}: {problem}")
