"""Runs each enabled check on its own schedule and keeps its verdict in ``state.checks``.

Kubelet semantics, counted from the scripts being published (when the node can start): after
``initial_delay`` the probe runs every ``interval`` (spread by the check jitter so many pods do not
probe in step); ``failure_threshold`` consecutive failures mark the check down and
``success_threshold`` consecutive successes mark it up. Until either threshold is first met the
check is undecided (``up is None``), which readiness treats as not ready. A check never overlaps
itself: the next run is scheduled only after the previous one has finished."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import dataclass

from sidecar import logs
from sidecar.checks import Outcome, Probe, failure, probe_for
from sidecar.config import Settings
from sidecar.events import CheckDown, CheckUp
from sidecar.state import CheckResult, CheckState, State

log = logs.get("checks")

PUBLISHED_POLL = 0.1  # seconds between looks at state.scripts.published before the first run


@dataclass(frozen=True)
class CheckSpec:
    """The settings of one check."""

    name: str
    host: str
    port: int
    interval: float
    timeout: float
    failure_threshold: int
    success_threshold: int
    initial_delay: float
    jitter: float

    @classmethod
    def from_settings(cls, settings: Settings, name: str) -> CheckSpec:
        """The spec of check ``name`` from the ``--<name>-*`` settings."""
        port = getattr(settings, f"{name}_port")
        if port is None:
            raise ValueError(f"check {name} is not enabled (no port)")
        return cls(
            name=name,
            host=settings.node_host,
            port=port,
            interval=getattr(settings, f"{name}_interval"),
            timeout=getattr(settings, f"{name}_timeout"),
            failure_threshold=getattr(settings, f"{name}_failure_threshold"),
            success_threshold=getattr(settings, f"{name}_success_threshold"),
            initial_delay=getattr(settings, f"{name}_initial_delay"),
            jitter=settings.check_jitter,
        )

    @property
    def target(self) -> str:
        """``host:port`` as people write it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


async def run_probe(spec: CheckSpec, probe: Probe) -> tuple[Outcome, float]:
    """Run ``probe`` once; return its outcome (exceptions turned into reasons) and its duration."""
    start = time.monotonic()
    try:
        outcome = await probe(spec.host, spec.port, spec.timeout)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        outcome = failure(exc)
    return outcome, time.monotonic() - start


class CheckRunner:
    """One check's loop; the only writer of ``state.checks[name]``."""

    def __init__(self, spec: CheckSpec, state: State, probe: Probe | None = None) -> None:
        self.spec = spec
        self.state = state
        self.probe = probe or probe_for(spec.name)
        self.check = state.checks.setdefault(spec.name, CheckState(spec.name))

    def next_delay(self) -> float:
        """The interval, spread by +-jitter."""
        spread = self.spec.interval * self.spec.jitter
        return max(0.0, self.spec.interval + random.uniform(-spread, spread))

    async def run(self) -> None:
        """Probe forever, one run at a time, starting once the scripts are published."""
        loop = asyncio.get_running_loop()
        # The node cannot be up before its scripts are (the chart starts it after /startupz), so
        # probing earlier would only log refusals and, worse, start /node/livez's failure clock
        # during a slow first seed. A poll, not an event: this waits once, at start-up, and the
        # scripts component sets ``published`` from two places, one of them without a bus event.
        while not self.state.scripts.published:  # noqa: ASYNC110
            await asyncio.sleep(PUBLISHED_POLL)
        await asyncio.sleep(self.spec.initial_delay)
        while True:
            started = loop.time()
            await self.once()
            # Measured from the start of the run, so a slow probe does not stretch the period;
            # never negative, so a probe slower than the interval is followed at once, not in a burst.
            await asyncio.sleep(max(0.0, started + self.next_delay() - loop.time()))

    async def once(self) -> CheckResult:
        """Run the probe once and record the result."""
        outcome, duration = await run_probe(self.spec, self.probe)
        return self.record(outcome, duration)

    def record(self, outcome: Outcome, duration: float) -> CheckResult:
        """Apply one outcome: counters, history, thresholds, transition events."""
        check, spec = self.check, self.spec
        result = CheckResult(outcome.ok, outcome.reason, duration, time.time(), outcome.detail)
        check.last = result
        check.history.append(result)
        check.results[outcome.reason] += 1
        check.duration.observe(duration)
        if outcome.ok:
            check.consecutive_ok += 1
            check.consecutive_fail = 0
            check.failing_since = check.failing_since_monotonic = None
            if outcome.node_name:
                check.node_name = outcome.node_name
            if check.up is not True and check.consecutive_ok >= spec.success_threshold:
                self._transition(True, result)
        else:
            check.consecutive_fail += 1
            check.consecutive_ok = 0
            if check.failing_since is None:
                check.failing_since, check.failing_since_monotonic = result.at, time.monotonic()
            if check.up is not False and check.consecutive_fail >= spec.failure_threshold:
                self._transition(False, result)
        return result

    def _transition(self, up: bool, result: CheckResult) -> None:
        check, name = self.check, self.spec.name
        first = check.up is None
        check.up = up
        check.transitions += 1
        if up:
            log.info("check_up", check=name, target=self.spec.target, first=first)
            if not first:  # "up" at start-up is not news; an Event for it would be noise
                self.state.bus.publish(CheckUp(message=f"node {name} port {self.spec.target} is up again", check=name))
            return
        log.warning("check_down", check=name, target=self.spec.target, reason=result.reason,
                    detail=result.detail, failures=check.consecutive_fail)
        self.state.bus.publish(CheckDown(
            message=f"node {name} port {self.spec.target} is down: {result.reason}"
            + (f" ({result.detail})" if result.detail else ""),
            check=name, reason=result.reason, failures=check.consecutive_fail,
        ))


async def check_command(settings: Settings) -> int:
    """``edgelake-sidecar check``: run every enabled check once, print a table, 0 if all pass."""
    names = settings.enabled_checks()
    if not names:
        print("edgelake-sidecar: no check is enabled: set --tcp-port, --rest-port or --broker-port "
              "(or NODE_TYPE / ANYLOG_*_PORT)", file=sys.stderr)
        return 1
    rows = [("CHECK", "TARGET", "RESULT", "REASON", "TIME", "DETAIL")]
    failed = False
    for name in names:  # one after the other: never two node connections at once
        spec = CheckSpec.from_settings(settings, name)
        outcome, duration = await run_probe(spec, probe_for(name))
        failed = failed or not outcome.ok
        detail = outcome.node_name or "" if outcome.ok else outcome.detail
        rows.append((name, spec.target, "ok" if outcome.ok else "FAIL", outcome.reason,
                     f"{duration * 1000:.1f} ms", detail))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print(("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]).rstrip())
    return 1 if failed else 0
