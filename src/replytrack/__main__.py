"""``python -m replytrack``: the same command line as the ``replytrack`` script."""

from __future__ import annotations

from replytrack.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
