"""The policy: what the host should do about a correlated message (DESIGN.md, step 6).

`Policy.decide` maps a `Correlation` — what came back (`Kind`), from whom (`Role`) and for which
send — to a `Decision`: stop the campaign, pause it until a date, or only log the activity.

Rule 1: the defaults follow DESIGN.md. A human reply stops the campaign whoever wrote it (the
        prospect, a Cc'd colleague, another address: answering at all ends the sequence). An
        out-of-office pauses it until the stated return date plus `Policy.ooo_resume_margin`,
        capped at `Policy.ooo_pause_cap` from today; with no return date, or one already past,
        there is nothing to pause and it is only logged. A hard bounce and a complaint stop it;
        other auto-replies, soft bounces, delay notices and receipts are only logged.
Rule 2: a bounce is hard when a recipient the send had on ``To`` is hard (the address itself is
        dead, `BouncedRecipient.hard`; a *permanent* refusal such as a spam block is not). A
        bounce that names only the send's Cc recipients does not stop the prospect's campaign:
        the prospect's own address is fine. When the send is unknown (a token match) or no
        bounced address is one we sent to (a forwarding hop rewrote it), any hard recipient
        makes the bounce hard.
Rule 3: every decision's date arithmetic uses the `today` it is handed, never a clock, and a
        pause always ends strictly after `today` (a resume day of today pauses nothing).
Rule 4: account scope widens only STOP and PAUSE decisions of `Policy.account_kinds` (by
        default human replies and complaints: a dead mailbox or an absent person says nothing
        about their colleagues), and never for a free-mail domain or one without an
        organisational domain: the decision falls back to `Scope.PROSPECT` and its reason says
        why.
Rule 5: configuration is checked when the `Policy` is built: a bad value raises `ConfigError`
        there, not when the first bounce arrives.

`organisational_domain` is a heuristic, not the Public Suffix List: see its docstring for the
limits, and plug a PSL-backed function into `Policy.org_domain` where they matter.
"""

from __future__ import annotations

import datetime as _dt
import enum
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import attrs

from replytrack.classify import Kind
from replytrack.correlate import Correlation, Role
from replytrack.dsn import Bounce, BouncedRecipient
from replytrack.errors import ConfigError
from replytrack.events import Action
from replytrack.headers import address_key

__all__ = [
    "FREE_MAIL_DOMAINS",
    "FREE_MAIL_FAMILIES",
    "Action",
    "Decision",
    "Policy",
    "Scope",
    "is_free_mail",
    "organisational_domain",
]

_DAY: Final = _dt.timedelta(days=1)


class Scope(enum.Enum):
    """How far a STOP or PAUSE reaches."""

    #: The prospect of the send only.
    PROSPECT = "prospect"
    #: Every prospect of the same organisation (same organisational domain as the prospect).
    ACCOUNT = "account"


# --------------------------------------------------------------------------------------------
# Domains: organisational domain and free mail
# --------------------------------------------------------------------------------------------

