"""Machine reports: bounces, delay notices, complaints and read receipts.

`analyze_report` tells whether an incoming message was written by a mail system about a message
we sent — a delivery status notification (RFC 3464), one of the many non-standard bounce
formats, an ARF feedback report (RFC 5965) or a message disposition notification (RFC 8098) —
and says which recipients failed, why, and which send it is about.

Rule 1: it never raises, on any input; a message it cannot read is not a report (``None``).
Rule 2: a human message is never a report. Structure decides, not wording: a report MIME type
        (RFC 6522 ``multipart/report``, or a ``message/delivery-status``,
        ``message/feedback-report`` or ``message/disposition-notification`` part outside any
        returned message) is decisive; a plain-text bounce also needs the envelope of a mail
        system (a ``MAILER-DAEMON``/``postmaster`` or empty sender, ``X-Failed-Recipients``, or a
        bounce subject that is not a reply or a forward) *and* bounce content in the text. A
        reply that quotes "delivery failed" has neither.
Rule 3: the structured fields win over the prose: per-recipient ``Final-Recipient``,
        ``Original-Recipient``, ``Action``, ``Status``, ``Diagnostic-Code`` and ``Remote-MTA``
        (RFC 3464 §2.3) are used when present; the human-readable text only fills what they lack.
Rule 4: the recipient is the address we sent to: ``Original-Recipient`` (the RCPT TO as the
        sender gave it, RFC 3464 §2.3.1) when it is an RFC 822 address, else ``Final-Recipient``.
Rule 5: every failed recipient gets an enhanced status code (RFC 3463 ``class.subject.detail``)
        and a reason in Sisimai's vocabulary. A generic code (``5.0.0``) or none at all is
        refined from the diagnostic: an explicit enhanced code in the text first, then the
        canonical code of the reason the text shows, with the class of the SMTP reply code
        (RFC 5321 §4.2) or of the report's action.
Rule 6: work is bounded: at most `MAX_PARTS` MIME parts are visited, at most
        `MAX_TEXT_CHARS` characters of any one part are decoded, and every pattern is linear.
        A 5 MB attachment costs the same as an empty one.

Kinds: ``bounce`` (some recipient failed), ``delay`` (RFC 3464 ``Action: delayed`` or a delay
warning, nothing failed yet), ``receipt`` (a DSN whose recipients were all delivered or relayed,
or an MDN, RFC 8098 §3.2.6), ``complaint`` (ARF, RFC 5965 §3). An MDN whose disposition is
``deleted`` and that says the message was rejected is a Sieve ``reject`` (RFC 5429 §2.2.2) and
therefore a bounce.
"""

from __future__ import annotations

import binascii
import codecs
import contextlib
import email.message
import functools
import html
import quopri
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Final, Literal

import attrs

from replytrack._prefilter import Phrase, starts_with_literal
from replytrack.headers import Address, Headers, normalize_msg_id, parse_addresses, parse_headers

__all__ = [
    "HARD_REASONS",
    "MAX_PARTS",
    "MAX_TEXT_CHARS",
    "REASONS",
    "Bounce",
    "BouncedRecipient",
    "Report",
    "analyze_report",
    "find_reply_code",
    "find_status",
    "infer_status",
    "is_hard",
    "may_be_report",
    "reason_for",
]

#: At most this many MIME parts of one message are looked at.
MAX_PARTS: Final = 64
#: At most this many characters of one part's decoded text are read.
MAX_TEXT_CHARS: Final = 128 * 1024
#: A failed recipient list longer than this is cut (a bounce lists the few it failed).
MAX_RECIPIENTS: Final = 100

#: The reason vocabulary (Sisimai's), as listed in DESIGN.md.
REASONS: Final = frozenset(
    [
        "userunknown",
        "hostunknown",
        "mailboxfull",
        "hasmoved",
        "notaccept",
        "suspend",
        "expired",
        "filtered",
        "rejected",
        "blocked",
        "spamdetected",
        "virusdetected",
        "policyviolation",
        "authfailure",
        "badreputation",
        "requireptr",
        "norelaying",
        "securityerror",
        "contenterror",
        "mesgtoobig",
        "exceedlimit",
        "toomanyconn",
        "speeding",
        "systemerror",
        "systemfull",
        "networkerror",
        "mailererror",
        "notcompliantrfc",
        "syntaxerror",
        "onhold",
        "undefined",
    ]
)
#: Reasons that say the address itself is dead: mailing it again cannot succeed.
HARD_REASONS: Final = frozenset({"userunknown", "hostunknown", "hasmoved", "notaccept"})


# --------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------


@attrs.frozen
class BouncedRecipient:
    """One recipient of a bounce or delay notice, and what happened to it.

    ``address`` is the recipient we sent to (see the module's Rule 4); ``status`` an RFC 3463
    enhanced status code; ``reason`` a word of `REASONS`; ``permanent`` says the status class is
    5; ``hard`` says the address itself is dead (`HARD_REASONS`, and not merely delayed).
    """

    address: str
    status: str | None
    reason: str
    permanent: bool
    hard: bool
    diagnostic: str | None
    action: str | None = None
    remote_mta: str | None = None


@attrs.frozen
class Bounce:
    """The recipients of a bounce, a delay notice or a delivery receipt, and the send's id."""

    recipients: tuple[BouncedRecipient, ...]
    original_message_id: str | None
    reporting_mta: str | None = None


@attrs.frozen
class Report:
    """What a machine report says.

    ``bounce`` is set for kinds ``bounce`` and ``delay`` (and a delivered/relayed DSN);
    ``original_message_id`` for every kind when the report carries it, normalised like
    `replytrack.headers.normalize_msg_id`; ``feedback_type`` for complaints (RFC 5965 §3.1
    ``Feedback-Type``); ``reasons`` is the evidence that decided, for people to read.
    """

    kind: Literal["bounce", "delay", "receipt", "complaint"]
    bounce: Bounce | None
    original_message_id: str | None
    feedback_type: str | None
    reasons: tuple[str, ...]


# --------------------------------------------------------------------------------------------
# Tables: status codes and reasons
# --------------------------------------------------------------------------------------------

# RFC 3463 / RFC 5248 registry codes (subject.detail, class-independent) → reason. Codes whose
# meaning depends on the server (x.7.1 "delivery not authorized" covers spam filters, block
# lists, relaying and unknown users alike) are in `_AMBIGUOUS_STATUS`: the text decides them.
_STATUS_REASON: Final[dict[str, str]] = {
    "1.0": "userunknown",  # Gmail: "5.1.0 Recipient rejected"
    "1.1": "userunknown",
    "1.2": "hostunknown",
    "1.3": "userunknown",
    "1.4": "userunknown",
    "1.6": "hasmoved",
    "1.7": "rejected",  # bad sender mailbox syntax
    "1.8": "rejected",  # bad sender system address
    # RFC 7505 makes 5.1.10 "null MX", but Exchange Online sends it for every unknown recipient
    # (RESOLVER.ADR.RecipientNotFound) and that is what the world sees far more often.
    "1.10": "userunknown",
    "2.0": "filtered",
    "2.1": "suspend",
    "2.2": "mailboxfull",
    "2.3": "exceedlimit",
    "2.4": "systemerror",
    "3.0": "systemerror",
    "3.1": "systemfull",
    "3.2": "notaccept",
    "3.3": "systemerror",
    "3.4": "mesgtoobig",
    "3.5": "systemerror",
    "4.0": "networkerror",
    "4.1": "networkerror",
    "4.2": "networkerror",
    "4.3": "systemerror",
    "4.4": "hostunknown",
    "4.5": "toomanyconn",
    "4.6": "networkerror",  # routing loop
    "4.7": "expired",
    "5.0": "syntaxerror",
    "5.1": "syntaxerror",
    "5.2": "syntaxerror",
    "5.3": "syntaxerror",
    "5.4": "syntaxerror",
    "5.5": "syntaxerror",
    "6.0": "contenterror",
    "6.1": "contenterror",
    "6.2": "contenterror",
    "6.3": "contenterror",
    "6.4": "contenterror",
    "6.5": "contenterror",
    "6.6": "contenterror",
    "7.0": "securityerror",
    "7.1": "blocked",
    "7.2": "policyviolation",
    "7.3": "securityerror",
    "7.4": "securityerror",
    "7.5": "securityerror",
    "7.6": "securityerror",
    "7.7": "securityerror",
    "7.8": "securityerror",
    "7.9": "securityerror",
    "7.10": "securityerror",
    "7.11": "securityerror",
    "7.12": "securityerror",
    "7.13": "suspend",  # RFC 7372: user account disabled
    "7.14": "securityerror",
    "7.16": "mesgtoobig",
    "7.17": "hasmoved",  # RFC 7372: mailbox owner has changed
    "7.18": "hasmoved",  # RFC 7372: domain owner has changed
    "7.20": "authfailure",  # RFC 7372: DKIM
    "7.21": "authfailure",
    "7.22": "authfailure",
    "7.23": "authfailure",  # RFC 7372: SPF
    "7.24": "authfailure",
    "7.25": "requireptr",  # RFC 7372: reverse DNS
    "7.26": "authfailure",  # RFC 7372: multiple authentication checks (DMARC)
    "7.27": "notaccept",  # RFC 7505: sender address has null MX
    "7.28": "spamdetected",  # mail flood detected (IANA enhanced status code registry)
    "7.29": "authfailure",  # RFC 8617: ARC
    "7.30": "securityerror",  # RFC 8689: REQUIRETLS
}
# Codes the text may override: generic, or used by servers for many different refusals.
_AMBIGUOUS_STATUS: Final = frozenset(
    {"0.0", "1.0", "1.1", "2.0", "3.0", "4.0", "5.0", "6.0", "7.0", "7.1", "1.10", "4.4"}
)

# The code a reason implies when the report has no usable code (class prefix added later).
_REASON_STATUS: Final[dict[str, str]] = {
    "userunknown": "1.1",
    "hostunknown": "1.2",
    "hasmoved": "1.6",
    "suspend": "2.1",
    "mailboxfull": "2.2",
    "exceedlimit": "2.3",
    "filtered": "2.0",
    "systemfull": "3.1",
    "notaccept": "3.2",
    "mesgtoobig": "3.4",
    "systemerror": "3.0",
    "mailererror": "3.0",
    "networkerror": "4.0",
    "toomanyconn": "4.5",
    "expired": "4.7",
    "syntaxerror": "5.2",
    "contenterror": "6.0",
    "securityerror": "7.0",
    "blocked": "7.1",
    "spamdetected": "7.1",
    "virusdetected": "7.1",
    "policyviolation": "7.1",
    "rejected": "7.1",
    "norelaying": "7.1",
    "badreputation": "7.1",
    "speeding": "7.1",
    "notcompliantrfc": "7.1",
    "authfailure": "7.26",
    "requireptr": "7.25",
}

