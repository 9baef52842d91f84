"""GraphSource against a fake Microsoft Graph mailbox (``harnesses.graph.FakeGraph``).

The contract every source keeps is in ``test_source_contract.py``; these are the Graph
specifics: the requests it sends, delta paging and links, sync-state loss, throttling, token
refresh, header blocks rebuilt from ``internetMessageHeaders``, and the tracker end to end.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import importlib.util
import json
import logging
import random
import sys
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from harnesses import drain, ids, message
from harnesses.graph import TOKEN, UPN, FakeGraph, connection_reset, graph_error
from replytrack import Kind, MatchMethod, MemoryStore, MessageIdGenerator, parse_headers
from replytrack.errors import ConfigError, SourceError
from replytrack.sources import Batch, IncomingMessage
from replytrack.sources import graph as graph_module
from replytrack.sources.graph import GraphSource
from replytrack.testing import CapturingHook, build_reply
from replytrack.tracker import ORIGIN_HEADER, ReplyTracker

UTC = dt.timezone.utc
NOW = dt.datetime(2027, 3, 1, 9, 30, tzinfo=UTC)
REP = "rep@sales.example"
JO = "jo@customer.example"


class Clock:
    """Microsoft's clock and the host's, in step."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now

    def tick(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake(clock: Clock) -> FakeGraph:
    return FakeGraph(clock=clock)


@pytest.fixture
def client(fake: FakeGraph) -> Iterator[httpx.Client]:
    with fake.client() as client:
        yield client


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make(client: httpx.Client, clock: Clock, sleeps: list[float]) -> Any:
    def make(**kwargs: Any) -> GraphSource:
        kwargs.setdefault("token", lambda: TOKEN)
        return GraphSource(client, clock=clock, sleep=sleeps.append, **kwargs)

    return make


@pytest.fixture
def source(make: Any) -> Iterator[GraphSource]:
    with make() as source:
        yield source


def state_of(cursor: str, folder: str = "inbox") -> dict[str, Any]:
    state: dict[str, Any] = json.loads(cursor)["folders"][folder]
    return state


def paths(requests: list[httpx.Request]) -> list[str]:
    return [r.url.path for r in requests]


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


def test_requests_carry_the_token_immutable_ids_and_a_select(
    source: GraphSource, fake: FakeGraph
) -> None:
    message_id = fake.add(message(1))
    (incoming,) = source.fetch(None, limit=5).messages
    delta, get = fake.requests
    assert delta.url.path == "/v1.0/me/mailFolders/inbox/messages/delta"
    assert delta.headers["Prefer"] == 'IdType="ImmutableId", odata.maxpagesize=5'
    assert delta.headers["Authorization"] == f"Bearer {TOKEN}"
    selected = set(delta.url.params["$select"].split(","))
    assert {"id", "internetMessageId", "conversationId", "receivedDateTime", "isDraft"} <= selected
    assert "internetMessageHeaders" not in selected  # fetched per message (module Rule 5)
    assert "$filter" not in delta.url.params  # `since` is applied by the source (Rule 3)
    assert get.url.path == f"/v1.0/me/messages/{message_id}"
    assert get.url.params["$select"] == "internetMessageHeaders"
    assert get.headers["Prefer"] == 'IdType="ImmutableId"'
    assert get.headers["Authorization"] == f"Bearer {TOKEN}"
    assert incoming.source_id == message_id
    assert incoming.folder == "inbox"
    assert incoming.provider_thread_id == "AAQkAGI2conversation="
    assert incoming.received_at == NOW
    assert incoming.complete is False


def test_pages_are_asked_for_at_most_1000_at_a_time(source: GraphSource, fake: FakeGraph) -> None:
    source.fetch(None, limit=5000)
    assert fake.requests[0].headers["Prefer"] == 'IdType="ImmutableId", odata.maxpagesize=1000'


def test_another_user_is_read_under_users(make: Any, fake: FakeGraph) -> None:
    fake.add(message(1))
    with make(user=UPN) as source:
        assert source.name == f"graph:{UPN}"
        assert ids(source.fetch(None)) == [1]
    assert all(p.startswith(f"/v1.0/users/{UPN}/") for p in paths(fake.requests))


# --------------------------------------------------------------------------------------------
# Delta rounds and links
# --------------------------------------------------------------------------------------------


def test_pages_are_resumable_positions_mid_round(make: Any, fake: FakeGraph) -> None:
    for n in range(1, 6):
        fake.add(message(n))
    with make() as first:
        batch = first.fetch(None, limit=2)
    assert (ids(batch), batch.more) == ([1, 2], True)
    link = state_of(batch.cursor)["link"]
    assert "$skiptoken=" in link
    assert state_of(batch.cursor)["delta"] is False
    fake.requests.clear()
    with make() as resumed:  # another process, from the committed cursor
        batch = resumed.fetch(batch.cursor, limit=2)
        assert str(fake.requests[0].url) == link
        assert ids(batch) == [3, 4]
        batch = resumed.fetch(batch.cursor, limit=2)
    assert (ids(batch), batch.more) == ([5], False)
    assert state_of(batch.cursor)["delta"] is True
    assert "$deltatoken=" in state_of(batch.cursor)["link"]


def test_the_delta_link_gives_what_changed_since(source: GraphSource, fake: FakeGraph) -> None:
    fake.add(message(1))
    cursor = source.fetch(None).cursor
    fake.add(message(2))
    fake.requests.clear()
    batch = source.fetch(cursor)
    assert ids(batch) == [2]
    assert "$deltatoken=" in str(fake.requests[0].url)
    fake.requests.clear()
    caught_up = source.fetch(batch.cursor)
    assert (caught_up.messages, caught_up.more) == ((), False)
    assert len(fake.requests) == 1  # one empty delta page: the whole cost of a quiet poll


def test_each_folder_has_its_own_delta_link(make: Any, fake: FakeGraph) -> None:
    fake.add(message(1))
    fake.add(message(2), folder="junkemail")
    with make(folders=("inbox", "junkemail")) as source:
        assert source.name == "graph:me#inbox,junkemail"
        batch = source.fetch(None)
        assert [(m.folder, n) for m, n in zip(batch.messages, ids(batch), strict=True)] == [
            ("inbox", 1),
            ("junkemail", 2),
        ]
        inbox, junk = state_of(batch.cursor), state_of(batch.cursor, "junkemail")
        assert inbox["delta"] is junk["delta"] is True
        assert "mailFolders('inbox')" in inbox["link"]
        assert "mailFolders('junkemail')" in junk["link"]
        fake.add(message(3), folder="junkemail")
        batch = source.fetch(batch.cursor)
    assert [(m.folder, n) for m, n in zip(batch.messages, ids(batch), strict=True)] == [
        ("junkemail", 3)
    ]


def test_a_folder_new_to_the_cursor_reads_its_recent_window(
    make: Any, fake: FakeGraph, clock: Clock
) -> None:
    fake.add(message(1))
    fake.add(message(2), folder="junkemail", received_at=NOW - dt.timedelta(days=30))
    fake.add(message(3), folder="junkemail", received_at=NOW - dt.timedelta(days=1))
    with make(name="graph") as inbox_only:
        cursor = inbox_only.fetch(None).cursor
    clock.tick(seconds=5)
    with make(name="graph", folders=("inbox", "junkemail")) as both:
        batch = both.fetch(cursor)
    assert (ids(batch), batch.rescan) == ([3], False)


def test_removed_entries_and_drafts_are_skipped(source: GraphSource, fake: FakeGraph) -> None:
    first = fake.add(message(1))
    cursor = source.fetch(None).cursor
    fake.delete(first)
    fake.add(message(2), draft=True)
    fake.add(message(3))
    fake.requests.clear()
    batch = source.fetch(cursor)
    assert ids(batch) == [3]
    assert len(fake.requests) == 2  # the delta page and the headers of message 3 only


def test_a_message_deleted_before_its_get_is_skipped(source: GraphSource, fake: FakeGraph) -> None:
    doomed = fake.add(message(1))
    fake.add(message(2))

    def delete_after_the_listing(request: httpx.Request) -> None:
        if request.url.path.endswith("/delta") and doomed in fake.messages:
            fake.after.clear()
            fake.delete(doomed)

    fake.after.append(delete_after_the_listing)
    assert ids(source.fetch(None)) == [2]


def test_changes_to_delivered_mail_deliver_nothing_again(
    source: GraphSource, fake: FakeGraph
) -> None:
    first = fake.add(message(1))
    cursor = source.fetch(None).cursor
    fake.update(first)  # read, flagged: delta lists it again
    fake.requests.clear()
    assert source.fetch(cursor).messages == ()
    assert len(fake.requests) == 1  # no GET for a remembered message


def test_without_memory_a_changed_message_comes_again(make: Any, fake: FakeGraph) -> None:
    first = fake.add(message(1))
    with make(remember=0) as source:
        cursor = source.fetch(None).cursor
        assert state_of(cursor)["seen"] == []
        fake.update(first)
        assert ids(source.fetch(cursor)) == [1]  # a bounded duplicate the ledger drops


def test_pages_larger_than_asked_are_split_without_loss(clock: Clock) -> None:
    fake = FakeGraph(clock=clock, ignore_page_size=True, default_page_size=10)
    for n in range(1, 8):
        fake.add(message(n))
    with fake.client() as client, GraphSource(client, token=lambda: TOKEN, clock=clock) as src:
        parts: list[list[int]] = []
        cursor = None
        while True:
            batch = src.fetch(cursor, limit=3)
            parts.append(ids(batch))
            cursor = batch.cursor
            if not batch.more:
                break
    assert parts[:3] == [[1, 2, 3], [4, 5, 6], [7]]
    assert all(part == [] for part in parts[3:])
    # What was delivered from a page is not fetched again: 7 headers, in 3 requests.
    assert sorted(header_gets(fake.requests + fake.batched)) == sorted(fake.messages)
    assert [len(b) for b in batches(fake)] == [3, 3]  # and a GET for the 7th


@pytest.mark.parametrize("remember", [0, 2, 128])
def test_a_large_page_split_over_fetches_delivers_each_message_once(
    clock: Clock, remember: int
) -> None:
    """Each stop in the page keeps what was delivered from it, whatever `remember` says."""
    fake = FakeGraph(clock=clock, ignore_page_size=True, default_page_size=50)
    for n in range(1, 21):
        fake.add(message(n))
    with (
        fake.client() as client,
        GraphSource(client, token=lambda: TOKEN, clock=clock, remember=remember) as src,
    ):
        delivered, cursor = drain(src, None, limit=7)
        assert delivered == list(range(1, 21))
        assert drain(src, cursor, limit=7)[0] == []


def test_since_skips_only_mail_that_was_there_untouched(
    source: GraphSource, fake: FakeGraph, clock: Clock
) -> None:
    old = fake.add(message(1), received_at=NOW - dt.timedelta(days=30))
    fake.add(message(2), received_at=NOW - dt.timedelta(days=1))
    fake.add(message(3), received_at=NOW - dt.timedelta(days=30))
    clock.tick(seconds=5.5)
    fake.add(message(4), received_at=NOW - dt.timedelta(days=30))  # same second as the cursor
    clock.tick(seconds=0.2)
    cursor = source.initial_cursor(since=NOW - dt.timedelta(days=7))
    clock.tick(seconds=2)
    fake.update(old)  # moved back into the inbox, say: modified after the cursor was made
    fake.add(message(5), received_at=NOW - dt.timedelta(days=30))  # moved in, or restored
    assert drain(source, cursor, limit=2)[0] == [2, 4, 1, 5]


# --------------------------------------------------------------------------------------------
# Lost sync state, unreadable cursors
# --------------------------------------------------------------------------------------------


def test_an_expired_sync_state_rescans_the_window(
    source: GraphSource, fake: FakeGraph, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    fake.add(message(1), received_at=NOW - dt.timedelta(days=30))
    fake.add(message(2), received_at=NOW - dt.timedelta(days=1))
    cursor = source.fetch(None).cursor
    clock.tick(hours=1)
    fake.expire_sync_state()
    fake.add(message(3))
    with caplog.at_level(logging.WARNING, "replytrack.sources.graph"):
        batch = source.fetch(cursor)
    assert (ids(batch), batch.rescan) == ([2, 3], True)
    assert "sync state of folder 'inbox' lost" in caplog.text
    assert source.fetch(batch.cursor).rescan is False


def test_a_lost_sync_state_restarts_only_its_folder(make: Any, fake: FakeGraph) -> None:
    fake.add(message(1))
    fake.add(message(2), folder="junkemail")
    with make(folders=("inbox", "junkemail")) as source:
        cursor = source.fetch(None).cursor
        fake.add(message(3))
        # inbox delta, headers of message 3, then the junk folder's delta link: 410
        fake.scripted += [None, None, graph_error(410, "SyncStateNotFound", "Sync state expired.")]
        batch = source.fetch(cursor)
    # The inbox went on from its delta link; the junk folder was read again from its window.
    assert (ids(batch), batch.rescan) == ([3, 2], True)
    assert "$deltatoken=" in state_of(batch.cursor)["link"]
    assert len(state_of(batch.cursor)["seen"]) == 2
    assert state_of(batch.cursor, "junkemail")["seen"] == state_of(cursor, "junkemail")["seen"]


def test_a_sync_state_error_code_on_400_is_a_lost_sync_state(
    source: GraphSource, fake: FakeGraph
) -> None:
    fake.add(message(1))
    cursor = source.fetch(None).cursor
    fake.scripted.append(graph_error(400, "syncStateNotFound", "The sync state is not valid."))
    batch = source.fetch(cursor)
    assert (ids(batch), batch.rescan) == ([1], True)


def test_a_cursor_of_another_mailbox_rescans(make: Any, fake: FakeGraph) -> None:
    fake.add(message(1))
    with make(name="graph") as me, make(name="graph", user=UPN) as other:
        batch = other.fetch(me.fetch(None).cursor)
    assert (ids(batch), batch.rescan) == ([1], True)


def test_a_cursor_with_an_impossible_time_rescans(source: GraphSource, fake: FakeGraph) -> None:
    fake.add(message(1))
    cursor = json.loads(source.initial_cursor(since=NOW))
    cursor["folders"]["inbox"]["since"] = 10**20
    batch = source.fetch(json.dumps(cursor))
    assert (ids(batch), batch.rescan) == ([1], True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2027-03-01T09:30:00Z", (NOW, dt.timedelta(seconds=1))),
        ("2027-03-01T09:30:00.1234567Z", (NOW.replace(microsecond=123456), dt.timedelta(0, 0, 1))),
        ("2027-03-01T10:30:00.5+01:00", (NOW.replace(microsecond=500000), dt.timedelta(0, 0.1))),
        ("2027-03-01T09:30:00", (NOW, dt.timedelta(seconds=1))),
        ("2027-02-30T09:30:00Z", None),
        ("0001-01-01T00:00:00+01:00", None),
        ("yesterday", None),
        (None, None),
    ],
)
def test_graph_times_are_read_with_their_precision(value: object, expected: object) -> None:
    assert graph_module._parse_time(value) == expected


def test_a_link_outside_the_base_url_is_never_followed(
    source: GraphSource, fake: FakeGraph
) -> None:
    fake.add(message(1))
    cursor = json.loads(source.fetch(None).cursor)
    cursor["folders"]["inbox"]["link"] = "https://attacker.example/v1.0/me/messages/delta"
    fake.requests.clear()
    batch = source.fetch(json.dumps(cursor))
    assert (ids(batch), batch.rescan) == ([1], True)
    assert {r.url.host for r in fake.requests} == {"graph.microsoft.com"}
    fake.scripted.append(
        httpx.Response(200, json={"value": [], "@odata.nextLink": "https://attacker.example/x"})
    )
    with pytest.raises(SourceError, match="outside"):
        source.fetch(None)


# --------------------------------------------------------------------------------------------
# Throttling, tokens, errors
# --------------------------------------------------------------------------------------------


def test_throttling_is_retried_after_retry_after(
    source: GraphSource, fake: FakeGraph, sleeps: list[float]
) -> None:
    fake.add(message(1))
    fake.throttle(2, retry_after="7")
    assert ids(source.fetch(None)) == [1]
    assert sleeps == [7.0, 7.0]


def test_busy_without_retry_after_backs_off_exponentially(
    source: GraphSource, fake: FakeGraph, sleeps: list[float]
) -> None:
    fake.add(message(1))
    fake.throttle(3, status=503, retry_after=None)
    assert ids(source.fetch(None)) == [1]
    assert sleeps == [1.0, 2.0, 4.0]


def test_retry_after_as_a_date_is_honoured(
    source: GraphSource, fake: FakeGraph, sleeps: list[float]
) -> None:
    fake.throttle(
        1,
        status=504,
        retry_after=email.utils.format_datetime(NOW + dt.timedelta(seconds=5), usegmt=True),
    )
    source.fetch(None)
    assert sleeps == [5.0]


def test_throttling_beyond_max_retries_raises_sourcegraph_error(
    make: Any, fake: FakeGraph, sleeps: list[float]
) -> None:
    fake.throttle(3)
    with make(max_retries=2) as source, pytest.raises(SourceError) as caught:
        source.fetch(None)
    assert sleeps == [3.0, 3.0]
    assert caught.value.source == source.name
    assert "429 ApplicationThrottled" in str(caught.value)
    assert isinstance(caught.value.__cause__, httpx.HTTPStatusError)
    assert caught.value.__cause__.response.status_code == 429


def test_a_retry_after_longer_than_allowed_fails_at_once(
    make: Any, fake: FakeGraph, sleeps: list[float]
) -> None:
    fake.throttle(1, retry_after="600")
    with make(max_retry_wait=60) as source, pytest.raises(SourceError, match="Retry-After: 600"):
        source.fetch(None)
    assert sleeps == []


def test_a_401_gets_one_fresh_token(make: Any, fake: FakeGraph) -> None:
    fake.add(message(1))
    issued = iter(["expired", *[TOKEN] * 10])
    with make(token=lambda: next(issued)) as source:
        assert ids(source.fetch(None)) == [1]
    assert [r.headers["Authorization"] for r in fake.requests[:2]] == [
        "Bearer expired",
        f"Bearer {TOKEN}",
    ]


def test_a_second_401_raises_sourcegraph_error(make: Any, fake: FakeGraph) -> None:
    with make(token=lambda: "revoked") as source, pytest.raises(SourceError) as caught:
        source.fetch(None)
    assert len(fake.requests) == 2
    assert "401 InvalidAuthenticationToken" in str(caught.value)
    assert isinstance(caught.value.__cause__, httpx.HTTPStatusError)


def test_http_errors_carry_graphs_code(source: GraphSource, fake: FakeGraph) -> None:
    fake.scripted.append(graph_error(403, "ErrorAccessDenied", "Access is denied."))
    with pytest.raises(SourceError, match=r"HTTP 403 ErrorAccessDenied: Access is denied\."):
        source.fetch(None)


def test_network_errors_keep_httpx_error_and_its_osgraph_error(
    source: GraphSource, fake: FakeGraph
) -> None:
    fake.scripted.append(connection_reset())
    with pytest.raises(SourceError) as caught:
        source.fetch(None)
    assert caught.value.source == source.name
    assert isinstance(caught.value.__cause__, httpx.ReadError)
    assert isinstance(caught.value.__cause__.__cause__, OSError)


# --------------------------------------------------------------------------------------------
# Header blocks and bodies
# --------------------------------------------------------------------------------------------

REFERENCES = [f"<thread-{i:03d}.{'x' * 20}@mail.sales.example>" for i in range(40)]


def test_header_block_round_trips_through_parse_headers(
    source: GraphSource, fake: FakeGraph
) -> None:
    long_references = " ".join(REFERENCES)
    assert len(long_references) > 998
    fake.add(
        message(1),
        headers=[
            {"name": "Received", "value": "from mx.customer.example by mx.outlook.example"},
            {"name": "From", "value": "Jürgen Groß <jo@customer.example>"},
            {"name": "To", "value": "Rep <rep@sales.example>"},
            {"name": "Subject", "value": "Re: Grüße – 予定の確認"},
            {"name": "Message-ID", "value": "<r1@customer.example>"},
            {"name": "In-Reply-To", "value": REFERENCES[-1]},
            {"name": "References", "value": long_references},
            {"name": "Thread-Topic", "value": "=?utf-8?q?Gr=C3=BC=C3=9Fe?="},
            {"name": "X-Folded", "value": "first part\r\n\tsecond part\nthird part\r\n\r\n"},
            {"name": "Not A Field", "value": "dropped"},
        ],
    )
    (incoming,) = source.fetch(None).messages
    data = incoming.data
    assert data.endswith(b"\r\n\r\n")
    lines = data[:-4].split(b"\r\n")
    assert all(len(line) <= 998 for line in lines)
    assert b"\n" not in data.replace(b"\r\n", b"")
    headers = parse_headers(data)
    assert headers.defects == ()
    assert headers.subject == "Re: Grüße – 予定の確認"
    assert headers.from_[0].name == "Jürgen Groß"
    assert headers.message_id == "r1@customer.example"
    assert headers.references == tuple(r.strip("<>") for r in REFERENCES)
    assert headers.in_reply_to == (REFERENCES[-1].strip("<>"),)
    assert headers.get("Thread-Topic") == "Grüße"
    assert headers.get("X-Folded") == "first part\tsecond part third part"
    assert "Not A Field" not in data.decode()
    assert "Thread-Index" not in headers  # internet mail: no index Exchange made up


def test_mail_without_internet_headers_gets_a_block_from_the_properties(
    source: GraphSource, fake: FakeGraph
) -> None:
    raw = build_reply(
        from_="Zoë Colleague <zoe@sales.example>",
        to="Rep <rep@sales.example>",
        cc="Sam <sam@customer.example>",
        subject="Re: Déjeuner",
        message_id="<internal-1@sales.example>",
    )
    fake.add(raw, headers=[], conversation_index="AQHZtmV7vHYhQ3BkQbCEYpJeqn+0ow==")
    (incoming,) = source.fetch(None).messages
    headers = parse_headers(incoming.data)
    assert headers.defects == ()
    assert headers.message_id == "internal-1@sales.example"
    assert headers.from_[0].name == "Zoë Colleague"
    assert [a.addr for a in headers.to] == ["rep@sales.example"]
    assert [a.addr for a in headers.cc] == ["sam@customer.example"]
    assert headers.subject == "Re: Déjeuner"
    assert headers.date == NOW
    assert headers.get("Thread-Index") == "AQHZtmV7vHYhQ3BkQbCEYpJeqn+0ow=="
    assert "Sender" not in headers  # Graph's sender is the author: nothing to add


def test_fetch_body_gets_the_mime_content(source: GraphSource, fake: FakeGraph) -> None:
    message_id = fake.add(message(1))
    (incoming,) = source.fetch(None).messages
    assert source.fetch_body(incoming) == message(1)
    last = fake.requests[-1]
    assert last.url.path == f"/v1.0/me/messages/{message_id}/$value"
    assert last.headers["Prefer"] == 'IdType="ImmutableId"'


def test_fetch_body_of_a_deleted_message_raises_sourcegraph_error(
    source: GraphSource, fake: FakeGraph
) -> None:
    message_id = fake.add(message(1))
    (incoming,) = source.fetch(None).messages
    fake.delete(message_id)
    with pytest.raises(SourceError, match="404 ErrorItemNotFound") as caught:
        source.fetch_body(incoming)
    assert isinstance(caught.value.__cause__, httpx.HTTPStatusError)


# --------------------------------------------------------------------------------------------
# Bodies in JSON batches
# --------------------------------------------------------------------------------------------


def headers_first(source: GraphSource, fake: FakeGraph, count: int) -> list[IncomingMessage]:
    """`count` inbox messages as a fetch delivers them (header blocks); requests cleared."""
    for n in range(1, count + 1):
        fake.add(message(n))
    messages = list(source.fetch(None, limit=count).messages)
    assert [m.complete for m in messages] == [False] * count
    fake.requests.clear()
    fake.batched.clear()
    return messages


def batches(fake: FakeGraph) -> list[list[dict[str, Any]]]:
    """The inner requests of each ``$batch`` the fake received, as sent."""
    out = []
    for request in fake.requests:
        if request.url.path == "/v1.0/$batch":
            assert request.method == "POST"
            assert request.headers["Content-Type"] == "application/json"
            out.append(json.loads(request.content)["requests"])
    return out


def is_fallback(request: httpx.Request, message_id: str) -> bool:
    return request.method == "GET" and request.url.path == f"/v1.0/me/messages/{message_id}/$value"


@pytest.mark.parametrize("user", ["me", UPN])
def test_fetch_bodies_asks_for_20_bodies_per_batch_request(
    make: Any, fake: FakeGraph, user: str
) -> None:
    with make(user=user) as source:
        messages = headers_first(source, fake, 25)
        bodies = source.fetch_bodies(messages)
        assert len(fake.requests) == 2  # 20 + 5, where it was 25 GETs
        assert [len(b) for b in batches(fake)] == [20, 5]
        assert bodies == [message(n) for n in range(1, 26)]
        root = "/me" if user == "me" else f"/users/{UPN}"
        first = batches(fake)[0][0]
        assert first == {
            "id": "1",
            "method": "GET",
            "url": f"{root}/messages/{messages[0].source_id.replace('=', '%3D')}/$value",
            "headers": {"Prefer": 'IdType="ImmutableId"'},
        }
        assert [r.headers["Authorization"] for r in fake.requests] == [f"Bearer {TOKEN}"] * 2
        fake.requests.clear()
        assert bodies == [source.fetch_body(m) for m in messages]
        # Each inner GET is the one fetch_body sends as a request of its own.
        assert [r.url for r in fake.batched] == [r.url for r in fake.requests]
        assert len(fake.requests) == 25


def test_fetch_bodies_of_one_message_is_a_plain_get(source: GraphSource, fake: FakeGraph) -> None:
    (incoming,) = headers_first(source, fake, 1)
    assert source.fetch_bodies([incoming]) == [message(1)]
    (request,) = fake.requests
    assert is_fallback(request, incoming.source_id)  # one request either way


def test_fetch_bodies_keeps_the_order_of_complete_and_partial_messages(
    source: GraphSource, fake: FakeGraph
) -> None:
    first, second, third = headers_first(source, fake, 3)
    whole = IncomingMessage(b"Subject: here already\r\n\r\nbody", "local")
    bodies = source.fetch_bodies([third, whole, first, second])
    assert bodies == [message(3), whole.data, message(1), message(2)]
    assert len(fake.requests) == 1


def test_a_message_deleted_before_the_batch_raises_what_fetch_body_raises(
    source: GraphSource, fake: FakeGraph, caplog: pytest.LogCaptureFixture
) -> None:
    messages = headers_first(source, fake, 3)
    fake.delete(messages[1].source_id)
    with pytest.raises(SourceError) as direct:
        source.fetch_body(messages[1])
    fake.requests.clear()
    with (
        caplog.at_level(logging.DEBUG, "replytrack.sources.graph"),
        pytest.raises(SourceError) as batched,
    ):
        source.fetch_bodies(messages)
    assert str(batched.value) == str(direct.value)
    assert "404 ErrorItemNotFound" in str(batched.value)
    assert batched.value.source == source.name
    assert isinstance(batched.value.__cause__, httpx.HTTPStatusError)
    # The inner 404 is not taken on trust: the message's own GET says it is gone.
    batch, fallback = fake.requests
    assert batch.url.path == "/v1.0/$batch"
    assert is_fallback(fallback, messages[1].source_id)
    assert "$batch gave 2 of 3 bodies" in caplog.text
    assert "HTTP 404: 1" in caplog.text


#: Inner answers that are not a body, and why (as the debug log says).
INNER_FAULTS: list[tuple[httpx.Response | dict[str, Any] | None, str]] = [
    (
        graph_error(429, "ApplicationThrottled", "Over the limit.", {"Retry-After": "3"}),
        "HTTP 429",
    ),
    (graph_error(500, "InternalServerError", "Something broke."), "HTTP 500"),
    (graph_error(404, "ErrorItemNotFound", "Not found (for a moment)."), "HTTP 404"),
    (None, "no answer"),
    ({"status": 200, "headers": {"Content-Type": "text/plain"}, "body": "From: a\r\n"}, "base64"),
    ({"status": 200, "headers": {}, "body": "bm90IGJhc2U2N=="}, "not base64"),
    ({"status": 200, "headers": {}, "body": "aGVsbG8=\n"}, "not base64"),
    ({"status": 200, "headers": {}, "body": "Grüße"}, "not base64"),
    ({"status": 200, "headers": {}, "body": {"value": "aGVsbG8="}}, "not a string"),
    ({"status": 200, "headers": {}, "body": None}, "not a string"),
    ({"status": 200, "headers": {"content-type": "application/json"}, "body": "aGk="}, "JSON"),
    ({"status": "200", "headers": {}, "body": "aGVsbG8="}, "no status"),
    ({"headers": {}, "body": "aGVsbG8="}, "no status"),
]


@pytest.mark.parametrize(
    "case",
    INNER_FAULTS,
    ids=[
        "429",
        "500",
        "404",
        "no-answer",
        "raw-mime",
        "bad-padding",
        "newline",
        "non-ascii",
        "json-object",
        "null",
        "json-content-type",
        "status-as-str",
        "no-status",
    ],
)
def test_an_inner_answer_that_is_not_a_body_is_fetched_on_its_own(
    source: GraphSource,
    fake: FakeGraph,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
    case: tuple[httpx.Response | dict[str, Any] | None, str],
) -> None:
    fault, reason = case
    messages = headers_first(source, fake, 5)
    fake.batch_faults[messages[1].source_id] = fault
    fake.batch_faults[messages[3].source_id] = fault
    with caplog.at_level(logging.DEBUG, "replytrack.sources.graph"):
        assert source.fetch_bodies(messages) == [message(n) for n in range(1, 6)]
    batch, second, fourth = fake.requests
    assert batch.url.path == "/v1.0/$batch"
    assert is_fallback(second, messages[1].source_id)
    assert is_fallback(fourth, messages[3].source_id)
    assert sleeps == []  # the GETs were not throttled: nothing waited
    (record,) = [r for r in caplog.records if "$batch" in r.getMessage()]  # once per batch
    assert record.levelno == logging.DEBUG
    assert "gave 3 of 5 bodies" in record.getMessage()
    assert reason in record.getMessage()


def test_inner_throttling_and_a_garbled_body_fall_back_per_message(
    source: GraphSource, fake: FakeGraph, sleeps: list[float]
) -> None:
    messages = headers_first(source, fake, 6)
    fake.batch_faults[messages[0].source_id] = graph_error(
        429, "ApplicationThrottled", "Over the limit.", {"Retry-After": "5"}
    )
    fake.batch_faults[messages[2].source_id] = graph_error(
        429, "ApplicationThrottled", "Over the limit.", {"Retry-After": "5"}
    )
    fake.batch_faults[messages[5].source_id] = {"status": 200, "body": "%%% not base64 %%%"}
    # The batch is served; the first GET of a body is throttled too, and retried.
    fake.scripted += [None, graph_error(429, "ApplicationThrottled", "", {"Retry-After": "5"})]
    assert source.fetch_bodies(messages) == [message(n) for n in range(1, 7)]
    assert sleeps == [5.0]
    assert [r.url.path.rsplit("/", 2)[-2] for r in fake.requests[1:]] == [
        messages[0].source_id,
        messages[0].source_id,
        messages[2].source_id,
        messages[5].source_id,
    ]


@pytest.mark.parametrize(
    "answer",
    [
        {"responses": [{"id": "1", "status": 200, "body": "aGVsbG8="}] * 2},  # "1" twice
        {"responses": [{"id": 1, "status": 200, "body": "aGVsbG8="}]},  # an int id
        {"responses": [{"id": "7", "status": 200, "body": "aGVsbG8="}]},  # not asked
        {"responses": ["1", None, []]},
        {"responses": []},
        {"responses": {"1": {"status": 200, "body": "aGVsbG8="}}},
        {"value": []},
        [],
        "responses",
    ],
    ids=[
        "id-twice",
        "int-id",
        "unknown-id",
        "not-objects",
        "empty",
        "responses-object",
        "no-responses",
        "list",
        "str",
    ],
)
def test_a_batch_answer_of_another_shape_falls_back(
    source: GraphSource, fake: FakeGraph, answer: object
) -> None:
    messages = headers_first(source, fake, 2)
    fake.scripted.append(httpx.Response(200, json=answer))
    assert source.fetch_bodies(messages) == [message(1), message(2)]
    assert len(fake.requests) == 3


def test_a_batch_answer_that_is_not_json_falls_back(source: GraphSource, fake: FakeGraph) -> None:
    messages = headers_first(source, fake, 2)
    fake.scripted.append(httpx.Response(200, content=b"\xff<html>Gateway</html>"))
    assert source.fetch_bodies(messages) == [message(1), message(2)]
    assert len(fake.requests) == 3


@pytest.mark.parametrize(
    "failure",
    [
        [graph_error(500, "InternalServerError", "Something broke.")],
        [graph_error(400, "BadRequest", "Invalid batch payload.")],
        [graph_error(403, "ErrorAccessDenied", "Access is denied.")],
        [graph_error(401, "InvalidAuthenticationToken", "Expired.")] * 2,  # after one refresh
        [graph_error(503, "ServiceUnavailable", "Busy.", {"Retry-After": "2"})] * 3,  # 2 retries
        [graph_error(429, "TooManyRequests", "Later.", {"Retry-After": "900"})],  # too long
    ],
)
def test_a_batch_refused_as_a_whole_falls_back_to_a_get_each(
    make: Any,
    fake: FakeGraph,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
    failure: list[httpx.Response],
) -> None:
    sent = len(failure)  # the batch request, and _send's own retries of it
    with make(max_retries=2) as source:
        messages = headers_first(source, fake, 4)
        fake.scripted += failure
        with caplog.at_level(logging.INFO, "replytrack.sources.graph"):
            assert source.fetch_bodies(messages) == [message(n) for n in range(1, 5)]
    assert [r.url.path for r in fake.requests[:sent]] == ["/v1.0/$batch"] * sent
    assert [r.url.path.rsplit("/", 2)[-2] for r in fake.requests[sent:]] == [
        m.source_id for m in messages
    ]
    assert sleeps == ([2.0, 2.0] if sent == 3 else [])  # _send's own retries, no more
    (record,) = [r for r in caplog.records if "$batch" in r.getMessage()]
    assert record.levelno == logging.INFO
    assert f"HTTP {failure[0].status_code}" in record.getMessage()


def test_a_server_without_batching_gets_a_get_each(source: GraphSource, fake: FakeGraph) -> None:
    fake.batching = False
    messages = headers_first(source, fake, 21)
    assert source.fetch_bodies(messages) == [message(n) for n in range(1, 22)]
    assert paths(fake.requests).count("/v1.0/$batch") == 1  # the 21st: a plain GET
    assert len(fake.requests) == 1 + 21


def test_the_batch_request_gets_a_fresh_token_and_throttling_retries(
    make: Any, fake: FakeGraph, sleeps: list[float]
) -> None:
    with make() as lister:
        messages = headers_first(lister, fake, 3)
    issued = iter(["expired", *[TOKEN] * 10])
    fake.throttle(1, retry_after="7")
    fake.scripted.insert(0, None)  # the first batch request meets the fake's 401
    with make(token=lambda: next(issued)) as source:
        assert source.fetch_bodies(messages) == [message(1), message(2), message(3)]
    assert [r.headers["Authorization"] for r in fake.requests] == [
        "Bearer expired",
        f"Bearer {TOKEN}",
        f"Bearer {TOKEN}",
    ]
    assert paths(fake.requests) == ["/v1.0/$batch"] * 3
    assert sleeps == [7.0]


def test_a_network_error_on_the_batch_is_a_sourcegraph_error(
    source: GraphSource, fake: FakeGraph
) -> None:
    messages = headers_first(source, fake, 3)
    fake.scripted.append(connection_reset())
    with pytest.raises(SourceError) as caught:
        source.fetch_bodies(messages)
    assert caught.value.source == source.name
    assert isinstance(caught.value.__cause__, httpx.ReadError)
    assert len(fake.requests) == 1  # no fallback: the network failed, as for fetch_body


def test_the_fake_batches_as_graph_documents(client: httpx.Client, fake: FakeGraph) -> None:
    first, second = fake.add(message(1)), fake.add(message(2))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    requests = [
        {"id": "a", "method": "GET", "url": f"/me/messages/{first}/$value"},
        {"id": "b", "method": "GET", "url": f"/me/messages/{second}?$select=subject"},
        {"id": "c", "method": "GET", "url": "/me/messages/gone/$value"},
    ]
    answer = client.post(f"{graph_module.DEFAULT_BASE_URL}/$batch", json={"requests": requests})
    assert answer.status_code == 401
    answer = client.post(
        f"{graph_module.DEFAULT_BASE_URL}/$batch", json={"requests": requests}, headers=auth
    )
    assert answer.status_code == 200
    c, b, a = answer.json()["responses"]  # in another order than asked
    assert (a["id"], a["status"], a["headers"]["Content-Type"]) == ("a", 200, "text/plain")
    assert base64.b64decode(a["body"], validate=True) == message(1)
    assert (b["id"], b["status"], b["body"]["subject"]) == ("b", 200, "Re: question 2")
    assert (c["id"], c["status"], c["body"]["error"]["code"]) == ("c", 404, "ErrorItemNotFound")
    too_many = [{**requests[0], "id": str(n)} for n in range(21)]
    answer = client.post(
        f"{graph_module.DEFAULT_BASE_URL}/$batch", json={"requests": too_many}, headers=auth
    )
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "BadRequest")
    assert len(fake.batched) == 3  # nothing of the refused batch was answered


