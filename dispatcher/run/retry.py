"""Retry policy as data: how many attempts, how long to back off, how long to pause on 70050."""

from __future__ import annotations

import dataclasses
import random


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base: float = 0.5  # seconds; the first backoff is drawn from [0, base]
    cap: float = 30.0  # no backoff is drawn from a range wider than this
    signature_pause: float = 60.0  # 70050: the server wants at least a minute without signatures

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Exponential backoff with full jitter after failed attempt number `attempt` (1-based)."""
        # The exponent is bounded: 2.0 ** 1024 overflows, and past 2 ** 63 the cap holds anyway.
        return rng.uniform(0.0, min(self.cap, self.base * 2.0 ** min(attempt - 1, 63)))
