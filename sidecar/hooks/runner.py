"""Runs one hook's action: one run at a time, coalescing triggers, pacing, backoff and refusals.

Triggers that arrive while a run is under way coalesce into one pending trigger (the latest wins;
a change trigger keeps the paths of the ones it replaced, since they still need handling). Runs
start at most once per ``MIN_INTERVAL`` and have a timeout. A failure that may pass (a refused
connection, a timeout, a 5xx) is retried with exponential backoff until it works. A refusal (a 4xx
or an error body: the node understood and said no) is tried ``REFUSED_ATTEMPTS`` times, then
dropped until the next trigger, so a hook the node refuses costs at most that many lines of the
node's 20-entry error log per trigger. Nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import time

from sidecar import logs, procs, progress
from sidecar.backoff import Backoff
from sidecar.bus import Bus
from sidecar.events import HookRefused as HookRefusedEvent
from sidecar.hooks.trigger import Action, HookError, HookRefused, HookSkipped, Trigger
from sidecar.state import HookState

log = logs.get("hooks")

MIN_INTERVAL = 1.0  # seconds between the starts of one hook's runs: a flood runs it once a second at most
BACKOFF_INITIAL = 1.0  # seconds before the first retry; doubles up to --hook-backoff-max
REFUSED_ATTEMPTS = 3  # runs of one trigger the receiver may refuse before it is dropped
ERROR_MAX = 300  # characters of an error kept in /status


class HookRunner:
    """Runs one hook's action: never overlapping itself, coalescing triggers, retrying with backoff."""

    def __init__(self, name: str, action: Action, hook_state: HookState, bus: Bus, *, timeout: float,
                 backoff_max: float, min_interval: float = MIN_INTERVAL,
                 backoff_initial: float = BACKOFF_INITIAL) -> None:
        self.name = name
        self.action = action
        self.hs = hook_state
        self.bus = bus
        self.timeout = timeout
        self.backoff = Backoff.doubling(backoff_initial, backoff_max)
        self.min_interval = min_interval
        self._pending: Trigger | None = None
        self._wake = asyncio.Event()

    def submit(self, trigger: Trigger) -> None:
        """Queue a trigger without waiting; it replaces (merges with) any trigger still pending."""
        self.hs.triggers += 1
        self._pending = trigger if self._pending is None else self._pending.merged(trigger)
        self.hs.pending = True
        self._wake.set()

    async def run(self) -> None:
        """Forever: wait for a trigger, respect the pace and the backoff, run the action."""
        loop = asyncio.get_running_loop()
        last_start = -float("inf")
        refusals = 0  # refused runs of the trigger being retried
        report = progress.current().part(self.name)  # runners run side by side: each is watched alone
        while True:
            report.waiting("a trigger")
            await self._wake.wait()
            pause = last_start + self.min_interval - loop.time()
            if pause > 0:
                await report.sleep(pause, "the pace")  # triggers arriving now join the pending one
            self._wake.clear()
            trigger, self._pending = self._pending, None
            self.hs.pending = False
            if trigger is None:
                continue
            last_start = loop.time()
            report.working("a run")
            result = await self._attempt(trigger)
            if result in ("ok", "skipped"):
                refusals = 0
                continue
            if result == "refused":
                # A newer trigger is a new request: its own attempts. Otherwise count, and drop the
                # trigger once the receiver has said no often enough.
                refusals = 0 if self._pending is not None else refusals + 1
                if refusals >= REFUSED_ATTEMPTS:
                    refusals = 0
                    self._give_up(trigger)
                    continue
            # The failed trigger waits again, under anything newer that arrived during the run.
            self._pending = trigger if self._pending is None else trigger.merged(self._pending)
            self.hs.pending = True
            delay = self.backoff.delay(self.hs.consecutive_failures)
            self.hs.next_retry_time = time.time() + delay
            await report.sleep(delay, "a retry")  # new triggers do not cut a backoff short
            self.hs.next_retry_time = None
            self._wake.set()

    def _give_up(self, trigger: Trigger) -> None:
        """Drop a refused trigger until the next one comes; say so where operators look."""
        hs = self.hs
        hs.stopped = True
        hs.next_retry_time = None
        log.warning("hook_stopped", hook=self.name, attempts=REFUSED_ATTEMPTS, error=hs.last_error,
                    revision=trigger.revision, changes=len(trigger.changes))
        self.bus.publish(HookRefusedEvent(
            message=f"hook {self.name} stopped after {REFUSED_ATTEMPTS} refused attempts until the next trigger: "
                    f"{hs.last_error}", hook=self.name, error=hs.last_error or ""))

    async def _attempt(self, trigger: Trigger) -> str:
        """Run the action once and record the outcome: ``ok``, ``skipped``, ``refused``, ``error`` or ``timeout``."""
        hs = self.hs
        hs.stopped = False
        hs.last_run_time = time.time()
        started = time.monotonic()
        error: str | None = None
        try:
            async with asyncio.timeout(self.timeout):
                await self.action.run(self.name, trigger, self.timeout)
            result = "ok"
        except HookSkipped as exc:
            result, error = "skipped", str(exc)
        except (TimeoutError, procs.ProcTimeout):
            result, error = "timeout", f"ran over {self.timeout:g} s and was stopped"
        except HookRefused as exc:
            result, error = "refused", str(exc)
        except HookError as exc:
            result, error = "error", str(exc)
        except Exception as exc:  # a bug or odd input must cost one failed run, not the component
            result, error = "error", f"{type(exc).__name__}: {exc}"
        duration = time.monotonic() - started
        hs.runs[result] += 1
        hs.duration.observe(duration)
        hs.last_result = result
        hs.last_error = logs.redact(error)[:ERROR_MAX] if error else None
        failed = result in ("error", "timeout", "refused")
        hs.consecutive_failures = hs.consecutive_failures + 1 if failed else 0
        (log.warning if failed else log.info)("hook_run", hook=self.name, result=result,
                                              duration_ms=round(duration * 1000, 1), error=hs.last_error,
                                              changes=len(trigger.changes), revision=trigger.revision)
        return result
