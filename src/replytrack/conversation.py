"""Conversation threading: JWZ's algorithm with notmuch's refinements, in linear time.

`thread_messages` arranges messages into reply trees from their ``Message-ID``,
``In-Reply-To`` and ``References`` fields, following Jamie Zawinski's "message threading"
write-up (the algorithm behind Netscape Mail, flanker and most mail clients) with the changes
notmuch makes in ``lib/add-message.cc`` and ``lib/thread.cc``:

Rule 1: every id gets one container. An id that is referenced but whose message is not among
        the input gets a *ghost* container (notmuch's ghost messages; JWZ's empty containers).
Rule 2: a message's parent is its In-Reply-To when that field holds exactly one id (so
        ``In-Reply-To: <id> (message of ...)`` counts: the parser drops the comment), else the
        last id of References, else the first id of In-Reply-To (notmuch's order). Some
        clients put several ids or prose in In-Reply-To; References is the better guide then.
Rule 3: links are made in two passes. First every message is linked to the parent its own
        headers name; then the consecutive pairs of every References list fill in parents
        that are still unknown (mostly ghosts). A container that has a parent keeps it: no
        link is ever re-parented (notmuch's choice; JWZ re-parents when a message's own
        headers disagree, which makes the result depend on input order far more often).
Rule 4: a link that would close a loop (A references B, B references A; a message that
        references itself) is skipped. Loops are detected with a union-find over the trees,
        so linking costs nearly O(1) instead of a walk over the ancestors: a 100,000-deep chain
        threads in linear time, and nothing anywhere recurses.
Rule 5: messages are never merged. A second message with an id already taken (a duplicate)
        and a message without a Message-ID each get their own container and a synthetic id,
        marked `Thread.synthetic_id`; replies to that id attach to the first message that had
        it.
Rule 6: subjects are ignored unless ``merge_subjects=True`` (JWZ's step 5, simplified): then
        root threads with the same normalised subject are grouped, under the root whose
        subject has no reply prefix when there is one, else under a new ghost.
Rule 7: the output is deterministic. Siblings and roots are ordered by ``Date``, then by input
        order; a message without a (readable) date sorts after the dated ones; a ghost sorts
        where its earliest descendant does.
Rule 8: ghosts are kept where they carry structure (``keep_ghosts=True``, the default): a ghost
        with at least one message below it stays, so a thread of replies to a send that is not
        in the mailbox is rooted at that send's id. Ghosts with no message below them are
        always dropped. ``keep_ghosts=False`` prunes as JWZ's step 4 does: a ghost is replaced
        by its children, except a root ghost with two or more children, which keeps them
        together.

Which link wins when messages disagree (Rule 3, Rule 4) can depend on the input order; the
rest of the output depends only on the set of messages and their dates.
"""

from __future__ import annotations

import email.message
import math
from collections.abc import Iterable, Iterator
from typing import Final, Generic, TypeAlias, TypeVar

import attrs

from replytrack.headers import Headers, normalize_subject, parse_headers

__all__ = [
    "MessageInput",
    "Thread",
    "thread_messages",
]

#: What `thread_messages` takes: anything `parse_headers` reads, or headers already parsed.
MessageInput: TypeAlias = "bytes | bytearray | memoryview | str | email.message.Message | Headers"
M = TypeVar("M", bound=MessageInput)

# The right part of synthetic ids: RFC 2606 reserves ".invalid", so no real id uses it.
_SYNTHETIC_DOMAIN: Final = "replytrack.invalid"
_NO_PARENT: Final = -1
_NO_MESSAGE: Final = -1
# Sort key of an undated message: after every dated one, then by input order.
_UNDATED: Final = math.inf


@attrs.frozen(eq=False, repr=False)
class Thread(Generic[M]):
    """One node of a reply tree: a message, or a ghost for a message referenced but not given.

    Equality is identity and `repr` is shallow: a structural ``==`` or ``repr`` would recurse
    through the whole tree, and trees can be thousands of levels deep.

    Attributes:
        message_id: the node's id, unique within one `thread_messages` result: the message's
            normalised Message-ID (see `parse_headers`), or a synthetic one (see below).
        message: the input object exactly as given, or ``None`` for a ghost.
        headers: the message's parsed headers, or ``None`` for a ghost.
        children: the replies, ordered by date, then by input order.
        synthetic_id: `message_id` was made up, because the message had none, repeated an id
            an earlier message already had (its own id is still in ``headers.message_id``), or
            the node is a ghost grouping threads by subject. Synthetic ids end in
            ``@replytrack.invalid``.
    """

    message_id: str
    message: M | None
    headers: Headers | None
    children: tuple[Thread[M], ...] = ()
    synthetic_id: bool = False

    @property
    def is_ghost(self) -> bool:
        """Whether this node stands for a message that is not among the input."""
        return self.headers is None

    def walk(self) -> Iterator[Thread[M]]:
        """Yield this node and every node below it, depth first, parents before children.

        Iterative, so it works at any depth.
        """
        stack: list[Thread[M]] = [self]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.children))

    def __repr__(self) -> str:
        kind = "ghost" if self.is_ghost else "message"
        return f"<Thread {kind} {self.message_id!r} children={len(self.children)}>"


