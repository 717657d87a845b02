"""Runs each enabled check on its own schedule and keeps its verdict in ``state.checks``.

Kubelet semantics, counted from the scripts being published (when the node can start): after
``initial_delay`` the probe runs every ``interval`` (spread by the check jitter so many pods do not
probe in step); ``failure_threshold`` consecutive failures mark the check down and
``success_threshold`` consecutive successes mark it up. Until either threshold is first met the
check is undecided (``up is None``), which readiness treats as not ready. A check never overlaps
itself: the next run is scheduled only after the previous one has finished.

While a check is not up (undecided, or down) it is retried sooner than its interval, so readiness
follows the node within a second of its ports opening: every ``RETRY_INITIAL`` seconds while
nothing listens on the port (such a probe costs the node nothing), otherwise from ``RETRY_INITIAL``
growing by ``RETRY_GROWTH`` a run up to the interval."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import sys
import time
from dataclasses import dataclass

from sidecar import health, logs, progress
from sidecar.checks import broker, tcp
from sidecar.checks.outcome import NOT_LISTENING, Outcome, Probe, failure
from sidecar.checks.rest import RestProbe
from sidecar.config import CheckSettings, Settings
from sidecar.events import CheckDown, CheckUp, NodeLivezFailing, NodeLivezOk
from sidecar.noderest import NodeRest
from sidecar.state import CheckResult, CheckState, State

log = logs.get("checks")

RETRY_INITIAL = 0.5  # seconds between runs of a check that is not up
RETRY_GROWTH = 1.5  # factor per run, up to the interval, while the port is open but the check fails


@dataclass(frozen=True)
class CheckSpec(CheckSettings):
    """The settings of one enabled check (its port is known), plus what only the runner needs."""

    port: int
    livez_after: float | None = None  # rest only: seconds of failure before /node/livez fails

    @classmethod
    def from_settings(cls, settings: Settings, name: str) -> CheckSpec:
        """The spec of check ``name`` from its ``--<name>-*`` settings."""
        c = settings.check(name)
        if c.port is None:
            raise ValueError(f"check {name} is not enabled (no port)")
        return cls(**{**dataclasses.asdict(c), "port": c.port},
                   livez_after=settings.node_livez_after if name == "rest" else None)

    @property
    def target(self) -> str:
        """``host:port`` as people write it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


async def build_probe(spec: CheckSpec, client: NodeRest | None) -> tuple[Probe, str]:
    """The probe of ``spec`` and how it works; the rest probe uses ``client`` (the sidecar's one)."""
    if spec.name == "rest":
        if client is None:
            raise ValueError("the rest check needs the node REST client")
        return RestProbe(client), "GET /health"
    if spec.name == "broker":
        return broker.probe_for(spec.host, spec.port), "MQTT CONNECT"
    return await asyncio.to_thread(tcp.probe_for, spec.host, spec.port)


async def run_probe(probe: Probe, timeout: float) -> tuple[Outcome, float]:
    """Run ``probe`` once; return its outcome (exceptions turned into reasons) and its duration."""
    start = time.monotonic()
    try:
        outcome = await probe(timeout)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        outcome = failure(exc)
    return outcome, time.monotonic() - start