# Public suffixes of two or three labels under which organisations register their domains.
# Not the Public Suffix List (thousands of rules, updated weekly): the ones mail to companies
# actually uses, plus Microsoft 365's tenant domains, which would otherwise make every tenant
# one "account".
_SUFFIXES: Final = frozenset(
    {
        # United Kingdom, Ireland
        "co.uk", "org.uk", "me.uk", "ltd.uk", "plc.uk", "net.uk", "ac.uk", "gov.uk", "nhs.uk",
        "sch.uk", "police.uk",
        # Oceania
        "com.au", "net.au", "org.au", "edu.au", "gov.au", "asn.au", "id.au",
        "co.nz", "net.nz", "org.nz", "ac.nz", "govt.nz", "school.nz", "geek.nz",
        # Asia
        "co.jp", "ne.jp", "or.jp", "ac.jp", "go.jp", "ad.jp", "ed.jp", "gr.jp", "lg.jp",
        "com.cn", "net.cn", "org.cn", "gov.cn", "edu.cn", "ac.cn",
        "com.hk", "net.hk", "org.hk", "edu.hk", "gov.hk",
        "com.tw", "net.tw", "org.tw", "edu.tw", "gov.tw", "idv.tw",
        "co.kr", "or.kr", "ne.kr", "ac.kr", "go.kr", "re.kr",
        "com.sg", "net.sg", "org.sg", "edu.sg", "gov.sg",
        "com.my", "net.my", "org.my", "edu.my", "gov.my",
        "co.in", "net.in", "org.in", "firm.in", "gen.in", "ind.in", "ac.in", "edu.in", "gov.in",
        "co.id", "or.id", "ac.id", "go.id", "web.id",
        "co.th", "in.th", "or.th", "ac.th", "go.th",
        "com.vn", "net.vn", "edu.vn", "gov.vn",
        "com.ph", "net.ph", "org.ph", "edu.ph", "gov.ph",
        "com.pk", "net.pk", "org.pk", "edu.pk",
        "com.bd", "com.lk", "com.np",
        "co.il", "org.il", "ac.il", "gov.il", "net.il",
        "com.tr", "net.tr", "org.tr", "edu.tr", "gov.tr",
        "com.sa", "net.sa", "org.sa", "edu.sa", "gov.sa",
        "co.ae", "net.ae", "org.ae", "ac.ae", "gov.ae",
        "com.qa", "com.kw", "com.bh", "com.om", "com.jo", "com.lb",
        # Americas
        "com.br", "net.br", "org.br", "gov.br", "edu.br", "art.br", "ind.br", "eng.br",
        "com.mx", "org.mx", "gob.mx", "edu.mx", "net.mx",
        "com.ar", "net.ar", "org.ar", "gob.ar", "edu.ar",
        "com.co", "net.co", "org.co", "gov.co", "edu.co",
        "com.pe", "org.pe", "gob.pe", "edu.pe",
        "com.ve", "com.ec", "com.uy", "com.py", "com.bo", "com.do", "com.gt", "com.pa",
        "co.cr", "com.sv", "com.ni", "com.hn", "com.cu", "com.pr", "com.jm",
        "gob.cl",
        # Africa
        "co.za", "org.za", "net.za", "ac.za", "gov.za", "web.za",
        "com.ng", "org.ng", "gov.ng", "edu.ng",
        "co.ke", "or.ke", "ac.ke", "go.ke",
        "com.eg", "org.eg", "edu.eg", "gov.eg",
        "co.tz", "co.ug", "co.zw", "co.zm", "co.bw", "com.gh", "co.ma", "com.tn", "com.dz",
        # Europe (where organisations do register under a second level)
        "com.pl", "net.pl", "org.pl", "co.at", "or.at", "ac.at", "gv.at",
        "com.es", "org.es", "nom.es", "com.pt", "org.pt", "com.gr", "com.cy", "com.mt",
        "co.hu", "com.ro", "com.ua", "net.ua", "org.ua", "co.ua", "com.ru", "com.by",
        # Shared tenant domains: each tenant is its own organisation.
        "onmicrosoft.com", "mail.onmicrosoft.com",
    }
)  # fmt: skip

# Second-level labels that, under a two-letter country-code TLD, are almost always a public
# suffix (co.xx, com.xx, ac.xx ...): covers the many countries not listed above.
_GENERIC_SECOND_LEVEL: Final = frozenset(
    {"ac", "co", "com", "edu", "go", "gob", "gov", "gv", "mil", "ne", "net", "nom", "or", "org"}
)

