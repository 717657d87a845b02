"""One retry schedule for everything that waits after a failure.

A ``Backoff`` is declared as its delays, in order, the way kopf declares ``error_delays``: the n-th
failure in a row waits the n-th delay, and once the list runs out its last delay repeats.
``Backoff.doubling(first, cap)`` builds the usual exponential list. ``jitter`` spreads each wait by
up to that fraction either way, so that many pods failing together do not retry in step.

Callers that keep the count of failures in their state ask ``delay(failures)``; the others hold a
``Retries``, which counts for them.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    """The waits after 1, 2, 3... failures in a row; the last one repeats."""

    delays: tuple[float, ...]
    jitter: float = 0.0  # 0.2: each wait is drawn from [0.8, 1.2] times its delay

    def __post_init__(self) -> None:
        if not self.delays or not all(math.isfinite(d) and d >= 0 for d in self.delays):
            raise ValueError(f"backoff delays must be finite, at least 0, and not none: {self.delays!r}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"backoff jitter must be in [0, 1): {self.jitter!r}")

    @classmethod
    def doubling(cls, first: float, cap: float, *, jitter: float = 0.0) -> Backoff:
        """``first``, doubling up to ``cap`` (just ``cap`` when ``first`` is already above it)."""
        if not (first > 0 and math.isfinite(cap) and cap > 0):
            raise ValueError(f"backoff needs first > 0 and a finite cap > 0: {first!r}, {cap!r}")
        delays: list[float] = []
        while first < cap:
            delays.append(first)
            first *= 2
        return cls((*delays, cap), jitter)

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (1 for the first)."""
        if failures < 1:
            raise ValueError(f"a backoff starts at the first failure, not {failures}")
        base = self.delays[min(failures, len(self.delays)) - 1]
        if self.jitter:
            return base * random.uniform(1 - self.jitter, 1 + self.jitter)
        return base


@dataclass
class Retries:
    """Failures in a row against one ``Backoff``, for callers whose state does not count them."""

    backoff: Backoff
    failures: int = field(default=0, init=False)

    def failed(self) -> float:
        """Count one more failure; the seconds to wait before trying again."""
        self.failures += 1
        return self.backoff.delay(self.failures)

    def reset(self) -> None:
        """A success: the next failure waits the first delay again."""
        self.failures = 0
