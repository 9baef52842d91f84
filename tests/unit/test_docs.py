"""Every code block of the documentation runs here, page by page.

The pages in ``docs/`` are Markdown (the site is built from them by ``mkdocs build --strict``).
Each page's blocks run in order, in one namespace, in a temporary working directory, with
warnings as errors (the suite's ``filterwarnings``):

* ``python`` blocks are executed; one whose first line starts with ``>>>`` is a doctest.
* ``pycon`` blocks are doctests: the output shown on the page is the output checked
  (``ELLIPSIS`` and ``NORMALIZE_WHITESPACE`` on).
* A ``--8<-- "path"`` line (a pymdownx.snippets include) is replaced by the file it names, as
  the site build does: the examples page runs the files of ``examples/``.
* ``<!-- invisible-code-block: python ... -->`` (Sybil's spelling) runs without being shown:
  for the rare setup a reader does not need to see.
* ``sh`` blocks are checked, not run (they install packages, reach servers or run long): every
  line is a command this test knows, ``pip install`` names only extras that exist, every
  ``replytrack`` subcommand exists (its ``--help`` runs), and every ``python SCRIPT.py`` names
  a file of the repository.
* Any other block (``text``, ``json`` ...) must follow a ``<!-- not-run: REASON -->`` comment;
  so must a Python block that cannot run here. ``NOT_RUN`` below lists them, so a new one is
  a visible change.

A page may need a real server: the workers page runs its PostgreSQL block against the
throwaway PostgreSQL of the integration tests (``postgres_dsn``), handed over in the
environment variable the page reads.
"""

from __future__ import annotations

import doctest
import mailbox
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from email.message import EmailMessage
from importlib.metadata import metadata
from pathlib import Path

import attrs
import pytest

import replytrack
import replytrack.dns
from replytrack.sources import MaildirSource
from replytrack.testing import build_reply

ROOT = Path(__file__).resolve().parent.parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))

#: Blocks that do not run, as (page, first line of the block). Keep it short; each has its
#: reason on the page, in the ``not-run`` comment before it.
NOT_RUN: frozenset[tuple[str, str]] = frozenset()

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)\n"
    r"(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
    re.M | re.S,
)
_INVISIBLE = re.compile(
    r"<!--[ \t]*invisible-code-block:[ \t]*python[ \t]*\n(?P<body>.*?)-->", re.S
)
_NOT_RUN = re.compile(r"<!--[ \t]*not-run:(?P<reason>[^>]*)-->\s*\Z")
_SNIPPET = re.compile(r'^[ \t]*--8<--[ \t]+"(?P<path>[^"]+)"[ \t]*$', re.M)
_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@attrs.frozen
class Block:
    """One code block of a page."""

    page: str
    line: int
    language: str
    body: str
    not_run: str | None = None

    @property
    def where(self) -> str:
        return f"{(DOCS / self.page).resolve().relative_to(ROOT)}:{self.line}"


def blocks(page: str) -> list[Block]:
    """The code blocks of `page` in reading order, invisible ones included."""
    text = (DOCS / page).read_text(encoding="utf-8")
    found: list[Block] = []
    for match in _FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 2  # the block's first line of code
        language = match["info"].split()[0] if match["info"].strip() else ""
        indent = match["indent"]
        body = "\n".join(
            row[len(indent) :] if row.startswith(indent) else row
            for row in match["body"].split("\n")
        )
        before = text[: match.start()]
        not_run = _NOT_RUN.search(before)
        reason = not_run["reason"].strip() if not_run else None
        found.append(Block(page, line, language, body, reason))
    for match in _INVISIBLE.finditer(text):
        line = text.count("\n", 0, match.start()) + 2
        found.append(Block(page, line, "python", match["body"]))
    return sorted(found, key=lambda b: b.line)


def expand_snippets(body: str) -> str:
    """Replace pymdownx.snippets include lines by the files they name (relative to the root)."""
    return _SNIPPET.sub(lambda m: (ROOT / m["path"]).read_text(encoding="utf-8"), body)


