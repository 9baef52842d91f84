"""replytrack.msgid: Message-ID format, uniqueness, signing, rotation and verification."""

from __future__ import annotations

import hashlib
import hmac
import re
import socket
from datetime import datetime, timedelta, timezone

import attrs
import pytest

from replytrack.errors import ConfigError
from replytrack.msgid import MAX_ID_LENGTH, MAX_REF_BYTES, MessageIdGenerator, Token

KEY = b"k" * 32
OLD_KEY = b"o" * 32
NEW_KEY = b"n" * 32
STR_KEY = "s\u00e9cret"  # a str key, with a non-ASCII character
DOMAIN = "mail.example.com"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z

# RFC 5322 §3.2.3 atext and dot-atom-text; §3.6.4 msg-id with a dot-atom id-left/id-right.
ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
DOT_ATOM_TEXT = rf"{ATEXT}+(?:\.{ATEXT}+)*"
MSG_ID = re.compile(rf"<({DOT_ATOM_TEXT})@({DOT_ATOM_TEXT})>")
# What the brief allows in the left part: lower-case letters, digits and dots.
SAFE_LEFT = re.compile(r"[a-z0-9]+(?:\.[a-z0-9]+)*")


class Clock:
    """A settable clock returning whatever it was last set to."""

    def __init__(self, now: float | datetime = T0) -> None:
        self.now = now

    def __call__(self) -> float | datetime:
        return self.now


def make(secret: object = KEY, **kwargs: object) -> MessageIdGenerator:
    kwargs.setdefault("clock", Clock())
    return MessageIdGenerator(DOMAIN, secret, **kwargs)  # type: ignore[arg-type]


def left_of(mid: str) -> str:
    match = MSG_ID.fullmatch(mid)
    assert match is not None, mid
    return match.group(1)


def other_char(char: str) -> str:
    """Return a different character of the same kind, so the id stays well-formed."""
    for alphabet in ("abcdef", "234567", "abcdefghijklmnopqrstuvwxyz", "0123456789"):
        if char in alphabet:
            return alphabet[(alphabet.index(char) + 1) % len(alphabet)]
    raise AssertionError(char)


def replace_at(text: str, index: int, char: str) -> str:
    return text[:index] + char + text[index + 1 :]


# --- format -------------------------------------------------------------------------------


def test_plain_id_is_an_rfc5322_msg_id_with_brackets() -> None:
    mid = make().generate()
    assert MSG_ID.fullmatch(mid)
    assert mid.startswith("<")
    assert mid.endswith(f"@{DOMAIN}>")


def test_signed_id_is_an_rfc5322_msg_id_with_brackets() -> None:
    mid = make().generate(ref="c42:p7")
    assert MSG_ID.fullmatch(mid)
    assert mid.endswith(f"@{DOMAIN}>")


def test_left_part_uses_only_lower_case_letters_digits_and_dots() -> None:
    gen = make()
    refs = [None, "", "c42:p7", 'A/B=C+D"E\\F G', "ü€😀", "x" * MAX_REF_BYTES]
    for i in range(2000):
        left = left_of(gen.generate(ref=refs[i % len(refs)]))
        assert SAFE_LEFT.fullmatch(left), left


def test_forbidden_characters_never_appear() -> None:
    gen = make()
    seen: set[str] = set()
    for i in range(2000):
        seen.update(left_of(gen.generate(ref=None if i % 2 else f"ref/{i}=+")))
    assert not seen & set('/=+"\\ <>@ABCDEFGHIJKLMNOPQRSTUVWXYZ')


def test_plain_id_left_part_spreads_over_the_whole_base32_alphabet() -> None:
    """24 characters of 5 random bits each: 120 bits, well above the required 96."""
    gen = make()
    lefts = [left_of(gen.generate()) for _ in range(500)]
    assert {len(left) for left in lefts} == {24}
    assert set("".join(lefts)) == set("abcdefghijklmnopqrstuvwxyz234567")


def test_signed_id_starts_with_the_format_version() -> None:
    assert left_of(make().generate(ref="x")).startswith("r1.")


