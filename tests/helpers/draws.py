"""How many examples a property test draws: its own count in the default (CI) profile, where the
draws are the same in every run, and ten times as many under the hand-run `random` profile
(tests/conftest.py), where they are fresh every run."""

from __future__ import annotations

from hypothesis import settings

RANDOM_SCALE = 10


def examples(n: int) -> int:
    """`n`, or RANDOM_SCALE * n where the loaded profile draws at random (read when a test is decorated)."""
    return n if settings.default.derandomize else RANDOM_SCALE * n
