"""A stateful fake of the Gmail API, and the contract harness of `GmailSource` around it.

`FakeGmail` is an httplib2-compatible http object (``request(uri, method, body, headers, ...)
-> (httplib2.Response, bytes)``) that answers the part of the Gmail REST API the source calls,
shaped like the documented responses (developers.google.com/gmail/api/reference/rest):
``users.getProfile``, ``users.messages.list`` (``q`` with ``after:``/``before:`` epoch seconds
and ``in:``/``-in:`` labels, ``labelIds``, ``includeSpamTrash``, ``nextPageToken``,
``resultSizeEstimate``), ``users.messages.get`` (``metadata`` with ``metadataHeaders``,
``raw``), and ``users.history.list`` (``history[].messagesAdded[].message`` with ``id``,
``threadId``, ``labelIds``; ``historyId`` strings; 404 for a ``startHistoryId`` older than the
history it keeps). The client library is used unchanged on top of it:
``build("gmail", "v1", http=FakeGmail(), static_discovery=True)``.

It answers batch requests too (developers.google.com/gmail/api/guides/batch): a ``POST`` to
the path the library's ``new_batch_http_request`` uses (``/batch``, from the discovery
document's ``batchPath``) or to the guide's ``/batch/gmail/v1``, with a ``multipart/mixed``
body of ``application/http`` parts, each one request (``GET /gmail/v1/users/me/messages/ID?
format=raw&alt=json HTTP/1.1``, headers, an empty line). Each is answered as it would be on its
own, and the response is ``multipart/mixed`` with an ``application/http`` part per request
(status line, headers, CRLF, JSON body) whose ``Content-ID: <response-X>`` names the request's
``Content-ID: <X>``; in reverse order, as nothing promises the request order.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.message
import email.parser
import http
import json
import threading
import urllib.parse
from pathlib import Path
from typing import Any

import attrs
import httplib2  # type: ignore[import-untyped]  # no py.typed; types-httplib2 not installed
import pytest
from googleapiclient.discovery import build  # type: ignore[import-untyped]  # no py.typed or stubs

from harnesses import Harness, message
from replytrack.sources.gmail import GmailSource

__all__ = ["FakeGmail", "GmailHarness", "StoredMessage"]

UTC = dt.timezone.utc
_PREFIX = "/gmail/v1/users/"
# The batch endpoint: the path of the discovery document's batchPath, which the library's
# new_batch_http_request posts to, and the one of the Gmail batch guide.
_BATCH_PATHS = ("/batch", "/batch/gmail/v1")
# Label names of the search operator in:/-in: and the system label ids they mean.
_IN = {
    "inbox": "INBOX",
    "sent": "SENT",
    "drafts": "DRAFT",
    "spam": "SPAM",
    "trash": "TRASH",
    "chats": "CHAT",
}
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_REASON = {
    400: "invalidArgument",
    401: "authError",
    404: "notFound",
    429: "rateLimitExceeded",
    500: "backendError",
    503: "backendError",
}


@attrs.define
class StoredMessage:
    """One message in the fake mailbox."""

    id: str
    thread_id: str
    raw: bytes
    labels: list[str]
    internal_date: int  # epoch milliseconds
    seq: int  # arrival order, to order messages received in the same millisecond

    def key(self) -> tuple[int, int]:
        """The list order (newest first when reversed)."""
        return (self.internal_date, self.seq)


def _headers(raw: bytes) -> list[dict[str, str]]:
    """The header fields of `raw` as Gmail's ``payload.headers``: unfolded, not decoded."""
    block = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("utf-8", "replace")
    fields: list[dict[str, str]] = []
    for line in block.split("\n"):
        if line[:1] in (" ", "\t") and fields:
            fields[-1]["value"] += line  # unfold: the line break goes, the blank stays
        elif ":" in line:
            name, _, value = line.partition(":")
            fields.append({"name": name.strip(), "value": value.strip()})
    return fields


