"""A fake Microsoft Graph mailbox behind ``httpx.MockTransport``, and the contract harness.

`FakeGraph` keeps messages and a change log, and answers the requests `GraphSource` makes the
way Graph documents them (https://learn.microsoft.com/graph/delta-query-messages,
https://learn.microsoft.com/graph/api/resources/message): delta rounds paged by
``odata.maxpagesize`` with ``@odata.nextLink`` / ``@odata.deltaLink``, ``@removed`` entries,
410 Gone for expired sync state, a message GET with ``internetMessageHeaders``, ``$value``,
OData error bodies, 401 for unknown tokens, throttling with ``Retry-After``, and JSON batching
(https://learn.microsoft.com/graph/json-batching): ``POST $batch`` of up to 20 requests, each
answered as on its own, a body that is not JSON in base64, the answers in another order.

Like Outlook's, its skip and delta tokens carry the sync state themselves (here: the change
sequence number a round runs up to and the last one already listed), so an old link can be
followed again. Times are written to the second, as Graph writes them for messages.
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import email.utils
import functools
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

from harnesses import Harness, message
from replytrack.sources.graph import GraphSource

__all__ = ["FakeGraph", "GraphHarness"]

UTC = dt.timezone.utc
BASE = "https://graph.microsoft.com/v1.0"
TOKEN = "token-1"  # noqa: S105 (the fake's access token, not a secret)
UPN = "rep@sales.example"
USER_ID = "87d349ed-44d7-43e1-9a83-5f2406dee5bd"

#: Well-known folder names and the ids the fake gives those folders.
FOLDER_IDS = {
    "inbox": "AAMkAGI2TGuLAAA=",
    "junkemail": "AAMkAGI2TGuJAAA=",
    "sentitems": "AAMkAGI2TGuKAAA=",
    "drafts": "AAMkAGI2TGuMAAA=",
}

#: Requests in one ``$batch`` at most (Graph's limit).
MAX_BATCH = 20

_HEADER_LINE = re.compile(rb"^([!-9;-~]+):[ \t]?(.*(?:\r?\n[ \t].*)*)", re.MULTILINE)
_LINK_FOLDER = re.compile(r"mailFolders(?:\('([^']*)'\)|/([^/]+))/messages/delta\Z", re.I)


def graph_time(moment: dt.datetime) -> str:
    """A time as Graph writes a message's: UTC, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def header_fields(raw: bytes) -> list[dict[str, str]]:
    """``internetMessageHeaders`` of a raw message: its fields in order, values unfolded."""
    end = raw.find(b"\r\n\r\n")
    block = raw if end < 0 else raw[: end + 2]
    out = []
    for match in _HEADER_LINE.finditer(block):
        value = re.sub(rb"\r?\n(?=[ \t])", b"", match.group(2)).rstrip(b"\r")
        out.append({"name": match.group(1).decode(), "value": value.decode("utf-8", "replace")})
    return out


def _recipient(pair: tuple[str, str]) -> dict[str, Any]:
    name, addr = pair
    return {"emailAddress": {"name": name or addr, "address": addr}}


@functools.lru_cache(maxsize=1024)
def _parsed(raw: bytes) -> str:
    """The properties Graph takes from a raw message's header, as JSON: parsed once."""
    parsed = email.message_from_bytes(raw, policy=email.policy.default)

    def addresses(name: str) -> list[dict[str, Any]]:
        return [_recipient(p) for p in email.utils.getaddresses(parsed.get_all(name, []))]

    author = addresses("From")
    return json.dumps(
        {
            "internetMessageId": parsed.get("Message-ID"),
            "subject": str(parsed.get("Subject", "")),
            "from": author[0] if author else None,
            "sender": author[0] if author else None,
            "toRecipients": addresses("To"),
            "ccRecipients": addresses("Cc"),
            "replyTo": addresses("Reply-To"),
        }
    )