# Diagnostic text → reason, first match wins. The order puts the specific before the generic:
# "mailbox full" before "mailbox unavailable", a block list before "rejected", a DMARC failure
# before "not authorized". Patterns follow the wording of the MTAs that Sisimai documents
# (Postfix, Sendmail, Exim, qmail, Exchange/Office 365, Gmail, Yahoo, AOL, Outlook.com, SES,
# SendGrid, Mimecast, Barracuda, Domino, GroupWise, Courier, OpenSMTPD, Japanese and Russian
# carriers) and the translations that carriers actually send.
_REASON_PATTERNS: Final[tuple[tuple[str, str], ...]] = (
    (
        "mailboxfull",
        r"mailbox (?:is )?full|mailbox_full|\bmailbox (?:size )?(?:limit )?exceeded|full mailbox"
        r"|mail ?box (?:has )?exceeded|mailfolder is full|over ?quota|quota (?:exceeded|violation"
        r"|full)|exceed(?:s|ed|ing)? (?:the |their |his |her |its )?(?:storage |disk |mailbox )?"
        r"(?:quota|allocation|storage limit)|disk quota|too much mail stored|inbox is full"
        r"|account is full|mailbox exceeds allowed size|box space not enough|mailbox is over"
        r"|not enough (?:storage|space) (?:in|for) (?:the )?mailbox|storage (?:limit|quota)"
        r"|insufficient (?:mailbox )?storage for|user(?:'s)? (?:mailbox|account) is over"
        r"|postfach (?:ist )?voll|bo[iî]te (?:aux lettres )?(?:est )?pleine|buz[oó]n (?:est[aá] )?"
        r"lleno|caixa (?:postal )?(?:est[aá] )?cheia|casella (?:di posta )?piena"
        r"|ящик переполнен|переполнен|容量(?:を)?(?:超過|オーバー)"
        r"|メールボックスが(?:いっぱい|一杯)"
        r"|邮箱(?:已满|空间不足)|空间不足",
    ),
    (
        "mesgtoobig",
        r"message (?:is )?too (?:large|big|long)|(?:message|mail) size (?:exceeds|limit|too)"
        r"|exceed(?:s|ed)? (?:the )?(?:maximum )?(?:allowed |inbound |incoming )?message size"
        r"|size (?:of (?:the )?message )?exceeds|message (?:length|size) exceeds"
        r"|message file too big|too large for (?:this|the) (?:recipient|system|server)"
        r"|exceeds? (?:the )?(?:maximum|max)(?:imum)? (?:message )?size",
    ),
    ("exceedlimit", r"message length exceeds administrative limit|exceeds? (?:the )?limit"),
    (
        "authfailure",
        r"\bspf\b[^\n]{0,80}?(?:fail|reject|not (?:pass|authori[sz]ed)|invalid|error|check)"
        r"|(?:fail|did not pass|not pass)[^\n]{0,40}?\b(?:spf|dkim|dmarc)\b"
        r"|\bdmarc\b[^\n]{0,80}?(?:fail|reject|policy|quarantine)|\bdkim\b[^\n]{0,80}?(?:fail|invalid"
        r"|reject|required|missing|not )|sender policy framework|unauthenticated (?:e-?mail|mail"
        r"|message)|sender (?:is not|not) authori[sz]ed|authentication (?:checks? )?failed"
        r"|5\.7\.2[0-6]\b",
    ),
    (
        "requireptr",
        r"reverse (?:dns|lookup|mapping)|\bptr (?:record|lookup)|no ptr"
        r"|cannot find your (?:host ?name"
        r"|reverse)|client host rejected: cannot find|does not have a reverse|rdns",
    ),
    ("badreputation", r"(?:poor|bad|low) (?:ip |sender |domain )?reputation|reputation (?:of|is)"),
    # "InterScan E-Mail VirusWall" names a product, not a finding.
    ("virusdetected", r"\bvirus(?:es)?\b(?! ?wall)|malware|infected|\bworm\b|trojan"),
    (
        "spamdetected",
        # Not "spamhaus"/"spamcop": block lists, not a verdict on the content.
        r"\bspam(?!haus|cop)|unsolicited|junk ?mail|bulk mail"
        r"|content (?:was )?(?:rejected|filtered) as"
        r"|message (?:has been )?(?:rejected|blocked|refused) (?:as|for|because of) (?:spam|junk)"
        r"|looks? like spam|classified as|suspicious content|(?:message|content) score",
    ),
    (
        "blocked",
        r"spamhaus|spamcop|barracuda(?:central)?|\bsorbs\b|\brbl\b|dnsbl|\bdnsrbl|blocklist"
        r"|block ?list|black ?list|\bblocked\b|ip (?:address )?(?:is )?"
        r"(?:blocked|banned|rejected|denied)|client host (?:\[[^\]]*\] )?(?:rejected|blocked)"
        r"|refused to talk to me|connection (?:rejected|refused) (?:by|from|due)"
        r"|has been throttled"
        r"|your (?:ip|server|host|network) (?:address )?(?:has|is|was)|access denied.{0,40}ip",
    ),
    (
        "norelaying",
        r"relay(?:ing)? (?:access )?(?:denied|not (?:permitted|allowed)|prohibited)"
        r"|unable to relay|not permitted to relay|we do not relay|relaying (?:mail )?to .{0,80}"
        r" (?:is )?not allowed|no relaying|relay not|relaying denied|cannot relay"
        r"|not (?:a )?(?:local|authorized) (?:host|domain)",
    ),
    (
        "suspend",
        r"(?:account|mailbox|user|address) (?:has been |is |was )?(?:temporarily )?(?:disabled"
        r"|suspended|deactivated|inactive|locked|frozen|expired|blocked by the administrator)"
        r"|disabled or discontinued|inactive (?:account|user|mailbox)|not (?:currently )?active"
        r"|account (?:is )?not available|mailbox (?:is )?disabled|this account has been"
        r"|user account is unavailable",
    ),
    (
        "hasmoved",
        r"has (?:been )?moved|has been replaced by|no longer (?:with|at|works?|employed)"
        r"|changed (?:his|her|their) (?:e-?mail )?address",
    ),
    (
        "notaccept",
        r"does not accept (?:e-?)?mail|not accepting (?:any )?(?:e-?)?mail\b(?! from)"
        r"|accepts? no (?:e-?)?mail|null mx|mail receiving disabled"
        r"|will not (?:accept|receive) any"
        r" (?:more )?mail",
    ),
    (
        "hostunknown",
        r"host (?:or domain name )?(?:not found|unknown)|unknown host|domain (?:name )?not found"
        r"|name service error|\bno mx\b|no (?:mx|a) (?:or (?:a|aaaa) )?(?:record )?for"
        r"|domain (?:does not|doesn't) exist|(?:unrouteable|unroutable) (?:mail )?domain"
        r"|dns error|domain (?:name )?(?:lookup|resolution) failed|nxdomain|no such domain"
        r"|unknown (?:mail )?domain|host not reachable: unknown|could not find a gateway"
        r"|invalid domain|domain is not (?:valid|registered)|non-?existent domain",
    ),
    (
        "userunknown",
        r"user(?:name)? (?:is )?(?:unknown|not (?:found|known|exist)|doesn't exist|does not exist)"
        r"|unknown (?:or illegal )?(?:user|recipient|local part|address|mailbox)|no such (?:user"
        r"|recipient|mailbox|account|address|person)|no mailbox|mailbox (?:is )?(?:unavailable"
        r"|not (?:found|available)|does not exist|doesn't exist|unknown)|(?:recipient|addressee"
        r"|address) (?:unknown|not (?:found|known|valid|exist)|does not exist|doesn't exist"
        r"|rejected)|(?:invalid|bad|illegal) (?:destination |final )?(?:recipient|mailbox"
        r"|address|user|delivery userid)|not (?:a )?(?:valid|known) (?:user|recipient|mailbox)"
        r"|(?:account|e-?mail address|e-?mail account) (?:that you tried to reach )?(?:does not"
        r"|doesn't) exist|does not exist|doesn't have an? \S+ account|not listed in"
        r"|recipient(?:notfound| not found)|wasn't found at|name is not recognized"
        r"|unknown recipient"
        r"|no longer valid|is not a valid|unrouteable address|user not local|not our customer"
        r"|mailbox unavailable|no such|addressee unknown|non-?existent (?:user|recipient|address)"
        r"|empf[äa]e?nger (?:ist )?unbekannt|unbekannt|n'existe pas|inexistant|no existe"
        r"|n[ãa]o existe|non esiste|bestaat niet|finns inte|eksisterer ikke|ei ole olemassa"
        r"|nie istnieje|не существует|несуществующ|нет такого|не найден|存在しません|宛先不明"
        r"|不存在|用户不存在|無効なアドレス",
    ),
    (
        "rejected",
        r"sender (?:address )?(?:rejected|denied|refused|blocked)|(?:mail )?from (?:address )?"
        r"(?:rejected|refused)|not accepting (?:e-?)?mail from|envelope (?:sender|from)"
        r"|domain of sender|sender domain|rejected (?:by|due to) (?:the )?recipient"
        r"|(?:your|the) (?:e-?mail|message) was rejected|automatically rejected"
        r"|not authori[sz]ed to send",
    ),
    (
        "policyviolation",
        r"polic(?:y|ies)|banned|prohibited|not allowed|content rejected|message content",
    ),
    (
        "securityerror",
        r"authentication required|must (?:issue|use) (?:a )?starttls|tls (?:is )?required"
        r"|encryption required|insecure|not authori[sz]ed|executable|attachment",
    ),
    ("toomanyconn", r"too many (?:connections|concurrent|simultaneous|sessions)|connection limit"),
    (
        "speeding",
        r"rate limit|too many (?:messages|mails|emails|recipients)|sending rate|throttl"
        r"|exceeded the rate",
    ),
    (
        "systemfull",
        r"insufficient system storage|system (?:is )?full|out of (?:disk )?space|disk (?:is )?full"
        r"|not enough (?:disk )?space",
    ),
    (
        "mailererror",
        r"command died|command output|mailer error|command failed|procmail|pipe to |x-unix",
    ),
    (
        "networkerror",
        r"time[ds]? ?out|timeout|no route to host|network (?:is )?unreachable|connection refused"
        r"|(?:could not|couldn't|can't|cannot|unable to) (?:connect|establish)|lost connection"
        r"|not responding|no answer from|too many hops|mail loop|loop detected|looping"
        r"|forwarding loop|aliasing/forwarding|routing loop|connection (?:reset|closed|dropped)"
        r"|host (?:is )?(?:down|unreachable)|server (?:unavailable|busy)|not reachable"
        r"|connection (?:to [^\n]{0,60})?failed|did not respond|not respond",
    ),
    (
        "expired",
        r"queue too long|(?:message|delivery) (?:time )?expired|retry time ?out|retry timeout"
        r"|in the queue too long|could not be delivered (?:for|within) \d"
        r"|maximum delivery attempts"
        r"|delivery failed \d+ attempts|message timed out|gave up|giving up|not collected"
        r"|will be deleted from (?:the )?queue|not (?:been )?collected",
    ),
    (
        "contenterror",
        r"header (?:error|syntax|too long)|invalid (?:message|header|content)|malformed"
        r"|content error|mime error|8bit|no (?:[\w-]+ )?field given",
    ),
    ("syntaxerror", r"syntax error|command unrecognized|bad sequence of commands"),
    ("systemerror", r"system error|internal error|server error|local error|temporary failure"),
)