# --------------------------------------------------------------------------------------------
# Headers in JSON batches
# --------------------------------------------------------------------------------------------

DELTA = "/v1.0/me/mailFolders/inbox/messages/delta"


def header_gets(requests: list[httpx.Request]) -> list[str]:
    """The ids of the messages whose headers `requests` (plain or inner GETs) ask for."""
    return [
        r.url.path.rsplit("/", 1)[-1]
        for r in requests
        if r.method == "GET" and r.url.params.get("$select") == "internetMessageHeaders"
    ]


def delete_after_the_listing(fake: FakeGraph, doomed: list[str]) -> None:
    """Delete `doomed` right after the next delta request: gone before their headers' GET."""

    def hook(request: httpx.Request) -> None:
        if request.url.path.endswith("/delta"):
            fake.after.remove(hook)
            for message_id in doomed:
                fake.delete(message_id)

    fake.after.append(hook)


def fetch_all(source: GraphSource, cursor: str | None, limit: int) -> list[Batch]:
    """Fetch until caught up; every batch."""
    out = [source.fetch(cursor, limit)]
    while out[-1].more:
        out.append(source.fetch(out[-1].cursor, limit))
    return out


Scenario = Callable[[FakeGraph, GraphSource], list[Batch]]


def both_ways(
    scenario: Scenario, fake_options: dict[str, Any] | None = None, **options: Any
) -> tuple[list[Batch], FakeGraph, FakeGraph]:
    """Run `scenario` against a fake with ``$batch`` and one without (a GET each).

    Returns:
        The batches, which must be the same both ways (messages, order, cursors, flags), the
        fake with ``$batch`` and the one without.
    """
    runs: list[tuple[list[Batch], FakeGraph]] = []
    for batching in (True, False):
        clock = Clock()
        fake = FakeGraph(clock=clock, **(fake_options or {}))
        fake.batching = batching
        sleeps: list[float] = []
        with (
            fake.client() as client,
            GraphSource(
                client, token=lambda: TOKEN, clock=clock, sleep=sleeps.append, **options
            ) as source,
        ):
            runs.append((scenario(fake, source), fake))
        assert sleeps == []  # nothing was throttled: an inner 429 is not waited out
    (batched, fake), (plain, plain_fake) = runs
    assert batched == plain
    assert plain_fake.batched == []
    # No header is asked for in vain: each inner GET gave a message or was sent again alone.
    delivered = sum(len(batch.messages) for batch in batched)
    assert len(header_gets(fake.batched)) <= delivered + len(header_gets(fake.requests))
    return batched, fake, plain_fake