def test_domain_is_the_ascii_form_of_the_configured_domain() -> None:
    gen = MessageIdGenerator("Bücher.Example.")
    assert gen.domain == "xn--bcher-kva.example"
    assert gen.generate().endswith("@xn--bcher-kva.example>")


def test_generate_never_asks_for_the_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object) -> str:
        raise AssertionError("getfqdn called")

    monkeypatch.setattr(socket, "getfqdn", forbidden)
    monkeypatch.setattr(socket, "gethostname", forbidden)
    gen = make()
    gen.generate()
    gen.generate(ref="x")


def test_longest_possible_id_is_within_the_limit() -> None:
    domain = "a" * 63 + "." + "b" * 7  # 71 characters: the longest domain accepted
    gen = MessageIdGenerator(domain, KEY)
    mid = gen.generate(ref="é" * (MAX_REF_BYTES // 2))
    assert len(mid) <= MAX_ID_LENGTH
    assert len(mid) == MAX_ID_LENGTH  # the limit is tight, not merely respected


def test_domain_too_long_for_the_longest_id_is_refused() -> None:
    with pytest.raises(ConfigError, match="too long for Message-IDs"):
        MessageIdGenerator("a" * 63 + "." + "b" * 8, KEY)


def test_domain_limit_applies_without_a_secret_too() -> None:
    """Adding a secret later must not turn a working configuration into an error."""
    with pytest.raises(ConfigError, match="too long for Message-IDs"):
        MessageIdGenerator("a" * 63 + "." + "b" * 8)


# --- uniqueness ---------------------------------------------------------------------------


def test_plain_ids_are_unique() -> None:
    gen = make()
    ids = [gen.generate() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)


def test_signed_ids_with_the_same_ref_in_the_same_second_differ() -> None:
    gen = make(clock=Clock(T0))
    ids = [gen.generate(ref="same") for _ in range(5_000)]
    assert len(set(ids)) == len(ids)


def test_two_generators_with_the_same_configuration_do_not_collide() -> None:
    a, b = make(), make()
    assert {a.generate() for _ in range(1000)}.isdisjoint({b.generate() for _ in range(1000)})


# --- round trip ---------------------------------------------------------------------------


def test_signed_id_round_trips_its_ref() -> None:
    gen = make()
    token = gen.verify(gen.generate(ref="c42:p7"))
    assert token is not None
    assert token.ref == "c42:p7"


def test_empty_ref_round_trips() -> None:
    gen = make()
    assert gen.verify(gen.generate(ref="")) == Token(
        ref="", issued_at=datetime.fromtimestamp(T0, timezone.utc)
    )


def test_64_byte_ref_is_accepted() -> None:
    gen = make()
    ref = "r" * MAX_REF_BYTES
    token = gen.verify(gen.generate(ref=ref))
    assert token is not None
    assert token.ref == ref


def test_65_byte_ref_is_refused() -> None:
    with pytest.raises(ConfigError, match="longer than 64"):
        make().generate(ref="r" * (MAX_REF_BYTES + 1))


def test_ref_limit_counts_utf8_bytes_not_characters() -> None:
    with pytest.raises(ConfigError, match="66 bytes"):
        make().generate(ref="€" * 22)


def test_non_ascii_ref_round_trips() -> None:
    gen = make()
    ref = "Kampagne-Müller/日本/😀"
    token = gen.verify(gen.generate(ref=ref))
    assert token is not None
    assert token.ref == ref


def test_ref_with_mail_hostile_characters_round_trips() -> None:
    gen = make()
    ref = '<a@b>"\\\r\n\t =+/'
    token = gen.verify(gen.generate(ref=ref))
    assert token is not None
    assert token.ref == ref


def test_ref_that_is_not_str_is_refused() -> None:
    with pytest.raises(ConfigError, match="must be a str"):
        make().generate(ref=b"c42")  # type: ignore[arg-type]


def test_ref_with_lone_surrogate_is_refused() -> None:
    with pytest.raises(ConfigError, match="UTF-8"):
        make().generate(ref="\ud800")


def test_ref_without_a_secret_is_refused() -> None:
    with pytest.raises(ConfigError, match="needs a secret"):
        MessageIdGenerator(DOMAIN).generate(ref="c42")


def test_plain_generation_needs_no_secret() -> None:
    assert MSG_ID.fullmatch(MessageIdGenerator(DOMAIN).generate())


# --- clock --------------------------------------------------------------------------------


def test_injected_float_clock_sets_issued_at() -> None:
    gen = make(clock=Clock(T0 + 0.75))
    token = gen.verify(gen.generate(ref="x"))
    assert token is not None
    assert token.issued_at == datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_issued_at_is_aware_utc() -> None:
    gen = make()
    token = gen.verify(gen.generate(ref="x"))
    assert token is not None
    assert token.issued_at.utcoffset() == timedelta(0)


def test_injected_aware_datetime_clock_sets_issued_at() -> None:
    berlin = timezone(timedelta(hours=1))
    gen = make(clock=Clock(datetime(2026, 3, 1, 13, 30, 5, 999_999, tzinfo=berlin)))
    token = gen.verify(gen.generate(ref="x"))
    assert token is not None
    assert token.issued_at == datetime(2026, 3, 1, 12, 30, 5, tzinfo=timezone.utc)


def test_injected_int_clock_is_accepted() -> None:
    gen = make(clock=lambda: 86_400)
    token = gen.verify(gen.generate(ref="x"))
    assert token is not None
    assert token.issued_at == datetime(1970, 1, 2, tzinfo=timezone.utc)


def test_issued_at_follows_the_clock_between_calls() -> None:
    clock = Clock(T0)
    gen = make(clock=clock)
    first = gen.generate(ref="x")
    clock.now = T0 + 3600
    second = gen.generate(ref="x")
    clock.now = T0
    third = gen.generate(ref="x")
    assert [gen.verify(mid).issued_at for mid in (first, second, third)] == [  # type: ignore[union-attr]
        datetime.fromtimestamp(t, timezone.utc) for t in (T0, T0 + 3600, T0)
    ]


def test_default_clock_is_the_current_time() -> None:
    gen = MessageIdGenerator(DOMAIN, KEY)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    token = gen.verify(gen.generate(ref="x"))
    after = datetime.now(timezone.utc)
    assert token is not None
    assert before <= token.issued_at <= after


def test_plain_generation_does_not_read_the_clock() -> None:
    def clock() -> float:
        raise AssertionError("clock read")

    make(clock=clock).generate()


@pytest.mark.parametrize(
    "now",
    [
        pytest.param(datetime(2026, 1, 1), id="naive-datetime"),
        pytest.param(-1.0, id="before-1970"),
        pytest.param(float(2**35), id="after-3058"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="inf"),
        pytest.param(True, id="bool"),
        pytest.param("2026-01-01", id="str"),
        pytest.param(None, id="none"),
    ],
)
def test_clock_returning_an_unusable_time_is_a_config_error(now: object) -> None:
    gen = make(clock=lambda: now)
    with pytest.raises(ConfigError, match="clock"):
        gen.generate(ref="x")


def test_clock_that_is_not_callable_is_refused() -> None:
    with pytest.raises(ConfigError, match="callable"):
        make(clock=T0)


# --- verify: what it accepts --------------------------------------------------------------


def test_upper_cased_id_verifies() -> None:
    gen = make()
    mid = gen.generate(ref="Case-Sensitive Ref")
    token = gen.verify(mid.upper())
    assert token is not None
    assert token.ref == "Case-Sensitive Ref"


def test_lower_cased_id_verifies() -> None:
    gen = make()
    mid = gen.generate(ref="c42")
    assert gen.verify(mid.upper().lower()) == gen.verify(mid)


def test_id_without_brackets_verifies() -> None:
    gen = make()
    mid = gen.generate(ref="c42")
    assert gen.verify(mid[1:-1]) == gen.verify(mid) is not None


def test_id_with_surrounding_whitespace_verifies() -> None:
    gen = make()
    mid = gen.generate(ref="c42")
    assert gen.verify(f" \t{mid}\r\n") == gen.verify(mid) is not None


def test_id_as_ascii_bytes_verifies() -> None:
    gen = make()
    mid = gen.generate(ref="c42")
    assert gen.verify(mid.encode("ascii")) == gen.verify(mid) is not None


def test_id_under_another_domain_verifies() -> None:
    """The domain is not signed: a change of sending domain keeps old ids valid."""
    old = MessageIdGenerator("old.example", KEY, clock=Clock())
    new = MessageIdGenerator("new.example.org", KEY, clock=Clock())
    mid = old.generate(ref="c42")
    token = new.verify(mid)
    assert token is not None
    assert token.ref == "c42"
    assert new.verify(mid.replace("old.example", "elsewhere.test")) == token


def test_str_secret_is_the_same_key_as_its_utf8_bytes() -> None:
    mid = make(secret=STR_KEY).generate(ref="x")
    assert make(secret=STR_KEY.encode()).verify(mid) is not None


def test_id_signed_by_an_independent_hmac_implementation_verifies() -> None:
    """The format is specified well enough to be produced without replytrack's code."""
    derived = hmac.new(KEY, b"replytrack.msgid", hashlib.sha256).digest()
    time_field = "buvloia"  # 1_767_225_600 in 7 base32 digits (a=0 ... 7=31), big-endian
    signed = f"r1.{time_field}{'a' * 20}.{b'c42'.hex()}"
    digest = hmac.new(derived, signed.encode(), hashlib.sha256).digest()
    tag = "".join("abcdefghijklmnopqrstuvwxyz234567"[b & 31] for b in digest[:16])
    token = make().verify(f"<{signed}.{tag}@{DOMAIN}>")
    assert token == Token(ref="c42", issued_at=datetime.fromtimestamp(T0, timezone.utc))


def test_generated_tag_matches_an_independent_hmac_computation() -> None:
    mid = make().generate(ref="c42")
    signed, _, tag = left_of(mid).rpartition(".")
    derived = hmac.new(KEY, b"replytrack.msgid", hashlib.sha256).digest()
    digest = hmac.new(derived, signed.encode(), hashlib.sha256).digest()
    assert tag == "".join("abcdefghijklmnopqrstuvwxyz234567"[b & 31] for b in digest[:16])


def test_long_secret_matches_an_independent_hmac_computation() -> None:
    """Keys longer than SHA-256's 64-byte block are hashed first (RFC 2104 §3)."""
    long_key = bytes(range(200))
    mid = make(secret=long_key).generate(ref="c42")
    signed, _, tag = left_of(mid).rpartition(".")
    derived = hmac.new(long_key, b"replytrack.msgid", hashlib.sha256).digest()
    digest = hmac.new(derived, signed.encode(), hashlib.sha256).digest()
    assert tag == "".join("abcdefghijklmnopqrstuvwxyz234567"[b & 31] for b in digest[:16])


# --- verify: what it refuses --------------------------------------------------------------


@pytest.mark.parametrize(
    "mid",
    [
        pytest.param("<CAF=abc+DEF/ghi@mail.gmail.com>", id="gmail"),
        pytest.param(
            "<AM0PR01MB6113A1B2C3D4E5F60718293A4B5C6D7E8F@AM0PR01MB6113.eurprd01.prod.exchangelabs.com>",
            id="outlook",
        ),
        pytest.param(
            "<0100018c1a2b3c4d-5e6f7a8b-9c0d-1e2f-3a4b-5c6d7e8f9a0b-000000@email.amazonses.com>",
            id="ses",
        ),
        pytest.param("<20260101120000.12345.67890@localhost>", id="classic"),
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param("<>", id="empty-brackets"),
        pytest.param("<@>", id="only-at"),
        pytest.param("garbage", id="garbage"),
        pytest.param("<r1.@x>", id="bare-version"),
        pytest.param("<ünïcödé@exämple.com>", id="non-ascii"),
        pytest.param("\x00\x01\x02", id="control"),
        pytest.param("<" + "a" * 100_000 + "@x>", id="huge"),
    ],
)
def test_foreign_or_malformed_id_gives_none(mid: str) -> None:
    assert make().verify(mid) is None


@pytest.mark.parametrize("value", [None, 42, 4.2, ["<a@b>"], object(), bytearray(b"<a@b>")])
def test_value_that_is_not_str_or_bytes_gives_none(value: object) -> None:
    assert make().verify(value) is None  # type: ignore[arg-type]


def test_non_ascii_bytes_give_none() -> None:
    assert make().verify("<r1.é@example.com>".encode()) is None


def test_plain_id_gives_none() -> None:
    gen = make()
    assert gen.verify(gen.generate()) is None


def test_generator_without_secret_verifies_nothing() -> None:
    mid = make().generate(ref="c42")
    assert MessageIdGenerator(DOMAIN).verify(mid) is None


def test_id_signed_with_another_secret_gives_none() -> None:
    mid = make(secret=b"a" * 32).generate(ref="c42")
    assert make(secret=b"b" * 32).verify(mid) is None


def test_id_signed_with_another_salt_gives_none() -> None:
    mid = make(salt="tenant-a").generate(ref="c42")
    assert make(salt="tenant-b").verify(mid) is None
    assert make(salt="tenant-a").verify(mid) is not None


def test_id_without_domain_gives_none() -> None:
    gen = make()
    mid = gen.generate(ref="c42")
    assert gen.verify(mid.partition("@")[0] + ">") is None
    assert gen.verify(mid.partition("@")[0] + "@>") is None


def test_look_alike_that_lower_cases_to_ascii_gives_none() -> None:
    """KELVIN SIGN lower-cases to "k": the id must be refused, not folded into ours."""
    gen = make()
    mid = gen.generate(ref="c42")
    left = left_of(mid)
    index = next((i for i, c in enumerate(left) if c == "k"), None)
    if index is None:  # no "k" in this id: plant one with a valid id's help
        mid = next(m for m in (gen.generate(ref="c42") for _ in range(1000)) if "k" in left_of(m))
        index = left_of(mid).index("k")
    assert gen.verify(replace_at(mid, 1 + index, "\u212a")) is None


def _signed_left_parts(mid: str) -> dict[str, int]:
    """Index, in the left part, of one character of each field of a signed id with a ref."""
    left = left_of(mid)
    assert left.count(".") == 3
    ref_start = left.index(".", 3) + 1
    return {
        "version": 1,
        "time": 3 + 3,
        "nonce": 3 + 7 + 10,
        "ref": ref_start + 1,
        "tag": len(left) - 1,
    }


@pytest.mark.parametrize("field", ["version", "time", "nonce", "ref", "tag"])
def test_changing_any_field_gives_none(field: str) -> None:
    gen = make()
    mid = gen.generate(ref="c42:p7")
    index = 1 + _signed_left_parts(mid)[field]
    tampered = replace_at(mid, index, other_char(mid[index]))
    assert tampered != mid
    assert gen.verify(tampered) is None


def test_swapping_in_the_ref_of_another_id_gives_none() -> None:
    gen = make()
    victim = left_of(gen.generate(ref="c1")).split(".")
    donor = left_of(gen.generate(ref="c2")).split(".")
    forged = ".".join([*victim[:2], donor[2], victim[3]])
    assert gen.verify(f"<{forged}@{DOMAIN}>") is None


def test_removing_the_ref_gives_none() -> None:
    gen = make()
    parts = left_of(gen.generate(ref="c1")).split(".")
    assert gen.verify(f"<{parts[0]}.{parts[1]}.{parts[3]}@{DOMAIN}>") is None


def test_adding_a_ref_to_an_empty_ref_id_gives_none() -> None:
    gen = make()
    parts = left_of(gen.generate(ref="")).split(".")
    assert gen.verify(f"<{parts[0]}.{parts[1]}.6331.{parts[2]}@{DOMAIN}>") is None


def test_truncated_tag_gives_none() -> None:
    gen = make()
    left = left_of(gen.generate(ref="c1"))
    assert gen.verify(f"<{left[:-1]}@{DOMAIN}>") is None


def test_missing_tag_gives_none() -> None:
    gen = make()
    signed = left_of(gen.generate(ref="c1")).rpartition(".")[0]
    assert gen.verify(f"<{signed}@{DOMAIN}>") is None


def test_extra_character_gives_none() -> None:
    gen = make()
    left = left_of(gen.generate(ref="c1"))
    assert gen.verify(f"<{left}a@{DOMAIN}>") is None
    assert gen.verify(f"<a{left}@{DOMAIN}>") is None


# --- rotation -----------------------------------------------------------------------------


def test_rotation_signs_with_the_newest_key() -> None:
    rotating = make(secret=[OLD_KEY, NEW_KEY])
    mid = rotating.generate(ref="c42")
    assert make(secret=NEW_KEY).verify(mid) is not None
    assert make(secret=OLD_KEY).verify(mid) is None


def test_rotation_still_verifies_ids_signed_with_the_old_key() -> None:
    mid = make(secret=OLD_KEY).generate(ref="c42")
    token = make(secret=[OLD_KEY, NEW_KEY]).verify(mid)
    assert token is not None
    assert token.ref == "c42"


def test_removed_key_no_longer_verifies() -> None:
    mid = make(secret=OLD_KEY).generate(ref="c42")
    assert make(secret=[NEW_KEY]).verify(mid) is None


def test_rotation_accepts_a_tuple_of_mixed_str_and_bytes() -> None:
    mid = make(secret=STR_KEY).generate(ref="c42")
    assert make(secret=(STR_KEY, NEW_KEY)).verify(mid) is not None


# --- configuration errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    "domain",
    [
        pytest.param("", id="empty"),
        pytest.param("a b", id="space"),
        pytest.param("x\r\nBcc: y", id="header-injection"),
        pytest.param("-bad.com", id="leading-hyphen"),
        pytest.param("a@b.com", id="at-sign"),
        pytest.param(("abcdefghij." * 28)[:-1], id="300-chars"),
    ],
)
def test_invalid_domain_is_refused(domain: str) -> None:
    with pytest.raises(ConfigError):
        MessageIdGenerator(domain, KEY)


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param(b"", id="empty-bytes"),
        pytest.param("", id="empty-str"),
        pytest.param([], id="empty-list"),
        pytest.param([KEY, b""], id="empty-key-in-list"),
        pytest.param(12345, id="int"),
        pytest.param([KEY, 1], id="int-in-list"),
        pytest.param({KEY}, id="set-has-no-order"),
        pytest.param(iter([KEY]), id="iterator"),
    ],
)
def test_invalid_secret_is_refused(secret: object) -> None:
    with pytest.raises(ConfigError, match="secret"):
        MessageIdGenerator(DOMAIN, secret)  # type: ignore[arg-type]