#: Major free-mail and consumer ISP domains worldwide, with their country variants. An address
#: at one of them identifies a person, not an organisation, so account scope never applies.
FREE_MAIL_DOMAINS: Final[frozenset[str]] = frozenset(
    {
        # Google
        "gmail.com", "googlemail.com",
        # Microsoft
        "outlook.com", "hotmail.com", "live.com", "msn.com", "passport.com", "windowslive.com",
        "hotmail.co.uk", "hotmail.fr", "hotmail.de", "hotmail.it", "hotmail.es", "hotmail.be",
        "hotmail.nl", "hotmail.ca", "hotmail.se", "hotmail.no", "hotmail.dk", "hotmail.fi",
        "hotmail.gr", "hotmail.ch", "hotmail.at", "hotmail.cl", "hotmail.co.jp",
        "hotmail.co.in", "hotmail.co.th", "hotmail.co.za", "hotmail.co.il", "hotmail.com.au",
        "hotmail.com.br", "hotmail.com.ar", "hotmail.com.mx", "hotmail.com.tr",
        "hotmail.com.tw", "hotmail.my", "hotmail.sg", "hotmail.ph", "hotmail.rs", "hotmail.hu",
        "live.co.uk", "live.fr", "live.de", "live.it", "live.nl", "live.be", "live.ca",
        "live.se", "live.no", "live.dk", "live.at", "live.ch", "live.ie", "live.jp", "live.cn",
        "live.in", "live.cl", "live.ru", "live.com.au", "live.com.mx", "live.com.ar",
        "live.com.pt", "live.com.sg", "live.com.my", "live.co.za", "live.hk",
        "outlook.fr", "outlook.de", "outlook.es", "outlook.it", "outlook.jp", "outlook.be",
        "outlook.ie", "outlook.sa", "outlook.cl", "outlook.in", "outlook.kr", "outlook.sg",
        "outlook.my", "outlook.ph", "outlook.pt", "outlook.dk", "outlook.at", "outlook.cz",
        "outlook.co.uk", "outlook.co.id", "outlook.co.il", "outlook.co.th", "outlook.com.br",
        "outlook.com.au", "outlook.com.ar", "outlook.com.tr", "outlook.com.vn",
        "outlook.com.gr",
        # Yahoo, AOL (Yahoo Japan is a separate company, free mail all the same)
        "yahoo.com", "ymail.com", "rocketmail.com", "yahoo.co.uk", "yahoo.fr", "yahoo.de",
        "yahoo.it", "yahoo.es", "yahoo.ca", "yahoo.ie", "yahoo.gr", "yahoo.se", "yahoo.dk",
        "yahoo.no", "yahoo.nl", "yahoo.be", "yahoo.at", "yahoo.ch", "yahoo.pl", "yahoo.ro",
        "yahoo.in", "yahoo.cn", "yahoo.co.jp", "yahoo.co.in", "yahoo.co.id", "yahoo.co.nz",
        "yahoo.co.za", "yahoo.co.th", "yahoo.co.kr", "yahoo.com.au", "yahoo.com.br",
        "yahoo.com.mx", "yahoo.com.ar", "yahoo.com.sg", "yahoo.com.hk", "yahoo.com.tw",
        "yahoo.com.ph", "yahoo.com.vn", "yahoo.com.my", "yahoo.com.tr", "yahoo.com.co",
        "yahoo.com.pe", "yahoo.cl",
        "aol.com", "aim.com", "aol.co.uk", "aol.fr", "aol.de", "aol.it", "aol.es", "aol.nl",
        "aol.com.au", "aol.com.br", "verizon.net",
        # Apple
        "icloud.com", "me.com", "mac.com",
        # United Internet (GMX, WEB.DE, mail.com), Germany
        "gmx.de", "gmx.net", "gmx.at", "gmx.ch", "gmx.com", "gmx.fr", "gmx.es", "gmx.it",
        "gmx.co.uk", "gmx.us", "gmx.eu", "gmx.info", "gmx.org", "web.de", "mail.com",
        "email.com", "usa.com", "post.com", "consultant.com", "myself.com", "europe.com",
        "asia.com", "engineer.com", "dr.com", "writeme.com", "iname.com", "techie.com",
        "t-online.de", "freenet.de", "arcor.de", "online.de", "posteo.de", "posteo.net",
        "mailbox.org", "vodafone.de",
        # Russia and neighbours
        "mail.ru", "inbox.ru", "list.ru", "bk.ru", "internet.ru", "mail.ua", "yandex.ru",
        "yandex.com", "yandex.ua", "yandex.kz", "yandex.by", "yandex.com.tr", "ya.ru",
        "rambler.ru", "ukr.net", "i.ua", "meta.ua", "bigmir.net", "tut.by",
        # China
        "qq.com", "vip.qq.com", "foxmail.com", "163.com", "126.com", "yeah.net", "188.com",
        "vip.163.com", "sina.com", "sina.cn", "vip.sina.com", "sohu.com", "aliyun.com",
        "139.com", "189.cn", "wo.cn", "tom.com", "21cn.com",
        # Korea, Japan, India
        "naver.com", "daum.net", "hanmail.net", "kakao.com", "nate.com",
        "docomo.ne.jp", "ezweb.ne.jp", "au.com", "softbank.ne.jp", "i.softbank.jp",
        "nifty.com", "biglobe.ne.jp", "ybb.ne.jp",
        "rediffmail.com", "rediff.com",
        # Privacy-focused and independent providers
        "protonmail.com", "protonmail.ch", "proton.me", "pm.me", "tutanota.com",
        "tutanota.de", "tutamail.com", "tuta.io", "tuta.com", "keemail.me", "hushmail.com",
        "fastmail.com", "fastmail.fm", "zoho.com", "zohomail.com", "zohomail.eu",
        "zohomail.in", "hey.com", "mailfence.com", "runbox.com", "disroot.org",
        "gmx.ru", "inbox.com", "lycos.com", "excite.com", "juno.com", "netzero.net",
        # Consumer ISPs: United States, Canada
        "comcast.net", "att.net", "sbcglobal.net", "bellsouth.net", "cox.net", "charter.net",
        "earthlink.net", "optonline.net", "frontier.com", "windstream.net", "centurylink.net",
        "roadrunner.com", "twc.com", "shaw.ca", "rogers.com", "sympatico.ca", "videotron.ca",
        "telus.net", "bell.net",
        # Consumer ISPs: Europe
        "btinternet.com", "sky.com", "virginmedia.com", "ntlworld.com", "talktalk.net",
        "blueyonder.co.uk", "tiscali.co.uk", "orange.fr", "wanadoo.fr", "free.fr", "sfr.fr",
        "neuf.fr", "laposte.net", "bbox.fr", "libero.it", "virgilio.it", "alice.it", "tin.it",
        "tiscali.it", "email.it", "telenet.be", "skynet.be", "proximus.be", "ziggo.nl",
        "kpnmail.nl", "home.nl", "planet.nl", "hetnet.nl", "bluewin.ch", "sunrise.ch",
        "telia.com", "telia.se", "online.no", "eircom.net", "terra.es", "telefonica.net",
        "sapo.pt", "seznam.cz", "email.cz", "centrum.cz", "post.cz", "azet.sk", "wp.pl",
        "o2.pl", "interia.pl", "onet.pl", "op.pl", "poczta.fm", "abv.bg", "freemail.hu",
        "citromail.hu", "inbox.lv", "mail.ee", "yahoo.lt",
        # Consumer ISPs: elsewhere
        "bigpond.com", "bigpond.net.au", "optusnet.com.au", "iinet.net.au", "xtra.co.nz",
        "terra.com.br", "uol.com.br", "bol.com.br", "ig.com.br", "globo.com",
        "prodigy.net.mx", "walla.co.il", "netvision.net.il", "mweb.co.za",
    }
)  # fmt: skip