def test_a_fetch_asks_for_the_headers_of_20_messages_per_batch_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def scenario(fake: FakeGraph, source: GraphSource) -> list[Batch]:
        for n in range(1, 46):
            fake.add(message(n))
        return [source.fetch(None, limit=100)]

    with caplog.at_level(logging.DEBUG, "replytrack.sources.graph"):
        (batch,), fake, plain = both_ways(scenario)
    assert (ids(batch), batch.more) == (list(range(1, 46)), False)
    delivered = [m.source_id for m in batch.messages]
    # 4 requests where it was 46: the delta page, then the headers 20 + 20 + 5 at a time.
    assert paths(fake.requests) == [DELTA] + ["/v1.0/$batch"] * 3
    assert [len(b) for b in batches(fake)] == [20, 20, 5]
    assert batches(fake)[0][0] == {
        "id": "1",
        "method": "GET",
        "url": f"/me/messages/{delivered[0].replace('=', '%3D')}?$select=internetMessageHeaders",
        "headers": {"Prefer": 'IdType="ImmutableId"'},
    }
    assert header_gets(fake.batched) == delivered
    assert header_gets(fake.requests) == []
    # Without $batch: each $batch is refused (and logged), then a GET each.
    assert paths(plain.requests).count("/v1.0/$batch") == 3
    assert header_gets(plain.requests) == delivered
    assert caplog.text.count("fetching 20 headers one by one") == 2
    assert "$batch gave" not in caplog.text  # the fake with $batch gave every answer