@pytest.mark.parametrize("salt", [b"", "", 5])
def test_invalid_salt_is_refused(salt: object) -> None:
    with pytest.raises(ConfigError, match="salt"):
        make(salt=salt)


def test_config_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="needs a secret"):
        MessageIdGenerator(DOMAIN).generate(ref="x")
    with pytest.raises(ValueError, match="whitespace"):
        MessageIdGenerator("a b")


# --- the generator and the token as values -------------------------------------------------


def test_repr_shows_domain_and_key_count_but_never_the_secret() -> None:
    text = repr(make(secret=[STR_KEY, NEW_KEY]))
    assert text == "<MessageIdGenerator domain='mail.example.com' keys=2>"


def test_repr_of_unsigned_generator_shows_no_keys() -> None:
    assert (
        repr(MessageIdGenerator(DOMAIN)) == "<MessageIdGenerator domain='mail.example.com' keys=0>"
    )


def test_domain_is_read_only() -> None:
    gen = make()
    with pytest.raises(AttributeError):
        gen.domain = "evil.example"  # type: ignore[misc]


def test_token_is_frozen_and_hashable() -> None:
    token = Token(ref="c42", issued_at=datetime.fromtimestamp(T0, timezone.utc))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        token.ref = "other"  # type: ignore[misc]
    assert {token, Token(ref="c42", issued_at=token.issued_at)} == {token}


def test_can_sign_says_whether_the_generator_has_a_secret() -> None:
    assert make().can_sign
    assert not MessageIdGenerator(DOMAIN).can_sign
