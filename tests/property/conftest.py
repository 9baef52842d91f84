"""Hypothesis profiles for the property tests (``tests/property``).

``HYPOTHESIS_PROFILE`` picks one; the default is ``ci``, so that a plain ``pytest`` - the
README's test command, which CI runs - stays fast everywhere:

* ``ci`` (default): the example counts the test modules set (``QUICK``, ``FAST`` ...), and
  50 examples for tests that set none (``test_fuzz_properties.py``); no deadline, since a
  shared 2-core CI machine makes timings noisy. Reproducible failures: Hypothesis prints the
  failing example and the ``@reproduce_failure`` blob.
* ``dev``: 300 examples for tests that set no count.
* ``thorough``: long local runs, ``HYPOTHESIS_PROFILE=thorough .venv/bin/python -m pytest
  tests/property/test_fuzz_properties.py``: 5,000 examples per test that sets no count.

Tests with their own ``settings(max_examples=...)`` keep their count under every profile.
"""

from __future__ import annotations

import os
from typing import TypedDict

from hypothesis import HealthCheck, settings


class _Common(TypedDict):
    """The settings every profile shares; typed, so mypy sees ``**_COMMON`` holds no ``parent``."""

    deadline: None
    suppress_health_check: list[HealthCheck]
    print_blob: bool


_COMMON: _Common = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}

settings.register_profile("ci", max_examples=50, **_COMMON)
settings.register_profile("dev", max_examples=300, **_COMMON)
settings.register_profile("thorough", max_examples=5_000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
