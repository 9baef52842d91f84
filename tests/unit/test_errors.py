"""The exception tree: one root, API misuse apart from malformed mail, picklable with context."""

from __future__ import annotations

import pickle

import pytest

from replytrack import (
    ConfigError,
    DNSError,
    HookError,
    ParseError,
    ReplytrackError,
    SourceError,
    StoreError,
)


@pytest.mark.parametrize(
    "cls", [ConfigError, DNSError, HookError, ParseError, SourceError, StoreError]
)
def test_every_error_derives_from_the_root(cls: type[Exception]) -> None:
    assert issubclass(cls, ReplytrackError)


def test_misuse_and_malformed_input_are_also_value_errors() -> None:
    assert issubclass(ConfigError, ValueError)
    assert issubclass(ParseError, ValueError)
    assert not issubclass(ConfigError, ParseError)
    assert not issubclass(StoreError, ValueError)


@pytest.mark.parametrize(
    ("error", "attributes"),
    [
        (ConfigError("bad domain"), {}),
        (ParseError("not an id", value="<x"), {"value": "<x"}),
        (StoreError("disk full"), {}),
        (SourceError("login failed", source="imap:rep@x"), {"source": "imap:rep@x"}),
        (HookError("hook raised", hook="crm_log", event_id="e1"), {"hook": "crm_log"}),
        (
            DNSError("no answer", domain="customer.example", timeout=True),
            {"domain": "customer.example", "timeout": True},
        ),
    ],
)
def test_errors_survive_pickling_with_their_context(
    error: ReplytrackError, attributes: dict[str, str]
) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert copy.args == error.args
    assert str(copy) == str(error)
    for name, value in attributes.items():
        assert getattr(copy, name) == value


def test_a_chained_cause_does_not_break_pickling() -> None:
    try:
        try:
            raise OSError("connection reset")
        except OSError as exc:
            raise SourceError("fetch failed", source="imap") from exc
    except SourceError as err:
        copy = pickle.loads(pickle.dumps(err))
    assert copy.source == "imap"


class _HostSourceError(SourceError):
    """A host's subclass whose context argument is required: the default pickling fails."""

    def __init__(self, message: str, *, mailbox: str) -> None:
        super().__init__(message, source="host")
        self.mailbox = mailbox


def test_host_subclasses_with_required_keywords_survive_pickling() -> None:
    copy = pickle.loads(pickle.dumps(_HostSourceError("gone", mailbox="rep@x")))
    assert (copy.mailbox, copy.source, str(copy)) == ("rep@x", "host", "gone")
