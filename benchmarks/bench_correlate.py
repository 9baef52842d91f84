"""Benchmark `Correlator.correlate` on a rep's inbox against a store holding a million sends.

Run from the repository root::

    python benchmarks/bench_correlate.py [--quick] [--sends N] [--messages M] [--output FILE]

The store is bench_store.py's fixture (N sends, default 1,000,000, built once into
``--data-dir`` under the same name and reused by both scripts). Before timing, the fixture
file is read once so that its pages are in the OS page cache, as an active store's are (a
cold cache made lookups about 8 times slower; ``--no-prewarm`` skips the read). The incoming
mail is a stream of M messages (default 20,000) in a rep's inbox mix, generated from
``--seed``:

* 35 % human replies to random recorded sends: from the prospect mailed (In-Reply-To and
  References), from the Cc'd colleague, from another address, with prose around the id in
  In-Reply-To, or with References only;
* 5 % out-of-office replies (Exchange "Automatic reply" and vacation responders, 14 languages);
* 3 % RFC 3464 bounces of recorded sends;
* 57 % unrelated mail: newsletters (List-Id, large HTML), internal mail (some from Outlook with
  a Thread-Index, some with an attachment), replies to threads that are not ours, notifications.

Every message carries a realistic trace block (Received, DKIM, ARC, Authentication-Results, or
Exchange's X-MS-* fields), as mail in a real mailbox does. Building messages is not what is
measured: a pool of at most 4,096 message *templates* is built once, and the stream cycles
through it, filling each template's placeholders with a fresh send (drawn at random from the
whole store), prospect and sequence number, so every streamed message is distinct and lookups
spread over the store. The stream is a generator: at no time are the M messages held.

Timed pass: after a short untimed warm-up, every message goes through
``Correlator(store).correlate(raw_bytes)`` - header parsing, the store lookups, and
classification where the correlator decides to classify - timed one by one with
``perf_counter_ns`` and the garbage collector enabled, as in a real tracker. Throughput is
messages divided by the summed time of the calls; median, p95 and p99 are true per-message
latencies (unlike bench_parse's spread between rounds). Every result is checked: a message
answering a recorded send must match that send, with the expected method and role, and
unrelated mail must match nothing; the report counts matches by method, kind and role.

Memory: ``ru_maxrss`` is read after M/4 and after M messages of the timed pass; then a second,
untimed pass over the same stream runs under ``tracemalloc`` and reads its current traced
memory at the same two points, and the peak of the correlate calls over the first and the
last quarter (see `memory_pass`). Both growths (M vs M/4) are reported and must stay below
10 %: the correlator keeps nothing per message.

The JSON report goes to stdout, and to ``--output`` as well when given. The exit status is 1
when a sanity check failed (the numbers are still reported), else 0, targets met or not.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import email
import email.policy
import gc
import hashlib
import json
import random
import re
import statistics
import sys
import tempfile
import time
import tracemalloc
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from replytrack.correlate import Correlator
from replytrack.headers import parse_headers
from replytrack.store import SQLiteStore
from replytrack.testing import OOO_LANGUAGES, build_bounce, build_out_of_office, build_reply
from replytrack.threadindex import ThreadIndex

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # the siblings _common.py and bench_store.py, also in tests

import _common  # noqa: E402 (found through the sys.path line above)
import bench_store  # noqa: E402

SCHEMA_VERSION = 1
SEED = 2026
POOL = 4096  # at most this many message templates are built
WARMUP = 500  # untimed messages before the timed pass (fewer when M is small)
FULL = {"sends": 1_000_000, "messages": 20_000}
QUICK = {"sends": 20_000, "messages": 2_000}
MAX_GROWTH = 0.10

# (name, comparison, limit), from issue 4: "≥ 5,000 correlations/s including parsing" and
# "memory flat in the number of messages scanned".
TARGETS: tuple[tuple[str, str, float], ...] = (
    ("correlations_per_second", ">=", 5_000.0),
    ("tracemalloc_peak_growth", "<=", MAX_GROWTH),
    ("max_rss_growth", "<=", MAX_GROWTH),
)

T_SEND = dt.datetime(2027, 2, 26, 9, 30, tzinfo=dt.timezone.utc)
T_REPLY = dt.datetime(2027, 3, 1, 9, 30, tzinfo=dt.timezone.utc)


@attrs.frozen
class Variant:
    """One kind of incoming mail, its share of the inbox, and what correlating it must give."""

    name: str
    category: str  # reply, out_of_office, bounce, unrelated
    share: float
    method: str | None = None  # expected MatchMethod value; None: must not match
    role: str | None = None  # expected Role value
    cc_send: bool = False  # answers a send that had a Cc (every fourth send of the fixture)


VARIANTS: tuple[Variant, ...] = (
    Variant("reply_recipient", "reply", 0.20, "in_reply_to", "recipient"),
    Variant("reply_cc", "reply", 0.04, "in_reply_to", "cc", cc_send=True),
    Variant("reply_other_address", "reply", 0.04, "in_reply_to", "other"),
    Variant("reply_prose_in_reply_to", "reply", 0.035, "in_reply_to", "recipient"),
    Variant("reply_references_only", "reply", 0.035, "references", "recipient"),
    Variant("ooo_exchange", "out_of_office", 0.03, "in_reply_to", "recipient"),
    Variant("ooo_vacation", "out_of_office", 0.02, "in_reply_to", "recipient"),
    Variant("bounce", "bounce", 0.03, "bounce_original", "other"),
    Variant("newsletter", "unrelated", 0.25),
    Variant("internal", "unrelated", 0.12),
    Variant("internal_attachment", "unrelated", 0.04),
    Variant("foreign_thread_reply", "unrelated", 0.12),
    Variant("notification", "unrelated", 0.04),
)
MIX = {
    c: round(sum(v.share for v in VARIANTS if v.category == c), 4)
    for c in dict.fromkeys(v.category for v in VARIANTS)
}

# --------------------------------------------------------------------------------------------
# Message templates. Placeholders are filled per streamed message (`fill`):
#   ZQSENDQZ  8 hex digits of the send index, as in bench_store.send_id
#   ZQPQZ     the send index in decimal (prospect p{i}, Cc cc{i})
#   ZQDQZ     i % 5000 (the prospect's domain), ZQRQZ i % 50 (the rep)
#   ZQSEQQZ   the stream position, so every message has its own Message-ID
#   ZQTIQZ    an Outlook Thread-Index whose conversation GUID is the send's
# --------------------------------------------------------------------------------------------

PLACEHOLDER = re.compile(rb"ZQ(SEND|P|D|R|SEQ|TI)QZ")
SEND_ID = "<ZQSENDQZ.bench@mail.example.com>"
PROSPECT = "pZQPQZ@prospectZQDQZ.example"
REP = "Rep ZQRQZ <repZQRQZ@vendor.example>"
# Filler for bodies; a tuple of words read from one string (SIM905 prefers a list literal,
# which the formatter would spread over 31 lines).
WORDS = tuple(
    "pipeline quarter forecast team budget meeting review launch customer renewal product "  # noqa: SIM905
    "roadmap update pricing contract demo onboarding support integration report webinar "
    "analytics campaign growth market partner security release feedback survey event".split()
)


def sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def paragraphs(rng: random.Random, count: int) -> str:
    return "\n\n".join(
        " ".join(sentence(rng, rng.randint(6, 16)) for _ in range(rng.randint(2, 6)))
        for _ in range(count)
    )


def b64(rng: random.Random, nbytes: int, width: int = 64) -> str:
    text = base64.b64encode(rng.randbytes(nbytes)).decode("ascii")
    return "\r\n\t".join(text[k : k + width] for k in range(0, len(text), width))


def trace_block(rng: random.Random, style: str, sender: str, domain: str) -> bytes:
    """The fields MTAs and providers prepend: what makes real header blocks 2-4 KB."""
    stamp = "Mon, 1 Mar 2027 09:29:58 +0000"
    ip = f"198.51.100.{rng.randint(1, 254)}"
    lines = ["Delivered-To: rep@vendor.example"]
    if style == "gmail":
        lines += [
            f"Received: by 2002:a05:6a10:{rng.getrandbits(16):x}:0:0:0:0 with SMTP id"
            f" {rng.getrandbits(40):x}csp{rng.randint(10**5, 10**6)};\r\n        {stamp}",
            f"X-Received: by 2002:a17:906:{rng.getrandbits(16):x} with SMTP id"
            f" {rng.getrandbits(64):x}.{rng.randint(1, 99)};\r\n        {stamp}",
            "ARC-Seal: i=1; a=rsa-sha256; t=1803893398; cv=none;\r\n        d=google.com;"
            f" s=arc-20240605;\r\n        b={b64(rng, 256)}",
            f"ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed; d=google.com;\r\n"
            f"        s=arc-20240605; h=to:subject:message-id:date:from:mime-version;\r\n"
            f"        bh={b64(rng, 32)};\r\n        b={b64(rng, 256)}",
            f"Return-Path: <{sender}>",
            f"Received: from mail-sor-f41.google.com (mail-sor-f41.google.com. [{ip}])\r\n"
            f"        by mx.google.com with SMTPS id {rng.getrandbits(64):x}\r\n"
            f"        for <rep@vendor.example>\r\n        (Google Transport Security);\r\n"
            f"        {stamp}",
            f"Received-SPF: pass (google.com: domain of {sender} designates {ip} as permitted"
            f" sender) client-ip={ip};",
            f"Authentication-Results: mx.google.com;\r\n       dkim=pass header.i=@{domain}"
            f" header.s=google;\r\n       spf=pass smtp.mailfrom={sender};\r\n"
            f"       dmarc=pass (p=NONE sp=NONE dis=NONE) header.from={domain}",
            f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n        d={domain};"
            " s=google; t=1803893398;\r\n        h=to:subject:message-id:date:from"
            ":in-reply-to:references:mime-version;\r\n"
            f"        bh={b64(rng, 32)};\r\n        b={b64(rng, 256)}",
            f"X-Google-Smtp-Source: {b64(rng, 60, 200)}",
            f"X-Gm-Message-State: {b64(rng, 45, 200)}",
        ]
    elif style == "outlook":
        lines += [
            f"Received: from AM9PR07MB{rng.randint(1000, 9999)}.eurprd07.prod.outlook.com\r\n"
            f" ({ip}) by AM0PR07MB{rng.randint(1000, 9999)}.eurprd07.prod.outlook.com\r\n"
            f" with Microsoft SMTP Server (version=TLS1_2) id 15.20.7000.{rng.randint(1, 99)};"
            f"\r\n {stamp}",
            f"Received: from mail-eopbgr{rng.randint(10, 99)}.outbound.protection.outlook.com"
            f" ([{ip}])\r\n by mx.vendor.example with ESMTPS; {stamp}",
            f"ARC-Seal: i=1; a=rsa-sha256; s=arcselector10001; d=microsoft.com; cv=none;\r\n"
            f" b={b64(rng, 256)}",
            f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain};\r\n"
            f" s=selector1; h=From:Date:Subject:Message-ID:Content-Type:MIME-Version;\r\n"
            f" bh={b64(rng, 32)};\r\n b={b64(rng, 256)}",
            "Thread-Topic: Quick question",
            f"x-ms-exchange-messagesentrepresentingtype: 1\r\nx-ms-publictraffictype: Email\r\n"
            f"x-ms-traffictypediagnostic: AM9PR07MB{rng.randint(1000, 9999)}:EE_\r\n"
            f"x-ms-office365-filtering-correlation-id: {rng.getrandbits(128):032x}\r\n"
            f"x-microsoft-antispam: BCL:0;\r\n"
            f"x-microsoft-antispam-message-info: {b64(rng, 300, 76)}",
            "X-MS-Has-Attach: \r\nX-MS-TNEF-Correlator: \r\nContent-Language: en-US",
        ]
    else:  # a small company's Postfix
        lines += [
            f"Return-Path: <{sender}>",
            f"Received: from mail.{domain} (mail.{domain} [{ip}])\r\n\tby mx.vendor.example"
            f" (Postfix) with ESMTPS id {rng.getrandbits(40):X}\r\n\tfor"
            f" <rep@vendor.example>; {stamp}",
            f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={domain}; s=mail;\r\n"
            f"\tt=1803893398; bh={b64(rng, 32)};\r\n\th=From:To:Subject:Date;\r\n"
            f"\tb={b64(rng, 256)}",
        ]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def build_template(rng: random.Random, variant: Variant, number: int) -> bytes:
    """One message of `variant`, with placeholders where the stream fills in a send."""
    name = variant.name
    own_id = f"<{name}.{number}.ZQSEQQZ@mx.example.net>"
    quote = paragraphs(rng, rng.randint(1, 3))
    body = paragraphs(rng, rng.randint(1, 2)) + "\n\nBest,\nJo"
    style = rng.choice(("gmail", "gmail", "outlook", "postfix"))
    extra: dict[str, str] = {}
    if style == "outlook":
        extra["Thread-Index"] = "ZQTIQZ"
    draft = Draft(rng, name, number, own_id, body, quote, style, extra)
    build = answer if variant.method is not None else unrelated
    raw, style, sender, domain = build(draft)
    if style == "outlook" and b"\r\nThread-Index:" not in raw:
        style = "gmail"  # Exchange without a Thread-Index would be odd
    return trace_block(rng, style, sender, domain) + raw


@attrs.frozen
class Draft:
    """What every template shares: its randomness, ids, text, and the provider's style."""

    rng: random.Random
    name: str
    number: int
    own_id: str
    body: str
    quote: str
    style: str
    extra: dict[str, str]