def _token(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _untoken(token: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


class _APIError(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class FakeGmail:
    """A Gmail mailbox behind an httplib2-like `request`; see the module docstring.

    Args:
        email: the account's address (``users.getProfile``).
        history_id: the mailbox's history id to start from.
        max_history: history records kept; older ones expire, and a ``startHistoryId`` before
            the oldest kept is answered with 404, as Gmail does after about a week.
    """

    def __init__(
        self, email: str = "rep@sales.example", *, history_id: int = 4100, max_history: int = 1000
    ) -> None:
        self.email = email
        self.history_id = history_id
        self.max_history = max_history
        self.messages: dict[str, StoredMessage] = {}
        self.history: list[dict[str, Any]] = []
        self.oldest = history_id  # the lowest startHistoryId still answered
        self.requests: list[str] = []  # HTTP requests: a batch is one
        self.batches: list[list[str]] = []  # the requests inside each batch, in order
        self._seq = 0
        self._batch_failure: int | None = None
        self._part_failures: dict[str, int] = {}
        self._dropped_parts: set[str] = set()
        self._fail_in: int | None = None
        self._fail_with: BaseException | None = None
        self._fail_batches_too = True
        self._revoked = False
        self._lock = threading.Lock()

    # -- driving the mailbox -------------------------------------------------------------------

    def deliver(
        self,
        raw: bytes,
        *,
        labels: tuple[str, ...] = ("INBOX", "UNREAD"),
        thread_id: str | None = None,
        received_at: dt.datetime | None = None,
    ) -> str:
        """Add a message, as delivery (or the rep's sending, with ``SENT``) does; its id."""
        with self._lock:
            self._seq += 1
            message_id = f"{0x18E2C0FFEE000000 + self._seq * 0x1F3:016x}"
            when = received_at or dt.datetime.now(UTC)
            stored = StoredMessage(
                id=message_id,
                thread_id=thread_id or message_id,
                raw=raw,
                labels=list(labels),
                internal_date=int(when.timestamp() * 1000),
                seq=self._seq,
            )
            self.messages[message_id] = stored
            brief = {"id": message_id, "threadId": stored.thread_id}
            added = {**brief, "labelIds": list(labels)}
            self._record({"messages": [brief], "messagesAdded": [{"message": added}]})
            return message_id

    def relabel(
        self, message_id: str, *, add: tuple[str, ...] = (), remove: tuple[str, ...] = ()
    ) -> None:
        """Change a message's labels (a history record of another type)."""
        with self._lock:
            stored = self.messages[message_id]
            stored.labels = [x for x in stored.labels if x not in remove] + list(add)
            brief = {"id": message_id, "threadId": stored.thread_id, "labelIds": stored.labels}
            record: dict[str, Any] = {"messages": [brief]}
            if add:
                record["labelsAdded"] = [{"message": brief, "labelIds": list(add)}]
            if remove:
                record["labelsRemoved"] = [{"message": brief, "labelIds": list(remove)}]
            self._record(record)

    def delete(self, message_id: str) -> None:
        """Delete a message for good."""
        with self._lock:
            stored = self.messages.pop(message_id)
            brief = {"id": message_id, "threadId": stored.thread_id}
            self._record({"messages": [brief], "messagesDeleted": [{"message": brief}]})

    def expire_history(self) -> None:
        """Let a week pass: the history moves on, and every history id issued so far expires.

        A ``startHistoryId`` given out before is then answered with 404.
        """
        with self._lock:
            self.history.clear()
            self.history_id += 7  # changes of other kinds meanwhile (reads, labels)
            self.oldest = self.history_id

    def fail_request(self, after: int, error: BaseException, *, batches: bool = True) -> None:
        """Make the request after the next `after` ones raise `error` (once).

        With `batches` False, batch requests neither count nor fail: the fault hits a request
        whose failure the source does not absorb (it reads what a failed batch held again).
        """
        with self._lock:
            self._fail_in = after
            self._fail_with = error
            self._fail_batches_too = batches

    def revoke(self) -> None:
        """Answer every request with 401, as Google does once access was revoked."""
        self._revoked = True

    def fail_batches(self, status: int | None) -> None:
        """Answer every batch request with `status` as a whole (``None``: serve them again)."""
        self._batch_failure = status

    def fail_in_batches(self, status: int, *message_ids: str) -> None:
        """Answer the ``messages.get`` of these ids inside a batch with `status`.

        A 429 or 5xx inside a 200, as Gmail answers parts of a batch that is too large or
        too fast; outside a batch the same requests still succeed.
        """
        self._part_failures.update(dict.fromkeys(message_ids, status))

    def drop_from_batches(self, *message_ids: str) -> None:
        """Leave out the parts of these ids' ``messages.get`` from batch responses."""
        self._dropped_parts.update(message_ids)

    def _record(self, record: dict[str, Any]) -> None:
        # History ids grow with gaps (the API documents them as not contiguous).
        self.history_id += 1 + self.history_id % 3
        self.history.append({"id": str(self.history_id), **record})
        if len(self.history) > self.max_history:
            dropped = self.history.pop(0)
            self.oldest = int(dropped["id"])

    # -- httplib2.Http -------------------------------------------------------------------------

    def request(  # noqa: PLR0917 (httplib2.Http.request's signature)
        self,
        uri: str,
        method: str = "GET",
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        redirections: int = 5,
        connection_type: Any = None,
    ) -> tuple[httplib2.Response, bytes]:
        """Answer one request of the client library."""
        with self._lock:
            self.requests.append(f"{method} {uri}")
            batch = urllib.parse.urlsplit(uri).path in _BATCH_PATHS
            if self._fail_in is not None and (self._fail_batches_too or not batch):
                if self._fail_in == 0:
                    error, self._fail_in, self._fail_with = self._fail_with, None, None
                    assert error is not None
                    raise error
                self._fail_in -= 1
            if batch:
                return self._batch(method, body, headers or {})
            return self._response(*self._answer(method, uri))

    def close(self) -> None:
        """Nothing to close (``Resource.close`` calls it)."""

    @staticmethod
    def _response(status: int, payload: object) -> tuple[httplib2.Response, bytes]:
        response = httplib2.Response(
            {"status": str(status), "content-type": "application/json; charset=UTF-8"}
        )
        return response, json.dumps(payload).encode()

    def _answer(self, method: str, uri: str) -> tuple[int, object]:
        """The status and JSON payload of one API request."""
        try:
            if self._revoked:
                raise _APIError(401, "Request had invalid authentication credentials.")
            return 200, self._route(method, uri)
        except _APIError as failure:
            return failure.code, _error_body(failure.code, failure.text)

    def _batch(
        self, method: str, body: bytes | str | None, headers: dict[str, str]
    ) -> tuple[httplib2.Response, bytes]:
        """Answer a batch request: a ``multipart/mixed`` of requests, one of responses."""
        if self._batch_failure is not None:
            status = self._batch_failure
            return self._response(status, _error_body(status, "The batch request failed."))
        content_type = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
        text = body.decode() if isinstance(body, bytes) else body or ""
        # As the library parses the response: the header first, so the parser finds the parts.
        mime = email.parser.Parser().parsestr(f"Content-Type: {content_type}\r\n\r\n{text}")
        if method != "POST" or not mime.is_multipart():
            return self._response(400, _error_body(400, "Not a multipart/mixed batch request."))
        inner: list[str] = []
        parts: list[str] = []
        for request in mime.get_payload():
            assert isinstance(request, email.message.Message), request
            assert request.get_content_type() == "application/http", request
            content_id = request["Content-ID"]
            assert content_id.startswith("<"), content_id
            assert content_id.endswith(">"), content_id
            # "GET /gmail/v1/users/me/messages/ID?format=raw&alt=json HTTP/1.1", headers, "".
            http_request = request.get_payload()
            assert isinstance(http_request, str), http_request
            request_line, _, rest = http_request.replace("\r\n", "\n").partition("\n")
            verb, target, _version = request_line.split(" ")
            fields = email.parser.Parser().parsestr(rest, headersonly=True)
            uri = f"https://{fields['Host']}{target}"
            inner.append(f"{verb} {uri}")
            *_, collection, last = urllib.parse.urlsplit(target).path.split("/")
            message_id = urllib.parse.unquote(last) if collection == "messages" else None
            if message_id in self._dropped_parts:
                continue
            if message_id in self._part_failures:
                status = self._part_failures[message_id]
                payload: object = _error_body(status, http.HTTPStatus(status).description)
            else:
                status, payload = self._answer(verb, uri)
            parts.append(
                "Content-Type: application/http\r\n"
                f"Content-ID: <response-{content_id[1:]}\r\n"
                "\r\n"
                f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
                "Content-Type: application/json; charset=UTF-8\r\n"
                "Vary: Origin\r\n"
                "\r\n"
                f"{json.dumps(payload)}\r\n"
            )
        self.batches.append(inner)
        boundary = f"batch_{len(self.batches)}_fake"
        out = "".join(f"--{boundary}\r\n{part}" for part in reversed(parts))
        response = httplib2.Response(
            {"status": "200", "content-type": f"multipart/mixed; boundary={boundary}"}
        )
        return response, f"{out}--{boundary}--\r\n".encode()

    def _route(self, method: str, uri: str) -> dict[str, Any]:
        parts = urllib.parse.urlsplit(uri)
        params = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        assert parts.path.startswith(_PREFIX), uri
        assert params.pop("alt", ["json"]) == ["json"], uri
        user, *rest = parts.path[len(_PREFIX) :].split("/")
        if method != "GET":
            raise _APIError(400, f"method {method} is not supported by the fake")
        if urllib.parse.unquote(user) not in ("me", self.email):
            raise _APIError(404, "Requested entity was not found.")
        if rest == ["profile"]:
            return self._profile()
        if rest == ["messages"]:
            return self._list(params)
        if len(rest) == 2 and rest[0] == "messages":
            return self._get(urllib.parse.unquote(rest[1]), params)
        if rest == ["history"]:
            return self._history(params)
        raise _APIError(404, f"not a resource of the fake: {parts.path}")

    def _profile(self) -> dict[str, Any]:
        return {
            "emailAddress": self.email,
            "messagesTotal": len(self.messages),
            "threadsTotal": len({m.thread_id for m in self.messages.values()}),
            "historyId": str(self.history_id),
        }

    def _list(self, params: dict[str, list[str]]) -> dict[str, Any]:
        wanted = [m for m in self.messages.values() if self._matches(m, params)]
        wanted.sort(key=StoredMessage.key, reverse=True)  # newest first, as Gmail lists
        (size,) = params.get("maxResults", ["100"])
        if "pageToken" in params:
            after = tuple(_untoken(params["pageToken"][0]))
            wanted = [m for m in wanted if m.key() < after]
        page = wanted[: min(int(size), 500)]
        out: dict[str, Any] = {"resultSizeEstimate": len(wanted)}
        if page:  # an empty result has no "messages" at all
            out["messages"] = [{"id": m.id, "threadId": m.thread_id} for m in page]
        if len(wanted) > len(page):
            out["nextPageToken"] = _token(page[-1].key())
        return out

    def _matches(self, stored: StoredMessage, params: dict[str, list[str]]) -> bool:
        labels = set(stored.labels)
        if params.get("includeSpamTrash", ["false"]) != ["true"] and labels & {"SPAM", "TRASH"}:
            return False
        if not set(params.get("labelIds", [])) <= labels:
            return False
        for term in " ".join(params.get("q", [])).split():
            operator, _, value = term.partition(":")
            seconds = stored.internal_date // 1000
            if operator == "after" and value.isdigit():
                ok = seconds > int(value)
            elif operator == "before" and value.isdigit():
                ok = seconds < int(value)
            elif operator in ("in", "-in") and value in _IN:
                ok = (_IN[value] in labels) == (operator == "in")
            else:
                raise _APIError(400, f"the fake does not understand the query term {term!r}")
            if not ok:
                return False
        return True

    def _get(self, message_id: str, params: dict[str, list[str]]) -> dict[str, Any]:
        stored = self.messages.get(message_id)
        if stored is None:
            raise _APIError(404, "Requested entity was not found.")
        out: dict[str, Any] = {
            "id": stored.id,
            "threadId": stored.thread_id,
            "labelIds": list(stored.labels),
            "snippet": "",
            "sizeEstimate": len(stored.raw),
            "historyId": str(self.history_id),
            "internalDate": str(stored.internal_date),
        }
        (form,) = params.get("format", ["full"])
        if form == "raw":
            out["raw"] = base64.urlsafe_b64encode(stored.raw).decode()
        elif form == "metadata":
            names = {n.lower() for n in params.get("metadataHeaders", [])}
            fields = [f for f in _headers(stored.raw) if not names or f["name"].lower() in names]
            out["payload"] = {"partId": "", "mimeType": "text/plain", "headers": fields}
        else:
            raise _APIError(400, f"the fake does not serve format={form}")
        return out

    def _history(self, params: dict[str, list[str]]) -> dict[str, Any]:
        if "startHistoryId" not in params:
            raise _APIError(400, "Missing required parameter: startHistoryId")
        start = int(params["startHistoryId"][0])
        if start < self.oldest:
            raise _APIError(404, "Requested entity was not found.")
        types = params.get("historyTypes", [])
        keys = {
            "messageAdded": "messagesAdded",
            "messageDeleted": "messagesDeleted",
            "labelAdded": "labelsAdded",
            "labelRemoved": "labelsRemoved",
        }
        wanted = [keys[t] for t in types] or list(keys.values())
        records = []
        for record in self.history:
            if int(record["id"]) <= start or not any(k in record for k in wanted):
                continue
            records.append(
                {"id": record["id"], "messages": record["messages"]}
                | {k: record[k] for k in wanted if k in record}
            )
        if "pageToken" in params:
            after = _untoken(params["pageToken"][0])
            records = [r for r in records if int(r["id"]) > after]
        (size,) = params.get("maxResults", ["100"])
        page = records[: min(int(size), 500)]
        out: dict[str, Any] = {"historyId": str(self.history_id)}
        if page:
            out["history"] = page
        if len(records) > len(page):
            out["nextPageToken"] = _token(int(page[-1]["id"]))
        return out


def _error_body(code: int, text: str) -> dict[str, Any]:
    """A Google API error response (cloud.google.com/apis/design/errors)."""
    return {
        "error": {
            "code": code,
            "message": text,
            "errors": [
                {"message": text, "domain": "global", "reason": _REASON.get(code, "backendError")}
            ],
            "status": _STATUS.get(code, "UNKNOWN"),
        }
    }


def gmail_service(backend: FakeGmail) -> Any:
    """The client library's Gmail service over `backend` (bundled discovery, no network)."""
    return build("gmail", "v1", http=backend, static_discovery=True)


class GmailHarness(Harness):
    def __init__(self, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.backend = FakeGmail()
        self.source = GmailSource(gmail_service(self.backend), num_retries=0)

    def deliver(self, n: int, *, received_at: dt.datetime | None = None) -> None:
        self.backend.deliver(message(n), received_at=received_at)

    def invalidate(self, cursor: str) -> str:
        self.backend.expire_history()  # Gmail keeps about a week of history
        return cursor

    def inject_fault(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # The probe (users.getProfile) passes; the next request but a batch loses its
        # connection (a failed batch is not a failed fetch: its messages are read one by one).
        error = ConnectionResetError("connection reset by peer")
        self.backend.fail_request(after=1, error=error, batches=False)

    def break_mailbox(self) -> None:
        self.backend.revoke()
