"""The public face: what `import replytrack` offers, and only that (httpx's pattern)."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import replytrack


def test_all_is_sorted_and_names_exactly_the_public_members() -> None:
    public = {name for name in dir(replytrack) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(replytrack, name)).__name__ == "module"}
    assert replytrack.__all__ == sorted(replytrack.__all__)
    assert set(replytrack.__all__) == public - modules


def test_every_exported_member_says_it_belongs_to_replytrack() -> None:
    for name in replytrack.__all__:
        assert getattr(replytrack, name).__module__.startswith("replytrack.")


def test_the_version_matches_the_installed_distribution() -> None:
    assert replytrack.__version__ == importlib.metadata.version("replytrack")


def test_importing_replytrack_needs_only_the_core_dependencies() -> None:
    """`import replytrack` must work with dnspython, attrs and typing-extensions alone.

    dnspython itself imports ``idna`` when it happens to be installed (httpx, an extra's
    dependency, brings it); replytrack pins IDNA 2003 so that this changes nothing.
    """
    code = (
        "import sys, replytrack\n"
        "allowed = {'attr', 'attrs', 'dns', 'idna', 'typing_extensions', 'replytrack'}\n"
        "third = {m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)\n"
        "extra = sorted(third - allowed - {'_distutils_hack', '_virtualenv', '__main__'})\n"
        "print(','.join(extra))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""