#: Brands whose every country variant is free mail: ``yahoo.com.ar`` or ``hotmail.co.th`` is
#: free mail whether or not `FREE_MAIL_DOMAINS` lists it (the organisational domain's first
#: label is the brand).
FREE_MAIL_FAMILIES: Final[frozenset[str]] = frozenset(
    {"gmx", "hotmail", "live", "outlook", "yahoo", "yandex", "aol"}
)


def _ascii_domain(domain: str) -> str | None:
    text = domain.strip().rstrip(".").lower()
    if not text.isascii():
        # Compare domains in their IDNA (ASCII) form, as `address_key` does for addresses.
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    return text


def organisational_domain(domain: str) -> str | None:
    """Return the domain an organisation registered, which `domain` belongs to.

    ``mail.eu.acme.com`` → ``acme.com``, ``sales.acme.co.uk`` → ``acme.co.uk``. The rule: the
    last two labels, or the last three when the last two are a known public suffix (``co.uk``,
    ``com.au``, ``co.jp``, ``com.br`` ... see the module's table), or a generic second level
    (``co``, ``com``, ``org``, ``ac``, ``gov`` ...) under a two-letter country-code TLD.

    Limits: this is a heuristic, not the Public Suffix List. Private suffixes (hosting
    platforms, dynamic DNS) are unknown except Microsoft 365's ``onmicrosoft.com``; suffixes of
    three labels and more (``pvt.k12.ma.us``) give too short a result; a registered domain that
    looks like a suffix (``gov.it``) gives ``None``. No network, no dependency: where it
    matters, pass a PSL-backed function as `Policy.org_domain`.

    Args:
        domain: a domain name, any case, IDNA or Unicode, with or without a trailing dot.

    Returns:
        The organisational domain, lower-case ASCII (IDNA), or ``None`` when there is none:
        an empty or malformed name, one label only, an address literal or IP address, or a
        public suffix itself.

    Raises:
        ConfigError: `domain` is not a str.
    """
    if not isinstance(domain, str):
        raise ConfigError(f"a domain must be a str, not {type(domain).__name__}")
    text = _ascii_domain(domain)
    if not text or text.startswith("["):
        return None
    labels = text.split(".")
    # RFC 3696 §2: a top-level domain is never all-numeric, so this is an IPv4 address.
    if len(labels) < 2 or not all(labels) or labels[-1].isdigit():
        return None
    for size in (3, 2):
        if len(labels) >= size and ".".join(labels[-size:]) in _SUFFIXES:
            return ".".join(labels[-size - 1 :]) if len(labels) > size else None
    if len(labels[-1]) == 2 and labels[-2] in _GENERIC_SECOND_LEVEL:
        return ".".join(labels[-3:]) if len(labels) > 2 else None
    return ".".join(labels[-2:])