def answer(d: Draft) -> tuple[bytes, str, str, str]:
    """A message answering a send: raw bytes, trace style, sender and its domain."""
    rng, name, number, own_id, body, quote, style, extra = attrs.astuple(d, recurse=False)
    sender, domain = PROSPECT, "prospectZQDQZ.example"
    if name in ("reply_recipient", "reply_prose_in_reply_to"):
        raw = build_reply(
            in_reply_to=SEND_ID,
            from_=f"Jo Prospect <{PROSPECT}>",
            to=REP,
            body=body,
            quote=quote,
            html=rng.random() < 0.5,
            message_id=own_id,
            headers=extra
            | (
                {
                    "In-Reply-To": rng.choice(
                        (
                            f'Your message of "Fri, 26 Feb 2027 09:30:00 +0000" {SEND_ID}',
                            f"{SEND_ID} (Rep's message of Fri, 26 Feb 2027 09:30:00 +0000)",
                        )
                    )
                }
                if name == "reply_prose_in_reply_to"
                else {}
            ),
        )
    elif name == "reply_cc":
        sender = "ccZQPQZ@prospectZQDQZ.example"
        raw = build_reply(
            in_reply_to=SEND_ID,
            from_=f"Sam Colleague <{sender}>",
            to=REP,
            cc=f"Jo Prospect <{PROSPECT}>",
            body=body,
            quote=quote,
            html=rng.random() < 0.5,
            message_id=own_id,
            headers=extra,
        )
    elif name == "reply_other_address":
        sender = rng.choice(
            ("pat.otherZQPQZ@prospectZQDQZ.example", "jo.prospectZQPQZ@gmail.example")
        )
        raw = build_reply(
            in_reply_to=SEND_ID,
            from_=f"Pat Other <{sender}>",
            to=REP,
            body=body,
            quote=quote,
            html=rng.random() < 0.5,
            message_id=own_id,
            headers=extra,
        )
    elif name == "reply_references_only":
        # Some clients (and mailing-list gateways) drop In-Reply-To; the prospect's own
        # earlier message in the thread is the newest reference, ours is older.
        raw = build_reply(
            in_reply_to=None,
            references=[SEND_ID, f"<CA{number}x{rng.getrandbits(48):x}@mail.gmail.example>"],
            from_=f"Jo Prospect <{PROSPECT}>",
            to=REP,
            body=body,
            quote=quote,
            message_id=own_id,
            headers=extra,
        )
    elif name.startswith("ooo_"):
        back = dt.date(2027, 3, 1) + dt.timedelta(days=rng.randint(1, 20))
        raw = build_out_of_office(
            language=rng.choice(OOO_LANGUAGES),
            return_date=back if rng.random() < 0.7 else None,
            in_reply_to=SEND_ID,
            subject_style="automatic_reply" if name == "ooo_exchange" else "absence",
            from_=f"Jo Prospect <{PROSPECT}>",
            to=REP,
            message_id=own_id,
            headers=extra,
        )
    elif name == "bounce":
        style, sender, domain = "postfix", "", "mx.vendor.example"
        raw = build_bounce(
            recipients=(PROSPECT,),
            original_message_id=SEND_ID,
            original_from=REP,
            reporting_mta="mx.vendor.example",
            remote_mta="mx.prospectZQDQZ.example",
            to="repZQRQZ@vendor.example",
            message_id=own_id,
        )
    else:  # pragma: no cover - every variant has a branch
        raise AssertionError(name)
    return raw, style, sender, domain