@attrs.define
class FakeMessage:
    """One message in the fake mailbox, with the properties Graph reports."""

    id: str
    raw: bytes
    folder: str
    received: dt.datetime
    modified: dt.datetime
    seq: int
    is_draft: bool = False
    deleted: bool = False
    conversation_id: str = "AAQkAGI2conversation="
    conversation_index: str | None = None
    internet_message_id: str | None = None
    headers: list[dict[str, str]] | None = None
    sent: dt.datetime | None = None
    folders: set[str] = attrs.field(factory=set)

    def properties(self, select: Iterable[str]) -> dict[str, Any]:
        parsed = json.loads(_parsed(self.raw))  # a fresh copy of what the raw message says
        everything: dict[str, Any] = {
            **parsed,
            "id": self.id,
            "internetMessageId": self.internet_message_id or parsed["internetMessageId"],
            "conversationId": self.conversation_id,
            "conversationIndex": self.conversation_index,
            "receivedDateTime": graph_time(self.received),
            "sentDateTime": graph_time(self.sent or self.received),
            "lastModifiedDateTime": graph_time(self.modified),
            "isDraft": self.is_draft,
            "parentFolderId": self.folder,
            "internetMessageHeaders": (
                header_fields(self.raw) if self.headers is None else self.headers
            ),
        }
        return {
            "@odata.type": "#microsoft.graph.message",
            "@odata.etag": f'W/"CQAAABYAAAA{self.seq:08d}"',
            "id": self.id,
            **{k: everything[k] for k in select if k in everything},
        }


def _token(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(state).encode()).decode().rstrip("=")


def _untoken(text: str) -> dict[str, Any] | None:
    try:
        state = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except ValueError:
        return None
    return state if isinstance(state, dict) else None


