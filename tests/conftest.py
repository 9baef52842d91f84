"""Shared test helpers and fixtures (``tests`` is on ``sys.path``: see pyproject.toml)."""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from servers import Dovecot

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="session")
def load_benchmark() -> Callable[[str], ModuleType]:
    """Load a ``benchmarks/<name>.py`` script as a module (benchmarks are not a package)."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """A Dovecot IMAP server on 127.0.0.1 for the session; skips (fails in CI) without one."""
    server = Dovecot()
    try:
        yield server
    finally:
        server.close()


_imap_users = itertools.count(1)


@pytest.fixture
def imap_user(dovecot: Dovecot) -> str:
    """A user name of its own for one test: a fresh, empty mailbox on the session's Dovecot."""
    return f"user{next(_imap_users)}"