def test_the_headers_of_one_message_are_a_plain_get(source: GraphSource, fake: FakeGraph) -> None:
    fake.add(message(1))
    fake.add(message(2))
    (incoming,) = source.fetch(None, limit=1).messages  # room for one: no batch
    assert paths(fake.requests) == [DELTA, f"/v1.0/me/messages/{incoming.source_id}"]


def test_a_message_deleted_before_its_headers_batch_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def scenario(fake: FakeGraph, source: GraphSource) -> list[Batch]:
        made = [fake.add(message(n)) for n in range(1, 6)]
        delete_after_the_listing(fake, [made[1]])
        return [source.fetch(None)]

    with caplog.at_level(logging.INFO, "replytrack.sources.graph"):
        (batch,), fake, _ = both_ways(scenario)
    assert (ids(batch), batch.more) == ([1, 3, 4, 5], False)
    gone = list(fake.messages)[1]
    # The inner 404 is not taken on trust: the message's own GET says it is gone.
    assert paths(fake.requests) == [DELTA, "/v1.0/$batch", f"/v1.0/me/messages/{gone}"]
    assert caplog.text.count(f"message {gone[:40]} is gone; skipped") == 2  # both ways


def test_messages_gone_from_a_headers_batch_make_room_for_the_next() -> None:
    def scenario(fake: FakeGraph, source: GraphSource) -> list[Batch]:
        made = [fake.add(message(n)) for n in range(1, 11)]
        delete_after_the_listing(fake, [made[1], made[3]])
        first = source.fetch(None, limit=5)
        return [first, source.fetch(first.cursor, limit=5)]

    # Graph sends pages of 10 whatever is asked: the first fetch stops inside its page.
    (first, second), fake, _ = both_ways(
        scenario, {"ignore_page_size": True, "default_page_size": 10}
    )
    assert (ids(first), first.more) == ([1, 3, 5, 6, 7], True)
    assert "$skiptoken=" not in state_of(first.cursor)["link"]  # that page again next time
    assert len(state_of(first.cursor)["seen"]) == 5
    assert ids(second) == [8, 9, 10]
    # Five asked for, two gone (their own GETs say so): two more, in a batch of their own.
    assert [len(b) for b in batches(fake)] == [5, 2, 3]
    made = list(fake.messages)
    assert header_gets(fake.requests) == [made[1], made[3]]