class FakeGraph:
    """A stateful Graph mailbox; `client` gives an ``httpx.Client`` wired to it.

    Args:
        clock: Graph's clock (default: the real UTC time).
        ignore_page_size: send pages of `default_page_size` whatever the request prefers.
        default_page_size: the page size when none is preferred (Graph's default is 10).

    `requests` counts HTTP requests: a ``$batch`` is one; its inner requests are in `batched`.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], dt.datetime] | None = None,
        ignore_page_size: bool = False,
        default_page_size: int = 10,
    ) -> None:
        self.clock = clock or (lambda: dt.datetime.now(UTC))
        self.messages: dict[str, FakeMessage] = {}
        self.seq = 0
        self.generation = 1
        self.tokens = {TOKEN}
        self.requests: list[httpx.Request] = []
        self.gone = False
        self.ignore_page_size = ignore_page_size
        self.default_page_size = default_page_size
        #: Responses or exceptions served instead of the next requests, in order; an entry of
        #: ``None`` lets a request through.
        self.scripted: list[httpx.Response | Exception | None] = []
        #: Called with each request after it is answered (tests change the mailbox there).
        self.after: list[Callable[[httpx.Request], None]] = []
        #: The inner requests of ``$batch`` requests, as the fake answered them.
        self.batched: list[httpx.Request] = []
        #: False: ``$batch`` is answered 404, as by a Graph-compatible server without batching.
        self.batching = True
        #: Inner ``$batch`` answers to misbehave, by message id (the GET of its headers or of
        #: its ``$value``): an ``httpx.Response`` is served (encoded as any other) instead of the
        #: message's; a dict is sent as the whole inner answer (its ``id`` set), to send what
        #: Graph should not; ``None`` leaves it out.
        self.batch_faults: dict[str, httpx.Response | dict[str, Any] | None] = {}
        #: Change notification subscribers (a host's webhook handler).
        self.subscribers: list[Callable[[dict[str, Any]], None]] = []
        self._lock = threading.RLock()
        self._ids = 0

    # -- the mailbox -----------------------------------------------------------------------------

    def client(self) -> httpx.Client:
        """An ``httpx.Client`` whose requests this fake answers."""
        return httpx.Client(transport=httpx.MockTransport(self.handle))

    def add(
        self,
        raw: bytes,
        *,
        folder: str = "inbox",
        received_at: dt.datetime | None = None,
        draft: bool = False,
        headers: list[dict[str, str]] | None = None,
        internet_message_id: str | None = None,
        conversation_id: str = "AAQkAGI2conversation=",
        conversation_index: str | None = None,
    ) -> str:
        """Deliver a message; returns its (immutable) id."""
        with self._lock:
            now = self.clock()
            self._ids += 1
            self.seq += 1
            folder_id = FOLDER_IDS.get(folder, folder)
            message_id = f"AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A{self._ids:06d}AAA="
            self.messages[message_id] = FakeMessage(
                id=message_id,
                raw=raw,
                folder=folder_id,
                received=received_at or now,
                modified=now,
                seq=self.seq,
                is_draft=draft,
                headers=headers,
                internet_message_id=internet_message_id,
                conversation_id=conversation_id,
                conversation_index=conversation_index,
                folders={folder_id},
            )
            subscribers = list(self.subscribers)
        notification = {
            "value": [
                {
                    "subscriptionId": "d3d4e3b2-0000-4000-8000-000000000001",
                    "changeType": "created",
                    "resource": f"Users/{USER_ID}/Messages/{message_id}",
                    "clientState": "secretClientState",
                    "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
                }
            ]
        }
        for subscriber in subscribers:
            subscriber(notification)
        return message_id

    def _touch(self, message: FakeMessage) -> None:
        self.seq += 1
        message.seq = self.seq
        message.modified = self.clock()

    def update(self, message_id: str) -> None:
        """Change a message (read, flagged): delta lists it again."""
        with self._lock:
            self._touch(self.messages[message_id])

    def delete(self, message_id: str) -> None:
        """Delete a message: delta lists it as ``@removed``."""
        with self._lock:
            message = self.messages[message_id]
            message.deleted = True
            self._touch(message)

    def move(self, message_id: str, folder: str) -> None:
        """Move a message (its immutable id stays)."""
        with self._lock:
            message = self.messages[message_id]
            message.folder = FOLDER_IDS.get(folder, folder)
            message.folders.add(message.folder)
            self._touch(message)

    def expire_sync_state(self) -> None:
        """Make every skip and delta token handed out so far answer 410 Gone."""
        with self._lock:
            self.generation += 1

    def throttle(
        self, count: int = 1, *, status: int = 429, retry_after: str | None = "3"
    ) -> None:
        """Answer the next `count` requests with `status` and ``Retry-After``."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        for _ in range(count):
            self.scripted.append(
                graph_error(
                    status,
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                    headers,
                )
            )

    # -- HTTP ------------------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
            scripted = self.scripted.pop(0) if self.scripted else None
        if isinstance(scripted, Exception):
            raise scripted
        response = scripted if scripted is not None else self._answer(request)
        for hook in list(self.after):
            hook(request)
        return response

    def _answer(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[7:] not in self.tokens:
            return graph_error(
                401,
                "InvalidAuthenticationToken",
                "Access token has expired or is not yet valid.",
                {"WWW-Authenticate": 'Bearer realm="", error="invalid_token"'},
            )
        path = urllib.parse.unquote(request.url.raw_path.decode().split("?")[0])
        prefix = urllib.parse.urlsplit(BASE).path
        if path == f"{prefix}/$batch" and request.method == "POST":
            return self._batch(request)
        if request.method != "GET":
            return graph_error(405, "ErrorInvalidRequest", "The OData request is not supported.")
        if not path.startswith(prefix + "/"):
            return graph_error(400, "BadRequest", f"Invalid version: {path}")
        path = path[len(prefix) + 1 :]
        user, _, rest = path.partition("/")
        if user == "users":
            user, _, rest = rest.partition("/")
            if user not in (UPN, USER_ID):
                return graph_error(
                    404, "ErrorInvalidUser", f"The requested user '{user}' is invalid."
                )
        elif user != "me":
            return graph_error(400, "BadRequest", f"Resource not found for the segment '{user}'.")
        if self.gone:
            return graph_error(
                404,
                "MailboxNotEnabledForRESTAPI",
                "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
            )
        with self._lock:
            match = _LINK_FOLDER.search(rest)
            if match:
                return self._delta(request, match.group(1) or match.group(2))
            parts = rest.split("/")
            if len(parts) in (2, 3) and parts[0] == "messages":
                found = self.messages.get(parts[1])
                if found is None or found.deleted:
                    return graph_error(
                        404,
                        "ErrorItemNotFound",
                        "The specified object was not found in the store.",
                    )
                if len(parts) == 3 and parts[2] == "$value":
                    return httpx.Response(
                        200, content=found.raw, headers={"Content-Type": "text/plain"}
                    )
                if len(parts) == 2:
                    select = request.url.params.get("$select", "")
                    body = {
                        "@odata.context": f"{BASE}/$metadata#users('{USER_ID}')/messages"
                        f"({select})/$entity",
                        **found.properties(select.split(",") if select else ["subject"]),
                    }
                    return httpx.Response(200, json=body)
        return graph_error(400, "BadRequest", f"Resource not found for the segment '{rest}'.")

    def _batch(self, request: httpx.Request) -> httpx.Response:
        """``POST $batch``: each inner request answered as on its own, in reverse order."""
        if not self.batching:
            return graph_error(404, "NotFound", "Resource not found for the segment '$batch'.")
        if request.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return graph_error(400, "BadRequest", "Invalid content type: expected JSON.")
        try:
            payload = json.loads(request.content)
        except ValueError:
            return graph_error(400, "BadRequest", "Unable to parse the batch request body.")
        inner = payload.get("requests") if isinstance(payload, dict) else None
        if not isinstance(inner, list) or not all(isinstance(r, dict) for r in inner):
            return graph_error(400, "BadRequest", "The batch request has no 'requests' array.")
        if len(inner) > MAX_BATCH:
            return graph_error(
                400, "BadRequest", f"A batch request is limited to {MAX_BATCH} requests."
            )
        keys = [r.get("id") for r in inner]
        if not all(isinstance(k, str) and k for k in keys) or len(set(keys)) != len(keys):
            return graph_error(400, "BadRequest", "Batch request ids must be unique strings.")
        answers = [self._inner(request, item) for item in inner]
        # Graph documents no order for the answers: reversed, so clients must match ids.
        responses = [a for a in reversed(answers) if a is not None]
        return httpx.Response(200, json={"responses": responses})

    def _inner(self, outer: httpx.Request, item: dict[str, Any]) -> dict[str, Any] | None:
        """The answer to one inner request of a ``$batch``, as Graph encodes it."""
        key, method, url = item["id"], item.get("method"), item.get("url")
        headers = item.get("headers", {})
        if (
            not isinstance(method, str)
            or not isinstance(url, str)
            or not url.startswith("/")
            or not isinstance(headers, dict)
        ):
            response = graph_error(400, "BadRequest", "Invalid request URL or method.")
        else:
            # The batch's own Authorization holds for its requests.
            headers = {**headers, "Authorization": outer.headers.get("Authorization", "")}
            request = httpx.Request(method, BASE + url, headers=headers)
            with self._lock:
                self.batched.append(request)
            response = self._answer(request)
            path = urllib.parse.unquote(request.url.path).split("/")
            if "messages" in path[:-1]:
                message_id = path[path.index("messages") + 1]
                if message_id in self.batch_faults:
                    fault = self.batch_faults[message_id]
                    if fault is None or isinstance(fault, dict):
                        return None if fault is None else {**fault, "id": key}
                    response = fault
        content_type = response.headers.get("Content-Type", "")
        return {
            "id": key,
            "status": response.status_code,
            "headers": {
                name.decode(): value.decode()
                for name, value in response.headers.raw
                if name.lower() != b"content-length"
            },
            "body": (
                response.json()
                if content_type.startswith("application/json")
                else base64.b64encode(response.content).decode()
            ),
        }

    def _delta(self, request: httpx.Request, folder: str) -> httpx.Response:
        folder_id = FOLDER_IDS.get(folder, folder)
        if folder_id not in FOLDER_IDS.values():
            return graph_error(
                404, "ErrorItemNotFound", "The specified folder could not be found in the store."
            )
        params = request.url.params
        page_size = self.default_page_size
        for preference in request.headers.get("Prefer", "").split(","):
            key, _, value = preference.strip().partition("=")
            if key == "odata.maxpagesize" and not self.ignore_page_size:
                page_size = int(value)
        if "$skiptoken" in params or "$deltatoken" in params:
            state = _untoken(params.get("$skiptoken") or params.get("$deltatoken", ""))
            if state is None or state.get("f") != folder_id:
                return graph_error(400, "ErrorInvalidUrlQuery", "The skip token is not valid.")
            if state["g"] != self.generation:
                return graph_error(
                    410, "SyncStateNotFound", "The sync state was not found or has expired."
                )
            if "$deltatoken" in params:  # a new round: what changed since the last one
                state = {**state, "upto": self.seq, "after": state["from"], "initial": False}
        else:
            select = params.get("$select", "id")
            state = {
                "g": self.generation,
                "f": folder_id,
                "sel": select.split(","),
                "from": 0,
                "upto": self.seq,
                "after": 0,
                "initial": True,
            }
        entries: list[tuple[int, dict[str, Any]]] = []
        for candidate in sorted(self.messages.values(), key=lambda m: m.seq):
            if not state["after"] < candidate.seq <= state["upto"]:
                continue
            if candidate.folder == folder_id and not candidate.deleted:
                entries.append((candidate.seq, candidate.properties(state["sel"])))
            elif not state["initial"] and folder_id in candidate.folders:
                removed = {
                    "@odata.type": "#microsoft.graph.message",
                    "id": candidate.id,
                    "@removed": {"reason": "deleted" if candidate.deleted else "changed"},
                }
                entries.append((candidate.seq, removed))
        page = [item for _, item in entries[:page_size]]
        last = entries[len(page) - 1][0] if page else state["after"]
        link = f"{BASE}/me/mailFolders('{folder}')/messages/delta"
        body: dict[str, Any] = {
            "@odata.context": f"{BASE}/$metadata#Collection(message)",
            "value": page,
        }
        if len(entries) > len(page):
            body["@odata.nextLink"] = f"{link}?$skiptoken={_token({**state, 'after': last})}"
        else:
            done = {"g": state["g"], "f": folder_id, "sel": state["sel"], "from": state["upto"]}
            body["@odata.deltaLink"] = f"{link}?$deltatoken={_token(done)}"
        return httpx.Response(200, json=body)


def graph_error(
    status: int, code: str, text: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    body = {
        "error": {
            "code": code,
            "message": text,
            "innerError": {
                "date": "2027-03-01T09:30:00",
                "request-id": "b5a2f6a4-0000-4000-8000-000000000000",
                "client-request-id": "b5a2f6a4-0000-4000-8000-000000000000",
            },
        }
    }
    return httpx.Response(status, json=body, headers=headers)


def connection_reset() -> httpx.ReadError:
    """An ``httpx.ReadError`` chained as httpx chains one (from the socket's ``OSError``)."""
    try:
        raise ConnectionResetError(104, "Connection reset by peer")
    except OSError as exc:
        try:
            raise httpx.ReadError("[Errno 104] Connection reset by peer") from exc
        except httpx.ReadError as error:
            return error


class GraphHarness(Harness):
    """`GraphSource` over `FakeGraph`, for the contract suite."""

    # httpx wraps the socket's OSError (httpx.ReadError -> httpcore.ReadError -> OSError).
    fault_type = httpx.TransportError

    def __init__(self, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.fake = FakeGraph()
        self.client = self.fake.client()
        self.source = GraphSource(self.client, token=lambda: TOKEN, sleep=_no_sleep)
        # A host subscribed to change notifications wakes the source from its webhook
        # handler (the source has no probe: module Rule 7 of replytrack.sources.graph).
        self.fake.subscribers.append(lambda notification: self.source.wake())

    def deliver(self, n: int, *, received_at: dt.datetime | None = None) -> None:
        self.fake.add(message(n), received_at=received_at)
        if received_at is not None:
            # Graph stamps lastModifiedDateTime to the second, and a cursor made in the second
            # a message arrived counts it as new (no miss). A dated message stands for one that
            # has been in the mailbox a while: let that second pass.
            time.sleep(1.001 - time.time() % 1)

    def invalidate(self, cursor: str) -> str:
        self.fake.expire_sync_state()
        return cursor

    def inject_fault(self, monkeypatch: pytest.MonkeyPatch) -> None:
        # The delta page is served; the request for the headers fails (a $batch, or the GET
        # of the first message's when there is one).
        self.fake.scripted += [None, connection_reset()]

    def break_mailbox(self) -> None:
        self.fake.gone = True

    def close(self) -> None:
        self.client.close()


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"the contract suite does not throttle; asked to sleep {seconds}s")