def _alternatives(pattern: str) -> list[str]:
    """The top-level alternatives of `pattern`: split at each "|" outside groups and classes."""
    out: list[str] = []
    depth = start = at = 0
    in_class = False
    while at < len(pattern):
        char = pattern[at]
        if char == "\\":
            at += 2  # an escaped character: "\|", "\(", "\]" are literals
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            at += pattern.startswith("^", at + 1)
            at += pattern.startswith("]", at + 1)  # "[]" and "[^]" start with a literal "]"
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            out.append(pattern[start:at])
            start = at + 1
        at += 1
    out.append(pattern[start:])
    return out


class _ReasonPattern:
    r"""A reason pattern, searched in two pieces the regex engine reads faster than the whole.

    Where every alternative of a pattern starts with a given character, the engine skips the
    positions no alternative can start at; one alternative that starts otherwise ("\bspf",
    "(?:poor|bad) ...") makes it try every alternative at every position. So the alternatives
    that start with a character are one pattern, the others a second, and each is searched
    only when the text holds one of the strings every match of it contains (the exact
    prefilter of `replytrack._prefilter`): a 110-character Postfix diagnostic took 55 us for all
    the patterns, 27 us so. The text matches the pattern where it matches either piece.
    """

    __slots__ = ("_pieces",)

    def __init__(self, pattern: str) -> None:
        alternatives = _alternatives(pattern)
        fast = [a for a in alternatives if starts_with_literal(a)]
        rest = [a for a in alternatives if not starts_with_literal(a)]
        self._pieces = tuple(
            Phrase.of(re.compile("|".join(piece))) for piece in (fast, rest) if piece
        )

    def search(self, text: str) -> re.Match[str] | None:
        """A match of the pattern in `text` (of one of its pieces), or ``None``."""
        for piece in self._pieces:
            found = piece.search(text)
            if found is not None:
                return found
        return None


# The patterns are written in lower case and run on lower-cased text: what re.IGNORECASE
# matches (Unicode special folds such as U+017F for "s" aside), three times faster - a
# case-insensitive pattern compares every character through its case folding.
_REASON_REGEXES: Final = tuple(
    (reason, _ReasonPattern(pattern)) for reason, pattern in _REASON_PATTERNS
)

# RFC 3463 §2: class "." subject "." detail, 1-3 digits each; a failure class is 4 or 5. The
# look-arounds keep IP addresses and version numbers (8.12.5, 62.193.203.102) out.
_ENHANCED: Final = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]|-\d)")
# SMTP reply codes (RFC 5321 §4.2: first digit 2-5, second 0-5), only where an MTA writes them:
# at the start of a line, after "said:"/"error"/"code"…, or just before an enhanced code.
_REPLY_AT_LINE_START: Final = re.compile(r"^[ \t>*|#(\[-]*([245][0-5]\d)(?:[ \t-]|$)", re.M)
_REPLY_AFTER_WORD: Final = re.compile(
    r"(?:said|replied|returned|response|responded|error|code|reply|answered|status|smtp)"
    r"\b[^\n\d]{0,24}?(?<!\d)([245][0-5]\d)(?!\d)",
    re.IGNORECASE,
)
_REPLY_BEFORE_ENHANCED: Final = re.compile(r"(?<![\d.])([245][0-5]\d)[ \t:-]+[245]\.\d{1,3}\.\d")


def _split_status(status: str) -> tuple[str, str]:
    klass, _, rest = status.partition(".")
    return klass, rest


def find_status(text: str) -> str | None:
    """Return the first failure enhanced status code (class 4 or 5) written in `text`.

    Args:
        text: a diagnostic or a bounce's text.

    Returns:
        ``"5.1.1"``-style code, or ``None``.
    """
    for match in _ENHANCED.finditer(text):
        klass, subject, detail = match.groups()
        if klass in "45" and len(subject) <= 3:
            return f"{klass}.{int(subject)}.{int(detail)}"
    return None


def find_reply_code(text: str) -> str | None:
    """Return the first SMTP reply code (RFC 5321 §4.2) of class 4 or 5 that an MTA wrote.

    Args:
        text: a diagnostic or a bounce's text.

    Returns:
        ``"550"``-style code, or ``None``.
    """
    best: tuple[int, str] | None = None
    for regex in (_REPLY_BEFORE_ENHANCED, _REPLY_AT_LINE_START, _REPLY_AFTER_WORD):
        match = regex.search(text)
        if match and match.group(1)[0] in "45" and (best is None or match.start(1) < best[0]):
            best = (match.start(1), match.group(1))
    return best[1] if best else None


#: How much of one text `_text_reason` reads (as `_plain_bounce` reads a report): the thirty
#: case-insensitive reason patterns cost about 6 µs per character together.
_REASON_SCAN_CHARS: Final = 8_000
#: How many texts `_text_reason` remembers: those of the message at hand. The memory held
#: stays the same however many messages are read (at most 16 x 8,000 characters).
_REASON_CACHE: Final = 16


def _text_reason(text: str) -> str | None:
    # Rule 6: a recipient's text is read up to three times (its diagnostic alone, then with
    # its status and context for the status and for the reason): the cache reads it once,
    # and the cut bounds a 128 KB diagnostic (1.2 s before) to 8,000 characters - cut before
    # it becomes a cache key, so the cache never holds more than that of a text.
    return _cut_text_reason(text[:_REASON_SCAN_CHARS])


@functools.lru_cache(maxsize=_REASON_CACHE)
def _cut_text_reason(text: str) -> str | None:
    text = text.lower()
    for reason, regex in _REASON_REGEXES:
        if regex.search(text):
            return reason
    return None


def reason_for(status: str | None, text: str | None) -> str:
    """Return the Sisimai reason for a status code and a diagnostic text.

    A specific status code decides (``5.2.2`` is ``mailboxfull`` whatever the text says);
    an ambiguous or generic one (``5.0.0``, ``5.7.1``, ``5.1.1`` …) lets the text decide first,
    and falls back to its registry meaning.

    Args:
        status: an enhanced status code, or ``None``.
        text: the diagnostic (SMTP response, the MTA's explanation), or ``None``.

    Returns:
        A word of `REASONS`; ``"undefined"`` when nothing is known.
    """
    by_status = None
    ambiguous = True
    if status:
        _, key = _split_status(status)
        by_status = _STATUS_REASON.get(key)
        ambiguous = key in _AMBIGUOUS_STATUS or by_status is None
    if by_status and not ambiguous:
        return by_status
    by_text = _text_reason(text[:MAX_TEXT_CHARS]) if text else None
    return by_text or by_status or "undefined"


def infer_status(code: str | None, text: str | None, *, temporary: bool = False) -> str | None:
    """Return the enhanced status code for a recipient, inferring it when needed.

    Args:
        code: the code the report gives (a ``Status:`` value, possibly with a comment, or an
            SMTP reply code such as ``"553"``), or ``None``.
        text: the diagnostic text for this recipient, or ``None``.
        temporary: the report says the failure is temporary (a delay): the class when nothing
            else tells it.

    Returns:
        ``"5.1.1"``-style code: the given code when specific; else a code written in the text;
        else the canonical code of the reason the text shows (class from the given code, the
        SMTP reply code in the text, or `temporary`); ``None`` when nothing at all is known.
    """
    given = find_status(code) if code else None
    if given is None and code:
        # RFC 3464 allows only class 2, 4 or 5 failures; "Status: 2.0.0" is a delivery.
        match = re.match(r"\s*([245])\.(\d{1,3})\.(\d{1,3})", code)
        if match:
            given = ".".join(str(int(g)) for g in match.groups())
    # A comment after the code ("5.0.0 (recipient reached disk quota)") is diagnostic text.
    text = " ".join(t for t in (code, text) if t)[:MAX_TEXT_CHARS]
    if given and not given.endswith(".0.0"):
        return given
    written = find_status(text)
    if written and not written.endswith(".0.0"):
        if given is None or written[0] == given[0]:
            return written
        return given[0] + written[1:]
    klass = given[0] if given else None
    if klass is None:
        reply = code.strip()[:3] if code and re.match(r"\s*[245]\d\d\b", code) else None
        reply = reply or find_reply_code(text)
        klass = reply[0] if reply else ("4" if temporary else None)
    reason = _text_reason(text) if text else None
    if reason in _REASON_STATUS:
        return f"{klass or '5'}.{_REASON_STATUS[reason]}"
    if given:
        return given
    if written:
        return written
    return f"{klass}.0.0" if klass else None


def is_hard(reason: str, *, permanent: bool = True) -> bool:
    """Whether `reason` says the address itself is dead (`HARD_REASONS`).

    Args:
        reason: a word of `REASONS`.
        permanent: the status class is 5; ``notaccept`` is hard only then (a temporary
            "does not accept mail" is a server hiccup, not a null MX).

    Returns:
        ``True`` for a hard bounce.
    """
    if reason == "notaccept":
        return permanent
    return reason in HARD_REASONS


# --------------------------------------------------------------------------------------------
# Reading the MIME structure, boundedly
# --------------------------------------------------------------------------------------------

_DSN_TYPES: Final = frozenset(
    {"message/delivery-status", "message/global-delivery-status", "text/delivery-status"}
)
_MDN_TYPES: Final = frozenset(
    {"message/disposition-notification", "message/global-disposition-notification"}
)
_ARF_TYPES: Final = frozenset({"message/feedback-report"})
_RETURNED_MESSAGE_TYPES: Final = frozenset({"message/rfc822", "message/global"})
_RETURNED_HEADER_TYPES: Final = frozenset(
    {"text/rfc822-headers", "message/rfc822-headers", "message/global-headers"}
)


