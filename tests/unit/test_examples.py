"""The examples are documentation: each must run and print what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent.parent / "examples"


def test_match_a_reply_recognises_the_reply_from_the_cc_colleague() -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "match_a_reply.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert "reply from sam@customer.example answers send 'c42:p7'" in out
