"""GmailSource: the mark before the scan, history paging, own mail, errors, header blocks.

Most tests script the API with the client library's own ``HttpMockSequence``, one documented
response per request (developers.google.com/gmail/api/reference/rest), and check the requests
the source sends. The batch and end-to-end tests use the stateful fake of ``harnesses.gmail``,
which the contract suite also runs against.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.message
import importlib
import json
import logging
import re
import sys
import time
import urllib.parse
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

import attrs
import pytest
from googleapiclient.discovery import build  # type: ignore[import-untyped]  # no py.typed or stubs
from googleapiclient.errors import HttpError  # type: ignore[import-untyped]  # same
from googleapiclient.http import HttpMockSequence  # type: ignore[import-untyped]  # same

from harnesses.gmail import FakeGmail, gmail_service
from replytrack import MemoryStore, ReplyTracker
from replytrack.correlate import MatchMethod
from replytrack.errors import ConfigError, SourceError
from replytrack.headers import TRACKING_FIELDS, parse_headers
from replytrack.sources import Batch, IncomingMessage
from replytrack.sources.base import dump_cursor
from replytrack.sources.gmail import GmailSource
from replytrack.testing import CapturingHook, build_reply

UTC = dt.timezone.utc
EMAIL = "rep@sales.example"
NOW = dt.datetime(2027, 3, 10, 12, 0, tzinfo=UTC)
Response = tuple[dict[str, str], str]


# --------------------------------------------------------------------------------------------
# Documented responses
# --------------------------------------------------------------------------------------------


JSON = {"content-type": "application/json; charset=UTF-8"}
BATCH_URI = "https://gmail.googleapis.com/batch"  # the discovery document's batchPath


def ok(payload: dict[str, Any]) -> Response:
    return {"status": "200", **JSON}, json.dumps(payload)


def error(code: int, status: str, reason: str, text: str) -> Response:
    errors = [{"message": text, "domain": "global", "reason": reason}]
    body = {"error": {"code": code, "message": text, "errors": errors, "status": status}}
    return {"status": str(code), **JSON}, json.dumps(body)


NOT_FOUND = error(404, "NOT_FOUND", "notFound", "Requested entity was not found.")


def profile(history_id: int, address: str = EMAIL) -> Response:
    return ok(
        {
            "emailAddress": address,
            "messagesTotal": 3,
            "threadsTotal": 3,
            "historyId": str(history_id),
        }
    )


def listing(*ids: str, next_page: str | None = None) -> Response:
    body: dict[str, Any] = {"resultSizeEstimate": len(ids)}
    if ids:
        body["messages"] = [{"id": i, "threadId": f"t-{i}"} for i in ids]
    if next_page:
        body["nextPageToken"] = next_page
    return ok(body)


def raw_message(message_id: str) -> bytes:
    return build_reply(message_id=f"<{message_id}@prospect.example>", subject=f"Re: {message_id}")


def fields(raw: bytes) -> list[dict[str, str]]:
    """The header fields of `raw` as Gmail's ``payload.headers``: unfolded, not decoded."""
    block = raw.split(b"\r\n\r\n", 1)[0].decode()
    out: list[dict[str, str]] = []
    for line in block.split("\r\n"):
        if line[:1] in (" ", "\t"):
            out[-1]["value"] += line
        else:
            name, _, value = line.partition(":")
            out.append({"name": name, "value": value.strip()})
    return out


def metadata(
    message_id: str,
    *,
    headers: list[dict[str, str]] | None = None,
    labels: tuple[str, ...] = ("INBOX", "UNREAD"),
    at: dt.datetime = NOW,
) -> Response:
    return ok(
        {
            "id": message_id,
            "threadId": f"t-{message_id}",
            "labelIds": list(labels),
            "snippet": "Thanks, that sounds good.",
            "historyId": "999",
            "internalDate": str(int(at.timestamp() * 1000)),
            "payload": {
                "partId": "",
                "mimeType": "text/plain",
                "filename": "",
                "headers": headers if headers is not None else fields(raw_message(message_id)),
            },
            "sizeEstimate": 1234,
        }
    )


def batched(*responses: Response, ids: Sequence[int] | None = None) -> Response:
    """A batch response written as the batch guide shows one, a part per response.

    Part i answers the request id ``ids[i]`` (default: i, the i-th request of the batch).
    """
    out = []
    for request_id, (headers, payload) in zip(
        ids or range(len(responses)), responses, strict=True
    ):
        status = HTTPStatus(int(headers["status"]))
        out.append(
            "--batch_xyz\r\n"
            "Content-Type: application/http\r\n"
            f"Content-ID: <response-e0a6d3e1-4a5b + {request_id}>\r\n"
            "\r\n"
            f"HTTP/1.1 {status.value} {status.phrase}\r\n"
            "Content-Type: application/json; charset=UTF-8\r\n"
            "\r\n"
            f"{payload}\r\n"
        )
    content_type = "multipart/mixed; boundary=batch_xyz"
    return {"status": "200", "content-type": content_type}, "".join(out) + "--batch_xyz--\r\n"


def added(record_id: int, *messages: tuple[str, tuple[str, ...]]) -> dict[str, Any]:
    """A history record of type messageAdded."""
    briefs = [{"id": m, "threadId": f"t-{m}"} for m, _ in messages]
    return {
        "id": str(record_id),
        "messages": briefs,
        "messagesAdded": [
            {"message": {**b, "labelIds": list(labels)}}
            for b, (_, labels) in zip(briefs, messages, strict=True)
        ],
    }


def history(*records: dict[str, Any], history_id: int, next_page: str | None = None) -> Response:
    body: dict[str, Any] = {"historyId": str(history_id)}
    if records:
        body["history"] = list(records)
    if next_page:
        body["nextPageToken"] = next_page
    return ok(body)