@pytest.mark.parametrize(
    ("limit", "remember", "fake_options"),
    [
        (3, 128, {"ignore_page_size": True, "default_page_size": 25}),
        (7, 128, {"ignore_page_size": True, "default_page_size": 25}),
        (21, 128, {"ignore_page_size": True, "default_page_size": 25}),
        (45, 128, {"ignore_page_size": True, "default_page_size": 25}),
        (7, 2, {}),
        (25, 0, {}),
    ],
)
def test_a_limit_gives_the_same_batches_and_cursors_with_and_without_batching(
    limit: int, remember: int, fake_options: dict[str, Any]
) -> None:
    def scenario(fake: FakeGraph, source: GraphSource) -> list[Batch]:
        made = [fake.add(message(n)) for n in range(1, 31)]
        delete_after_the_listing(fake, [made[4], made[22]])
        out = fetch_all(source, None, limit)
        # Changes listed again among new mail: remembered ones are skipped (and move up in
        # `seen`), the others come again.
        for n in (1, 2, 10, 17, 29):
            fake.update(made[n])
        fake.add(message(31), draft=True)
        new = [fake.add(message(n)) for n in range(32, 61)]
        delete_after_the_listing(fake, [new[3], new[20]])
        return out + fetch_all(source, out[-1].cursor, limit)

    batches_, fake, _ = both_ways(scenario, fake_options, remember=remember)
    delivered = [n for batch in batches_ for n in ids(batch)]
    assert [n for n in delivered if n > 30] == [n for n in range(32, 61) if n not in (35, 52)]
    assert all(len(batch.messages) <= limit for batch in batches_)
    assert all(len(b) <= min(limit, 20) for b in batches(fake))