def is_free_mail(domain: str, *, domains: Iterable[str] = FREE_MAIL_DOMAINS) -> bool:
    """Say whether `domain` belongs to a free-mail (or consumer ISP) provider.

    Args:
        domain: a domain, or an address (the part after the last ``@`` is used).
        domains: the free-mail domains to consult (default `FREE_MAIL_DOMAINS`, lower-case).
            `FREE_MAIL_FAMILIES` is always consulted too.

    Returns:
        True when `domain`, or its organisational domain, is listed, or the organisational
        domain is a country variant of a free-mail brand.

    Raises:
        ConfigError: `domain` is not a str.
    """
    if not isinstance(domain, str):
        raise ConfigError(f"a domain must be a str, not {type(domain).__name__}")
    text = _ascii_domain(domain.rpartition("@")[2])
    if not text:
        return False
    listed = domains if isinstance(domains, (set, frozenset)) else frozenset(domains)
    if text in listed:
        return True
    org = organisational_domain(text)
    if org is None:
        return False
    return org in listed or org.split(".", 1)[0] in FREE_MAIL_FAMILIES


# --------------------------------------------------------------------------------------------
# The policy
# --------------------------------------------------------------------------------------------


@attrs.frozen
class Decision:
    """What the policy decided about one correlated message.

    Attributes:
        action: what the host should do with the campaign.
        resume_on: for `Action.PAUSE`, the first day the campaign may send again; else None.
        notify_crm: whether the CRM hook receives the event (`Policy.crm_kinds`).
        scope: how far the action reaches.
        reason: one line saying why, for `ReplyEvent.reasons`.
        account_domain: with `Scope.ACCOUNT`, the organisational domain of the account.
    """

    action: Action
    resume_on: _dt.date | None
    notify_crm: bool
    scope: Scope
    reason: str
    account_domain: str | None = None


def _action(value: Action | str) -> Action:
    # Accepting the value ("stop") lets hosts configure a policy from a settings file.
    if isinstance(value, Action):
        return value
    try:
        return Action(value)
    except ValueError:
        raise ConfigError(
            f"not an action: {value!r} (expected one of {[a.value for a in Action]})"
        ) from None


def _scope(value: Scope | str) -> Scope:
    if isinstance(value, Scope):
        return value
    try:
        return Scope(value)
    except ValueError:
        raise ConfigError(f"not a scope: {value!r} (expected 'prospect' or 'account')") from None


def _days(value: _dt.timedelta | int) -> _dt.timedelta:
    # bool is an int, and "True days" is a bug in the caller.
    if isinstance(value, int) and not isinstance(value, bool):
        value = _dt.timedelta(days=value)
    if not isinstance(value, _dt.timedelta):
        raise ConfigError(f"expected a timedelta or a number of days, got {value!r}")
    # Decisions are dates (`resume_on`): a fraction of a day would be silently dropped.
    if value % _DAY:
        raise ConfigError(f"expected whole days, got {value!r}")
    return value


def _optional_days(value: _dt.timedelta | int | None) -> _dt.timedelta | None:
    return None if value is None else _days(value)


def _kinds(value: Iterable[Kind | str]) -> frozenset[Kind]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        # A lone "reply" would iterate as its letters.
        raise ConfigError(f"expected a collection of kinds, got {value!r}")
    kinds = set()
    for item in value:
        try:
            kinds.add(item if isinstance(item, Kind) else Kind(item))
        except ValueError:
            raise ConfigError(f"not a kind: {item!r}") from None
    return frozenset(kinds)