INBOX = ("INBOX", "UNREAD")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def scripted(*responses: Response, **options: Any) -> tuple[GmailSource, HttpMockSequence]:
    http = HttpMockSequence(list(responses))
    service = build("gmail", "v1", http=http, static_discovery=True)
    options.setdefault("num_retries", 0)
    options.setdefault("clock", lambda: NOW)
    return GmailSource(service, **options), http


def calls(http: HttpMockSequence) -> list[tuple[str, dict[str, list[str]]]]:
    """The requests made: (path after ``users/me/``, query parameters).

    A batch request is ``("batch", {"parts": PATHS})``, the paths of the requests it holds.
    """
    out = []
    for uri, method, body, _ in http.request_sequence:
        if (method, uri) == ("POST", BATCH_URI):
            inner = re.findall(r"^(\w+) (\S+) HTTP/1\.1\r?$", body, re.M)
            assert {verb for verb, _ in inner} == {"GET"}  # read-only (base Rule 5)
            parts = [urllib.parse.urlsplit(target).path for _, target in inner]
            out.append(
                ("batch", {"parts": [p.removeprefix("/gmail/v1/users/me/") for p in parts]})
            )
            continue
        assert method == "GET"  # read-only (base Rule 5)
        parts = urllib.parse.urlsplit(uri)
        path = parts.path.removeprefix("/gmail/v1/users/me/")
        out.append((path, urllib.parse.parse_qs(parts.query)))
    return out


def paths(http: HttpMockSequence) -> list[str]:
    """The paths of `calls`; a batch request is ``batch[PATH, ...]``."""
    return [
        f"batch[{', '.join(params['parts'])}]" if path == "batch" else path
        for path, params in calls(http)
    ]


def history_cursor(history_id: int, part: int = 0, user: str = EMAIL) -> str:
    return dump_cursor("gmail", {"user": user, "hid": str(history_id), "part": part})


def mids(batch: Batch) -> list[str]:
    return [m.source_id for m in batch.messages]


# --------------------------------------------------------------------------------------------
# The mark, the scan, the history
# --------------------------------------------------------------------------------------------


def test_the_mark_is_read_before_the_scan_and_later_mail_comes_from_history() -> None:
    source, http = scripted(
        profile(100),  # initial_cursor: the mark ...
        listing("b", "a"),  # ... then the list, newest first
        profile(103),  # fetch's probe
        batched(metadata("a"), metadata("b")),
        history(added(102, ("c", INBOX)), history_id=103),  # c arrived during the scan
        metadata("c"),  # a batch of one is a request of its own
    )
    batch = source.fetch(None)
    assert mids(batch) == ["a", "b", "c"]
    assert batch.more is False
    assert json.loads(batch.cursor)["hid"] == "103"  # the response's historyId, past 102
    assert paths(http) == [
        "profile",
        "messages",
        "profile",
        "batch[messages/a, messages/b]",
        "history",
        "messages/c",
    ]
    listed, scanned = calls(http)[1][1], calls(http)[4][1]
    assert listed["q"] == ["-in:sent -in:drafts"]
    assert listed["includeSpamTrash"] == ["false"]
    assert scanned["startHistoryId"] == ["100"]
    assert scanned["historyTypes"] == ["messageAdded"]


def test_messages_are_read_as_metadata_with_the_tracking_fields() -> None:
    source, http = scripted(profile(100), listing("a"), profile(100), metadata("a"))
    source.fetch(source.initial_cursor(), limit=1)
    path, params = calls(http)[3]
    assert path == "messages/a"
    assert params["format"] == ["metadata"]
    assert params["metadataHeaders"] == list(TRACKING_FIELDS)


def test_a_message_carries_gmail_ids_labels_and_internal_date() -> None:
    received = dt.datetime(2027, 3, 9, 8, 15, 42, 123000, tzinfo=UTC)
    source, _ = scripted(profile(100), listing("a"), profile(100), metadata("a", at=received))
    (message,) = source.fetch(source.initial_cursor(), limit=1).messages
    assert message.source_id == "a"
    assert message.provider_thread_id == "t-a"
    assert message.labels == INBOX
    assert message.received_at == received
    assert message.folder is None
    assert message.complete is False
    assert parse_headers(message.data).message_id == "a@prospect.example"


def test_the_history_is_paged_and_a_record_is_split_at_the_limit() -> None:
    source, http = scripted(
        profile(120),
        history(added(101, ("a", INBOX), ("b", INBOX)), history_id=120),
        metadata("a"),
        profile(120),
        history(added(101, ("a", INBOX), ("b", INBOX)), history_id=120, next_page="page-2"),
        history(added(110, ("c", INBOX)), history_id=120),  # the pages first ...
        metadata("b"),  # ... then the messages they name
        profile(120),
        history(added(110, ("c", INBOX)), history_id=120),
        metadata("c"),
    )
    first = source.fetch(history_cursor(100), limit=1)
    assert mids(first) == ["a"]
    assert first.more is True
    assert json.loads(first.cursor) | {"v": 1} == json.loads(history_cursor(100, part=1))
    second = source.fetch(first.cursor, limit=1)
    assert mids(second) == ["b"]
    assert json.loads(second.cursor)["hid"] == "101"
    second_page = calls(http)[5][1]
    assert second_page["pageToken"] == ["page-2"]
    assert second_page["startHistoryId"] == ["100"]
    third = source.fetch(second.cursor, limit=1)
    assert mids(third) == ["c"]
    assert third.more is False
    assert json.loads(third.cursor)["hid"] == "120"