def unrelated(d: Draft) -> tuple[bytes, str, str, str]:
    """Mail that answers none of our sends: raw bytes, trace style, sender and its domain."""
    rng, name, number, own_id, body, quote, style, extra = attrs.astuple(d, recurse=False)
    if name == "newsletter":
        sender, domain = f"news@list{number % 40}.example", f"list{number % 40}.example"
        raw = build_reply(
            in_reply_to=None,
            from_=f"Industry Weekly <{sender}>",
            to="rep@vendor.example",
            subject=f"Industry Weekly #{number}: {sentence(rng, 5)}",
            body=paragraphs(rng, rng.randint(15, 60)),
            quote=None,
            html=True,
            message_id=own_id,
            headers={
                "List-Id": f"Industry Weekly <weekly.{domain}>",
                "List-Unsubscribe": f"<https://{domain}/u/{rng.getrandbits(64):x}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                "Precedence": "bulk",
            },
        )
        style = "postfix"
    elif name in ("internal", "internal_attachment"):
        sender, domain = f"colleague{number % 30}@vendor.example", "vendor.example"
        if style == "outlook":
            # Outlook's internal mail: a conversation of its own, unknown to the store.
            extra["Thread-Index"] = ThreadIndex.new(T_SEND, rng.randbytes(16)).encode()
        previous = f"<internal.{rng.getrandbits(64):x}@vendor.example>"
        raw = build_reply(
            in_reply_to=previous if rng.random() < 0.5 else None,
            from_=f"Colleague <{sender}>",
            to="rep@vendor.example",
            subject=f"Re: {sentence(rng, 4)}",
            body=body,
            quote=quote,
            html=style == "outlook",
            message_id=own_id,
            headers=extra,
        )
        if name == "internal_attachment":
            message = email.message_from_bytes(raw, policy=email.policy.SMTP)
            message.add_attachment(  # type: ignore[attr-defined] (an EmailMessage here)
                rng.randbytes(rng.randint(10_000, 60_000)),
                maintype="application",
                subtype="pdf",
                filename="Q1-plan.pdf",
            )
            raw = message.as_bytes()
    elif name == "foreign_thread_reply":
        sender = f"someone{number}@partner{number % 300}.example"
        domain = sender.rpartition("@")[2]
        thread = [f"<{rng.getrandbits(64):x}.{k}@partner.example>" for k in range(3)]
        raw = build_reply(
            in_reply_to=thread[-1],
            references=thread,
            from_=f"Some One <{sender}>",
            to="rep@vendor.example",
            subject=f"Re: {sentence(rng, 4)}",
            body=body,
            quote=quote,
            html=rng.random() < 0.5,
            message_id=own_id,
            headers=extra if style != "outlook" else {},
        )
    elif name == "notification":
        sender, domain = "noreply@crm.example", "crm.example"
        raw = build_reply(
            in_reply_to=None,
            from_=f"CRM <{sender}>",
            to="rep@vendor.example",
            subject=f"Task due today: {sentence(rng, 4)}",
            body=paragraphs(rng, 2),
            quote=None,
            html=True,
            message_id=own_id,
            headers={"Auto-Submitted": "auto-generated", "X-Auto-Response-Suppress": "All"},
        )
        style = "postfix"
    else:  # pragma: no cover - every variant has a branch
        raise AssertionError(name)
    return raw, style, sender, domain


