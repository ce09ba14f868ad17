"""The retry schedule of SPEC §4: exponential backoff with jitter, and the far end's wait honoured."""

from __future__ import annotations

import random

from dispatcher.config import parse_config
from dispatcher.delivery.outcomes import backoff_delay_s

POLICY = parse_config(
    "delivery: {max_attempts: 8, backoff_initial_s: 1, backoff_max_s: 300, give_up_after_s: 86400}\n"
).delivery


def test_waits_grow_exponentially_within_their_bounds() -> None:
    """After attempt n the wait lies between backoff_initial_s and min(backoff_max_s, initial * 2^(n-1))."""
    rng = random.Random(7)
    for attempts in range(1, 15):
        ceiling = min(300.0, 2.0 ** (attempts - 1))
        waits = [backoff_delay_s(attempts, POLICY, None, rng) for _ in range(200)]
        assert all(1.0 <= wait <= ceiling for wait in waits)
        if ceiling > 2:
            assert max(waits) - min(waits) > ceiling / 4  # jittered, not one fixed value


def test_the_far_ends_wait_wins_even_beyond_backoff_max() -> None:
    """Retry-After / X-Ratelimit-Reset: the wait asked for, even when longer than backoff_max_s; never negative."""
    rng = random.Random(1)
    assert backoff_delay_s(1, POLICY, 900.0, rng) == 900.0
    assert backoff_delay_s(5, POLICY, 0.5, rng) == 0.5
    assert backoff_delay_s(2, POLICY, -3.0, rng) == 0.0