@pytest.mark.parametrize("seed", range(12))
def test_header_batches_change_no_batch_whatever_the_mailbox_does(seed: int) -> None:
    """Random mail, changes, moves, deletions under way, lost sync states, limits, pages."""
    setup = random.Random(seed)  # noqa: S311 (a reproducible mailbox, not a secret)
    ignore_page_size = setup.random() < 0.6
    fake_options = {
        "ignore_page_size": ignore_page_size,
        "default_page_size": setup.choice([3, 10, 40]),
    }
    remember = setup.choice([0, 2, 6, 128])

    def scenario(fake: FakeGraph, source: GraphSource) -> list[Batch]:
        rng = random.Random(seed)  # noqa: S311 (the same mailbox both ways)
        clock = fake.clock
        assert isinstance(clock, Clock)
        for n in range(1, rng.randint(1, 20)):
            fake.add(message(n), received_at=NOW - dt.timedelta(days=rng.choice([1, 30])))
        clock.tick(seconds=5)
        cursor = None
        if rng.random() < 0.5:
            cursor = source.initial_cursor(since=NOW - dt.timedelta(days=7))
        out: list[Batch] = []
        number = 100
        for _ in range(4):
            clock.tick(seconds=rng.choice([0, 2]))
            for _ in range(rng.randint(0, 30)):
                number += 1
                fake.add(
                    message(number),
                    folder=rng.choice(["inbox", "junkemail"]),
                    received_at=NOW - dt.timedelta(days=rng.choice([0, 1, 30])),
                    draft=rng.random() < 0.1,
                )
            for found in [m for m in fake.messages.values() if not m.deleted]:
                roll = rng.random()
                if roll < 0.15:
                    fake.update(found.id)
                elif roll < 0.2:
                    fake.move(found.id, rng.choice(["inbox", "junkemail"]))
                elif roll < 0.25:
                    fake.delete(found.id)
            live = [m.id for m in fake.messages.values() if not m.deleted]
            delete_after_the_listing(fake, rng.sample(live, min(len(live), rng.randint(0, 5))))
            if rng.random() < 0.1:
                fake.expire_sync_state()
            for _ in range(60):
                out.append(source.fetch(cursor, limit=rng.choice([1, 2, 3, 5, 20, 21, 100])))
                cursor = out[-1].cursor
                if not out[-1].more:
                    break
        return out

    both_ways(scenario, fake_options, folders=("inbox", "junkemail"), remember=remember)


