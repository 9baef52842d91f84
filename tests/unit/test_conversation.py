"""JWZ threading with notmuch's refinements: the classic edge cases, depth, size, order.

Messages are built by `mail()` below (header blocks only: threading reads nothing else);
replace it with the `replytrack.testing` builders once they exist.
"""

from __future__ import annotations

import email
import random
from collections.abc import Sequence

import pytest

from replytrack.conversation import Thread, thread_messages
from replytrack.headers import parse_headers


def mail(
    message_id: str | None,
    *,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    date: str | None = "Mon, 05 Jan 2026 10:00:00 +0000",
    subject: str = "Pricing",
) -> bytes:
    lines = ["From: Sam <sam@prospect.example>", f"Subject: {subject}"]
    if date is not None:
        lines.append(f"Date: {date}")
    if message_id is not None:
        lines.append(f"Message-ID: <{message_id}>")
    if in_reply_to is not None:
        lines.append(f"In-Reply-To: {in_reply_to}")
    if references:
        lines.append("References: " + " ".join(f"<{r}>" for r in references))
    return ("\r\n".join(lines) + "\r\n\r\nbody\r\n").encode()


def at(minute: int) -> str:
    return f"Mon, 05 Jan 2026 10:{minute:02d}:00 +0000"


def shape(threads: list[Thread[bytes]]) -> list[object]:
    """The trees as nested (id, [children]) pairs; ghosts are marked with a '?'."""
    out: list[object] = []
    for thread in threads:
        name = thread.message_id + ("?" if thread.is_ghost else "")
        out.append((name, shape(list(thread.children))))
    return out