@attrs.frozen
class Template:
    variant: Variant
    raw: bytes


@attrs.frozen
class Incoming:
    variant: Variant
    send: int  # the send it answers (meaningless for unrelated mail)
    raw: bytes


def allocate(pool_size: int) -> list[Variant]:
    """`pool_size` variants in the mix's proportions (largest remainder, at least one each)."""
    exact = [v.share * pool_size for v in VARIANTS]
    counts = [max(1, int(x)) for x in exact]
    order = sorted(range(len(VARIANTS)), key=lambda k: exact[k] - int(exact[k]), reverse=True)
    for k in order[: max(0, pool_size - sum(counts))]:
        counts[k] += 1
    return [v for v, n in zip(VARIANTS, counts, strict=True) for _ in range(n)]


def build_pool(size: int, seed: int) -> list[Template]:
    rng = random.Random(seed)  # noqa: S311 (reproducible test data, not secrets)
    variants = allocate(size)
    rng.shuffle(variants)
    # email.generator draws MIME boundaries from the global `random` (build_reply(html=True),
    # add_attachment): seed it too, so the same seed gives the same bytes, and restore it.
    saved = random.getstate()
    random.seed(seed)
    try:
        return [Template(v, build_template(rng, v, n)) for n, v in enumerate(variants)]
    finally:
        random.setstate(saved)