def test_a_record_split_at_the_limit_counts_gone_messages_but_not_own_mail() -> None:
    record = added(101, ("a", INBOX), ("sent", ("SENT",)), ("gone", INBOX), ("c", INBOX))
    source, http = scripted(
        profile(120),
        history(record, history_id=120),
        batched(metadata("a"), NOT_FOUND),  # the limit of 2: a and gone, sent skipped
        NOT_FOUND,  # gone, read again on its own: deleted since (Rule 7)
        profile(120),
        history(record, history_id=120),
        metadata("c"),
    )
    first = source.fetch(history_cursor(100), limit=2)
    assert mids(first) == ["a"]
    assert first.more is True
    assert json.loads(first.cursor) | {"v": 1} == json.loads(history_cursor(100, part=3))
    second = source.fetch(first.cursor, limit=2)
    assert mids(second) == ["c"]
    assert second.more is False
    assert json.loads(second.cursor)["hid"] == "120"
    assert paths(http)[2:4] == ["batch[messages/a, messages/gone]", "messages/gone"]


def test_history_records_at_or_before_the_start_are_not_delivered_again() -> None:
    """Whether Gmail reads startHistoryId inclusively or not, a handled record stays handled."""
    source, _ = scripted(
        profile(110),
        history(added(100, ("a", INBOX)), added(104, ("b", INBOX)), history_id=110),
        metadata("b"),
    )
    assert mids(source.fetch(history_cursor(100))) == ["b"]


def test_a_long_scan_is_resumable_in_bounded_segments() -> None:
    backend = FakeGmail()
    start = dt.datetime.now(UTC) - dt.timedelta(hours=1)
    numbers = {}
    for n in range(1, 6):
        when = start + dt.timedelta(minutes=n)
        numbers[backend.deliver(raw_message(f"m{n}"), received_at=when)] = n
    source = GmailSource(gmail_service(backend), num_retries=0, scan_buffer=2)
    cursor = source.initial_cursor()
    got = []
    while True:
        assert len(json.loads(cursor).get("scan", {}).get("ids", [])) <= 2
        batch = source.fetch(cursor, limit=1)
        got += [numbers[m.source_id] for m in batch.messages]
        cursor = batch.cursor
        if not batch.more:
            break
    # Rule 2: each segment oldest first, the newest segment first.
    assert got == [4, 5, 2, 3, 1]
    lists = [r for r in backend.requests if "/messages?" in r]
    assert all("maxResults=2" in r for r in lists)


def test_since_drops_what_the_after_slack_lists_by_internal_date() -> None:
    since = NOW - dt.timedelta(days=3)
    source, http = scripted(
        profile(100),
        listing("new", "old"),
        profile(100),
        batched(
            metadata("old", at=since - dt.timedelta(hours=5)),
            metadata("new", at=since + dt.timedelta(seconds=1)),
        ),
        history(history_id=100),
    )
    batch = source.fetch(source.initial_cursor(since=since))
    assert mids(batch) == ["new"]
    query = calls(http)[1][1]["q"][0]
    after = int((since - dt.timedelta(days=1)).timestamp())
    assert query == f"-in:sent -in:drafts after:{after}"


def test_a_caught_up_cursor_moves_past_other_changes_and_deleted_mail() -> None:
    backend = FakeGmail()
    source = GmailSource(gmail_service(backend), num_retries=0)
    first = backend.deliver(raw_message("a"))
    batch = source.fetch(None)
    assert mids(batch) == [first]
    backend.relabel(first, remove=("UNREAD",))  # read: a record of another type
    backend.delete(backend.deliver(raw_message("b")))  # gone before the next poll
    last = backend.deliver(raw_message("c"))
    batch = source.fetch(batch.cursor)
    assert mids(batch) == [last]
    assert json.loads(batch.cursor)["hid"] == str(backend.history_id)
    assert source.fetch(batch.cursor).messages == ()


# --------------------------------------------------------------------------------------------
# Own mail, deleted mail
# --------------------------------------------------------------------------------------------


def test_own_mail_is_skipped_without_reading_it() -> None:
    source, http = scripted(
        profile(120),
        history(
            added(101, ("sent", ("SENT",))),
            added(102, ("draft", ("DRAFT",))),
            added(103, ("to-self", ("SENT", "INBOX", "UNREAD"))),  # sent to the rep's own group
            added(104, ("spam", ("SPAM", "UNREAD"))),
            added(105, ("reply", INBOX)),
            history_id=120,
        ),
        metadata("reply"),
    )
    assert mids(source.fetch(history_cursor(100))) == ["reply"]
    assert paths(http) == ["profile", "history", "messages/reply"]


def test_labels_read_by_get_are_checked_again() -> None:
    source, _ = scripted(
        profile(100),
        listing("b", "a"),
        profile(100),
        batched(
            metadata("a", labels=("DRAFT",)),  # became a draft since it was listed
            metadata("b"),
        ),
        history(history_id=100),
    )
    assert mids(source.fetch(source.initial_cursor())) == ["b"]


def test_spam_and_label_filters_are_options() -> None:
    source, http = scripted(
        profile(120),
        history(
            added(101, ("spam", ("SPAM",))),
            added(102, ("archived", ("CATEGORY_UPDATES",))),
            history_id=120,
        ),
        metadata("spam", labels=("SPAM",)),
        include_spam_trash=True,
        label_ids=("SPAM",),
    )
    assert mids(source.fetch(history_cursor(100))) == ["spam"]
    assert paths(http) == ["profile", "history", "messages/spam"]


def test_a_message_deleted_after_it_was_listed_is_skipped() -> None:
    source, http = scripted(
        profile(100),
        listing("b", "a"),
        profile(100),
        batched(NOT_FOUND, metadata("b")),
        NOT_FOUND,  # the part that failed, read again on its own
        history(history_id=100),
    )
    assert mids(source.fetch(source.initial_cursor())) == ["b"]
    assert paths(http)[3:] == ["batch[messages/a, messages/b]", "messages/a", "history"]


# --------------------------------------------------------------------------------------------
# Invalid cursors, errors
# --------------------------------------------------------------------------------------------