class CheckRunner:
    """One check's loop; the only writer of ``state.checks[name]``."""

    def __init__(self, spec: CheckSpec, state: State, probe: Probe | None = None,
                 client: NodeRest | None = None) -> None:
        self.spec = spec
        self.state = state
        self.probe = probe
        self.client = client
        self.check = state.checks.setdefault(spec.name, CheckState(spec.name))
        self.retries = 0  # runs since the check was last up, for the growing retry interval
        self.node_live = True  # the /node/livez verdict last announced (rest only)

    async def ready_probe(self) -> Probe:
        """The probe, built on first use (finding out how to probe may need a name lookup)."""
        if self.probe is None:
            self.probe, how = await build_probe(self.spec, self.client)
            log.info("check_probe", check=self.spec.name, target=self.spec.target, probe=how)
            if how == "connect":
                log.warning("check_probe_logs_on_node", check=self.spec.name, target=self.spec.target,
                            detail="the node's address is not this host's: each tcp check adds one line to "
                                   "the node's event log")
        return self.probe

    def next_delay(self) -> float:
        """Seconds until the next run: short while the check is not up, else the interval spread by +-jitter."""
        interval = self.spec.interval
        if self.check.up is not True:
            last = self.check.last
            if last is not None and last.reason in NOT_LISTENING:
                return min(interval, RETRY_INITIAL)
            self.retries += 1
            return min(interval, RETRY_INITIAL * RETRY_GROWTH ** (self.retries - 1))
        self.retries = 0
        spread = interval * self.spec.jitter
        return max(0.0, interval + random.uniform(-spread, spread))

    async def run(self) -> None:
        """Probe forever, one run at a time, starting once the scripts are published."""
        loop = asyncio.get_running_loop()
        # The node cannot be up before its scripts are (the chart starts it after /startupz), so
        # probing earlier would only log refusals and, worse, start /node/livez's failure clock
        # during a slow first seed.
        report = progress.current()
        report.waiting("the scripts to be published")
        await self.state.scripts.published_event.wait()
        await report.sleep(self.spec.initial_delay, "the initial delay")
        while True:
            started = loop.time()
            report.working("probing")
            await self.once()
            # Measured from the start of the run, so a slow probe does not stretch the period;
            # never negative, so a probe slower than the interval is followed at once, not in a burst.
            wake = started + self.next_delay()
            crossing = self._livez_crossing()
            if crossing is not None and crossing < wake:
                # /node/livez turns 503 between two runs: say so when it happens, not a run later.
                await report.sleep(max(0.0, crossing - loop.time()), "the /node/livez limit")
                self._node_liveness()
            await report.sleep(max(0.0, wake - loop.time()), "the next probe")

    async def once(self) -> CheckResult:
        """Run the probe once and record the result."""
        outcome, duration = await run_probe(await self.ready_probe(), self.spec.timeout)
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
        self._node_liveness()
        return result

    def _livez_crossing(self) -> float | None:
        """When (event-loop time) ``/node/livez`` will start failing if nothing changes, or None."""
        since = self.check.failing_since_monotonic
        if self.spec.livez_after is None or since is None or not self.node_live:
            return None
        # The loop's clock is time.monotonic(), the clock failing_since_monotonic is on.
        return since + self.spec.livez_after

    def _node_liveness(self) -> None:
        """Log and announce ``/node/livez`` turning 503 or 200 (it is computed from this check's state)."""
        if self.spec.livez_after is None:
            return
        part = health.node_liveness_part(self.check, self.spec.livez_after)
        if part.ok == self.node_live:
            return
        self.node_live = part.ok
        if part.ok:
            log.info("node_livez_ok", target=self.spec.target)
            self.state.bus.publish(NodeLivezOk(message=f"node REST port {self.spec.target} answers again: "
                                               "/node/livez passes"))
        else:
            log.warning("node_livez_failing", target=self.spec.target, reason=part.reason)
            self.state.bus.publish(NodeLivezFailing(message=f"/node/livez fails: node REST port "
                                                    f"{self.spec.target} {part.reason}", reason=part.reason))

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
    client = NodeRest(settings.node_host, settings.rest_port) if settings.rest_port is not None else None
    rows = [("CHECK", "TARGET", "RESULT", "REASON", "TIME", "DETAIL")]
    failed = False
    for name in names:  # one after the other: never two node connections at once
        spec = CheckSpec.from_settings(settings, name)
        probe, _ = await build_probe(spec, client)
        outcome, duration = await run_probe(probe, spec.timeout)
        failed = failed or not outcome.ok
        detail = outcome.node_name or "" if outcome.ok else outcome.detail
        rows.append((name, spec.target, "ok" if outcome.ok else "FAIL", outcome.reason,
                     f"{duration * 1000:.1f} ms", detail))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print(("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]).rstrip())
    return 1 if failed else 0