def fill(template: bytes, send: int, seq: int) -> bytes:
    values = {
        b"SEND": b"%08x" % send,
        b"P": b"%d" % send,
        b"D": b"%d" % (send % 5000),
        b"R": b"%d" % (send % 50),
        b"SEQ": b"%08x" % seq,
    }
    if b"ZQTIQZ" in template:
        # The prospect's Outlook appended a child block to the Thread-Index we stamped.
        index = ThreadIndex.new(T_SEND, send.to_bytes(16, "big")).child(T_REPLY, random=7)
        values[b"TI"] = index.encode().encode("ascii")
    return PLACEHOLDER.sub(lambda m: values[m[1]], template)


def stream(pool: Sequence[Template], sends: int, messages: int, seed: int) -> Iterator[Incoming]:
    """`messages` distinct messages, cycling through `pool`; generated one at a time."""
    rng = random.Random(seed)  # noqa: S311 (reproducible test data, not secrets)
    for seq in range(messages):
        template = pool[seq % len(pool)]
        send = rng.randrange(0, sends, 4) if template.variant.cc_send else rng.randrange(sends)
        yield Incoming(template.variant, send, fill(template.raw, send, seq))


# --------------------------------------------------------------------------------------------
# Checking and tallying results
# --------------------------------------------------------------------------------------------