def run_doctest(block: Block, namespace: dict[str, object]) -> None:
    test = doctest.DocTestParser().get_doctest(
        block.body, namespace, block.where, str(DOCS / block.page), block.line - 1
    )
    test.globs = namespace  # the page's namespace itself, not the copy DocTest made
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=_FLAGS)
    runner.run(test, out=report.append, clear_globs=False)
    if runner.failures:
        pytest.fail(f"{block.where}: doctest failed\n" + "".join(report), pytrace=False)


def run_python(block: Block, namespace: dict[str, object]) -> None:
    # Padded so that a traceback names the line of the page.
    source = "\n" * (block.line - 1) + expand_snippets(block.body)
    code = compile(source, str(DOCS / block.page), "exec")
    exec(code, namespace)  # noqa: S102 - the documentation's own code is what is tested


# -- shell blocks ------------------------------------------------------------------------------

_EXTRAS = set(metadata("replytrack").get_all("Provides-Extra") or ())
_SUBCOMMANDS_CHECKED: dict[str, None] = {}


def _check_pip(words: list[str], where: str) -> None:
    for word in words[2:]:
        if word.startswith("-"):
            continue
        name, _, extras = word.partition("[")
        if name not in {"replytrack", "."}:
            pytest.fail(f"{where}: pip install of {word!r}: the docs install replytrack only")
        for extra in filter(None, extras.rstrip("]").split(",")):
            if extra not in _EXTRAS:
                pytest.fail(f"{where}: no extra {extra!r} in pyproject.toml", pytrace=False)