def test_expired_history_rescans_the_window() -> None:
    source, http = scripted(
        profile(500),
        NOT_FOUND,  # history.list: startHistoryId too old
        profile(500),  # the rescan's mark
        listing("a"),
        metadata("a"),
        history(history_id=500),
    )
    batch = source.fetch(history_cursor(100))
    assert batch.rescan is True
    assert mids(batch) == ["a"]
    assert paths(http) == ["profile", "history", "profile", "messages", "messages/a", "history"]
    after = int((NOW - source.rescan_window - dt.timedelta(days=1)).timestamp())
    assert calls(http)[3][1]["q"] == [f"-in:sent -in:drafts after:{after}"]
    assert calls(http)[5][1]["startHistoryId"] == ["500"]


def test_a_refused_page_token_rescans() -> None:
    cursor = dump_cursor(
        "gmail", {"user": EMAIL, "hid": "100", "scan": {"ids": [], "page": "stale", "since": None}}
    )
    source, http = scripted(
        profile(100),
        error(400, "INVALID_ARGUMENT", "invalidArgument", "Invalid pageToken"),
        profile(100),
        listing(),
        history(history_id=100),
    )
    assert source.fetch(cursor).rescan is True
    assert calls(http)[1][1]["pageToken"] == ["stale"]


def test_a_cursor_of_another_mailbox_rescans() -> None:
    source, http = scripted(profile(100), profile(100), listing(), history(history_id=100))
    batch = source.fetch(history_cursor(50, user="someone.else@sales.example"))
    assert batch.rescan is True
    assert paths(http) == ["profile", "profile", "messages", "history"]
    assert calls(http)[3][1]["startHistoryId"] == ["100"]  # the new mark, not the foreign 50


@pytest.mark.parametrize(
    "response",
    [
        error(429, "RESOURCE_EXHAUSTED", "rateLimitExceeded", "Too many requests"),
        error(500, "INTERNAL", "backendError", "Backend Error"),
        error(503, "UNAVAILABLE", "backendError", "The service is currently unavailable."),
        error(401, "UNAUTHENTICATED", "authError", "Invalid Credentials"),
    ],
)
def test_api_errors_surface_as_source_error(response: Response) -> None:
    source, _ = scripted(profile(120), response)
    with pytest.raises(SourceError) as caught:
        source.fetch(history_cursor(100))
    assert caught.value.source == "gmail:me"
    assert isinstance(caught.value.__cause__, HttpError)
    assert caught.value.__cause__.resp.status == int(response[0]["status"])