@pytest.mark.parametrize("gone", [False, True])
def test_a_message_listed_twice_in_a_page_is_asked_for_once(gone: bool) -> None:
    def scenario(fake: FakeGraph, source: GraphSource) -> list[Batch]:
        first, second, third = (fake.add(message(n)) for n in (1, 2, 3))
        entries = [
            fake.messages[i].properties(graph_module._DELTA_FIELDS)
            for i in (first, second, first, third)
        ]
        link = f"{graph_module.DEFAULT_BASE_URL}/me/mailFolders('inbox')/messages/delta"
        page = {"value": entries, "@odata.deltaLink": f"{link}?$deltatoken=listed-twice"}
        fake.scripted.append(httpx.Response(200, json=page))
        if gone:
            fake.delete(first)
        return [source.fetch(None)]

    (batch,), fake, _ = both_ways(scenario)
    assert ids(batch) == ([2, 3] if gone else [1, 2, 3])
    first = next(iter(fake.messages))
    assert [len(b) for b in batches(fake)] == [3]
    # A message gone is asked for again where it is listed again, as without batching.
    assert header_gets(fake.requests) == ([first, first] if gone else [])


#: Inner answers to a headers GET that are not its answer, and why (as the debug log says).
INNER_HEADER_FAULTS: list[tuple[httpx.Response | dict[str, Any] | None, str]] = [
    (
        graph_error(429, "ApplicationThrottled", "Over the limit.", {"Retry-After": "3"}),
        "HTTP 429",
    ),
    (graph_error(500, "InternalServerError", "Something broke."), "HTTP 500"),
    (graph_error(404, "ErrorItemNotFound", "Not found (for a moment)."), "HTTP 404"),
    (None, "no answer"),
    ({"status": 200, "headers": {}, "body": "eyJpZCI6ICJ4In0="}, "not a JSON object"),
    (
        {"status": 200, "headers": {"Content-Type": "application/json"}, "body": ["x"]},
        "not a JSON object",
    ),
    ({"status": 200, "headers": {}, "body": None}, "not a JSON object"),
    ({"status": "200", "headers": {}, "body": {}}, "no status"),
]


@pytest.mark.parametrize(
    "case",
    INNER_HEADER_FAULTS,
    ids=["429", "500", "404", "no-answer", "base64", "json-list", "null", "status-as-str"],
)
def test_an_inner_answer_that_is_not_headers_is_fetched_on_its_own(
    caplog: pytest.LogCaptureFixture,
    case: tuple[httpx.Response | dict[str, Any] | None, str],
) -> None:
    fault, reason = case

    def scenario(fake: FakeGraph, source: GraphSource) -> list[Batch]:
        made = [fake.add(message(n)) for n in range(1, 6)]
        fake.batch_faults[made[1]] = fault
        fake.batch_faults[made[3]] = fault
        return [source.fetch(None)]

    with caplog.at_level(logging.DEBUG, "replytrack.sources.graph"):
        (batch,), fake, _ = both_ways(scenario)
    assert ids(batch) == [1, 2, 3, 4, 5]
    made = list(fake.messages)
    assert paths(fake.requests) == [DELTA, "/v1.0/$batch"] + [
        f"/v1.0/me/messages/{made[n]}" for n in (1, 3)
    ]
    (record,) = [r for r in caplog.records if "$batch gave" in r.getMessage()]
    assert record.levelno == logging.DEBUG
    assert "gave 3 of 5 headers" in record.getMessage()
    assert reason in record.getMessage()


@pytest.mark.parametrize(
    "failure",
    [
        graph_error(500, "InternalServerError", "Something broke."),
        graph_error(400, "BadRequest", "Invalid batch payload."),
        httpx.Response(200, json={"value": []}),
        httpx.Response(200, content=b"\xff<html>Gateway</html>"),
    ],
    ids=["500", "400", "no-responses", "not-json"],
)
def test_a_headers_batch_refused_as_a_whole_falls_back_to_a_get_each(
    caplog: pytest.LogCaptureFixture, failure: httpx.Response
) -> None:
    def scenario(fake: FakeGraph, source: GraphSource) -> list[Batch]:
        for n in range(1, 5):
            fake.add(message(n))
        fake.scripted += [None, failure]  # the delta page is served, the $batch is not
        return [source.fetch(None)]

    with caplog.at_level(logging.INFO, "replytrack.sources.graph"):
        (batch,), fake, _ = both_ways(scenario)
    assert ids(batch) == [1, 2, 3, 4]
    assert paths(fake.requests)[:2] == [DELTA, "/v1.0/$batch"]
    assert header_gets(fake.requests) == [m.source_id for m in batch.messages]
    assert caplog.text.count("fetching 4 headers one by one") == 2  # both ways