def parents(threads: list[Thread[bytes]]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for root in threads:
        found[root.message_id] = None
        for node in root.walk():
            for child in node.children:
                found[child.message_id] = node.message_id
    return found


def all_messages(threads: list[Thread[bytes]]) -> list[bytes]:
    return [n.message for root in threads for n in root.walk() if n.message is not None]


def test_a_reply_chain_becomes_one_tree() -> None:
    threads = thread_messages(
        [
            mail("a@x", date=at(0)),
            mail("b@x", in_reply_to="<a@x>", references=["a@x"], date=at(1)),
            mail("c@x", in_reply_to="<b@x>", references=["a@x", "b@x"], date=at(2)),
        ]
    )

    assert shape(threads) == [("a@x", [("b@x", [("c@x", [])])])]
    assert threads[0].message is not None
    assert not threads[0].is_ghost


def test_the_message_attribute_is_the_input_object() -> None:
    raw = mail("a@x")
    [thread] = thread_messages([raw])

    assert thread.message is raw
    assert thread.headers is not None
    assert thread.headers.message_id == "a@x"


@pytest.mark.parametrize(
    "convert",
    [
        lambda raw: raw,
        lambda raw: raw.decode(),
        email.message_from_bytes,
        parse_headers,
    ],
    ids=["bytes", "str", "Message", "Headers"],
)
def test_every_input_type_threads_alike(convert: object) -> None:
    raws = [mail("a@x"), mail("b@x", in_reply_to="<a@x>")]
    threads = thread_messages([convert(raw) for raw in raws])  # type: ignore[operator]

    assert shape(threads) == [("a@x", [("b@x", [])])]


def test_an_unsupported_input_type_raises_type_error() -> None:
    with pytest.raises(TypeError):
        thread_messages([42])  # type: ignore[type-var]


def test_a_missing_parent_is_a_ghost_that_keeps_its_replies_together() -> None:
    threads = thread_messages(
        [
            mail("b@x", in_reply_to="<sent@us>", references=["sent@us"], date=at(1)),
            mail("c@x", in_reply_to="<sent@us>", references=["sent@us"], date=at(2)),
        ]
    )

    assert shape(threads) == [("sent@us?", [("b@x", []), ("c@x", [])])]
    assert threads[0].message is None
    assert threads[0].headers is None


def test_a_ghost_with_one_reply_is_kept_by_default() -> None:
    threads = thread_messages([mail("b@x", in_reply_to="<sent@us>")])

    assert shape(threads) == [("sent@us?", [("b@x", [])])]


def test_jwz_pruning_promotes_the_only_child_of_a_root_ghost() -> None:
    threads = thread_messages([mail("b@x", in_reply_to="<sent@us>")], keep_ghosts=False)

    assert shape(threads) == [("b@x", [])]


def test_jwz_pruning_keeps_a_root_ghost_with_two_children() -> None:
    threads = thread_messages(
        [mail("b@x", in_reply_to="<g@x>"), mail("c@x", in_reply_to="<g@x>")], keep_ghosts=False
    )

    assert shape(threads) == [("g@x?", [("b@x", []), ("c@x", [])])]


def test_jwz_pruning_splices_out_a_ghost_inside_a_thread() -> None:
    raws = [
        mail("a@x", date=at(0)),
        mail("c@x", in_reply_to="<b@x>", references=["a@x", "b@x"], date=at(2)),
    ]

    assert shape(thread_messages(raws)) == [("a@x", [("b@x?", [("c@x", [])])])]
    assert shape(thread_messages(raws, keep_ghosts=False)) == [("a@x", [("c@x", [])])]


def test_ghosts_with_no_message_below_are_dropped() -> None:
    # b@x already has a parent, so the chain cannot put g@x above it: g@x ends up empty.
    threads = thread_messages(
        [
            mail("a@x", date=at(0)),
            mail("b@x", in_reply_to="<a@x>", date=at(1)),
            mail("c@x", in_reply_to="<b@x>", references=["a@x", "g@x", "b@x"], date=at(2)),
        ]
    )

    assert shape(threads) == [("a@x", [("b@x", [("c@x", [])])])]


def test_a_references_loop_between_two_messages_is_broken() -> None:
    threads = thread_messages(
        [mail("a@x", references=["b@x"], date=at(0)), mail("b@x", references=["a@x"], date=at(1))]
    )

    assert len(all_messages(threads)) == 2
    assert shape(threads) == [("b@x", [("a@x", [])])]  # the first link made wins


def test_a_longer_loop_is_broken_too() -> None:
    threads = thread_messages(
        [
            mail("a@x", in_reply_to="<c@x>"),
            mail("b@x", in_reply_to="<a@x>"),
            mail("c@x", in_reply_to="<b@x>"),
        ]
    )

    assert len(threads) == 1
    assert len(all_messages(threads)) == 3


def test_a_message_that_references_itself_is_a_root() -> None:
    threads = thread_messages([mail("a@x", in_reply_to="<a@x>", references=["a@x"])])

    assert shape(threads) == [("a@x", [])]


def test_a_loop_in_one_references_list_does_not_hang() -> None:
    threads = thread_messages([mail("d@x", references=["a@x", "b@x", "a@x", "b@x", "c@x"])])

    assert len(all_messages(threads)) == 1


def test_references_in_the_wrong_order_yield_to_a_clean_in_reply_to() -> None:
    threads = thread_messages(
        [
            mail("a@x", date=at(0)),
            mail("b@x", in_reply_to="<a@x>", references=["a@x"], date=at(1)),
            mail("c@x", in_reply_to="<b@x>", references=["b@x", "a@x"], date=at(2)),
        ]
    )

    assert shape(threads) == [("a@x", [("b@x", [("c@x", [])])])]


def test_a_wrong_order_references_chain_never_reparents_an_existing_link() -> None:
    threads = thread_messages(
        [
            mail("a@x", date=at(0)),
            mail("b@x", in_reply_to="<a@x>", date=at(1)),
            # Without In-Reply-To the last reference is the parent (a@x); the chain b -> a
            # must not move a@x under b@x, nor b@x anywhere.
            mail("c@x", references=["b@x", "a@x"], date=at(2)),
        ]
    )

    assert parents(threads) == {"a@x": None, "b@x": "a@x", "c@x": "a@x"}


def test_own_headers_win_over_another_messages_references() -> None:
    raws = [
        mail("c@x", in_reply_to="<b@x>", references=["wrong@x", "b@x"], date=at(2)),
        mail("b@x", in_reply_to="<a@x>", references=["a@x"], date=at(1)),
        mail("a@x", date=at(0)),
    ]

    assert parents(thread_messages(raws))["b@x"] == "a@x"


def test_references_chains_place_ghosts() -> None:
    threads = thread_messages([mail("d@x", in_reply_to="<c@x>", references=["a@x", "b@x", "c@x"])])

    assert shape(threads) == [("a@x?", [("b@x?", [("c@x?", [("d@x", [])])])])]


def test_a_message_without_references_gets_a_parent_from_anothers_chain() -> None:
    threads = thread_messages(
        [
            mail("a@x", date=at(0)),
            mail("b@x", date=at(1)),  # its client dropped In-Reply-To and References
            mail("c@x", in_reply_to="<b@x>", references=["a@x", "b@x"], date=at(2)),
        ]
    )

    assert shape(threads) == [("a@x", [("b@x", [("c@x", [])])])]


def test_in_reply_to_with_a_trailing_comment_is_clean() -> None:
    threads = thread_messages(
        [
            mail("a@x", date=at(0)),
            mail("b@x", in_reply_to="<a@x> (message from Sam of Mon, 5 Jan 2026)", date=at(1)),
            mail("c@x", in_reply_to='Your message of "Mon, 5 Jan" <b@x>', date=at(2)),
        ]
    )

    assert shape(threads) == [("a@x", [("b@x", [("c@x", [])])])]


def test_in_reply_to_with_two_ids_defers_to_references() -> None:
    threads = thread_messages([mail("c@x", in_reply_to="<a@x> <b@x>", references=["x@x", "r@x"])])

    assert parents(threads)["c@x"] == "r@x"


def test_in_reply_to_with_two_ids_and_no_references_uses_the_first() -> None:
    threads = thread_messages([mail("c@x", in_reply_to="<a@x> <b@x>")])

    assert parents(threads)["c@x"] == "a@x"


def test_duplicate_message_ids_are_kept_apart() -> None:
    first = mail("a@x", date=at(0), subject="first")
    second = mail("a@x", date=at(1), subject="second")
    reply = mail("b@x", in_reply_to="<a@x>", date=at(2))

    threads = thread_messages([first, second, reply])

    assert [t.message for t in threads] == [first, second]
    assert threads[0].message_id == "a@x"
    assert not threads[0].synthetic_id
    assert threads[1].synthetic_id
    assert threads[1].message_id.endswith("@replytrack.invalid")
    assert threads[1].headers is not None
    assert threads[1].headers.message_id == "a@x"
    assert [c.message for c in threads[0].children] == [reply]  # replies go to the first


def test_a_duplicate_still_threads_under_its_own_parent() -> None:
    threads = thread_messages(
        [
            mail("a@x", date=at(0)),
            mail("b@x", in_reply_to="<a@x>", date=at(1)),
            mail("b@x", in_reply_to="<a@x>", date=at(2)),
        ]
    )

    assert len(threads) == 1
    assert len(threads[0].children) == 2


def test_messages_without_message_id_get_unique_synthetic_ids() -> None:
    threads = thread_messages(
        [
            mail(None, date=at(0)),
            mail(None, date=at(1)),
            mail("synthetic.1@replytrack.invalid", date=at(2)),  # a real id in the way
        ]
    )

    ids = [t.message_id for t in threads]
    assert len(set(ids)) == 3
    assert [t.synthetic_id for t in threads] == [True, True, False]
    assert ids[2] == "synthetic.1@replytrack.invalid"


def test_a_reply_without_message_id_still_finds_its_parent() -> None:
    threads = thread_messages([mail("a@x", date=at(0)), mail(None, in_reply_to="<a@x>")])

    assert len(threads) == 1
    assert threads[0].children[0].synthetic_id


def test_siblings_and_roots_are_ordered_by_date_then_input_order() -> None:
    threads = thread_messages(
        [
            mail("late@x", date=at(30)),
            mail("r2@x", in_reply_to="<a@x>", date=at(20)),
            mail("a@x", date=at(0)),
            mail("r1@x", in_reply_to="<a@x>", date=at(10)),
            mail("tie2@x", in_reply_to="<a@x>", date=at(15)),
            mail("tie1@x", in_reply_to="<a@x>", date=at(15)),
            mail("undated@x", in_reply_to="<a@x>", date=None),
        ]
    )

    assert [t.message_id for t in threads] == ["a@x", "late@x"]
    assert [c.message_id for c in threads[0].children] == [
        "r1@x",
        "tie2@x",
        "tie1@x",
        "r2@x",
        "undated@x",
    ]


def test_a_ghost_sorts_where_its_earliest_message_does() -> None:
    threads = thread_messages(
        [
            mail("root@x", date=at(5)),
            mail("b@x", in_reply_to="<g@x>", date=at(9)),
            mail("c@x", in_reply_to="<g@x>", date=at(1)),
        ]
    )

    assert [t.message_id for t in threads] == ["g@x", "root@x"]
    assert [c.message_id for c in threads[0].children] == ["c@x", "b@x"]


def test_the_trees_do_not_depend_on_input_order() -> None:
    raws = [
        mail("a@x", date=at(0)),
        mail("b@x", in_reply_to="<a@x>", references=["a@x"], date=at(1)),
        mail("c@x", in_reply_to="<b@x>", references=["a@x", "b@x"], date=at(2)),
        mail("d@x", references=["a@x", "gone@x"], date=at(3)),
        mail("e@x", in_reply_to="<gone@x>", references=["a@x", "gone@x"], date=at(4)),
    ]
    expected = shape(thread_messages(raws))
    rng = random.Random(7)  # noqa: S311 - a reproducible shuffle, not a secret
    for _ in range(20):
        rng.shuffle(raws)
        assert shape(thread_messages(raws)) == expected


def test_subjects_are_not_merged_by_default() -> None:
    threads = thread_messages([mail("a@x", subject="Pricing"), mail("b@x", subject="Re: Pricing")])

    assert len(threads) == 2


def test_merge_subjects_puts_replies_under_the_original() -> None:
    threads = thread_messages(
        [
            mail("b@x", subject="Re: Pricing", date=at(1)),
            mail("a@x", subject="Pricing", date=at(0)),
            mail("c@x", subject="RE: AW: pricing", date=at(2)),
            mail("z@x", subject="Other", date=at(3)),
        ],
        merge_subjects=True,
    )

    assert shape(threads) == [("a@x", [("b@x", []), ("c@x", [])]), ("z@x", [])]


def test_merge_subjects_without_an_original_groups_under_a_new_ghost() -> None:
    threads = thread_messages(
        [mail("b@x", subject="Re: Pricing", date=at(1)), mail("c@x", subject="Re: Pricing")],
        merge_subjects=True,
    )

    assert len(threads) == 1
    assert threads[0].is_ghost
    assert threads[0].synthetic_id
    assert len(threads[0].children) == 2


def test_a_very_deep_chain_does_not_recurse() -> None:
    depth = 20_000
    raws = [mail("m0@x")] + [mail(f"m{i}@x", in_reply_to=f"<m{i - 1}@x>") for i in range(1, depth)]

    threads = thread_messages(raws)

    assert len(threads) == 1
    nodes = list(threads[0].walk())
    assert len(nodes) == depth
    assert nodes[-1].message_id == f"m{depth - 1}@x"
    assert "children=1" in repr(threads[0])  # repr is shallow
    assert threads[0] != nodes[1]  # identity equality: no recursive comparison


def test_a_ten_thousand_message_thread_keeps_every_message_once() -> None:
    rng = random.Random(2026)  # noqa: S311 - a reproducible shape, not a secret
    raws = [mail("m0@x", date=at(0))]
    refs: dict[int, list[str]] = {0: []}
    for i in range(1, 10_000):
        parent = i - 1 if rng.random() < 0.6 else rng.randrange(i)
        refs[i] = [*refs[parent], f"m{parent}@x"][-20:]
        raws.append(
            mail(f"m{i}@x", in_reply_to=f"<m{parent}@x>", references=refs[i], date=at(i % 60))
        )
    rng.shuffle(raws)

    threads = thread_messages(raws)

    assert len(threads) == 1
    assert sorted(map(id, all_messages(threads))) == sorted(map(id, raws))


def test_an_empty_input_gives_no_threads() -> None:
    assert thread_messages([]) == []


def test_a_generator_is_accepted() -> None:
    threads = thread_messages(mail(f"{i}@x") for i in range(3))

    assert len(threads) == 3
