"""How the Kubernetes jobs degrade: say a problem once, count it, back off, say when it is over."""

from __future__ import annotations

import asyncio

from sidecar import logs
from sidecar.backoff import Backoff
from sidecar.events import Event
from sidecar.state import KubeState

log = logs.get("kube")


# Retries of a failed API call: 1 s doubling to a minute, spread so that many pods do not retry in step.
API_BACKOFF = Backoff.doubling(1.0, 60.0, jitter=0.2)


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
    # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns the result of a get() that completes
    # as the task is cancelled, swallowing the cancellation, and the caller's loop then waits for ever.
    try:
        async with asyncio.timeout(timeout):
            return await queue.get()
    except TimeoutError:
        return None
