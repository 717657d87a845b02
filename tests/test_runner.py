"""The check runner: thresholds, transitions, events, history, no overlap, one REST connection at most."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from sidecar.checks.outcome import Outcome
from sidecar.checks.runner import RETRY_INITIAL, CheckRunner, CheckSpec
from sidecar.events import CheckDown, Event, Kind, NodeLivezFailing
from sidecar.noderest import NodeRest
from sidecar.state import State
from tests.fakenode import FakeNode
from tests.helpers import running as running_jobs
from tests.published import eventually


def runner_for(name: str, node: FakeNode, state: State, **kw: float) -> CheckRunner:
    """A runner of check ``name`` against the stand-in (the rest check with its own REST client)."""
    port = {"tcp": node.tcp.port, "rest": node.rest.port, "broker": node.broker.port}[name]
    return CheckRunner(spec(name, port, **kw), state, client=NodeRest("127.0.0.1", node.rest.port))


def spec(name: str, port: int, **kw: float) -> CheckSpec:
    # timeout 3 s, the default: rapid connects to a backlog of 5 sometimes wait for a 1 s SYN retry,
    # on the real node (docs/checks.md) and on the stand-in alike.
    values: dict[str, float] = {"interval": 0.05, "timeout": 3.0, "failure_threshold": 3, "success_threshold": 1,
                                "initial_delay": 0.0, "jitter": 0.0}
    values.update(kw)
    livez = kw.get("livez_after")
    return CheckSpec(name, "127.0.0.1", port, values["interval"], values["timeout"],
                     int(values["failure_threshold"]), int(values["success_threshold"]), values["initial_delay"],
                     values["jitter"], livez)


def drain(queue: asyncio.Queue[Event]) -> list[Event]:
    events = []
    while not queue.empty():
        events.append(queue.get_nowait())
    return events


async def test_thresholds_and_transition_events(node: FakeNode) -> None:
    state = State()
    events = state.bus.subscribe()
    runner = runner_for("tcp", node, state, failure_threshold=3, success_threshold=2)
    check = state.checks["tcp"]

    await runner.once()
    assert check.up is None  # one success is not enough for a success threshold of 2
    await runner.once()
    assert check.up is True
    assert drain(events) == []  # coming up at start is not an event

    node.tcp.close()
    for expected in (True, True, False):  # down only on the third consecutive failure
        result = await runner.once()
        assert result.reason == "not-listening"
        assert check.up is expected
    down = drain(events)
    assert [e.kind for e in down] == [Kind.CHECK_DOWN]
    assert isinstance(down[0], CheckDown) and down[0].warning
    assert (down[0].check, down[0].reason, down[0].failures) == ("tcp", "not-listening", 3)
    assert check.failing_since is not None and check.consecutive_fail == 3

    await runner.once()
    assert drain(events) == []  # still down: no repeated event

    node.tcp.open()
    await runner.once()
    assert check.up is False  # recovering needs two successes
    await runner.once()
    assert check.up is True and check.failing_since is None and check.failing_since_monotonic is None
    assert [e.kind for e in drain(events)] == [Kind.CHECK_UP]
    assert check.results == {"ok": 4, "not-listening": 4}
    assert check.transitions == 3 and check.duration.count == 8


async def test_a_failure_streak_broken_by_success_does_not_count(node: FakeNode) -> None:
    state = State()
    runner = runner_for("rest", node, state, failure_threshold=2)
    check = state.checks["rest"]
    await runner.once()
    assert check.up is True and check.node_name == f"el-test@127.0.0.1:{node.tcp.port}"
    for mode in ("bad-status", "ok", "garbage", "ok", "reset"):
        node.rest.mode = mode
        await runner.once()
        assert check.up is True
    assert [r.reason for r in check.history][-5:] == ["bad-status", "ok", "bad-response", "ok", "reset"]


async def test_reasons_for_hanging_and_garbage_ports(node: FakeNode) -> None:
    state = State()
    node.rest.mode = "hang"
    node.broker.mode = "garbage"
    rest = runner_for("rest", node, state, timeout=0.2, failure_threshold=1)
    brk = runner_for("broker", node, state, failure_threshold=1)
    assert (await rest.once()).reason == "timeout"
    assert (await brk.once()).reason == "bad-answer"
    node.broker.mode = "hang"
    brk.spec = spec("broker", node.broker.port, timeout=0.2)  # the probe stays: only the timeout changes
    assert (await brk.once()).reason == "timeout"
    assert state.checks["rest"].up is False and state.checks["broker"].up is False
    assert "20 02 00 00" in state.checks["broker"].history[0].detail


async def test_history_is_a_bounded_ring(node: FakeNode) -> None:
    state = State()
    runner = runner_for("tcp", node, state)
    for _ in range(25):
        await runner.once()
    assert len(state.checks["tcp"].history) == 20
    assert state.checks["tcp"].results["ok"] == 25


@contextlib.asynccontextmanager
async def running(*runners: CheckRunner) -> AsyncIterator[None]:
    """The runners' loops, cancelled at the end; the scripts count as published (checks wait for them)."""
    for runner in runners:
        runner.state.scripts.published = True
        runner.state.scripts.published_event.set()
    async with running_jobs(*(r.run for r in runners)):
        yield