@attrs.define
class _Part:
    ctype: str
    message: email.message.Message
    depth: int
    inside_returned: bool  # below a message/rfc822 part: the original, not the report


@attrs.define
class _Structure:
    """What the walk over the MIME tree found."""

    report_type: str | None = None
    parts: list[_Part] = attrs.field(factory=list)


def _walk(message: email.message.Message) -> _Structure:
    out = _Structure()
    stack: list[tuple[email.message.Message, int, bool]] = [(message, 0, False)]
    while stack and len(out.parts) < MAX_PARTS:
        part, depth, inside = stack.pop()
        ctype = _content_type(part)
        out.parts.append(_Part(ctype, part, depth, inside))
        if ctype == "multipart/report" and out.report_type is None and not inside:
            out.report_type = (_param(part, "report-type") or "").lower() or None
        payload = part.get_payload()
        if not isinstance(payload, list) or depth >= 12:
            continue
        children = [child for child in payload if isinstance(child, email.message.Message)]
        below = inside or ctype in _RETURNED_MESSAGE_TYPES
        stack.extend((child, depth + 1, below) for child in reversed(children))
    if out.report_type is None:
        # A report type given on the wrong content type: "multipart/mixed; report-type=…"
        # (Exchange 2003 wrapping a DSN, dsn_15 in flufl.bounce's corpus).
        rt = _param(message, "report-type")
        if rt:
            out.report_type = rt.lower()
    return out