class Tally:
    """Matches by category, method, kind and role, and the failed checks (a few kept)."""

    def __init__(self) -> None:
        self.by_category: dict[str, dict[str, Counter[str]]] = defaultdict(
            lambda: defaultdict(Counter)
        )
        self.failures = 0
        self.examples: list[str] = []

    def add(self, incoming: Incoming, correlation: Any) -> None:
        variant = incoming.variant
        counts = self.by_category[variant.category]
        counts["messages"][variant.name] += 1
        problem = None
        if correlation is None:
            if variant.method is not None:
                problem = "no match"
        else:
            counts["by_method"][correlation.method.value] += 1
            counts["by_kind"][correlation.classification.kind.value] += 1
            counts["by_role"][correlation.role.value] += 1
            expected = bench_store.send_id(incoming.send)
            if (
                variant.method is None
                or correlation.sent is None
                or correlation.sent.message_id != expected
            ):
                problem = f"matched {correlation.sent and correlation.sent.message_id}"
            elif (correlation.method.value, correlation.role.value) != (
                variant.method,
                variant.role,
            ):
                problem = f"method {correlation.method.value}, role {correlation.role.value}"
        if problem is None:
            counts["as_expected"][variant.name] += 1
        else:
            self.failures += 1
            if len(self.examples) < 5:
                self.examples.append(f"{variant.name} (send {incoming.send}): {problem}")

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for category in MIX:
            counts = self.by_category.get(category, {})
            messages = sum(counts.get("messages", Counter()).values())
            matched = sum(counts.get("by_method", Counter()).values())
            out[category] = {
                "messages": messages,
                "matched": matched,
                "match_rate": round(matched / messages, 4) if messages else None,
                "as_expected": sum(counts.get("as_expected", Counter()).values()),
                "by_method": dict(sorted(counts.get("by_method", Counter()).items())),
                "by_kind": dict(sorted(counts.get("by_kind", Counter()).items())),
                "by_role": dict(sorted(counts.get("by_role", Counter()).items())),
            }
        return out


# --------------------------------------------------------------------------------------------
# The passes
# --------------------------------------------------------------------------------------------


def prewarm(path: Path) -> None:
    """Read the file once, so its pages sit in the OS page cache as an active store's do.

    Without it the first run after the fixture was built (or after other work evicted it)
    times random disk reads: on a 400 MB store that made lookups about 8 times slower.
    """
    with path.open("rb") as f:
        while f.read(1 << 20):
            pass


def growth(first: float, last: float) -> float:
    return round((last - first) / first, 4) if first else 0.0


