"""How the Kubernetes jobs degrade: say a problem once, count it, back off, say when it is over."""

from __future__ import annotations

import asyncio
import random

from sidecar import logs
from sidecar.events import Event
from sidecar.state import KubeState

log = logs.get("kube")


class Backoff:
    """Exponential backoff with jitter: ``initial``, doubling up to ``cap`` seconds."""

    def __init__(self, initial: float = 1.0, cap: float = 60.0) -> None:
        self.initial = initial
        self.cap = cap
        self._next = initial

    def next(self) -> float:
        """The next wait; +-20 % jitter so that many pods do not retry in step."""
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        """Start again from ``initial`` (after a success)."""
        self._next = self.initial


class Health:
    """The degraded state of each job (identity, events, annotations), mirrored in ``state.kube``.

    A problem is logged once when it starts or changes, not at every retry; its end is logged once.
    """

    def __init__(self, state: KubeState) -> None:
        self.state = state

    def fail(self, job: str, reason: str, message: str, *, api: bool = True) -> None:
        """``job`` could not do its work: count ``reason`` (when the API said it) and report ``message`` if it
        is new."""
        if api:
            self.state.api_errors[reason] += 1
        text = logs.redact(f"{reason}: {message}")
        if self.state.problems.get(job) != text:
            log.warning("kube_degraded", job=job, reason=reason, error=text)
            self.state.problems[job] = text
            self._summarize()

    def ok(self, job: str) -> None:
        """``job`` works again (or never failed)."""
        if self.state.problems.pop(job, None) is not None:
            log.info("kube_recovered", job=job)
            self._summarize()

    def _summarize(self) -> None:
        problems = self.state.problems
        self.state.problem = "; ".join(f"{job}: {text}" for job, text in sorted(problems.items())) or None


async def next_event(queue: asyncio.Queue[Event], timeout: float | None) -> Event | None:
    """The next bus event, or None after ``timeout`` seconds (None: wait as long as it takes)."""
    try:
        return await asyncio.wait_for(queue.get(), timeout)
    except TimeoutError:
        return None