def _optional_kinds(value: Iterable[Kind | str] | None) -> frozenset[Kind] | None:
    return None if value is None else _kinds(value)


def _roles(value: Mapping[Role | str, Action | str]) -> Mapping[Role, Action]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"reply_roles must be a mapping of Role to Action, got {value!r}")
    roles = {}
    for role, action in value.items():
        try:
            key = role if isinstance(role, Role) else Role(role)
        except ValueError:
            raise ConfigError(f"not a role: {role!r}") from None
        roles[key] = _action(action)
    # Read-only, so the frozen policy stays frozen.
    return types.MappingProxyType(roles)


def _domains(value: Iterable[str]) -> frozenset[str]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigError(f"expected a collection of domains, got {value!r}")
    out = set()
    for item in value:
        text = _ascii_domain(item) if isinstance(item, str) else None
        if not text:
            raise ConfigError(f"not a domain: {item!r}")
        out.add(text)
    return frozenset(out)


def _callable(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not callable(value):
        raise ConfigError(f"{attribute.name} must be callable, got {value!r}")


# The per-kind fields, in the order `Policy` declares them; "out_of_office" may PAUSE on its
# own return date, the others only with `undated_pause`.
_KIND_FIELDS: Final = (
    "reply",
    "out_of_office",
    "auto_reply",
    "hard_bounce",
    "soft_bounce",
    "delay",
    "complaint",
    "receipt",
)


@attrs.frozen
class Policy:
    """Maps what came back to what the host should do (module Rules 1-5).

    Every action field takes an `Action` or its value (``"stop"``, ``"pause"``,
    ``"log_only"``); durations take a `datetime.timedelta` of whole days or a number of days.

    Attributes:
        reply: a human reply (default STOP, from any role; see `reply_roles`).
        out_of_office: an out-of-office (default PAUSE until the return date).
        auto_reply: any other automatic answer (default LOG_ONLY).
        hard_bounce: a bounce whose address is dead (default STOP, module Rule 2).
        soft_bounce: any other bounce: mailbox full, blocked, refused ... (default LOG_ONLY).
        delay: a delay notice, still being retried (default LOG_ONLY).
        complaint: a spam complaint (default STOP).
        receipt: a read receipt or a delivered/relayed notice (default LOG_ONLY).
        reply_roles: per-role overrides of `reply`, e.g. ``{Role.OTHER: Action.LOG_ONLY}``
            for a host that only trusts replies from the addresses it mailed.
        ooo_resume_margin: days after the return date before the campaign resumes (default
            1: people spend their first day back on their inbox).
        ooo_pause_cap: the longest pause, from `today` (default 30 days): a return date
            misread as next year must not silence a prospect for months.
        undated_pause: how long to pause when PAUSE has no date to go on (an out-of-office
            without a return date, or PAUSE configured for another kind). ``None`` (the
            default): there is nothing to pause, the decision is LOG_ONLY. At most the cap.
        scope: `Scope.PROSPECT` (default) or `Scope.ACCOUNT` (module Rule 4).
        account_kinds: the kinds whose STOP/PAUSE widens to the account under
            `Scope.ACCOUNT` (default: human replies and complaints).
        crm_kinds: the kinds the CRM hook receives; ``None`` (default): every correlated event.
        free_mail_domains: domains never treated as an account (default `FREE_MAIL_DOMAINS`;
            `FREE_MAIL_FAMILIES` always apply as well).
        org_domain: computes an organisational domain (default `organisational_domain`);
            a PSL-backed function may replace it.

    Raises:
        ConfigError: a value is of the wrong type or out of range, or PAUSE is configured for
            a kind other than out-of-office while `undated_pause` is None (it would never
            pause).
    """

    reply: Action = attrs.field(default=Action.STOP, converter=_action)
    out_of_office: Action = attrs.field(default=Action.PAUSE, converter=_action)
    auto_reply: Action = attrs.field(default=Action.LOG_ONLY, converter=_action)
    hard_bounce: Action = attrs.field(default=Action.STOP, converter=_action)
    soft_bounce: Action = attrs.field(default=Action.LOG_ONLY, converter=_action)
    delay: Action = attrs.field(default=Action.LOG_ONLY, converter=_action)
    complaint: Action = attrs.field(default=Action.STOP, converter=_action)
    receipt: Action = attrs.field(default=Action.LOG_ONLY, converter=_action)
    # hash=False: a mapping is not hashable; leaving it out of the hash keeps equal policies
    # hashing equal (eq still compares it).
    reply_roles: Mapping[Role, Action] = attrs.field(factory=dict, converter=_roles, hash=False)
    ooo_resume_margin: _dt.timedelta = attrs.field(default=_DAY, converter=_days)
    ooo_pause_cap: _dt.timedelta = attrs.field(default=30 * _DAY, converter=_days)
    undated_pause: _dt.timedelta | None = attrs.field(default=None, converter=_optional_days)
    scope: Scope = attrs.field(default=Scope.PROSPECT, converter=_scope)
    account_kinds: frozenset[Kind] = attrs.field(
        default=frozenset({Kind.REPLY, Kind.COMPLAINT}), converter=_kinds
    )
    crm_kinds: frozenset[Kind] | None = attrs.field(default=None, converter=_optional_kinds)
    # repr=False: four hundred domains would drown the rest of a logged policy.
    free_mail_domains: frozenset[str] = attrs.field(
        default=FREE_MAIL_DOMAINS, converter=_domains, repr=False
    )
    org_domain: Callable[[str], str | None] = attrs.field(
        default=organisational_domain, validator=_callable
    )

    def __attrs_post_init__(self) -> None:
        if self.ooo_resume_margin < _dt.timedelta(0):
            raise ConfigError(f"ooo_resume_margin must not be negative: {self.ooo_resume_margin}")
        if self.ooo_pause_cap < _DAY:
            raise ConfigError(f"ooo_pause_cap must be at least one day: {self.ooo_pause_cap}")
        if self.undated_pause is not None and not _DAY <= self.undated_pause <= self.ooo_pause_cap:
            raise ConfigError(
                f"undated_pause must be between one day and ooo_pause_cap: {self.undated_pause}"
            )
        if self.undated_pause is None:
            pausing = [
                name
                for name in _KIND_FIELDS
                if name != "out_of_office" and getattr(self, name) is Action.PAUSE
            ]
            pausing += [
                f"reply_roles[{role.value}]"
                for role, action in self.reply_roles.items()
                if action is Action.PAUSE
            ]
            if pausing:
                raise ConfigError(
                    f"PAUSE for {', '.join(pausing)} needs undated_pause (how long to pause): "
                    "only an out-of-office carries a date"
                )

    def decide(self, correlation: Correlation, *, today: _dt.date) -> Decision:
        """Decide what the host should do about one correlated message.

        Args:
            correlation: the message, tied to its send.
            today: the host's current date, from which pauses are capped (module Rule 3).

        Returns:
            The `Decision`: action, resume date, whether the CRM hears of it, scope, reason.

        Raises:
            ConfigError: `today` is not a date (a datetime is refused too: mixing the two in
                date arithmetic silently changes types).
        """
        if not isinstance(today, _dt.date) or isinstance(today, _dt.datetime):
            raise ConfigError(f"today must be a datetime.date, got {today!r}")
        c = correlation.classification
        kind = c.kind
        if kind is Kind.REPLY:
            action = self.reply_roles.get(correlation.role, self.reply)
            what = f"human reply from {_ROLE_WORDS[correlation.role]}"
        elif kind is Kind.OUT_OF_OFFICE:
            action, what = self.out_of_office, "out-of-office"
        elif kind is Kind.BOUNCE:
            hard, what = _bounce_verdict(c.bounce, correlation)
            action = self.hard_bounce if hard else self.soft_bounce
        else:
            action = getattr(self, _OTHER_KIND_FIELDS[kind])
            what = _KIND_WORDS[kind]
        resume_on = None
        if action is Action.PAUSE:
            return_date = c.return_date if kind is Kind.OUT_OF_OFFICE else None
            action, resume_on, what = self._pause(return_date, today, what)
        reason = f"{what}: {action.value.replace('_', ' ')}"
        if resume_on is not None:
            reason += f" until {resume_on}"
        scope, account, scope_note = self._scope(kind, action, correlation)
        if scope_note:
            reason += f"; {scope_note}"
        notify = self.crm_kinds is None or kind in self.crm_kinds
        return Decision(
            action=action,
            resume_on=resume_on,
            notify_crm=notify,
            scope=scope,
            reason=reason,
            account_domain=account,
        )

    def _pause(
        self, return_date: _dt.date | None, today: _dt.date, what: str
    ) -> tuple[Action, _dt.date | None, str]:
        """Turn PAUSE into a resume date, or LOG_ONLY when there is nothing to pause."""
        cap = today + self.ooo_pause_cap
        if return_date is None:
            if self.undated_pause is None:
                return Action.LOG_ONLY, None, f"{what} without a return date"
            return Action.PAUSE, today + self.undated_pause, f"{what} without a return date"
        if return_date < today:
            return Action.LOG_ONLY, None, f"{what} until {return_date}, already past"
        resume = return_date + self.ooo_resume_margin
        if resume <= today:  # margin 0 and back today: Rule 3
            return Action.LOG_ONLY, None, f"{what} until {return_date}, back today"
        if resume > cap:
            days = self.ooo_pause_cap.days
            return Action.PAUSE, cap, f"{what} until {return_date}, capped at {days} days"
        return Action.PAUSE, resume, f"{what} until {return_date}"

    def _scope(
        self, kind: Kind, action: Action, correlation: Correlation
    ) -> tuple[Scope, str | None, str]:
        """Return the scope, the account's domain and a note for the reason (module Rule 4)."""
        if (
            self.scope is Scope.PROSPECT
            or action is Action.LOG_ONLY
            or kind not in self.account_kinds
        ):
            return Scope.PROSPECT, None, ""
        sent = correlation.sent
        if sent is None or not sent.to:
            return Scope.PROSPECT, None, "prospect scope: the send (and its prospect) is unknown"
        domain = sent.to[0].rpartition("@")[2]
        org = self.org_domain(domain)
        if org is None:
            return Scope.PROSPECT, None, f"prospect scope: {domain} has no organisational domain"
        if is_free_mail(domain, domains=self.free_mail_domains) or is_free_mail(
            org, domains=self.free_mail_domains
        ):
            return Scope.PROSPECT, None, f"prospect scope: {domain} is free mail"
        return Scope.ACCOUNT, org, f"account scope: {org}"


_ROLE_WORDS: Final = {
    Role.RECIPIENT: "the recipient",
    Role.CC: "the Cc recipient",
    Role.OTHER: "another address",
    Role.UNKNOWN: "a responder whose send is not in the store",
}

_OTHER_KIND_FIELDS: Final = {
    Kind.AUTO_REPLY: "auto_reply",
    Kind.DELAY: "delay",
    Kind.COMPLAINT: "complaint",
    Kind.RECEIPT: "receipt",
}

_KIND_WORDS: Final = {
    Kind.AUTO_REPLY: "auto-reply",
    Kind.DELAY: "delay notice",
    Kind.COMPLAINT: "complaint",
    Kind.RECEIPT: "receipt",
}


def _describe(recipients: Iterable[BouncedRecipient]) -> str:
    parts = []
    for r in recipients:
        detail = " ".join(x for x in (r.status, r.reason) if x)
        parts.append(f"{r.address} {detail}".strip())
    return ", ".join(parts[:3]) + (", ..." if len(parts) > 3 else "")


def _bounce_verdict(bounce: Bounce | None, correlation: Correlation) -> tuple[bool, str]:
    """Say whether a bounce is hard for the prospect (module Rule 2), and describe it."""
    recipients = bounce.recipients if bounce is not None else ()
    if not recipients:
        return False, "bounce without recipient details"
    sent = correlation.sent
    if sent is not None:
        to = {address_key(a) for a in sent.to}
        cc = {address_key(a) for a in sent.cc}
        on_to = [r for r in recipients if address_key(r.address) in to]
        if on_to:
            hard = any(r.hard for r in on_to)
            return hard, f"{'hard' if hard else 'soft'} bounce ({_describe(on_to)})"
        if any(address_key(r.address) in cc for r in recipients):
            return False, f"bounce for Cc recipients only ({_describe(recipients)})"
    hard = any(r.hard for r in recipients)
    return hard, f"{'hard' if hard else 'soft'} bounce ({_describe(recipients)})"