async def test_a_slow_check_never_overlaps_itself() -> None:
    state = State()
    active = 0
    peak = 0
    runs = 0

    async def slow(timeout: float) -> Outcome:
        nonlocal active, peak, runs
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)  # longer than the interval
        active -= 1
        runs += 1
        return Outcome(True, "ok")

    runner = CheckRunner(spec("tcp", 1, interval=0.01), state, probe=slow)
    async with running(runner):
        await eventually(lambda: runs >= 5)
    assert peak == 1


async def test_initial_delay_holds_the_first_run(node: FakeNode) -> None:
    state = State()
    delayed = runner_for("tcp", node, state, initial_delay=60)
    prompt = runner_for("broker", node, state)
    async with running(delayed, prompt):
        await eventually(lambda: state.checks["broker"].results["ok"] >= 3)
    assert state.checks["tcp"].last is None


async def test_one_rest_connection_at_most_with_a_hook_hammering_the_node(node: FakeNode) -> None:
    """The rest check and other REST users (hooks) share one client: the node never sees two connections."""
    state = State()
    client = NodeRest("127.0.0.1", node.rest.port)
    runner = CheckRunner(spec("rest", node.rest.port, interval=0.001), state, client=client)

    async def hook() -> None:
        for _ in range(30):
            await client.command("get version", timeout=2)

    async with running(runner):
        await asyncio.gather(hook(), hook(), hook())
    assert node.rest.commands["get version"] == 90 and node.rest.health_checks > 0
    assert node.rest.max_open == 1


async def test_hanging_node_is_released_after_each_timeout(node: FakeNode) -> None:
    """Against a node with no timeouts, every timed-out probe hangs up: workers are never all pinned."""
    state = State()
    node.rest.mode = "hang"
    runner = runner_for("rest", node, state, interval=0.01, timeout=0.05)
    async with running(runner):
        # more probes than the node has workers
        await eventually(lambda: state.checks["rest"].results["timeout"] >= 8)
    assert node.rest.max_open == 1
    node.rest.mode = "ok"
    assert (await runner.once()).ok


async def test_checks_wait_for_the_scripts(node: FakeNode) -> None:
    """Before the scripts are published the node cannot run: no probe, and no failure clock for /node/livez."""
    state = State()
    runner = runner_for("rest", node, state)
    task = asyncio.create_task(runner.run())
    try:
        await asyncio.sleep(0.5)  # ten intervals
        assert node.rest.accepted == 0 and state.checks["rest"].last is None
        state.scripts.published = True
        state.scripts.published_event.set()
        await eventually(lambda: state.checks["rest"].up is True)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_retries_soon_until_up_then_keeps_the_interval() -> None:
    state = State()
    runner = CheckRunner(spec("tcp", 1, interval=5.0, jitter=0.0), state, probe=_never)
    runner.record(Outcome(False, "refused"), 0.0)
    # Nothing listens: every retry comes soon, however many there were.
    assert [runner.next_delay() for _ in range(20)] == [RETRY_INITIAL] * 20
    # The port answers but the check fails: retries start soon and grow to the interval.
    runner.record(Outcome(False, "timeout"), 0.0)
    delays = [runner.next_delay() for _ in range(12)]
    assert delays[0] == RETRY_INITIAL and delays == sorted(delays) and delays[-1] == 5.0
    runner.record(Outcome(True, "ok"), 0.0)
    assert state.checks["tcp"].up is True and runner.next_delay() == 5.0
    for _ in range(3):
        runner.record(Outcome(False, "not-listening"), 0.0)
    assert state.checks["tcp"].up is False and runner.next_delay() == RETRY_INITIAL  # down: soon again
    runner.record(Outcome(True, "ok"), 0.0)
    assert runner.next_delay() == 5.0


async def _never(timeout: float) -> Outcome:
    raise AssertionError("not run")


def test_node_livez_turning_is_logged_and_announced_once() -> None:
    state = State()
    events = state.bus.subscribe()
    runner = CheckRunner(spec("rest", 1, livez_after=0.2, failure_threshold=1), state, probe=_never)
    runner.record(Outcome(False, "refused"), 0.0)
    assert [e.kind for e in drain(events)] == [Kind.CHECK_DOWN]  # failing, not for long yet
    started = state.checks["rest"].failing_since_monotonic
    assert started is not None
    state.checks["rest"].failing_since_monotonic = started - 1  # as if the failures had lasted a second
    for _ in range(3):
        runner.record(Outcome(False, "refused"), 0.0)
    failing = drain(events)
    assert [e.kind for e in failing] == [Kind.NODE_LIVEZ_FAILING] and failing[0].warning
    assert isinstance(failing[0], NodeLivezFailing) and failing[0].reason.startswith("refused for")
    runner.record(Outcome(True, "ok"), 0.0)
    runner.record(Outcome(True, "ok"), 0.0)
    assert [e.kind for e in drain(events)] == [Kind.CHECK_UP, Kind.NODE_LIVEZ_OK]


async def test_node_livez_failing_is_announced_when_it_happens_not_a_run_later() -> None:
    state = State()
    events = state.bus.subscribe()
    runs = 0

    async def failing(timeout: float) -> Outcome:
        nonlocal runs
        runs += 1
        return Outcome(False, "bad-status")

    runner = CheckRunner(spec("rest", 1, interval=30.0, livez_after=0.3, failure_threshold=1), state,
                         probe=failing)
    async with running(runner):
        while (event := await asyncio.wait_for(events.get(), 10)).kind != Kind.NODE_LIVEZ_FAILING:
            pass
        assert runs == 1  # announced between the first run and the second (0.5 s later)
    assert event.warning