def timed_pass(
    correlator: Correlator, messages: Iterator[Incoming], total: int, tally: Tally
) -> tuple[dict[str, array[float]], list[float], float]:
    """Correlate every message; return per-category latencies (µs), max RSS at M/4 and M."""
    quarter = max(1, total // 4)
    # Compact arrays (8 bytes a message), so recording does not show up in the RSS growth.
    latencies: dict[str, array[float]] = defaultdict(lambda: array("d"))
    rss: list[float] = []
    clock = time.perf_counter_ns
    correlate = correlator.correlate
    started = time.perf_counter()
    for seq, incoming in enumerate(messages, 1):
        t0 = clock()
        correlation = correlate(incoming.raw)
        t1 = clock()
        latencies[incoming.variant.category].append((t1 - t0) / 1000)
        tally.add(incoming, correlation)
        if seq in (quarter, total):
            rss.append(_common.max_rss_mb())
    return latencies, rss, time.perf_counter() - started


def batched_pass(
    correlator: Correlator, messages: Iterator[Incoming], batch_size: int
) -> dict[str, Any]:
    """Correlate in batches, as a poll does: parse a batch, look its ids up at once
    (`Correlator.prefetched`), correlate each message; timed as a whole, results checked."""
    incoming = list(messages)  # generated before timing
    started = time.perf_counter()
    results = []
    for start in range(0, len(incoming), batch_size):
        chunk = incoming[start : start + batch_size]
        parsed = [parse_headers(m.raw) for m in chunk]
        with correlator.prefetched(parsed):
            results += [
                correlator.correlate(m.raw, headers=h) for m, h in zip(chunk, parsed, strict=True)
            ]
    seconds = time.perf_counter() - started
    tally = Tally()  # its own: the report's counts are the timed pass's
    for m, correlation in zip(incoming, results, strict=True):
        tally.add(m, correlation)
    return {
        "what": f"batches of {batch_size}: parse_headers each, Correlator.prefetched(batch), "
        "correlate(raw, headers=...) each (what ReplyTracker.poll does)",
        "messages": len(incoming),
        "batch_size": batch_size,
        "per_second": round(len(incoming) / seconds),
        "mean_us": round(seconds / len(incoming) * 1e6, 1),
        "failures": tally.failures,
        "examples": tally.examples,
    }


def memory_pass(
    correlator: Correlator, messages: Iterator[Incoming], total: int
) -> dict[str, list[float]]:
    """Correlate every message under tracemalloc; traced KiB at M/4 and M.

    At each checkpoint: the peak while the last quarter of the messages before it were
    correlated (the first quarter, then the last), the current size, and the size left after
    a full collection (``retained``: a full collection also empties the interpreter's free
    lists, so this is what the correlator and the store really keep).

    The peak is that of the `correlate` calls only: it is reset right before each call and
    the window keeps the highest. Generating a message is not measured - the generator
    builds the next message (up to 86 KB) while the loop still holds the previous one, so
    a peak over the whole loop depends on which large templates happen to follow each
    other in a window. Both windows are as long, so both peaks are maxima over as many
    messages, and both start right after a full collection, as the pass does: a full
    collection empties the interpreter's free lists (up to 2,000 tuples of each small size,
    dicts, lists ...), whose blocks tracemalloc counts as allocated where they were first
    made, and which otherwise fill up slowly over the pass - bounded, but a growth the
    comparison would put on the correlator.
    """
    quarter = max(1, total // 4)
    last_quarter = total - quarter
    kib: dict[str, list[float]] = {"peak_kib": [], "current_kib": [], "retained_kib": []}
    window_peak = 0
    correlate = correlator.correlate
    reset_peak = tracemalloc.reset_peak
    traced = tracemalloc.get_traced_memory
    gc.collect()
    tracemalloc.start()
    try:
        for seq, incoming in enumerate(messages, 1):
            reset_peak()
            correlate(incoming.raw)
            window_peak = max(window_peak, traced()[1])
            if seq in (quarter, total):
                current = traced()[0]
                del incoming  # the message at hand is not retained memory
                gc.collect()
                kib["peak_kib"].append(round(window_peak / 1024, 1))
                kib["current_kib"].append(round(current / 1024, 1))
                kib["retained_kib"].append(round(traced()[0] / 1024, 1))
            if seq == last_quarter:
                gc.collect()
                window_peak = 0
    finally:
        tracemalloc.stop()
    return kib


def latency_summary(values: Sequence[float]) -> dict[str, float]:
    times = sorted(values)
    if len(times) < 2:
        times = times * 2  # quantiles need two points; a single message is its own p95
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return {
        "mean_us": round(statistics.fmean(times), 1),
        "median_us": round(statistics.median(times), 1),
        "p95_us": round(cuts[94], 1),
        "p99_us": round(cuts[98], 1),
        "max_us": round(times[-1], 1),
    }


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time Correlator.correlate on a generated inbox against an SQLite store of "
        "N sends; print a JSON report."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a short run: {QUICK['sends']:,} sends, {QUICK['messages']:,} messages "
        f"(default: {FULL['sends']:,} and {FULL['messages']:,})",
    )
    parser.add_argument("--sends", type=int, help="sends in the store (the fixture)")
    parser.add_argument("--messages", type=int, help="incoming messages to correlate")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the generated mail")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "replytrack-bench",
        help="where the fixture is built once and kept (shared with bench_store.py)",
    )
    parser.add_argument(
        "--no-prewarm",
        dest="prewarm",
        action="store_false",
        help="do not read the fixture file once before timing (then the OS page cache, not "
        "replytrack, may decide the result)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=100,
        help="messages per batch in the batched pass (default 100, a poll's batch)",
    )
    parser.add_argument("--output", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    args.sends = sizes["sends"] if args.sends is None else args.sends
    args.messages = sizes["messages"] if args.messages is None else args.messages
    if args.sends < 1:
        parser.error("--sends must be at least 1")
    if args.messages < 4:
        parser.error("--messages must be at least 4 (memory is read at M/4 and M)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its JSON report; return the exit status."""
    args = parse_args(argv)

    log = _common.stderr_logger("bench_correlate")

    started = dt.datetime.now(dt.timezone.utc)
    # bench_store.py's fixture: the scripts build it once between them.
    fixture, build_seconds = bench_store.ensure_fixture(args.data_dir, args.sends, log)

    if args.prewarm:
        prewarm(fixture)
    pool_size = min(POOL, max(len(VARIANTS), args.messages // 4))  # all seen by M/4
    pool = build_pool(pool_size, args.seed)
    digest = hashlib.sha256()
    for template in pool:
        digest.update(template.raw)
    pool_bytes = sum(len(t.raw) for t in pool)
    warmup = min(WARMUP, args.messages // 10)
    log(f"{len(pool):,} templates, {pool_bytes / len(pool) / 1024:.1f} KiB on average")

    load_start = _common.load_average()
    rss_before = _common.max_rss_mb()
    tally = Tally()
    with SQLiteStore(fixture) as store:
        # Sanity: the fixture holds what the stream answers.
        last = args.sends - 1
        if store.find_sent([bench_store.send_id(last)]).get(bench_store.send_id(last)) != (
            bench_store.make_send(last)
        ):
            raise AssertionError(f"{fixture} does not hold the expected sends")
        correlator = Correlator(store)
        for incoming in stream(pool, args.sends, warmup, args.seed + 1):
            correlator.correlate(incoming.raw)
        log(f"timing {args.messages:,} messages")
        latencies, rss, wall = timed_pass(
            correlator,
            stream(pool, args.sends, args.messages, args.seed + 2),
            args.messages,
            tally,
        )
        log(f"timing {args.messages:,} messages in batches of {args.batch_size}")
        batched = batched_pass(
            correlator,
            stream(pool, args.sends, args.messages, args.seed + 3),
            args.batch_size,
        )
        log("measuring memory under tracemalloc")
        traced = memory_pass(
            correlator, stream(pool, args.sends, args.messages, args.seed + 2), args.messages
        )
    load_end = _common.load_average()

    every = [x for values in latencies.values() for x in values]
    busy_seconds = sum(every) / 1e6
    correlate = {
        "what": "Correlator(store).correlate(raw_bytes): parse, store lookups, classification",
        "messages": len(every),
        "per_second": round(len(every) / busy_seconds),
        "wall_per_second": round(len(every) / wall),
        **latency_summary(every),
    }
    by_category = {
        category: {"messages": len(latencies[category]), **latency_summary(latencies[category])}
        for category in MIX
        if latencies.get(category)
    }
    memory = {
        "checkpoints": [max(1, args.messages // 4), args.messages],
        "tracemalloc": {
            **traced,
            **{
                f"{name.removesuffix('_kib')}_growth": growth(values[0], values[-1])
                for name, values in traced.items()
            },
        },
        "max_rss_mb": {
            "before": rss_before,
            "at_checkpoints": rss,
            "growth": growth(rss[0], rss[-1]),
        },
    }
    measured = {
        "correlations_per_second": correlate["per_second"],
        "tracemalloc_peak_growth": memory["tracemalloc"]["peak_growth"],
        "max_rss_growth": memory["max_rss_mb"]["growth"],
    }
    targets: dict[str, Any] = {}
    for name, op, limit in TARGETS:
        value = measured[name]
        met = value >= limit if op == ">=" else value <= limit
        targets[name] = {"value": value, "op": op, "limit": limit, "met": met}

    report = {
        "benchmark": "bench_correlate",
        "schema": SCHEMA_VERSION,
        "started": started.isoformat(timespec="seconds"),
        "seconds": round((dt.datetime.now(dt.timezone.utc) - started).total_seconds(), 1),
        "mode": "quick" if args.quick else "full",
        "settings": {
            "sends": args.sends,
            "messages": args.messages,
            "warmup": warmup,
            "seed": args.seed,
            "gc_enabled_while_timing": gc.isenabled(),
            "timer": "perf_counter_ns around each correlate() call",
        },
        "fixture": {
            "sends": args.sends,
            "path": str(fixture),
            "bytes": fixture.stat().st_size,
            "build_seconds": build_seconds,
            "prewarmed": args.prewarm,
        },
        "sample": {
            "mix": MIX,
            "templates": len(pool),
            "template_bytes_mean": round(pool_bytes / len(pool)),
            "template_bytes_max": max(len(t.raw) for t in pool),
            "templates_sha256": digest.hexdigest(),
            "variants": dict(
                sorted(
                    (name, n)
                    for counts in tally.by_category.values()
                    for name, n in counts["messages"].items()
                )
            ),
        },
        "environment": _common.environment(),
        "load_average": {"start": load_start, "end": load_end},
        "results": {"correlate": correlate, "by_category": by_category, "batched": batched},
        "matches": tally.report(),
        "sanity": {
            "ok": tally.failures + batched["failures"] == 0,
            "failures": tally.failures + batched["failures"],
            "examples": tally.examples,
        },
        "memory": memory,
        "targets": targets,
        "all_targets_met": all(t["met"] for t in targets.values()),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
    return 0 if tally.failures + batched["failures"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