def _check_replytrack(words: list[str], where: str) -> None:
    sub = next((w for w in words if not w.startswith("-")), None)
    if sub is None or sub in _SUBCOMMANDS_CHECKED:
        return
    done = subprocess.run(
        [sys.executable, "-m", "replytrack", sub, "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if done.returncode != 0:
        pytest.fail(f"{where}: `replytrack {sub} --help` failed:\n{done.stderr}", pytrace=False)
    _SUBCOMMANDS_CHECKED[sub] = None


def check_shell(block: Block) -> None:
    """Check what a ``sh`` block asks the reader to run (see the module docstring)."""
    text = re.sub(r"\\\n", " ", block.body)
    for raw in text.splitlines():
        for command in re.split(r"\s*(?:&&|;)\s*", raw.split(" #")[0].strip()):
            if not command or command.startswith("#"):
                continue
            words = shlex.split(command)
            head = Path(words[0]).name
            if head in {"pip", "pip3"} and words[1:2] == ["install"]:
                _check_pip(words, block.where)
            elif head in {"python", "python3"} and words[1:3] == ["-m", "pip"]:
                _check_pip(words[2:], block.where)
            elif head in {"python", "python3"} and words[1:3] == ["-m", "replytrack"]:
                _check_replytrack(words[3:], block.where)
            elif head == "replytrack":
                _check_replytrack(words[1:], block.where)
            elif head in {"python", "python3"} and words[1:2] and words[1].endswith(".py"):
                if not (ROOT / words[1]).is_file():
                    pytest.fail(f"{block.where}: no script {words[1]} in the repository")
            elif not (
                head in {"export", "mkdocs", "pyright", "cd"}
                or (
                    head in {"python", "python3"}
                    and words[1:3] in (["-m", "venv"], ["-m", "pytest"])
                )
            ):
                pytest.fail(f"{block.where}: unknown command in a sh block: {command!r}")


# -- per-page setup ----------------------------------------------------------------------------


def _postgres(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLYTRACK_DATABASE_URL", request.getfixturevalue("postgres_dsn"))


def _corpus(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    # The page reads tests/corpus "from a clone of the repository": the working directory.
    Path("tests").symlink_to(ROOT / "tests", target_is_directory=True)


def _dns(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    # detect_provider asks the system's resolver; here, a DNS server on loopback answers.
    from dnsserver import DNSServer  # noqa: PLC0415 (tests/dnsserver.py, a test helper)

    server = DNSServer(
        {
            "customer.example": {"MX": ["1 aspmx.l.google.com.", "5 alt1.aspmx.l.google.com."]},
            "other.example": {
                "MX": ["10 eu-smtp-inbound-1.mimecast.com."],
                "TXT": ['"v=spf1 include:spf.protection.outlook.com -all"'],
            },
        }
    )
    server.__enter__()
    request.addfinalizer(lambda: server.__exit__(None, None, None))
    detector = replytrack.dns.ProviderDetector(server.resolver())
    monkeypatch.setattr(replytrack.dns, "_default_detector", detector)


#: What a page needs before its blocks run (in its temporary working directory).
SETUP: dict[str, Callable[[pytest.FixtureRequest, pytest.MonkeyPatch], None]] = {
    "bounces-ooo.md": _corpus,
    "sources.md": _dns,
    "workers.md": _postgres,
}


@pytest.mark.parametrize("page", PAGES)
def test_every_code_block_of_the_page_runs(
    page: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("REPLYTRACK_SECRET", "REPLYTRACK_IMAP_PASSWORD", "REPLYTRACK_IMAP_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    if page in SETUP:
        SETUP[page](request, monkeypatch)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for block in blocks(page):
        if block.not_run is not None:
            assert block.not_run, f"{block.where}: a not-run block needs its reason"
            first = block.body.strip().splitlines()[0] if block.body.strip() else ""
            assert (page, first) in NOT_RUN, f"{block.where}: not-run block missing in NOT_RUN"
            continue
        if block.language == "pycon" or (
            block.language == "python" and block.body.lstrip().startswith(">>>")
        ):
            run_doctest(block, namespace)
        elif block.language == "python":
            run_python(block, namespace)
        elif block.language == "sh":
            check_shell(block)
        else:
            pytest.fail(f"{block.where}: a {block.language or 'plain'} block must be not-run")


def test_not_run_blocks_are_still_on_their_pages() -> None:
    present = {
        (b.page, b.body.strip().splitlines()[0])
        for page in PAGES
        for b in blocks(page)
        if b.not_run is not None and b.body.strip()
    }
    assert present == set(NOT_RUN)


def test_the_reference_lists_every_public_name() -> None:
    table = (DOCS / "reference" / "replytrack.md").read_text(encoding="utf-8")
    listed = re.findall(r"^\| \[`(\w+)`\]\[", table, re.M)
    assert listed == list(replytrack.__all__)


def test_the_tutorial_starts_from_pip_install() -> None:
    first = next(b for b in blocks("tutorial.md") if b.language == "sh")
    assert "pip install replytrack" in first.body


def test_the_readme_code_runs_and_tracks_a_reply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REPLYTRACK_SECRET", "a throwaway test secret")
    Path("mail").mkdir()
    inbox = mailbox.Maildir("mail/rep", create=True)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    readme = blocks("../README.md")
    assert [b.language for b in readme] == ["sh", "sh", "python"]
    for block in readme:
        if block.language == "sh":
            check_shell(block)
        else:
            run_python(block, namespace)
    # The send it stamped is recorded; a reply to it, from the Cc'd colleague's address this
    # time, reaches the README's own hooks at the next poll.
    tracker = namespace["tracker"]
    message = namespace["message"]
    assert isinstance(tracker, replytrack.ReplyTracker)
    assert isinstance(message, EmailMessage)
    inbox.add(build_reply(in_reply_to=message["Message-ID"], from_="sam@customer.example"))
    capsys.readouterr()
    result = tracker.poll(MaildirSource("mail/rep"))
    assert (result.seen, result.matched, result.errors) == (1, 1, ())
    stop, crm = capsys.readouterr().out.splitlines()
    assert stop.startswith("stop campaign-42:prospect-7 ")
    assert crm.startswith("reply ")
    tracker.store.close()


def test_the_pages_are_found() -> None:
    assert {"index.md", "tutorial.md", "reference/replytrack.md"} <= set(PAGES)