def test_retries_are_the_client_librarys(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    source, _ = scripted(
        profile(120),
        error(503, "UNAVAILABLE", "backendError", "The service is currently unavailable."),
        history(added(101, ("a", INBOX)), history_id=120),
        metadata("a"),
        num_retries=2,
    )
    assert mids(source.fetch(history_cursor(100))) == ["a"]
    assert len(slept) == 1


def test_a_malformed_response_is_a_source_error() -> None:
    source, _ = scripted(profile(120), ok({"historyId": "not a number"}))
    with pytest.raises(SourceError):
        source.fetch(history_cursor(100))


# --------------------------------------------------------------------------------------------
# Bodies and header blocks
# --------------------------------------------------------------------------------------------


def test_fetch_body_decodes_the_raw_message() -> None:
    whole = raw_message("a")
    raw = base64.urlsafe_b64encode(whole).decode().rstrip("=")  # padding may be left out
    source, http = scripted(
        profile(100), listing("a"), profile(100), metadata("a"), ok({"id": "a", "raw": raw})
    )
    (message,) = source.fetch(source.initial_cursor(), limit=1).messages
    assert source.fetch_body(message) == whole
    path, params = calls(http)[-1]
    assert path == "messages/a"
    assert params["format"] == ["raw"]


def test_fetch_body_of_a_deleted_message_is_a_source_error() -> None:
    source, _ = scripted(profile(100), listing("a"), profile(100), metadata("a"), NOT_FOUND)
    (message,) = source.fetch(source.initial_cursor(), limit=1).messages
    with pytest.raises(SourceError) as caught:
        source.fetch_body(message)
    assert isinstance(caught.value.__cause__, HttpError)


def delivered_block(headers: list[dict[str, str]]) -> bytes:
    source, _ = scripted(profile(100), listing("a"), profile(100), metadata("a", headers=headers))
    (message,) = source.fetch(source.initial_cursor(), limit=1).messages
    return message.data


def test_the_header_block_is_crlf_and_ends_with_an_empty_line() -> None:
    data = delivered_block(fields(raw_message("a")))
    assert data.endswith(b"\r\n\r\n")
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert raw_message("a").startswith(data.rstrip(b"\r\n"))


def test_encoded_words_are_kept_for_the_parser() -> None:
    data = delivered_block(
        [
            {"name": "From", "value": "=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <jm@kunde.example>"},
            {"name": "Subject", "value": "=?UTF-8?B?QVc6IEdyw7zDn2UgYXVzIEvDtmxu?="},
        ]
    )
    headers = parse_headers(data)
    assert headers.subject == "AW: Grüße aus Köln"
    assert headers.from_[0].name == "Jörg Müller"


def test_decoded_non_ascii_values_are_written_as_utf8() -> None:
    data = delivered_block(
        [
            {"name": "From", "value": "Jörg Müller <jm@kunde.example>"},
            {"name": "Subject", "value": "回复: 报价"},
        ]
    )
    headers = parse_headers(data)
    assert headers.subject == "回复: 报价"
    assert headers.from_[0].name == "Jörg Müller"
    assert "回复".encode() in data


def test_line_breaks_inside_a_value_are_folded() -> None:
    data = delivered_block(
        [
            {"name": "References", "value": "<a@x.example>\r\n <b@x.example>\n<c@x.example>"},
            {"name": "Subject", "value": "one\r\n\r\ntwo"},  # a blank line must not end it
            {"name": "In-Reply-To", "value": "<c@x.example>"},
            {"name": "Bad Name", "value": "dropped"},
        ]
    )
    headers = parse_headers(data)
    assert headers.references == ("a@x.example", "b@x.example", "c@x.example")
    assert headers.in_reply_to == ("c@x.example",)
    assert headers.get("Bad Name") is None
    assert b"References: <a@x.example>\r\n <b@x.example>\r\n <c@x.example>\r\n" in data


# --------------------------------------------------------------------------------------------
# Bodies in batches (Rule 6)
# --------------------------------------------------------------------------------------------


def mailbox(n: int, **options: Any) -> tuple[GmailSource, FakeGmail, list[IncomingMessage]]:
    """A source over a fake mailbox of `n` messages, and their header blocks."""
    backend = FakeGmail()
    raws = [raw_message(f"m{i}") for i in range(n)]
    for raw in raws:
        backend.deliver(raw)
    options.setdefault("num_retries", 0)
    source = GmailSource(gmail_service(backend), **options)
    messages = list(source.fetch(None, limit=max(n, 1)).messages)
    assert [m.complete for m in messages] == [False] * n
    assert [backend.messages[m.source_id].raw for m in messages] == raws
    return source, backend, messages


def since(backend: FakeGmail, start: int) -> list[str]:
    """The HTTP requests made since `start`, the query left out: ``POST batch``, ``GET ID``."""
    out = []
    for request in backend.requests[start:]:
        method, uri = request.split(" ", 1)
        path = urllib.parse.urlsplit(uri).path
        out.append(f"{method} {path.removeprefix('/gmail/v1/users/me/messages/')}")
    return out


def gets(backend: FakeGmail, batch: int = -1, form: str = "raw") -> list[str]:
    """The message ids a batch asked for, checking that each is a ``format=FORM`` get."""
    query = {"format": [form], "alt": ["json"]}
    if form == "metadata":
        query["metadataHeaders"] = list(TRACKING_FIELDS)
    ids = []
    for request in backend.batches[batch]:
        method, uri = request.split(" ", 1)
        parts = urllib.parse.urlsplit(uri)
        assert method == "GET"
        assert urllib.parse.parse_qs(parts.query) == query
        ids.append(parts.path.removeprefix("/gmail/v1/users/me/messages/"))
    return ids


def test_fetch_bodies_reads_up_to_20_messages_per_batch_request() -> None:
    source, backend, messages = mailbox(25)
    start = len(backend.requests)
    bodies = source.fetch_bodies(messages)
    assert since(backend, start) == ["POST /batch", "POST /batch"]
    assert backend.requests[start] == f"POST {BATCH_URI}"
    assert [gets(backend, -2), gets(backend, -1)] == [
        [m.source_id for m in messages[:20]],
        [m.source_id for m in messages[20:]],
    ]
    assert bodies == [source.fetch_body(m) for m in messages]
    assert bodies == [backend.messages[m.source_id].raw for m in messages]


def test_complete_messages_and_a_single_body_need_no_batch() -> None:
    source, backend, messages = mailbox(1)
    whole = IncomingMessage(raw_message("whole"), "whole")
    start = len(backend.requests)
    assert source.fetch_bodies([whole, messages[0]]) == [whole.data, raw_message("m0")]
    assert since(backend, start) == [f"GET {messages[0].source_id}"]  # with num_retries
    assert backend.batches == []


def test_a_deleted_message_in_a_batch_is_the_source_error_of_fetch_body(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source, backend, messages = mailbox(3)
    gone = messages[1]
    backend.delete(gone.source_id)
    start = len(backend.requests)
    with (
        caplog.at_level(logging.INFO, "replytrack.sources.gmail"),
        pytest.raises(SourceError) as caught,
    ):
        source.fetch_bodies(messages)
    # The batch's 404 is read again on its own, which raises as fetch_body always did.
    assert since(backend, start) == ["POST /batch", f"GET {gone.source_id}"]
    with pytest.raises(SourceError) as single:
        source.fetch_body(gone)
    assert str(caught.value) == str(single.value)
    assert caught.value.source == single.value.source == "gmail:me"
    assert isinstance(caught.value.__cause__, HttpError)
    assert caught.value.__cause__.resp.status == 404
    assert "gave 2 of 3 bodies" in caplog.text
    assert "HTTP 404 (1)" in caplog.text


@pytest.mark.parametrize("status", [429, 500, 503])
def test_failed_parts_are_read_one_by_one(status: int, caplog: pytest.LogCaptureFixture) -> None:
    source, backend, messages = mailbox(6)
    failing = [messages[1].source_id, messages[4].source_id]
    backend.fail_in_batches(status, *failing)
    start = len(backend.requests)
    with caplog.at_level(logging.INFO, "replytrack.sources.gmail"):
        bodies = source.fetch_bodies(messages)
    assert since(backend, start) == ["POST /batch", *(f"GET {i}" for i in failing)]
    assert bodies == [raw_message(f"m{i}") for i in range(6)]
    (record,) = caplog.records  # one line per batch
    assert "gave 4 of 6 bodies" in record.getMessage()
    assert f"HTTP {status} (2)" in record.getMessage()


def test_retries_of_a_failed_part_are_fetch_bodys(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    source, backend, messages = mailbox(2, num_retries=2)
    backend.fail_in_batches(429, messages[0].source_id)
    # The single request loses its connection once, then succeeds after the backoff.
    backend.fail_request(after=1, error=ConnectionResetError("connection reset by peer"))
    start = len(backend.requests)
    assert source.fetch_bodies(messages) == [raw_message("m0"), raw_message("m1")]
    assert since(backend, start) == ["POST /batch", *[f"GET {messages[0].source_id}"] * 2]
    assert len(slept) == 1


@pytest.mark.parametrize(
    "fault",
    ["404", "500", "reset", "parts missing"],
)
def test_a_failed_batch_request_reads_every_body_one_by_one(
    fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    source, backend, messages = mailbox(4)
    if fault == "reset":
        backend.fail_request(after=0, error=ConnectionResetError("connection reset by peer"))
    elif fault == "parts missing":
        # The library wants a part per request: without one, its execute raises (KeyError).
        backend.drop_from_batches(messages[2].source_id)
    else:
        backend.fail_batches(int(fault))
    start = len(backend.requests)
    with caplog.at_level(logging.INFO, "replytrack.sources.gmail"):
        bodies = source.fetch_bodies(messages)
    assert since(backend, start) == ["POST /batch", *(f"GET {m.source_id}" for m in messages)]
    assert bodies == [raw_message(f"m{i}") for i in range(4)]
    (record,) = caplog.records
    assert "gave 0 of 4 bodies" in record.getMessage()
    assert "the batch failed" in record.getMessage()


def test_large_messages_are_read_on_their_own() -> None:
    backend = FakeGmail()
    large = raw_message("large") + b"x" * (512 * 1024)  # Gmail's sizeEstimate: over 512 KiB
    for raw in (raw_message("a"), large, raw_message("b")):
        backend.deliver(raw)
    source = GmailSource(gmail_service(backend), num_retries=0)
    a, big, b = source.fetch(None).messages
    assert gets(backend, form="metadata") == [a.source_id, big.source_id, b.source_id]
    start = len(backend.requests)
    assert source.fetch_bodies([a, big, b]) == [raw_message("a"), large, raw_message("b")]
    assert since(backend, start) == ["POST /batch", f"GET {big.source_id}"]
    assert gets(backend) == [a.source_id, b.source_id]


def test_unusable_parts_of_a_documented_batch_response_are_read_one_by_one() -> None:
    """A response written as the batch guide shows one, without the fake."""
    raw = {i: base64.urlsafe_b64encode(raw_message(i)).decode() for i in "abcd"}
    response = batched(
        ok({"id": "d", "raw": raw["d"]}),
        ok({"id": "b", "threadId": "t-b"}),  # no raw
        ok({"id": "x", "raw": raw["c"]}),  # another message's
        ok({"id": "c", "raw": "not base64!"}),
        ids=[3, 1, 0, 2],
    )
    source, http = scripted(
        response,
        ok({"id": "a", "raw": raw["a"]}),
        ok({"id": "b", "raw": raw["b"]}),
        ok({"id": "c", "raw": raw["c"]}),
    )
    messages = [IncomingMessage(b"Subject: x\r\n\r\n", i, complete=False) for i in "abcd"]
    assert source.fetch_bodies(messages) == [raw_message(i) for i in "abcd"]
    (uri, method, body, headers), *singles = http.request_sequence
    assert (method, uri) == ("POST", BATCH_URI)
    assert headers["content-type"].startswith("multipart/mixed; boundary=")
    # Each part is one request, its Content-ID carrying the request id (the index).
    requested = re.findall(r"Content-ID: <[^>]+ \+ (\d+)>\r?\n\r?\nGET (\S+) HTTP/1\.1", body)
    assert requested == [
        (str(i), f"/gmail/v1/users/me/messages/{m}?format=raw&alt=json")
        for i, m in enumerate("abcd")
    ]
    assert [(m, u.split("?")[0].rsplit("/", 1)[1]) for u, m, _, _ in singles] == [
        ("GET", "a"),
        ("GET", "b"),
        ("GET", "c"),
    ]


# --------------------------------------------------------------------------------------------
# Header blocks in batches (Rule 6)
# --------------------------------------------------------------------------------------------


def deliver_numbered(backend: FakeGmail, numbers: range, **options: Any) -> list[str]:
    """Deliver test messages ``m{n}``, one a minute in number order; their ids."""
    start = dt.datetime.now(UTC) - dt.timedelta(days=1)
    return [
        backend.deliver(
            raw_message(f"m{n}"), received_at=start + dt.timedelta(minutes=n), **options
        )
        for n in numbers
    ]


def reads(requests: list[str]) -> list[str]:
    """The requests of `since` that read messages: ``POST /batch`` and ``GET ID``."""
    return [r for r in requests if r == "POST /batch" or "/" not in r]


@attrs.frozen
class Twins:
    """Two sources on one fake mailbox: one as Gmail serves batches, one as every batch fails.

    The second reads each message on its own, as `fetch` did before it read in batches.
    """

    backend: FakeGmail
    batching: GmailSource
    single: GmailSource

    @classmethod
    def of(cls, backend: FakeGmail, **options: Any) -> Twins:
        options.setdefault("num_retries", 0)
        return cls(
            backend,
            GmailSource(gmail_service(backend), **options),
            GmailSource(gmail_service(backend), **options),
        )

    def fetch(self, cursor: str | None, limit: int = 100) -> tuple[Batch, list[str], list[str]]:
        """The same `Batch` from both (asserted), and the requests each made (`since`)."""
        start = len(self.backend.requests)
        batch = self.batching.fetch(cursor, limit)
        middle = len(self.backend.requests)
        self.backend.fail_batches(500)
        try:
            single = self.single.fetch(cursor, limit)
        finally:
            self.backend.fail_batches(None)
        assert batch == single  # messages, order, cursor, more
        assert self.batching._sizes == self.single._sizes  # for the bodies' batches
        return batch, since(self.backend, start)[: middle - start], since(self.backend, middle)

    def metadata_batches(self, requests: list[str]) -> list[list[str]]:
        """The ids of the last batch requests among `requests`, each checked a metadata get."""
        n = requests.count("POST /batch")
        return [gets(self.backend, i, "metadata") for i in range(-n, 0)]


def test_a_first_scan_reads_header_blocks_20_to_a_batch_request() -> None:
    backend = FakeGmail()
    listed = deliver_numbered(backend, range(45))
    twins = Twins.of(backend)
    batch, batching, single = twins.fetch(None)
    assert mids(batch) == listed  # oldest first
    assert batch.more is False
    # 3 requests for the 45 header blocks instead of 45; the same messages and cursor.
    assert reads(batching) == ["POST /batch"] * 3
    assert twins.metadata_batches(batching) == [listed[:20], listed[20:40], listed[40:]]
    # Every batch failing, each message is read on its own, as before batches: 45 requests.
    assert [r for r in reads(single) if r != "POST /batch"] == [f"GET {i}" for i in listed]


def test_a_history_of_45_new_messages_reads_header_blocks_20_to_a_batch_request() -> None:
    backend = FakeGmail()
    twins = Twins.of(backend)
    first, _, _ = twins.fetch(None)
    replies = []
    for n in range(45):
        backend.deliver(raw_message(f"sent-{n}"), labels=("SENT",))  # own mail, never read
        replies += deliver_numbered(backend, range(n, n + 1))
    batch, batching, single = twins.fetch(first.cursor)
    assert mids(batch) == replies
    assert batch.more is False
    assert reads(batching) == ["POST /batch"] * 3
    assert twins.metadata_batches(batching) == [replies[:20], replies[20:40], replies[40:]]
    # Every batch failing, each message is read on its own, as before batches: 45 requests.
    assert [r for r in reads(single) if r != "POST /batch"] == [f"GET {i}" for i in replies]


@pytest.mark.parametrize("read_by", ["scan", "history"])
def test_a_message_deleted_before_its_header_block_is_read_is_skipped(read_by: str) -> None:
    backend = FakeGmail()
    twins = Twins.of(backend)
    cursor = twins.batching.fetch(None).cursor if read_by == "history" else None
    ids = deliver_numbered(backend, range(5))
    if cursor is None:
        cursor = twins.batching.initial_cursor()  # lists the 5
    backend.delete(ids[2])
    batch, batching, _ = twins.fetch(cursor)
    assert mids(batch) == ids[:2] + ids[3:]
    # A 404 inside the batch, read again on its own: a 404 again, skipped as ever (Rule 7).
    assert reads(batching) == ["POST /batch", f"GET {ids[2]}"]
    assert twins.metadata_batches(batching) == [ids]


@pytest.mark.parametrize("fault", ["429", "500", "parts missing", "503 batch"])
def test_header_blocks_a_batch_does_not_deliver_are_read_one_by_one(
    fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FakeGmail()
    ids = deliver_numbered(backend, range(6))
    twins = Twins.of(backend)
    cursor = twins.batching.initial_cursor()
    failing = [ids[1], ids[4]]
    if fault == "parts missing":
        backend.drop_from_batches(ids[1])  # the library then gives none of the parts
        failing = ids
    elif fault == "503 batch":
        backend.fail_batches(503)
        failing = ids
    else:
        backend.fail_in_batches(int(fault), *failing)
    start = len(backend.requests)
    with caplog.at_level(logging.INFO, "replytrack.sources.gmail"):
        batch = twins.batching.fetch(cursor)
    backend.fail_batches(None)
    assert reads(since(backend, start)) == ["POST /batch", *(f"GET {i}" for i in failing)]
    assert mids(batch) == ids
    assert batch == twins.fetch(cursor)[0]
    (record,) = caplog.records
    assert f"gave {6 - len(failing)} of 6 header blocks" in record.getMessage()


def test_unusable_header_block_parts_are_read_one_by_one() -> None:
    malformed = json.loads(metadata("b")[1]) | {"labelIds": "INBOX"}  # not a list
    source, http = scripted(
        profile(100),
        listing("c", "b", "a"),
        profile(100),
        batched(metadata("x"), ok(malformed), metadata("c")),  # x: another message's
        metadata("a"),
        metadata("b"),
        history(history_id=100),
    )
    assert mids(source.fetch(source.initial_cursor())) == ["a", "b", "c"]
    batch = "batch[messages/a, messages/b, messages/c]"
    assert paths(http)[3:] == [batch, "messages/a", "messages/b", "history"]


@pytest.mark.parametrize("limit", [1, 3, 7, 20])
def test_a_small_limit_gives_the_same_batches_and_cursors(limit: int) -> None:
    backend = FakeGmail()
    scanned = deliver_numbered(backend, range(23))
    backend.deliver(raw_message("spam"), labels=("SPAM",))
    twins = Twins.of(backend, scan_buffer=10)  # the scan in segments of 10
    cursor = twins.batching.initial_cursor()
    backend.delete(scanned[5])
    delivered: list[str] = []
    for step in range(100):
        if step == 2:  # history: own mail between replies, some gone before they are read
            for n in range(30, 55):
                if n % 4 == 0:
                    backend.deliver(raw_message(f"sent-{n}"), labels=("SENT",))
                (message_id,) = deliver_numbered(backend, range(n, n + 1))
                if n % 9 == 0:
                    backend.delete(message_id)
        batch, batching, _ = twins.fetch(cursor, limit)
        # The budget: at most `limit` messages.get calls, batched or not.
        assert sum(len(ids) for ids in twins.metadata_batches(batching)) <= limit
        assert len(batch.messages) <= limit
        delivered += mids(batch)
        cursor = batch.cursor
        if not batch.more and step > 2:
            break
    assert len(delivered) == len(set(delivered)) == 22 + 25 - 3


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def test_without_the_extra_the_import_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "googleapiclient", None)
    monkeypatch.setitem(sys.modules, "googleapiclient.errors", None)
    monkeypatch.delitem(sys.modules, "replytrack.sources.gmail")
    with pytest.raises(ImportError, match=r"pip install 'replytrack\[gmail\]'"):
        importlib.import_module("replytrack.sources.gmail")


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"service": "S", "credentials": object()},
        {"service": object()},
        {"service": "S", "user_id": ""},
        {"service": "S", "num_retries": -1},
        {"service": "S", "num_retries": True},
        {"service": "S", "scan_buffer": 0},
        {"service": "S", "label_ids": "INBOX"},
        {"service": "S", "include_spam_trash": "yes"},
        {"service": "S", "name": ""},
        {"credentials": object()},
    ],
)
def test_misuse_raises_config_error(kwargs: dict[str, Any]) -> None:
    if kwargs.get("service") == "S":
        kwargs["service"] = gmail_service(FakeGmail())
    with pytest.raises(ConfigError):
        GmailSource(**kwargs)


def test_credentials_build_a_service_the_source_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    from google.auth.credentials import AnonymousCredentials  # noqa: PLC0415 (one test)

    # google-auth is typed (py.typed) but leaves AnonymousCredentials.__init__ unannotated.
    source = GmailSource(credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    closed: list[bool] = []
    monkeypatch.setattr(source._service, "close", lambda: closed.append(True))
    assert source.name == "gmail:me"
    source.close()
    assert closed == [True]


def test_a_service_of_the_host_stays_open() -> None:
    service = gmail_service(FakeGmail())
    closed: list[bool] = []
    service.close = lambda: closed.append(True)
    GmailSource(service, user_id="rep@sales.example").close()
    assert closed == []


def test_wait_probes_the_profile_every_few_seconds() -> None:
    assert GmailSource.wait_interval == 5.0
    backend = FakeGmail()
    source = GmailSource(gmail_service(backend), num_retries=0)
    cursor = source.fetch(None).cursor
    backend.deliver(raw_message("late"))
    assert source.wait(cursor, 0) is True
    assert backend.requests[-1].startswith(
        "GET https://gmail.googleapis.com/gmail/v1/users/me/profile"
    )


# --------------------------------------------------------------------------------------------
# End to end: the tracker polling Gmail
# --------------------------------------------------------------------------------------------


def outgoing(to: str, subject: str) -> email.message.EmailMessage:
    message = email.message.EmailMessage()
    message["From"] = f"Rep <{EMAIL}>"
    message["To"] = to
    message["Subject"] = subject
    message.set_content("Hi, do you have 15 minutes this week?")
    return message


def test_the_tracker_correlates_replies_read_from_gmail() -> None:
    backend = FakeGmail()
    stop = CapturingHook()
    tracker = ReplyTracker(MemoryStore(), campaign_stop=stop, own_addresses=(EMAIL,))
    source = GmailSource(gmail_service(backend), num_retries=0)
    assert tracker.poll(source).errors == ()  # the first scan: an empty mailbox

    # Two sends; Gmail files each in its own thread, which the host records.
    first_message = outgoing("Jo Prospect <jo@customer.example>", "Quick question")
    first = tracker.stamp(first_message, ref="c42:p7")
    backend.deliver(first_message.as_bytes(), labels=("SENT",), thread_id="t-1")
    tracker.record_sent(attrs.evolve(first, provider_thread_id="t-1"))
    second_message = outgoing("Max Kunde <max@kunde.example>", "Kurze Frage")
    second = tracker.stamp(second_message, ref="c42:p8")
    backend.deliver(second_message.as_bytes(), labels=("SENT",), thread_id="t-2")
    tracker.record_sent(attrs.evolve(second, provider_thread_id="t-2"))

    # Jo answers with the usual headers; Max's client dropped them, but Gmail threads it.
    backend.deliver(
        build_reply(in_reply_to=f"<{first.message_id}>", subject="Re: Quick question"),
        thread_id="t-1",
    )
    backend.deliver(
        build_reply(
            in_reply_to=None,
            from_="Max Kunde <max@kunde.example>",
            subject="Termin",
            message_id="<no-refs@kunde.example>",
        ),
        thread_id="t-2",
    )

    result = tracker.poll(source)
    assert result.errors == ()
    assert result.seen == 2  # the sent copies never left the source
    assert [(e.ref, e.method) for e in stop.events] == [
        ("c42:p7", MatchMethod.IN_REPLY_TO),
        ("c42:p8", MatchMethod.PROVIDER_THREAD),
    ]
    assert all(e.received_at is not None for e in stop.events)
    assert tracker.poll(source).seen == 0


def test_a_poll_reads_header_blocks_and_bodies_in_one_batch_request_each() -> None:
    backend = FakeGmail()
    stop = CapturingHook()
    tracker = ReplyTracker(MemoryStore(), campaign_stop=stop, own_addresses=(EMAIL,))
    source = GmailSource(gmail_service(backend), num_retries=0)
    assert tracker.poll(source).errors == ()
    replies = []
    for n in range(5):
        sent_message = outgoing(f"Prospect {n} <p{n}@customer.example>", f"Question {n}")
        sent = tracker.stamp(sent_message, ref=f"c42:p{n}")
        backend.deliver(sent_message.as_bytes(), labels=("SENT",))
        tracker.record_sent(sent)
        replies.append(
            backend.deliver(
                build_reply(
                    in_reply_to=f"<{sent.message_id}>",
                    from_=f"Prospect {n} <p{n}@customer.example>",
                    subject=f"Re: Question {n}",
                    message_id=f"<reply-{n}@customer.example>",
                )
            )
        )
    start = len(backend.requests)
    result = tracker.poll(source)
    assert result.errors == ()
    assert [e.ref for e in stop.events] == [f"c42:p{n}" for n in range(5)]
    requests = since(backend, start)
    assert requests.count("POST /batch") == 2
    # Own mail is skipped unread (Rule 4): the replies' header blocks, then their bodies.
    assert gets(backend, -2, "metadata") == replies
    assert gets(backend) == replies
    assert not [r for r in backend.requests[start:] if "/messages/" in r]  # none on its own