def test_a_network_error_on_a_headers_batch_is_a_source_error(
    source: GraphSource, fake: FakeGraph
) -> None:
    for n in range(1, 4):
        fake.add(message(n))
    fake.scripted += [None, connection_reset()]
    with pytest.raises(SourceError) as caught:
        source.fetch(None)
    assert isinstance(caught.value.__cause__, httpx.ReadError)
    assert paths(fake.requests) == [DELTA, "/v1.0/$batch"]  # no fallback: as for a GET
    assert ids(source.fetch(None)) == [1, 2, 3]


# --------------------------------------------------------------------------------------------
# Configuration, lifecycle
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"token": None},
        {"token": "a token, not a callable"},
        {"user": ""},
        {"user": "a/b"},
        {"folders": "inbox"},
        {"folders": ()},
        {"folders": ("inbox", "inbox")},
        {"folders": ("inbox", "")},
        {"base_url": "ftp://graph.example"},
        {"max_retries": -1},
        {"max_retry_wait": 0},
        {"remember": -1},
        {"timeout": 0},
        {"sleep": 3},
    ],
)
def test_misuse_raises_configgraph_error(kwargs: dict[str, Any]) -> None:
    kwargs.setdefault("token", lambda: TOKEN)
    with pytest.raises(ConfigError):
        GraphSource(**kwargs)


def test_a_client_that_is_not_httpx_raises_configgraph_error() -> None:
    with pytest.raises(ConfigError):
        GraphSource(object(), token=lambda: TOKEN)  # type: ignore[arg-type]


def test_a_token_callable_returning_no_token_raises_configgraph_error(make: Any) -> None:
    with make(token=lambda: "") as source, pytest.raises(ConfigError):
        source.fetch(None)


def test_close_closes_an_owned_client_only(client: httpx.Client) -> None:
    owned = GraphSource(token=lambda: TOKEN)
    own_client = owned._client
    owned.close()
    assert own_client.is_closed
    borrowed = GraphSource(client, token=lambda: TOKEN)
    borrowed.close()
    assert not client.is_closed


def test_without_httpx_the_import_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)
    spec = importlib.util.spec_from_file_location("graph_without_httpx", graph_module.__file__)
    assert spec is not None
    assert spec.loader is not None
    with pytest.raises(ImportError, match=r"pip install 'replytrack\[graph\]'"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_wait_sends_no_request_and_wake_ends_it(source: GraphSource, fake: FakeGraph) -> None:
    cursor = source.fetch(None).cursor
    sent = len(fake.requests)
    assert source.wait(cursor, 0.02) is False
    assert len(fake.requests) == sent
    source.wake()  # what a host's change-notification webhook does
    assert source.wait(cursor, 5) is True


# --------------------------------------------------------------------------------------------
# The tracker end to end
# --------------------------------------------------------------------------------------------


def outgoing() -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = f"Rep <{REP}>"
    mail["To"] = f"Jo <{JO}>"
    mail["Subject"] = "Quick question"
    mail.set_content("Hi Jo, do you have 15 minutes this week?")
    return mail


@pytest.fixture
def stop() -> CapturingHook:
    return CapturingHook()


@pytest.fixture
def tracker(clock: Clock, stop: CapturingHook) -> ReplyTracker:
    generator = MessageIdGenerator("mail.sales.example")  # no secret: no token match
    return ReplyTracker(
        MemoryStore(), generator, campaign_stop=stop, own_addresses=[REP], clock=clock
    )


def test_the_tracker_correlates_a_reply_read_from_graph(
    tracker: ReplyTracker, stop: CapturingHook, source: GraphSource, fake: FakeGraph
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    fake.add(build_reply(in_reply_to=f"<{sent.message_id}>", from_=f"Jo <{JO}>"))
    fake.add(build_reply(in_reply_to=None, from_="news@vendor.example", subject="Offers"))
    result = tracker.poll(source)
    assert (result.seen, result.events, result.errors) == (2, 1, ())
    (event,) = stop.events
    assert (event.ref, event.method) == ("c42:p7", MatchMethod.IN_REPLY_TO)
    assert event.received_at == NOW
    assert any(r.url.path.endswith("/$value") for r in fake.requests)  # the body, for classify
    assert tracker.poll(source).seen == 0


@pytest.mark.parametrize("alias", [True, False])
def test_a_reply_to_the_id_graph_gave_our_send_needs_the_alias(
    tracker: ReplyTracker, stop: CapturingHook, source: GraphSource, fake: FakeGraph, alias: bool
) -> None:
    sent = tracker.stamp(outgoing(), "c42:p7")
    replaced = "<AM0PR07MB5377.1234@AM0PR07MB5377.eurprd07.prod.outlook.com>"
    if alias:  # the host re-read the sent item's internetMessageId
        tracker.record_alias(sent, replaced)
    fake.add(build_reply(in_reply_to=replaced, references=[replaced], from_=f"Jo <{JO}>"))
    tracker.poll(source)
    assert [e.ref for e in stop.events] == (["c42:p7"] if alias else [])


def test_learn_sent_reads_the_id_graph_used_from_the_sent_items(
    tracker: ReplyTracker, stop: CapturingHook, make: Any, fake: FakeGraph
) -> None:
    mail = outgoing()
    sent = tracker.stamp(mail, "c42:p7")
    replaced = "<AM0PR07MB5377.1234@AM0PR07MB5377.eurprd07.prod.outlook.com>"
    # A Sent copy: Graph keeps the x-headers the host set, and reports the id it used.
    fake.add(
        mail.as_bytes(),
        folder="sentitems",
        headers=[{"name": ORIGIN_HEADER, "value": mail[ORIGIN_HEADER]}],
        internet_message_id=replaced,
        conversation_id="AAQkAGI2thread-of-c42=",
    )
    with make(folders=("sentitems",)) as sent_items:
        learned = tracker.learn_sent(sent_items)
    assert (learned.learned, learned.threads) == (1, 1)
    fake.add(build_reply(in_reply_to=replaced, from_=f"Jo <{JO}>"))
    with make() as inbox:
        tracker.poll(inbox)
    assert [(e.ref, e.method) for e in stop.events] == [("c42:p7", MatchMethod.IN_REPLY_TO)]
    assert stop.events[0].sent is not None
    assert stop.events[0].sent.message_id == sent.message_id


def test_a_poll_asks_for_the_bodies_of_its_replies_in_one_batch_request(
    tracker: ReplyTracker, stop: CapturingHook, source: GraphSource, fake: FakeGraph
) -> None:
    refs = [f"c42:p{n}" for n in range(1, 6)]
    for ref in refs:
        sent = tracker.stamp(outgoing(), ref)
        fake.add(build_reply(in_reply_to=f"<{sent.message_id}>", from_=f"Jo <{JO}>"))
    fake.add(build_reply(in_reply_to=None, from_="news@vendor.example", subject="Offers"))
    result = tracker.poll(source)
    assert (result.seen, result.events, result.errors) == (6, 5, ())
    assert sorted(e.ref for e in stop.events) == refs
    assert all(e.kind is Kind.REPLY for e in stop.events)  # classified on their bodies
    assert paths(fake.requests) == [DELTA, "/v1.0/$batch", "/v1.0/$batch"]
    assert [len(b) for b in batches(fake)] == [6, 5]  # the headers, then the replies' bodies
    bodies = [r for r in fake.batched if r.url.path.endswith("/$value")]
    assert len(bodies) == 5  # the replies' bodies only, not the newsletter's
