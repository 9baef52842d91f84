"""replytrack.dns.to_ascii_domain: IDNA conversion and host-name validation."""

from __future__ import annotations

import pickle

import dns.exception
import dns.name
import pytest

from replytrack.dns import to_ascii_domain
from replytrack.errors import ConfigError, ReplytrackError


def test_ascii_domain_is_lower_cased() -> None:
    assert to_ascii_domain("Mail.Example.COM") == "mail.example.com"


def test_trailing_dot_is_dropped() -> None:
    assert to_ascii_domain("mail.example.com.") == "mail.example.com"


def test_unicode_domain_becomes_a_label() -> None:
    assert to_ascii_domain("bücher.example") == "xn--bcher-kva.example"


def test_unicode_domain_is_case_folded_before_conversion() -> None:
    assert to_ascii_domain("BÜCHER.Example.") == "xn--bcher-kva.example"


def test_existing_a_label_is_kept() -> None:
    assert to_ascii_domain("XN--BCHER-KVA.example") == "xn--bcher-kva.example"


def test_idna2008_a_label_is_accepted_as_given() -> None:
    """faß.de's IDNA 2008 A-label is a valid name even though IDNA 2003 would not produce it."""
    assert to_ascii_domain("xn--fa-hia.de") == "xn--fa-hia.de"


def test_fullwidth_letters_are_normalised_by_nameprep() -> None:
    assert to_ascii_domain("\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com") == "example.com"


def test_ideographic_full_stop_separates_labels() -> None:
    assert to_ascii_domain("bücher\u3002example") == "xn--bcher-kva.example"


def test_single_label_host_name_is_accepted() -> None:
    assert to_ascii_domain("localhost") == "localhost"


def test_digits_and_inner_hyphens_are_accepted() -> None:
    assert to_ascii_domain("em-1234.a1.example") == "em-1234.a1.example"


def test_63_octet_label_is_accepted() -> None:
    label = "a" * 63
    assert to_ascii_domain(f"{label}.com") == f"{label}.com"


def test_253_octet_name_is_accepted() -> None:
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(name) == 253
    assert to_ascii_domain(name) == name


def test_result_does_not_depend_on_the_idna_package() -> None:
    """IDNA 2003 is named explicitly, so dnspython's installed-package default plays no part."""
    assert to_ascii_domain("☃.com") == "xn--n3h.com"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param(".", id="root"),
        pytest.param("\u3002", id="ideographic-root"),
    ],
)
def test_empty_domain_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="empty"):
        to_ascii_domain(name)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("a b.com", id="space"),
        pytest.param("x\r\nBcc: y", id="crlf-injection"),
        pytest.param("mail.example.com\n", id="trailing-lf"),
        pytest.param("a\tb.com", id="tab"),
        pytest.param("a\x00b.com", id="nul"),
        pytest.param("ab\x7f.com", id="del"),
        pytest.param("a\u0085b.com", id="c1-next-line"),
        pytest.param("a\u00a0b.com", id="no-break-space"),
        pytest.param("a\u3000b.com", id="ideographic-space"),
        pytest.param("a\u2028b.com", id="line-separator"),
    ],
)
def test_whitespace_and_control_characters_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="whitespace or a control character"):
        to_ascii_domain(name)


@pytest.mark.parametrize(
    "name",
    ["a_b.com", "a@b.com", "a/b.com", "a\\065.com", "[127.0.0.1]", "a:b.com", "@"],
)
def test_ascii_characters_outside_host_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="not allowed in a host name"):
        to_ascii_domain(name)


@pytest.mark.parametrize("name", ["-bad.com", "bad-.com", "mail.-x.com"])
def test_label_with_leading_or_trailing_hyphen_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="not a valid host-name label"):
        to_ascii_domain(name)


def test_nameprep_result_outside_host_names_is_refused() -> None:
    """FULLWIDTH SOLIDUS passes the character check but Nameprep turns it into "/"."""
    with pytest.raises(ConfigError, match="not a valid host-name label"):
        to_ascii_domain("a\uff0fb.com")


@pytest.mark.parametrize("name", ["a..b.com", ".a.com", "a.com.."])
def test_empty_label_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="empty label"):
        to_ascii_domain(name)


def test_64_octet_label_is_refused() -> None:
    with pytest.raises(ConfigError, match="63 octets"):
        to_ascii_domain("a" * 64 + ".com")


def test_name_over_253_octets_is_refused() -> None:
    with pytest.raises(ConfigError, match="253 octets"):
        to_ascii_domain(".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 62]))


def test_300_character_domain_is_refused() -> None:
    with pytest.raises(ConfigError):
        to_ascii_domain(("abcdefghij." * 30)[:-1] + "x")


def test_huge_input_is_refused_quickly() -> None:
    with pytest.raises(ConfigError, match="253 octets"):
        to_ascii_domain("a" * 1_000_000)


@pytest.mark.parametrize("name", ["xn--zz.com", "xn--abc-.com"])
def test_invalid_a_label_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="not a valid A-label"):
        to_ascii_domain(name)


def test_a_label_prefix_on_non_ascii_label_is_refused() -> None:
    with pytest.raises(ConfigError, match="IDNA 2003"):
        to_ascii_domain("xn--bücher.com")


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("straße.de", id="sharp-s"),
        pytest.param("ς.gr", id="final-sigma"),
        pytest.param("a\u200db.com", id="zwj"),
        pytest.param("a\u200cb.com", id="zwnj"),
    ],
)
def test_idna_deviation_characters_are_refused(name: str) -> None:
    """IDNA 2003 and 2008 map these to different domains; guessing would pick one silently."""
    with pytest.raises(ConfigError, match="IDNA 2003 and IDNA 2008"):
        to_ascii_domain(name)


@pytest.mark.parametrize("name", [None, b"example.com", 5])
def test_non_str_is_refused(name: object) -> None:
    with pytest.raises(ConfigError, match="must be a str"):
        to_ascii_domain(name)  # type: ignore[arg-type]


def test_errors_are_config_errors_and_value_errors() -> None:
    with pytest.raises(ConfigError) as info:
        to_ascii_domain("-bad.com")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, ReplytrackError)


def test_dnspython_error_is_translated_and_chained() -> None:
    with pytest.raises(ConfigError) as info:
        to_ascii_domain("a..b")
    assert not isinstance(info.value, dns.exception.DNSException)
    assert isinstance(info.value.__cause__, dns.name.EmptyLabel)


def test_message_names_the_offending_domain() -> None:
    with pytest.raises(ConfigError, match=r"'-bad\.com'"):
        to_ascii_domain("-bad.com")


def test_error_survives_pickling() -> None:
    with pytest.raises(ConfigError) as info:
        to_ascii_domain("a b")
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is ConfigError
    assert str(copy) == str(info.value)
