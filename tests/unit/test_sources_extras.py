"""Provider adapters sit behind extras: importable from `replytrack.sources`, needed by none."""

from __future__ import annotations

import subprocess
import sys

import pytest

import replytrack.sources

ADAPTERS = {
    "IMAPSource": ("imap", "imapclient"),
    "GmailSource": ("gmail", "googleapiclient"),
    "GraphSource": ("graph", "httpx"),
}


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )


def test_importing_the_sources_package_imports_no_adapter_library() -> None:
    code = (
        "import sys, replytrack.sources\n"
        "print(sorted(m for m in ('imapclient', 'googleapiclient', 'httpx') if m in sys.modules))"
    )
    assert run(code).stdout.strip() == "[]"


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_an_adapter_is_importable_from_the_package(name: str) -> None:
    module, _ = ADAPTERS[name]
    adapter = getattr(replytrack.sources, name)
    assert adapter.__module__ == f"replytrack.sources.{module}"
    assert adapter.kind == module


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_without_its_extra_an_adapter_says_which_to_install(name: str) -> None:
    extra, library = ADAPTERS[name]
    code = (
        f"import sys\nsys.modules[{library!r}] = None\n"  # as if it were not installed
        f"from replytrack.sources import {name}\n"
    )
    result = run(code)
    assert result.returncode != 0
    assert "ImportError" in result.stderr
    assert f"pip install 'replytrack[{extra}]'" in result.stderr


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        replytrack.sources.PopSource  # noqa: B018 (the lookup is the test)