def _content_type(part: email.message.Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "text/plain"


def _param(part: email.message.Message, name: str) -> str | None:
    try:
        value = part.get_param(name)
    except Exception:
        return None
    if isinstance(value, tuple):  # RFC 2231 value
        value = value[2]
    return value if isinstance(value, str) else None


def _payload_bytes(part: email.message.Message) -> bytes:
    """The decoded body of a leaf part, at most about `MAX_TEXT_CHARS` bytes of it."""
    raw = part.get_payload()
    if isinstance(raw, list):
        blocks = [b for b in raw if isinstance(b, email.message.Message)]
        joined = "".join(_block_text(b) for b in blocks)
        return joined.encode("utf-8", "replace")[:MAX_TEXT_CHARS]
    if not isinstance(raw, str):
        return b""
    raw = raw[: MAX_TEXT_CHARS * 2]  # base64 is 4/3 of the decoded size
    # compat32 keeps undecodable bytes as surrogate escapes; give them back as bytes.
    data = raw.encode("ascii", "surrogateescape") if raw.isascii() else _to_bytes(raw)
    cte = str(part.get("content-transfer-encoding", "")).strip().lower()
    if cte == "base64":
        cleaned = re.sub(rb"[^A-Za-z0-9+/]", b"", data)
        cleaned = cleaned[: len(cleaned) - len(cleaned) % 4]
        try:
            data = binascii.a2b_base64(cleaned)
        except (binascii.Error, ValueError):
            return data[:MAX_TEXT_CHARS]
    elif cte == "quoted-printable":
        data = quopri.decodestring(data)
    return data[:MAX_TEXT_CHARS]


def _to_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def _decode(data: bytes, charset: str | None) -> str:
    codec = None
    if charset:
        # A text codec that can replace (as headers._codec_for checks): "base64", "idna" or a
        # NUL in the name raised here, and the whole report was lost (analyze_report: None).
        with contextlib.suppress(LookupError, UnicodeError, ValueError):
            found = codecs.lookup(charset.strip().strip('"').lower()).name
            b"\xff".decode(found, "replace")
            codec = found
    for name in (codec, "utf-8"):
        if name:
            with contextlib.suppress(UnicodeDecodeError, LookupError):
                return data.decode(name)
    # Neither declared nor UTF-8: keep every byte (latin-1 maps each to one character).
    return data.decode(codec or "latin-1", "replace")


def _charset(part: email.message.Message) -> str | None:
    try:
        cs = part.get_content_charset()
    except Exception:
        return None
    return cs if isinstance(cs, str) else None


def _block_text(block: email.message.Message) -> str:
    """Serialise one header block of a message/delivery-status part back to text."""
    lines = [f"{name}: {value}" for name, value in block.raw_items()]
    rest = block.get_payload()
    text = "\n".join(lines) + "\n"
    if isinstance(rest, str) and rest.strip():
        text += rest if rest.endswith("\n") else rest + "\n"
    return text + "\n"


def _part_text(part: email.message.Message, ctype: str) -> str:
    """The decoded text of a leaf part; HTML reduced to its text."""
    payload = part.get_payload()
    if isinstance(payload, list):
        # message/delivery-status and friends: the parser split them into header blocks.
        text = "".join(_block_text(b) for b in payload if isinstance(b, email.message.Message))
        cte = str(part.get("content-transfer-encoding", "")).strip().lower()
        if cte == "quoted-printable":
            text = quopri.decodestring(text.encode("utf-8", "replace")).decode("utf-8", "replace")
        return text[:MAX_TEXT_CHARS]
    text = _decode(_payload_bytes(part), _charset(part))
    if ctype == "text/html":
        text = _html_to_text(text)
    return text.replace("\r\n", "\n").replace("\r", "\n")


_HTML_DROP: Final = re.compile(r"<(script|style|head)\b[^>]*>.*?</\1\s*>", re.I | re.S)
_HTML_BREAK: Final = re.compile(r"<(?:br|/p|/div|/tr|/li|/h\d|p|div|tr|li)\b[^>]*>", re.I)
_HTML_TAG: Final = re.compile(r"<[^<>]{0,2000}>")


def _html_to_text(markup: str) -> str:
    markup = _HTML_DROP.sub(" ", markup)
    markup = _HTML_BREAK.sub("\n", markup)
    markup = _HTML_TAG.sub("", markup)
    return html.unescape(markup).replace("\xa0", " ")


# --------------------------------------------------------------------------------------------
# Report fields: RFC 3464 §2.2-2.3, RFC 5965 §3.1, RFC 8098 §3.2
# --------------------------------------------------------------------------------------------

_FIELD_LINE: Final = re.compile(r"([A-Za-z][A-Za-z0-9-]{0,60})[ \t]*:[ \t]*(.*)")
_PER_RECIPIENT: Final = frozenset(
    {
        "final-recipient",
        "original-recipient",
        "x-actual-recipient",
        "action",
        "status",
        "diagnostic-code",
        "remote-mta",
        "last-attempt-date",
        "will-retry-until",
        "final-log-id",
    }
)


def _field_blocks(text: str) -> list[dict[str, str]]:
    """Split report text into blocks of fields (blank lines separate blocks, RFC 3464 §2.1).

    Lenient: a line of white space counts as blank, continuation lines are unfolded, and a
    recipient field met twice in one block starts a new block (some MTAs omit the blank line
    between recipients).
    """
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last: str | None = None
    for line in text.split("\n"):
        if not line.strip():
            if current:
                blocks.append(current)
            current, last = {}, None
            continue
        if line[0] in " \t" and last is not None:
            current[last] += " " + line.strip()
            continue
        match = _FIELD_LINE.match(line)
        if not match:
            last = None
            continue
        name, value = match.group(1).lower(), match.group(2).strip()
        if name in current and name in _PER_RECIPIENT and "recipient" in name:
            blocks.append(current)
            current = {}
        current.setdefault(name, value)
        last = name
    if current:
        blocks.append(current)
    return blocks


_ADDR_CORE: Final = r"[\w.!#$%&'*+/=?^`{|}~-]{1,200}@[\w-]+(?:\.[\w-]+)+"
_ADDRESS: Final = re.compile(rf"(?<![\w.!#$%&'*+/=?^`{{|}}~-])({_ADDR_CORE})")
_ADDR_PREFIX: Final = re.compile(r"^(?:smtp|rfc822|mailto|sip)[:=]", re.IGNORECASE)


def _clean_address(raw: str) -> str | None:
    addr = _ADDR_PREFIX.sub("", raw.strip().strip("<>\"'[](),;:").strip())
    addr = addr.rstrip(".").lstrip(".")
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain or " " in addr or len(addr) > 254:
        return None
    return addr


def _report_address(value: str | None) -> str | None:
    """The address in a ``Final-Recipient``/``Original-Recipient`` value (RFC 3464 §2.3.1-2)."""
    if not value:
        return None
    addr_type, sep, rest = value.partition(";")
    if sep:
        if addr_type.strip().lower() not in ("rfc822", "utf-8", "smtp", "internet", "unknown"):
            # x400, x500 …: not an address we could have sent to, unless one hides in it.
            match = _ADDRESS.search(rest)
            return _clean_address(match.group(1)) if match else None
        value = rest
    value = value.strip()
    if "<" in value and ">" in value:
        value = value[value.find("<") + 1 : value.find(">")]
    addr = _clean_address(value)
    if addr and "." not in addr.rpartition("@")[2]:
        # "userx@sims-ms-daemon": an internal mailbox name, not the address sent to.
        return None
    return addr


def _strip_type(value: str | None) -> str | None:
    """``"smtp; 550 5.1.1 …"`` → ``"550 5.1.1 …"``: drop the diagnostic/MTA type."""
    if not value:
        return None
    kind, sep, rest = value.partition(";")
    if sep and re.fullmatch(r"\s*[\w-]{1,20}\s*", kind):
        value = rest
    value = " ".join(value.split())
    return value or None


# --------------------------------------------------------------------------------------------
# The envelope: does this look like mail from a mail system?
# --------------------------------------------------------------------------------------------

_DAEMON_LOCAL: Final = re.compile(
    r"^(?:mailer[-_.]?daemon|mail[-_.]?daemon|maildaemon|postmaster|mdaemon|mail[-_.]?delivery"
    r"(?:[-_.]?(?:system|subsystem|service))?|mail[-_.]?administrator|mailadm|mailer"
    r"|bounces?|ndr|nobody|daemon|microsoftexchange[0-9a-f]*|mail[-_.]?system|e500_smtp_mail_service"
    r"|smtp[-_.]?(?:gateway|server|mail[-_.]?service)|(?:[\w.-]*[-_.])?mailer[-_.]?daemon)$",
    re.IGNORECASE,
)
_DAEMON_NAME: Final = re.compile(
    r"mailer[- ]?daemon|mail delivery (?:system|subsystem|service)|delivery (?:sub)?system"
    r"|internet mail delivery|postmaster|mail administrator|mail system|mail delivery"
    r"|e-?mail interconnect|mail ?server|\bmta\b|lsmtp|smtp",
    re.IGNORECASE,
)
# Lower-case patterns: `_is_bounce_subject` lower-cases the subject first.
_REPLY_PREFIX: Final = re.compile(
    r"^\s*(?:re|fw|fwd|aw|wg|sv|vs|rif|r|i|tr|antw|odp|vl|ynt|enc|rv|res|回复|回覆|答复|转发)\s*"
    r"(?:\[\d+\])?\s*[:\uff1a]",  # ASCII or full-width colon
)
_BOUNCE_SUBJECT: Final = re.compile(
    r"undeliver|undelivered|non[- ]?deliver|delivery (?:status )?(?:notification|failure|failed"
    r"|problem|report|error|has failed|notification)|mail delivery (?:failed|failure|problem"
    r"|warning)|returned mail|mail returned|returned to sender|failure notice|failure delivery"
    r"|delivery failure|could not be delivered|not delivered|delivery (?:delayed|warning)"
    r"|delayed mail|message delayed|mail system error|warning: message|failed mail"
    r"|nondeliverable|rejected mail|mail not delivered|unable to deliver|delivery notification"
    r"|unzustellbar|nicht zustellbar|zustellung fehlgeschlagen|non remis|non distribuable"
    r"|impossible de remettre|échec de (?:la )?remise|no se puede entregar|no entregado"
    r"|error de entrega|impossibile recapitare|non recapitat|mancato recapito|onbestelbaar"
    r"|niet bezorgd|olevererbart|kan ikke leveres|kunne ikke leveres|ei voitu toimittaa"
    r"|niedostarczal|nie dostarczono|não é possível entregar|nao entregue|não entregue"
    r"|nedoručitelné|kézbesíthetetlen|teslim edilemedi|не удается доставить|недоставлен"
    r"|не доставлен|配信不能|未送達|送信失敗|配信エラー|エラーメール|无法投递|投递失败|退信"
    r"|無法傳遞|배달되지 않음|mail failure|mail error",
)
# A gateway that annotates the original subject: "RE: Your order : non remis (delivery failed)".
_BOUNCE_SUBJECT_SUFFIX: Final = re.compile(
    r"(?:\((?:delivery failed|undeliverable|non remis)\)|:\s*(?:non remis|undeliverable"
    r"|delivery failed))\s*$",
)
_DELAY_SUBJECT: Final = re.compile(
    r"delay|warning: message|still being retried|not yet been delivered|verzögert|retard"
    r"|retrasad|ritardat|vertraagd|försenad|遅延|延迟",
    re.IGNORECASE,
)
_AUTO_REPLY_SUBJECT: Final = re.compile(
    r"out of (?:the )?office|automatic reply|auto[- ]?reply|autoreply|abwesen|absence"
    r"|vacation|away from|réponse automatique|respuesta automática|risposta automatica",
    re.IGNORECASE,
)


def _is_daemon(addresses: Iterable[Address]) -> bool:
    for a in addresses:
        if not a.addr or a.addr == "<>":
            return True
        if _DAEMON_LOCAL.match(a.local) or _DAEMON_NAME.search(a.name or ""):
            return True
    return False


# --------------------------------------------------------------------------------------------
# The bounce text: phrases, the returned message, the recipients
# --------------------------------------------------------------------------------------------

_FAILURE_PHRASE: Final = re.compile(
    r"could ?n[o']t be deliver|could not deliver|was not deliver|were not deliver|not be deliver"
    r"|wasn't able to deliver|was unable to deliver|unable to deliver|cannot be deliver"
    r"|can't be deliver|couldn't be deliver|undeliverable|undelivered|delivery (?:has )?failed"
    r"|delivery to the following|failed permanently|permanent (?:fatal )?error|fatal error"
    r"|did not reach|didn't reach|following (?:address(?:\(es\)|es)?|recipients?(?:\(s\))?)"
    r" (?:failed|had|could)|addresses had|delivery problems?|returned to (?:you|sender)"
    r"|returning message|message (?:was )?(?:not accepted|rejected|bounced)|failed recipients?"
    r"|delivery (?:status )?notification|mail delivery failed|not delivered|delivery failure"
    r"|(?:has|have) been returned|returned because|returned mail"
    r"|non-delivery|message could not|rejected by|has not yet been delivered|has been delayed"
    r"|has not been delivered|was delayed|is delayed|message delayed|delivery attempts will"
    r"|will (?:continue|keep) (?:to )?try|postponed|encountered delivery|failed to deliver"
    r"|no valid recipients|deliver(?:y)? (?:was )?aborted|delevery|error (?:occurred )?while"
    r"|nicht zugestellt|konnte nicht|zustellung|n'a pas pu [eê]tre (?:remis|d[eé]livr)"
    r"|non remis|impossible de (?:remettre|distribuer)|no (?:pudo|ha podido) ser entregado"
    r"|no se pudo entregar|não (?:pôde|pode) ser entregue|nao pode ser|non [èe] stato possibile"
    r"|impossibile recapitare|kon niet worden (?:afgeleverd|bezorgd)|kunde inte levereras"
    r"|kunne ikke leveres|ei voitu toimittaa|nie (?:może|mogła|została) (?:zostać )?dostarczona"
    r"|не может быть доставлено|не (?:было )?доставлено|не удалось доставить|не доставлено"
    r"|配信できませんでした|送信できませんでした|届きませんでした|配送に失敗|送達できません"
    r"|无法投递|投递失败|无法送达|发送失败|未能送达|退回",
    re.IGNORECASE,
)
_DELAY_PHRASE: Final = re.compile(
    r"has not yet been delivered|not yet been delivered|(?:has been|was|is|been) delayed"
    r"|message delayed|will (?:continue|keep) (?:to )?try|will be retried|still being retried"
    r"|warning only|(?:just|only) a warning|delivery attempts will continue|postponed"
    r"|will continue trying|no action is required|do not need to resend|don't need to resend"
    r"|no need to resend|not resend your (?:original )?message|will retry|retrying"
    r"|temporarily deferred|delivery is delayed|noch nicht zugestellt|verzögert",
    re.IGNORECASE,
)
_PERMANENT_PHRASE: Final = re.compile(
    r"permanent(?:ly)? (?:fatal )?(?:error|failure|failed)|failed permanently|i've given up"
    r"|i have given up|giving up|not going to try again|will not (?:try|be retried)"
    r"|removed from the (?:mail )?queue|returning message|message will be deleted from queue"
    r"|could not be delivered for \d|not delivered within|was not delivered|unrecoverable",
    re.IGNORECASE,
)
# Where the returned (original) message starts in a plain-text bounce. Everything after it is
# the sender's own mail: its addresses are not failed recipients. The leading run takes the
# dashes of "--- Below this line ..." too: an alternative of its own for them, "(?:-+ ?)?",
# could split a line of dashes between the two in quadratically many ways, tried at every
# dash (8 KB of "-" took 13 s). A marker that needs a dash just before it says so with a
# look-behind.
_RETURNED_MARKER: Final = re.compile(
    r"^[ \t>|*=-]*(?:"
    r"below (?:this|the next) line is a copy"
    r"|this is a copy of (?:the|your) message"
    r"|(?:here is |included is |attached is )?a copy of (?:the |your )?"
    r"(?:first part of the |original )?"
    r"(?:message|mail)"
    r"|(?:the )?original message (?:follows|attached|is attached|headers?|details"
    r"|as received"
    r"|below|text)"
    r"|original message as received|original message -+"
    r"|(?:start of )?returned (?:message|mail)"
    r"|(?:the )?header of the (?:original|source) (?:message|mail)"
    r"|message header(?:s)? follows?|message headers follow"
    r"|message body suppressed|unsent message below"
    r"|your message reads \(in part\)|the first \d+ lines of your original message"
    r"|the header and top \d+ lines|included is a copy of the message header"
    r"|(?:a )?summary of the undelivered message"
    r"|(?:mensaje|message|mensagem|messaggio|nachricht) (?:original|d'origine|originale)"
    r"|original message headers|(?<=-) ?forwarded message -+|attachment is a copy of the message"
    r"|undelivered message|returned message"
    r")",
    re.IGNORECASE | re.MULTILINE,
)
# Header-like lines of a quoted original: their addresses are the sender's, not recipients.
_HEADER_LINE: Final = re.compile(
    r"^[ \t>*|-]*(?:from|reply-to|sender|return-path|errors-to|message-id|in-reply-to|references"
    r"|content-id|received|list-[\w-]+|x-[\w-]+|dkim-signature|date|subject|delivered-to"
    r"|envelope-from|original-mail-from|mail from|sender address|de|von|от|差出人|发件人)\s*:",
    re.IGNORECASE,
)
_TO_LINE: Final = re.compile(
    r"^[ \t>*|-]*(?:to|cc|bcc|an|à|para|a|per|aan|кому|宛先|收件人)\s*:", re.I
)
_URL: Final = re.compile(r"(?:https?|ftp)://\S+|www\.\S+", re.IGNORECASE)
# Words that put an address on a line in the role of a recipient.
_RECIPIENT_WORDS: Final = re.compile(
    r"recipient|address|addressed|deliver|undeliverable|failed|reach|mailbox|account|user(?:id)?:"
    r"|unknown user|user unknown|no such user|intended|destinat|empf[äa]nger|adresse|indirizzo"
    r"|endereço|dirección|получател|адрес|宛先|收件人|收信人",
    re.IGNORECASE,
)
_MSGID_LINE: Final = re.compile(
    r"^[ \t>*|-]*(?:original-)?message-id[ \t]*:[ \t]*(<[^<>\s]{1,500}>|[^<>\s]+@[^<>\s,]+)",
    re.IGNORECASE | re.MULTILINE,
)
_SYSTEM_LOCALS: Final = re.compile(
    r"^(?:postmaster|mailer[-_]?daemon|abuse|hostmaster|webmaster|noc|root|support"
    r"|help|helpdesk|security)$",
    re.IGNORECASE,
)


@attrs.define
class _Candidate:
    address: str
    strong: bool
    line: int
    to_line: bool = False


def _cut_returned(text: str) -> tuple[str, str]:
    """Split a bounce text into the MTA's report and the returned message after it."""
    match = _RETURNED_MARKER.search(text)
    if not match:
        return text, ""
    start = text.rfind("\n", 0, match.start()) + 1
    return text[:start], text[start:]


def _candidates(text: str, excluded: set[str], senders: set[str]) -> list[_Candidate]:
    """Find the addresses in a bounce's report text.

    An address is strong when it sits where MTAs put failed recipients: first on its line,
    on a line with an SMTP code, or after a recipient word.

    `excluded` addresses are never candidates (the report's own); `senders` (the original's
    sender) only when they are not strong — some people do mail themselves.
    """
    lines = text.split("\n")
    out: list[_Candidate] = []
    seen: dict[str, _Candidate] = {}
    read = 0
    for number, line in enumerate(lines):
        if "@" not in line or _HEADER_LINE.match(line):
            continue
        scan = _URL.sub(" ", line)
        lowered = scan.lower()
        if "message-id" in lowered or "msg-id" in lowered:
            continue
        to_line = bool(_TO_LINE.match(scan))
        # Rule 6: per address, only a window of the text before it is read, and what holds
        # for the whole line is computed once. Reading all of the line before every address
        # made a long line of addresses quadratic (32 KB of "a@b." took 13 s).
        line_code: bool | None = None
        for index, match in enumerate(_ADDRESS.finditer(scan)):
            read += 1
            if read > _MAX_ADDRESSES_READ:
                return out  # Rule 6: a report names at most MAX_RECIPIENTS; this is junk
            addr = _clean_address(match.group(1))
            if addr is None:
                continue
            key = addr.lower()
            if key in excluded or _SYSTEM_LOCALS.match(key.rpartition("@")[0]):
                continue
            if key in seen and (seen[key].strong or to_line):
                continue  # nothing below can change what is known of it
            before = scan[max(0, match.start() - _BEFORE_CHARS) : match.start()]
            if _SENDER_BEFORE.search(before[-_SENDER_WORDS_CHARS:]):
                continue  # "not accepting mail from x@…", "sent by x@…": the sender
            # Only the line's first address can stand first: any later one has an "@" before
            # it, which is not leading junk.
            first_token = index == 0 and bool(_LEADING_JUNK.fullmatch(scan, 0, match.start()))
            if line_code is None and not first_token:
                line_code = bool(_ENHANCED.search(scan) or _SMTP_CODE_ANYWHERE.search(scan))
            strong = not to_line and bool(
                first_token
                or _EXCHANGE_ADDRESS.search(before)
                or line_code
                or _RECIPIENT_WORDS.search(before[-80:])
            )
            if key in senders and not strong:
                continue
            if key in seen:
                seen[key].strong = seen[key].strong or strong
                continue
            candidate = _Candidate(addr, strong, number, to_line)
            seen[key] = candidate
            out.append(candidate)
            if len(out) >= MAX_RECIPIENTS * 2:
                return out
    return out


def _previous_nonblank(lines: list[str], number: int) -> str:
    for back in range(number - 1, max(number - 4, -1), -1):
        if lines[back].strip():
            return lines[back]
    return ""


#: How many address occurrences `_candidates` reads in one report text: each costs a few
#: patterns, and a 512 KB line of "a@b." holds 100,000 of them (2.6 s).
_MAX_ADDRESSES_READ: Final = 2_000
#: How much of a line before an address `_candidates` reads: the words that tell a recipient
#: or a sender ("mail from", "recipient:", "dda:SMTP=") stand right before it.
_BEFORE_CHARS: Final = 200
_LEADING_JUNK: Final = re.compile(r"[\s*>\-•\[<\"'(:|=]*(?:\d{1,3}[.)]\s*)?")
_EXCHANGE_ADDRESS: Final = re.compile(r"(?:smtp|rfc-?822)[=:]$|dda:smtp=", re.IGNORECASE)
_SMTP_CODE_ANYWHERE: Final = re.compile(r"(?<![\d.])[45][0-5]\d(?![\d.])")
#: How much of the text before an address `_SENDER_BEFORE` reads: its words end right there.
_SENDER_WORDS_CHARS: Final = 60
_SENDER_BEFORE: Final = re.compile(
    r"(?:mail|messages?|e-?mails?) from\s*[<\"']?$|sent by\s*[<\"']?$", re.IGNORECASE
)


def _segments(text: str, chosen: list[_Candidate]) -> dict[str, str]:
    """Each recipient's own stretch of text: from its line to the next recipient's line."""
    lines = text.split("\n")
    ordered = sorted(chosen, key=lambda c: c.line)
    out: dict[str, str] = {}
    for i, c in enumerate(ordered):
        end = ordered[i + 1].line if i + 1 < len(ordered) else len(lines)
        if end <= c.line:
            end = c.line + 1
        out[c.address.lower()] = "\n".join(lines[c.line : min(end, c.line + 40)])[:4000]
    return out


def _message_id_in_text(text: str, own: str | None) -> str | None:
    for match in _MSGID_LINE.finditer(text[:MAX_TEXT_CHARS]):
        mid = normalize_msg_id(match.group(1))
        if mid and mid != own:
            return mid
    return None


# --------------------------------------------------------------------------------------------
# Putting it together
# --------------------------------------------------------------------------------------------


@attrs.define
class _Evidence:
    """The facts gathered once and shared by the decision steps."""

    message: email.message.Message
    headers: Headers
    structure: _Structure
    reasons: list[str] = attrs.field(factory=list)
    _texts: list[str] | None = None
    _returned: tuple[Headers | None, str] | None = None
    _envelope: tuple[int, tuple[str, ...]] | None = None

    def envelope(self) -> tuple[int, list[str]]:
        """`_envelope_score`, computed once."""
        if self._envelope is None:
            score, why = _envelope_score(self)
            self._envelope = (score, tuple(why))
        return self._envelope[0], list(self._envelope[1])

    def top_texts(self) -> list[str]:
        """Human-readable texts of the report itself (not of a returned message)."""
        if self._texts is None:
            texts: list[str] = []
            total = 0
            for p in self.structure.parts:
                if p.inside_returned or total > MAX_TEXT_CHARS * 2:
                    continue
                is_text = p.ctype in ("text/plain", "text/html") or (
                    p.ctype.startswith("multipart/") and not p.message.is_multipart()
                )
                if is_text and not isinstance(p.message.get_payload(), list):
                    text = _part_text(p.message, p.ctype)
                    total += len(text)
                    texts.append(text)
            self._texts = texts
        return self._texts

    def returned(self) -> tuple[Headers | None, str]:
        """The returned original's headers (if a part carries them) and where they came from."""
        if self._returned is None:
            found: tuple[Headers | None, str] = (None, "")
            parts = self.structure.parts
            # Inside a report, the returned part belongs to the report: skip a wrapping
            # message/rfc822 that holds the whole report (Exchange forwarding a DSN).
            in_report = any(p.ctype == "multipart/report" for p in parts)
            for p in parts:
                if p.ctype in _RETURNED_MESSAGE_TYPES:
                    inner = p.message.get_payload()
                    sub = inner[0] if isinstance(inner, list) and inner else None
                    if isinstance(sub, email.message.Message):
                        if in_report and _content_type(sub) == "multipart/report":
                            continue
                        found = (parse_headers(sub), p.ctype)
                        break
                    if isinstance(inner, str) and inner.strip():
                        found = (parse_headers(inner[:MAX_TEXT_CHARS]), p.ctype)
                        break
                elif p.ctype in _RETURNED_HEADER_TYPES:
                    found = (parse_headers(_part_text(p.message, p.ctype)), p.ctype)
                    break
            self._returned = found
        return self._returned


def _original_message_id(ev: _Evidence, extra_texts: Iterable[str] = ()) -> str | None:
    returned, _ = ev.returned()
    own = ev.headers.message_id
    if returned is not None and returned.message_id and returned.message_id != own:
        return returned.message_id
    for text in (*extra_texts, *ev.top_texts()):
        mid = _message_id_in_text(text, own)
        if mid:
            return mid
    return None


def _parts_of(ev: _Evidence, types: frozenset[str], *, inside: bool = False) -> Iterator[_Part]:
    for p in ev.structure.parts:
        if p.ctype in types and (inside or not p.inside_returned):
            yield p


def _complaint(ev: _Evidence) -> Report | None:
    parts = list(_parts_of(ev, _ARF_TYPES))
    if ev.structure.report_type != "feedback-report" and not parts:
        return None
    fields: dict[str, str] = {}
    for p in parts:
        for block in _field_blocks(_part_text(p.message, p.ctype)):
            for k, v in block.items():
                fields.setdefault(k, v)
    ev.reasons.append(
        "multipart/report; report-type=feedback-report (RFC 5965)"
        if ev.structure.report_type == "feedback-report"
        else "message/feedback-report part (RFC 5965)"
    )
    feedback_type = (fields.get("feedback-type") or "").strip().lower() or None
    if feedback_type:
        ev.reasons.append(f"Feedback-Type: {feedback_type}")
    return Report(
        kind="complaint",
        bounce=None,
        original_message_id=_original_message_id(ev),
        feedback_type=feedback_type,
        reasons=tuple(ev.reasons),
    )


def _mdn(ev: _Evidence) -> Report | None:
    parts = list(_parts_of(ev, _MDN_TYPES))
    if ev.structure.report_type != "disposition-notification" and not parts:
        return None
    fields: dict[str, str] = {}
    for p in parts:
        for block in _field_blocks(_part_text(p.message, p.ctype)):
            for k, v in block.items():
                fields.setdefault(k, v)
    disposition = (fields.get("disposition") or "").lower()
    ev.reasons.append("multipart/report; report-type=disposition-notification (RFC 8098)")
    original = normalize_msg_id(fields.get("original-message-id") or "")
    original = original or _original_message_id(ev)
    text = "\n".join(ev.top_texts())
    subject = (ev.headers.subject or "")[:300]
    auto = (ev.headers.get("auto-submitted") or "").lower()
    rejected = "reject" in auto or re.search(r"reject", subject + "\n" + text[:4000], re.I)
    if "deleted" in disposition and "automatic-action" in disposition and rejected:
        # RFC 5429 §2.2.2: a Sieve "reject" answers with an MDN whose disposition is
        # "deleted"; the message never reached the mailbox: a bounce, not a read receipt.
        ev.reasons.append(f"Disposition: {disposition} with a rejection (RFC 5429 Sieve reject)")
        address = _report_address(fields.get("original-recipient")) or _report_address(
            fields.get("final-recipient")
        )
        candidates = _candidates(_cut_returned(text)[0], *_excluded(ev))
        if address is None and candidates:
            address = candidates[0].address
        recipients: tuple[BouncedRecipient, ...] = ()
        if address:
            body = _cut_returned(text)[0].strip()[:2000]
            recipients = (_recipient(address, None, body or None, action="failed"),)
        return Report(
            kind="bounce",
            bounce=Bounce(recipients, original, None),
            original_message_id=original,
            feedback_type=None,
            reasons=tuple(ev.reasons),
        )
    if disposition:
        ev.reasons.append(f"Disposition: {disposition}")
    return Report(
        kind="receipt",
        bounce=None,
        original_message_id=original,
        feedback_type=None,
        reasons=tuple(ev.reasons),
    )


def _recipient(
    address: str,
    status_field: str | None,
    diagnostic: str | None,
    *,
    action: str,
    remote_mta: str | None = None,
    context: str | None = None,
) -> BouncedRecipient:
    """Build one recipient: refine the status (Rule 5), pick the reason, hard or soft."""
    delayed = action == "delayed"
    text = " ".join(t for t in (diagnostic, status_field, context) if t)
    status = infer_status(status_field, text, temporary=delayed)
    if status is None and action == "failed":
        status = "5.0.0"
    reason = reason_for(status, text)
    permanent = bool(status and status.startswith("5"))
    # A delayed or delivered recipient is not known dead, whatever the text says.
    hard = action == "failed" and is_hard(reason, permanent=permanent)
    return BouncedRecipient(
        address=address,
        status=status,
        reason=reason,
        permanent=permanent,
        hard=hard,
        diagnostic=diagnostic,
        action=action,
        remote_mta=remote_mta,
    )


def _normal_action(value: str | None, status: str | None) -> str:
    """RFC 3464 §2.3.3 action, leniently: "failure", "error" (OpenSMTPD), comments after it."""
    word = (value or "").strip().lower()
    for action, prefixes in (
        ("failed", ("fail", "error", "bounce", "reject")),
        ("delayed", ("delay", "defer", "retry")),
        ("delivered", ("deliver",)),
        ("relayed", ("relay",)),
        ("expanded", ("expand",)),
    ):
        if word.startswith(prefixes):
            return action
    code = find_status(status or "") or (status or "").strip()[:1]
    if code.startswith("4"):
        return "delayed"
    if code.startswith("2"):
        return "delivered"
    return "failed"


def _excluded(ev: _Evidence) -> tuple[set[str], set[str]]:
    """Addresses that are not failed recipients: the report's own, and the original's sender."""
    h = ev.headers
    own = {a.addr.lower() for a in (*h.from_, *h.sender, *h.to, *h.cc, *h.reply_to) if a.addr}
    # Not X-Original-To: Exchange's CDO writes the failed recipient there (microsoft_03).
    for name in ("return-path", "delivered-to", "errors-to"):
        for value in h.get_all(name):
            own.update(a.addr.lower() for a in parse_addresses(value) if a.addr)
    senders: set[str] = set()
    returned, _ = ev.returned()
    if returned is not None:
        senders.update(
            a.addr.lower()
            for a in (*returned.from_, *returned.sender, *returned.reply_to)
            if a.addr
        )
        for value in returned.get_all("return-path"):
            senders.update(a.addr.lower() for a in parse_addresses(value) if a.addr)
    return own, senders


def _is_list_post(h: Headers) -> bool:
    """A mailing-list post: its To is the list, not the member whose mailbox failed."""
    precedence = (h.get("precedence") or "").lower()
    return any(
        name in h for name in ("list-id", "list-post", "x-beenthere", "x-mailman-version")
    ) or (precedence in ("list", "bulk"))


def _text_recipients(
    ev: _Evidence, text: str, *, temporary: bool
) -> tuple[list[BouncedRecipient], str]:
    """Failed recipients read from a bounce's prose (Rule 3: only what the fields lack)."""
    report, after = _cut_returned(text)
    excluded, senders = _excluded(ev)
    failed_header = [
        a.addr
        for value in ev.headers.get_all("x-failed-recipients")
        for a in parse_addresses(value)
        if "@" in a.addr
    ]
    candidates = _candidates(report, excluded, senders)
    strong = [c for c in candidates if c.strong]
    weak = [c for c in candidates if not c.strong and not c.to_line]
    quoted_to = [c for c in candidates if c.to_line]
    chosen = (
        strong or (weak if len(weak) <= 3 else []) or (quoted_to if len(quoted_to) == 1 else [])
    )
    how = "addresses in the bounce text"
    if failed_header:
        # Exim and Gmail name the failed recipients in a header: authoritative.
        by_key = {c.address.lower(): c for c in candidates}
        chosen = [by_key.get(a.lower()) or _Candidate(a, True, -1) for a in failed_header]
        how = "X-Failed-Recipients"
    if not chosen:
        chosen = _bare_local_recipients(ev, report)
        how = "local names under a recipient list, at the reporting domain"
    if not chosen:
        returned, _ = ev.returned()
        if returned is None and after:
            returned = parse_headers(_to_bytes(after.lstrip(" \t\n-=*>"))[:65536])
        if returned is not None and not _is_list_post(returned) and not returned.cc:
            addrs = [a for a in returned.to if "@" in a.addr and a.addr.lower() not in excluded]
            if len(addrs) == 1:
                # The original went to one address only: that is the one that failed.
                chosen = [_Candidate(addrs[0].addr, False, -1)]
                how = "the only To address of the returned message"
    segments = _segments(report, [c for c in chosen if c.line >= 0])
    whole = report.strip()[:8000]
    chosen = chosen[:MAX_RECIPIENTS]
    # Every chosen address is taken out of the texts read for a reason, not only each
    # recipient's own: recipients listed on one line then share one text, which the reason
    # patterns read once (Rule 6; 100 recipients on a long line took 2 s).
    strip = _address_stripper([c.address for c in chosen])
    out: list[BouncedRecipient] = []
    seen: set[str] = set()
    for c in chosen:
        key = c.address.lower()
        if key in seen:
            continue
        seen.add(key)
        own = segments.get(key, "")
        informative = own and (
            find_status(own) or find_reply_code(own) or _text_reason(strip(own))
        )
        diagnostic = " ".join((own if informative else whole).split())[:1000] or None
        out.append(
            _recipient(
                c.address,
                None,
                strip(diagnostic) if diagnostic else None,
                action="delayed" if temporary else "failed",
            )
        )
    return out, how


_BARE_LOCAL: Final = re.compile(r"[ \t]*([A-Za-z0-9][A-Za-z0-9._-]{0,63})[ \t]*")


def _bare_local_recipients(ev: _Evidence, report: str) -> list[_Candidate]:
    """Recipients the receiving MTA lists by local name only (AOL lists "screenname").

    Only right under a line that introduces recipients ("… the following recipients …:"),
    and only in a report from a mail system of that domain: the name is local to it.
    """
    daemons = [a for a in ev.headers.from_ if a.domain and _is_daemon((a,))]
    if not daemons:
        return []
    domain = daemons[0].domain
    lines = report.split("\n")
    out: list[_Candidate] = []
    for number, line in enumerate(lines):
        match = _BARE_LOCAL.fullmatch(line)
        if not match or not line.strip():
            continue
        previous = _previous_nonblank(lines, number)
        introduced = previous.rstrip().endswith(":") and _RECIPIENT_WORDS.search(previous)
        if introduced or (out and out[-1].line == number - 1):
            if _SYSTEM_LOCALS.match(match.group(1)):
                continue
            out.append(_Candidate(f"{match.group(1)}@{domain}", True, number))
        if len(out) >= MAX_RECIPIENTS:
            break
    return out


def _strip_address(text: str, address: str) -> str:
    # An address like "nosuchuser@…" must not read as the reason "no such user".
    return _address_stripper([address])(text)


# An address as it stands in prose; `_address_stripper` compares it with the ones it removes.
_ADDRESS_TOKEN: Final = re.compile(r"[^\s<>()\[\],;:\"'@]+@[^\s<>()\[\],;:\"'@]+")


def _address_stripper(addresses: list[str]) -> Callable[[str], str]:
    """`_strip_address` for several addresses at once, case-insensitively.

    One fixed pattern finds the address-shaped words and a set says which to blank: a pattern
    compiled per address would fill the `re` module's cache, shared with the host, with one
    entry per bounced address.
    """
    keys = {a.lower() for a in addresses}

    def blank(match: re.Match[str]) -> str:
        word = match.group(0)
        core = word.rstrip(".")  # the end of a sentence
        low = core.lower()
        if low in keys:
            return " " + word[len(core) :]
        after = low.rpartition("=")[2]  # Exchange's "dda:SMTP=jo@example.com"
        if after != low and after in keys:
            return word[: len(core) - len(after)] + " " + word[len(core) :]
        return word

    return lambda text: _ADDRESS_TOKEN.sub(blank, text) if keys else text


def _dsn_blocks(ev: _Evidence, parts: list[_Part]) -> tuple[list[dict[str, str]], bool]:
    """The field blocks of the delivery-status parts, or of the text when they have none."""
    blocks: list[dict[str, str]] = []
    for p in parts:
        blocks.extend(_field_blocks(_part_text(p.message, p.ctype)))
    if any(_is_recipient_block(b) for b in blocks):
        return blocks, False
    # Broken boundaries, a mislabelled part, or the fields pasted into the text: read them
    # wherever they are (RFC 3464 fields are unambiguous enough to find in plain text).
    from_text = False
    for text in ev.top_texts():
        if re.search(r"^(?:final|original)-recipient[ \t]*:", text, re.I | re.M):
            more = _field_blocks(text)
            if any(_is_recipient_block(b) and ("action" in b or "status" in b) for b in more):
                blocks.extend(more)
                from_text = True
    return blocks, from_text


def _dsn_recipients(blocks: list[dict[str, str]], text: str) -> list[BouncedRecipient]:
    """One `BouncedRecipient` per recipient block (RFC 3464 §2.3), one per address."""
    recipients: list[BouncedRecipient] = []
    seen: dict[str, int] = {}
    for b in blocks[: MAX_RECIPIENTS * 2]:
        address = (
            _report_address(b.get("original-recipient"))
            or _report_address(b.get("final-recipient"))
            or _report_address(b.get("x-actual-recipient"))
        )
        if address is None:
            continue
        diagnostic = _strip_type(b.get("diagnostic-code"))
        context = None
        if diagnostic is None or not _text_reason(diagnostic):
            # The DSN gives no (useful) diagnostic: the human-readable part may, next to the
            # address (Postfix and Sendmail explain there what the fields leave out).
            context = _context_for(text, address, b)
        r = _recipient(
            address,
            b.get("status"),
            diagnostic,
            action=_normal_action(b.get("action"), b.get("status")),
            remote_mta=_strip_type(b.get("remote-mta")),
            context=context,
        )
        key = address.lower()
        if key in seen:
            # One address, several blocks (aliases): keep the most severe.
            i = seen[key]
            if _SEVERITY[r.action or ""] > _SEVERITY[recipients[i].action or ""]:
                recipients[i] = r
            continue
        seen[key] = len(recipients)
        recipients.append(r)
    return recipients


def _delivery_status(ev: _Evidence) -> Report | None:
    parts = list(_parts_of(ev, _DSN_TYPES))
    envelope_ok = ev.envelope()[0] >= 2
    if not parts and envelope_ok:
        # A DSN forwarded inside a message/rfc822 by a gateway (Exchange 2003 did this).
        parts = list(_parts_of(ev, _DSN_TYPES, inside=True))
    structural = ev.structure.report_type == "delivery-status" or bool(parts)
    if not structural and not envelope_ok:
        return None
    blocks, from_text = _dsn_blocks(ev, parts)
    recipient_blocks = [b for b in blocks if _is_recipient_block(b)]
    if not structural and not recipient_blocks:
        return None
    if ev.structure.report_type == "delivery-status":
        ev.reasons.append("multipart/report; report-type=delivery-status (RFC 3464)")
    elif parts:
        ev.reasons.append("message/delivery-status part (RFC 3464)")
    elif from_text:
        ev.reasons.append("RFC 3464 recipient fields in the text of a mail-system message")
    per_message = next((b for b in blocks if "reporting-mta" in b), {})
    text = "\n".join(ev.top_texts())
    recipients = _dsn_recipients(recipient_blocks, text)
    kind: Literal["bounce", "delay", "receipt"]
    if not recipients:
        # A report without usable recipient fields (Netscape, Caiwireless, MailSite, and
        # "Message removed" stubs): the prose has to say who failed.
        temporary = _is_delay_text(ev, text)
        recipients, how = _text_recipients(ev, text, temporary=temporary)
        if recipients:
            ev.reasons.append(f"recipients from {how}")
        kind = "delay" if temporary else "bounce"
    else:
        actions = {r.action for r in recipients}
        kind = "bounce" if "failed" in actions else "delay" if "delayed" in actions else "receipt"
        ev.reasons.append("Action: " + ", ".join(sorted(a for a in actions if a)))
    original = _original_message_id(ev)
    return Report(
        kind=kind,
        bounce=Bounce(tuple(recipients), original, _strip_type(per_message.get("reporting-mta"))),
        original_message_id=original,
        feedback_type=None,
        reasons=tuple(ev.reasons),
    )


_SEVERITY: Final = {"failed": 3, "delayed": 2, "delivered": 1, "relayed": 1, "expanded": 1, "": 0}


def _is_recipient_block(block: dict[str, str]) -> bool:
    return "final-recipient" in block or "original-recipient" in block


def _context_for(text: str, address: str, block: dict[str, str]) -> str | None:
    report, _ = _cut_returned(text)
    candidates = [address]
    final = _report_address(block.get("final-recipient"))
    if final and final.lower() != address.lower():
        candidates.append(final)
    lower = report.lower()
    for addr in candidates:
        at = lower.find(addr.lower())
        if at >= 0:
            start = lower.rfind("\n", 0, at) + 1
            snippet = report[start : start + 1200]
            # Stop at the next blank line followed by another address block.
            cut = re.search(r"\n[ \t]*\n(?=[^\n]*@)", snippet)
            return _strip_address(snippet[: cut.start()] if cut else snippet, addr)
    return None


def _is_delay_text(ev: _Evidence, text: str) -> bool:
    report, _ = _cut_returned(text)
    subject = (ev.headers.subject or "")[:300]
    delay = bool(_DELAY_PHRASE.search(report) or _DELAY_SUBJECT.search(subject))
    if not delay:
        return False
    if _PERMANENT_PHRASE.search(report):
        return False
    code = find_status(report) or find_reply_code(report)
    return not (code and code.startswith("5"))


def _envelope_score(ev: _Evidence) -> tuple[int, list[str]]:
    """How much the envelope says "a mail system wrote this" (Rule 2), with the evidence."""
    h = ev.headers
    score, why = 0, []
    senders = (*h.from_, *h.sender)
    if not h.from_ and h.get("from") is not None:
        senders = (Address("", ""),)
    if _is_daemon(h.from_) or (h.from_ == () and h.get("from") is not None):
        score += 2
        why.append(f"From: {h.get('from') or '<>'}")
    elif _is_daemon(h.sender) and senders:
        score += 1
        why.append(f"Sender: {h.get('sender')}")
    if h.get("x-failed-recipients"):
        score += 3
        why.append("X-Failed-Recipients")
    subject = (h.subject or "")[:300]
    if _is_bounce_subject(subject):
        score += 2
        why.append(f"Subject: {subject[:80]}")
    return_path = h.get("return-path")
    auto = (h.get("auto-submitted") or "").strip().lower()
    if (return_path is not None and return_path.strip() in ("<>", "")) or auto.startswith("auto-"):
        score += 1
        why.append("null Return-Path" if return_path in ("<>", "") else f"Auto-Submitted: {auto}")
    return score, why


def _is_bounce_subject(subject: str) -> bool:
    # A subject longer than a line is not a mail system's; bound the regex work (Rule 6).
    # Lower-cased here rather than IGNORECASE patterns: Unicode case-insensitive matching of
    # a long alternation costs several times more.
    subject = subject[:300].lower()
    return bool(subject) and bool(
        (_BOUNCE_SUBJECT.search(subject) and not _REPLY_PREFIX.match(subject))
        or _BOUNCE_SUBJECT_SUFFIX.search(subject)
    )


def may_be_report(headers: Headers, data: bytes | None = None) -> bool:
    """Tell, without MIME parsing, whether `analyze_report` could find a report.

    A cheap pre-check for callers that only need reports, such as the correlator looking for
    the original Message-ID of a bounce: ``False`` means `analyze_report` returns ``None``
    whatever the body holds. It is ``True`` for the envelope of a mail system (Rule 2: a
    daemon or empty sender, ``X-Failed-Recipients``, or a bounce subject that is not a reply),
    for a ``message/*`` body, and for a multipart other than ``multipart/alternative`` - unless
    `data` is given and holds no report content type anywhere (a report part may sit inside
    a ``multipart/mixed``, but it has to name its type).

    Args:
        headers: the message's parsed headers.
        data: the raw message, to rule out multiparts that hold no report part.

    Returns:
        Whether the message needs `analyze_report` to be ruled out.
    """
    if headers.get("x-failed-recipients") or _is_daemon((*headers.from_, *headers.sender)):
        return True
    if not headers.from_ and headers.get("from") is not None:
        return True  # a From that holds no address: "<>", as some MTAs write it
    if _is_bounce_subject(headers.subject or ""):
        return True
    ctype = (headers.get("content-type") or "text/plain").split(";", 1)[0].strip().lower()
    if ctype.startswith("message/"):
        return True
    if not ctype.startswith("multipart/") or ctype == "multipart/alternative":
        return False
    if ctype == "multipart/report" or data is None:
        return True
    # Every part names its type in a Content-Type field: look at those, not at every byte
    # (a case-insensitive regex over a 12 KB message costs more than the rest of this check).
    window = data[:_REPORT_SCAN_BYTES].lower()
    pos = window.find(b"content-type:")
    while pos >= 0:
        value = window[pos + 13 : pos + 80].lstrip(b" \t\r\n")
        if value.startswith(_REPORT_TYPES):
            return True
        pos = window.find(b"content-type:", pos + 13)
    return False


# The content types of report parts (RFC 6522, 3464, 6533, 5965, 8098).
_REPORT_TYPES: Final = (
    b"multipart/report",
    b"message/delivery-status",
    b"message/global-delivery-status",
    b"message/feedback-report",
    b"message/disposition-notification",
    b"message/global-disposition-notification",
)
#: How far into a multipart `may_be_report` looks for a report part's content type.
_REPORT_SCAN_BYTES: Final = 512 * 1024


def _plain_bounce(ev: _Evidence) -> Report | None:
    """A bounce without report MIME types: envelope and content must both say so (Rule 2)."""
    score, why = ev.envelope()
    h = ev.headers
    has_gate = any(w.startswith(("From:", "X-Failed", "Subject:")) for w in why)
    if not has_gate:
        return None
    subject = (h.subject or "")[:300]
    if _AUTO_REPLY_SUBJECT.search(subject) and not any(
        w.startswith(("From:", "X-Failed")) for w in why
    ):
        return None
    text = "\n".join(ev.top_texts())
    report, after = _cut_returned(text)
    content = 0
    if _FAILURE_PHRASE.search(report) or _DELAY_PHRASE.search(report):
        content += 2
        why.append("bounce wording in the text")
    elif _text_reason(report[:8000]) in ("userunknown", "mailboxfull", "hostunknown"):
        content += 1
        why.append("a delivery error in the text")
    if find_status(report) or find_reply_code(report):
        content += 1
        why.append("an SMTP status code in the text")
    returned_part = ev.returned()[1]
    if returned_part or after:
        content += 1
        why.append(f"a returned message ({returned_part or 'quoted in the text'})")
    if h.get("x-failed-recipients"):
        content += 2
    strong_sender = any(w.startswith(("From:", "X-Failed")) for w in why)
    subject_gate = any(w.startswith("Subject:") for w in why)
    if content == 0 and not (strong_sender and subject_gate):
        return None
    temporary = _is_delay_text(ev, text)
    recipients, how = _text_recipients(ev, text, temporary=temporary)
    if strong_sender:
        ok = score + content >= 4
    else:
        # Only the subject speaks for a mail system: the text must also use bounce wording and
        # name a failed recipient the way MTAs do (first on its line, next to an SMTP code…).
        named = bool(recipients) and how != "the only To address of the returned message"
        attached = returned_part in _RETURNED_MESSAGE_TYPES | _RETURNED_HEADER_TYPES
        ok = content >= 2 and (named or (attached and content >= 3)) and score + content + 1 >= 5
    if not ok:
        return None
    ev.reasons.extend(why)
    if recipients:
        ev.reasons.append(f"recipients from {how}")
    original = _original_message_id(ev, (after,) if after else ())
    return Report(
        kind="delay" if temporary else "bounce",
        bounce=Bounce(tuple(recipients), original, None),
        original_message_id=original,
        feedback_type=None,
        reasons=tuple(ev.reasons),
    )


def analyze_report(message: email.message.Message, headers: Headers) -> Report | None:
    """Recognise a machine report and read it.

    Args:
        message: the message, parsed by the standard library with the ``compat32`` policy
            (possibly from a truncated copy of the raw bytes).
        headers: the same message's headers, from `replytrack.headers.parse_headers`.

    Returns:
        A `Report` for a bounce, delay notice, complaint or delivery/read receipt; ``None``
        when the message is not a machine report. Never raises (Rule 1).
    """
    try:
        ev = _Evidence(message, headers, _walk(message))
        for step in (_complaint, _mdn, _delivery_status, _plain_bounce):
            ev.reasons = []
            report = step(ev)
            if report is not None:
                return report
    except Exception:
        return None
    return None