def thread_messages(
    messages: Iterable[M], *, merge_subjects: bool = False, keep_ghosts: bool = True
) -> list[Thread[M]]:
    """Arrange messages into reply trees (see the module docstring for the rules).

    Args:
        messages: raw messages (bytes or str: only the header block is read), stdlib
            `email.message.Message` objects, or `Headers` already parsed.
        merge_subjects: also group root threads that share a normalised subject (Rule 6).
        keep_ghosts: keep ghosts that have messages below them (Rule 8); ``False`` prunes
            as JWZ does.

    Returns:
        The root nodes, ordered by date, then input order. Every input message appears
        exactly once in the trees. Never raises on malformed mail.

    Raises:
        TypeError: an item is not one of the accepted types.
    """
    inputs = list(messages)
    parsed = [item if isinstance(item, Headers) else parse_headers(item) for item in inputs]
    forest = _Forest(parsed)
    top = forest.prune_and_sort(keep_ghosts=keep_ghosts)
    if merge_subjects:
        top = forest.merge_subjects(top)
    return forest.build(top, inputs)


class _Forest:
    """The containers of one `thread_messages` call.

    Containers are parallel lists indexed by container number, and the hot loops work on
    local names: several times faster than one object per container with methods, which
    matters when threading tens of thousands of messages.

    The union-find in `tree` has one more property that keeps it cheap: the representative
    of every tree is its actual root (a link points the lower tree's root at the upper
    tree's root), so a container with no parent is its own representative.
    """

    def __init__(self, parsed: list[Headers]) -> None:
        self.parsed = parsed
        self.index_of: dict[str, int] = {}  # real ids only: synthetic ones are not addressable
        self.ids: list[str | None] = []  # None until `build` names the synthetic ones
        self.message_of: list[int] = []  # input position, or _NO_MESSAGE for a ghost
        self.parent: list[int] = []
        self.tree: list[int] = []  # union-find over the trees (Rule 4)
        self.kept: list[list[int]] = []  # children after pruning
        self.key: list[tuple[float, int]] = []  # sort key (Rule 7)
        chains = self._link_own_parents()
        self._link_reference_chains(chains)

    def _add(self, message_id: str | None, position: int = _NO_MESSAGE) -> int:
        number = len(self.ids)
        if message_id is not None:
            self.index_of[message_id] = number
        self.ids.append(message_id)
        self.message_of.append(position)
        self.parent.append(_NO_PARENT)
        self.tree.append(number)
        return number

    def _link_own_parents(self) -> list[tuple[str, ...]]:
        """Pass 1 (Rule 2, Rule 3): each message under the parent its own headers name.

        Returns:
            The References lists worth a second look in pass 2 (two ids or more).
        """
        index_of, message_of, parent, tree = self.index_of, self.message_of, self.parent, self.tree
        add = self._add
        chains: list[tuple[str, ...]] = []
        for position, headers in enumerate(self.parsed):
            message_id = headers.message_id
            number = None if message_id is None else index_of.get(message_id)
            if number is None:
                number = add(message_id, position)
            elif message_of[number] != _NO_MESSAGE:
                number = add(None, position)  # a duplicate (Rule 5), named in `build`
            else:
                message_of[number] = position  # a ghost until now

            in_reply_to = headers.in_reply_to
            references = headers.references
            if len(references) > 1:
                chains.append(references)
            if len(in_reply_to) == 1:
                parent_id = in_reply_to[0]
            elif references:
                parent_id = references[-1]
            elif in_reply_to:
                parent_id = in_reply_to[0]
            else:
                continue
            up = index_of.get(parent_id)
            if up is None:
                up = add(parent_id)
            # Only this pass links message containers, once each, so `number` has no parent
            # and is its own tree's root: the link closes a loop exactly when `up` is in
            # that tree, i.e. when `up`'s root is `number` (Rule 4).
            top = up
            while tree[top] != top:
                tree[top] = top = tree[tree[top]]  # path halving
            if top != number:
                parent[number] = up
                tree[number] = top
        return chains

    def _link_reference_chains(self, chains: list[tuple[str, ...]]) -> None:
        """Pass 2 (Rule 3): References chains fill in unknown parents, never replace one."""
        index_of, parent, tree = self.index_of, self.parent, self.tree
        add = self._add
        # Most chains only repeat links pass 1 made: every id after the first already has a
        # parent. Spot those with one C-level set operation per chain and skip them; it
        # saves most of this pass. (Skipping them changes nothing: links are never undone.)
        linked = {message_id for message_id, number in index_of.items() if parent[number] >= 0}
        for references in chains:
            if linked.issuperset(references[1:]):
                continue
            up = index_of.get(references[0])
            if up is None:
                up = add(references[0])
            for reference in references[1:]:
                down = index_of.get(reference)
                if down is None:
                    down = add(reference)
                if parent[down] == _NO_PARENT:
                    top = up
                    while tree[top] != top:
                        tree[top] = top = tree[tree[top]]
                    if top != down:
                        parent[down] = up
                        tree[down] = top
                up = down

    def prune_and_sort(self, *, keep_ghosts: bool) -> list[int]:
        """Prune ghosts (Rule 8), order children (Rule 7); return the sorted roots."""
        count = len(self.ids)
        parent, message_of = self.parent, self.message_of
        children: list[list[int]] = [[] for _ in range(count)]
        roots: list[int] = []
        for number, up in enumerate(parent):
            if up == _NO_PARENT:
                roots.append(number)
            else:
                children[up].append(number)

        # Children before parents: a reversed depth-first preorder of the forest, which has
        # no loops (Rule 4).
        order: list[int] = []
        stack = roots[:]
        while stack:
            number = stack.pop()
            order.append(number)
            stack += children[number]

        stamps = [
            _UNDATED if (date := headers.date) is None else date.timestamp()
            for headers in self.parsed
        ]
        key = self.key = [(_UNDATED, 0)] * count
        by_key = key.__getitem__
        kept = self.kept = children
        # What stands for each container in its parent's list after pruning: itself, its
        # children (a ghost spliced out), or nothing (a ghost with no message below).
        nothing: list[int] = []
        stand_in: list[list[int]] = [nothing] * count
        for number in reversed(order):
            below = children[number]
            if below:
                if len(below) == 1:
                    below = stand_in[below[0]]
                else:
                    below = [stand for child in below for stand in stand_in[child]]
                    below.sort(key=by_key)
            position = message_of[number]
            if position != _NO_MESSAGE:
                key[number] = (stamps[position], position)
                kept[number] = below
                stand_in[number] = [number]
            elif below:
                key[number] = key[below[0]]
                if keep_ghosts or (parent[number] == _NO_PARENT and len(below) > 1):
                    kept[number] = below
                    stand_in[number] = [number]
                else:
                    stand_in[number] = below

        top = [stand for number in roots for stand in stand_in[number]]
        top.sort(key=by_key)
        return top

    def _subject_of(self, number: int) -> str | None:
        # A ghost speaks for its earliest message below, as in JWZ's step 5.
        while self.message_of[number] == _NO_MESSAGE:
            if not self.kept[number]:
                return None
            number = self.kept[number][0]
        return self.parsed[self.message_of[number]].subject

    def _is_original(self, number: int) -> bool:
        """Whether container `number` is a message whose subject has no reply prefix."""
        position = self.message_of[number]
        if position == _NO_MESSAGE:
            return False
        subject = self.parsed[position].subject or ""
        return normalize_subject(subject) == " ".join(subject.split())

    def merge_subjects(self, top: list[int]) -> list[int]:
        """Group root threads by normalised subject (Rule 6); return the new sorted roots.

        A simplification of JWZ's step 5: the earliest root that is a message whose subject
        has no reply prefix takes the others as children; without one, a new ghost (with a
        synthetic id) holds the group.
        """
        groups: dict[str, list[int]] = {}
        for number in top:
            subject = self._subject_of(number)
            bare = normalize_subject(subject).casefold() if subject else ""
            if bare:
                groups.setdefault(bare, []).append(number)

        key, kept = self.key, self.kept
        merged: set[int] = set()
        new_roots: list[int] = []
        for group in groups.values():
            if len(group) < 2:
                continue
            host = next((number for number in group if self._is_original(number)), None)
            if host is None:
                host = self._add(None)
                kept.append([])
                key.append(key[group[0]])
                new_roots.append(host)
            # A fresh list: `kept` may share list objects between containers (see above).
            kept[host] = sorted(
                [*kept[host], *(number for number in group if number != host)],
                key=key.__getitem__,
            )
            merged.update(number for number in group if number != host)
            key[host] = min(key[host], key[kept[host][0]])
        result = [number for number in top if number not in merged] + new_roots
        result.sort(key=key.__getitem__)
        return result

    def _names(self) -> list[str]:
        """Every container's id, synthetic ids made up where none is known (Rule 5)."""
        names: list[str] = []
        serial = 0
        for message_id in self.ids:
            name = message_id
            while name is None or (message_id is None and name in self.index_of):
                serial += 1
                name = f"synthetic.{serial}@{_SYNTHETIC_DOMAIN}"
            names.append(name)
        return names

    def build(self, top: list[int], inputs: list[M]) -> list[Thread[M]]:
        """Build the frozen nodes under the roots `top`, bottom-up, without recursion."""
        names = self._names()
        ids, kept, message_of, parsed = self.ids, self.kept, self.message_of, self.parsed
        order: list[int] = []
        stack = top[:]
        while stack:
            number = stack.pop()
            order.append(number)
            stack += kept[number]
        built: list[Thread[M] | None] = [None] * len(ids)
        no_children: tuple[Thread[M], ...] = ()
        for number in reversed(order):
            position = message_of[number]
            below = kept[number]
            built[number] = Thread(
                names[number],
                inputs[position] if position != _NO_MESSAGE else None,
                parsed[position] if position != _NO_MESSAGE else None,
                tuple([built[child] for child in below]) if below else no_children,  # type: ignore[misc]
                ids[number] is None,
            )
        return [built[number] for number in top]  # type: ignore[misc]
