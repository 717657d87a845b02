"""Time has one model: components report progress, the supervisor and /livez read it, shutdown names leftovers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import structlog.testing

from sidecar import app, config, progress
from sidecar.config import Settings
from sidecar.http.routes import Endpoints
from sidecar.http.server import Request
from sidecar.state import ComponentHealth, State
from tests.published import eventually

DEADLINE = 0.2


def settings(tmp_path: Path, *args: str) -> Settings:
    return config.load(["run", "--fallback-dir", str(tmp_path), "--link", str(tmp_path / "scripts" / "l"),
                        "--kube", "off", *args], environ={})


def livez(endpoints: Endpoints) -> tuple[int, str]:
    answer = endpoints.livez(Request("GET", "/livez", {}, {}, b"", "127.0.0.1"))
    return answer.status, answer.body.decode()


# --- the handle: pure logic on the monotonic clock ---------------------------------------------------------------


def test_working_is_due_within_the_deadline() -> None:
    health = ComponentHealth(deadline=10.0)
    before = time.monotonic()
    progress.Progress(health).working("fetch")
    assert health.overdue(before + 9.9) is None
    late = health.overdue(time.monotonic() + 10.5)
    assert late is not None and late[0] == "fetch" and late[1] > 0


def test_waiting_for_a_known_time_is_due_after_it_plus_the_deadline() -> None:
    health = ComponentHealth(deadline=10.0)
    before = time.monotonic()
    progress.Progress(health).waiting("next sync", 300)
    assert health.overdue(before + 309.9) is None  # asleep until a known time is not stuck
    assert health.overdue(time.monotonic() + 310.5) is not None


def test_waiting_on_something_outside_is_never_late() -> None:
    health = ComponentHealth(deadline=10.0)
    handle = progress.Progress(health)
    handle.working("write")
    handle.waiting("bus events")
    assert health.overdue(time.monotonic() + 1e9) is None


def test_parts_are_watched_separately_and_the_worst_counts() -> None:
    health = ComponentHealth(deadline=10.0)
    main = progress.Progress(health)
    main.waiting("triggers")
    main.part("hook-a").working("run")
    main.part("hook-b").waiting("backoff", 100)
    late = health.overdue(time.monotonic() + 50)
    assert late is not None and late[0] == "run"
    assert set(health.activities) == {"", "hook-a", "hook-b"}


def test_an_untracked_component_and_a_detached_handle_are_never_late() -> None:
    health = ComponentHealth()  # no deadline: not tracked
    progress.Progress(health).working("anything")
    assert health.overdue(time.monotonic() + 1e9) is None
    progress.current().working("outside a supervised task")  # a test or a CLI command: goes nowhere


# --- the supervisor and /livez --------------------------------------------------------------------------------------


async def test_a_hung_component_turns_livez_red_and_back(tmp_path: Path) -> None:
    state = State()
    endpoints = Endpoints(settings(tmp_path), state)
    release = asyncio.Event()
    synced = asyncio.Event()

    async def sync_loop() -> None:
        report = progress.current()
        while True:
            report.working("sync")
            await release.wait()  # a sync that hangs until released
            synced.set()
            report.waiting("a sync trigger")
            await asyncio.Event().wait()

    task = asyncio.create_task(app._supervise(app.Component("scripts", sync_loop, DEADLINE), state))
    try:
        await eventually(lambda: "scripts" in state.components and state.components["scripts"].alive,
                         what="the component running")
        with structlog.testing.capture_logs() as logs:
            await eventually(lambda: livez(endpoints)[0] == 503, what="/livez failing")
            app._note_stuck(state)
            app._note_stuck(state)  # said once, not at every tick
            status, body = livez(endpoints)
            assert status == 503
            assert body.startswith("[-]component scripts stuck: sync is ") and f"({DEADLINE:g} s)" in body
            release.set()
            await synced.wait()
            assert livez(endpoints) == (200, "ok\n")  # idle waiting is not stuck, however long it lasts
            app._note_stuck(state)
        assert [(e["event"], e["name"]) for e in logs] == [("component_stuck", "scripts"),
                                                           ("component_moving", "scripts")]
        assert logs[0]["doing"] == "sync" and logs[0]["deadline"] == DEADLINE
        shown = state.components["scripts"].as_dict(time.monotonic())
        assert shown["doing"]["main"]["doing"] == "a sync trigger" and shown["overdue_seconds"] is None
    finally:
        task.cancel()


async def test_tasks_started_by_a_component_report_for_it(tmp_path: Path) -> None:
    state = State()
    state.components["hooks"] = ComponentHealth(DEADLINE)

    async def hooks() -> None:
        async def runner() -> None:
            progress.current().part("change-exec").working("run")
            await asyncio.Event().wait()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(runner())
            progress.current().waiting("bus events")
            await asyncio.Event().wait()

    task = asyncio.create_task(app._supervise(app.Component("hooks", hooks, DEADLINE), state))
    try:
        await eventually(lambda: set(state.components["hooks"].activities) == {"", "change-exec"},
                         what="both parts reported")
        await eventually(lambda: state.components["hooks"].overdue(time.monotonic()) is not None,
                         what="the hung runner noticed")
        assert "component hooks stuck: run" in progress.liveness(settings(tmp_path), state)[0]
    finally:
        task.cancel()


async def test_a_failing_component_is_restarted_and_its_old_activity_forgotten(tmp_path: Path) -> None:
    state = State()
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            progress.current().working("first try")
            raise OSError("disk gone")
        progress.current().waiting("bus events")
        await asyncio.Event().wait()

    task = asyncio.create_task(app._supervise(app.Component("flaky", flaky, DEADLINE), state))
    try:
        # The first restart waits RESTART_BACKOFF's first delay (1 s).
        await eventually(lambda: runs == 2 and state.components["flaky"].alive, what="the restart")
        health = state.components["flaky"]
        assert health.restarts == 1 and health.last_error == "OSError: disk gone"
        assert [a.doing for a in health.activities.values()] == ["bus events"]
    finally:
        task.cancel()


async def test_checks_and_hooks_say_what_they_wait_for(tmp_path: Path) -> None:
    from sidecar.checks.runner import CheckRunner, CheckSpec
    from sidecar.hooks.component import Hooks

    s = settings(tmp_path, "--tcp-port", "1", "--on-publish-exec", "true")
    state = State()
    components = [app.Component("check-tcp", CheckRunner(CheckSpec.from_settings(s, "tcp"), state).run, 5.0),
                  app.Component("hooks", Hooks(s, state, None).run, 5.0)]
    tasks = [asyncio.create_task(app._supervise(c, state)) for c in components]

    def doing(name: str) -> dict[str, str]:
        health = state.components.get(name)
        return {} if health is None else {part: a.doing for part, a in health.activities.items()}

    try:
        await eventually(lambda: doing("check-tcp") == {"": "the scripts to be published"}
                         and doing("hooks") == {"": "bus events", "publish-exec": "a trigger"},
                         what="both idle, saying on what")
        assert progress.liveness(s, state) == []
    finally:
        for task in tasks:
            task.cancel()


# --- shutdown -------------------------------------------------------------------------------------------------------


async def test_shutdown_names_the_tasks_that_did_not_stop() -> None:
    give_up = asyncio.Event()

    async def stubborn() -> None:
        while True:
            try:
                await give_up.wait()
                return
            except asyncio.CancelledError:
                continue  # swallows cancellation: a bug the stop must name, not hide

    async def polite() -> None:
        await asyncio.Event().wait()

    async def broken() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("failed while stopping") from None

    tasks = [asyncio.create_task(c(), name=c.__name__) for c in (stubborn, polite, broken)]
    stray = asyncio.create_task(asyncio.Event().wait(), name="stray")
    await asyncio.sleep(0)  # let them start
    try:
        with structlog.testing.capture_logs() as logs:
            await app._stop(tasks, grace=0.2)
        events = {(e["event"], e["name"]) for e in logs}
        assert ("component_not_stopped", "stubborn") in events
        assert ("component_failed_at_stop", "broken") in events
        assert ("task_left_at_stop", "stray") in events
        assert not any(name == "polite" for _, name in events)
    finally:
        stray.cancel()
        give_up.set()
        await asyncio.gather(stubborn_task := tasks[0], stray, return_exceptions=True)
        assert stubborn_task.done()
