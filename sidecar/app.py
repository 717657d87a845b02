"""Starts the components as supervised tasks, serves the endpoints, handles signals and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import FrameType

from sidecar import logs, progress
from sidecar.backoff import Backoff, Retries
from sidecar.config import Settings, node_type_warning
from sidecar.http.routes import Endpoints
from sidecar.http.server import HttpServer
from sidecar.noderest import NodeRest
from sidecar.state import ComponentHealth, State

log = logs.get("app")

SHUTDOWN_GRACE = 4.0  # seconds; the whole stop fits in 5 s, well inside any pod grace period
STOP_DEADLINE = 4.8  # seconds after SIGTERM: whatever still runs then (a thread in a blocking call) is cut
RESTART_BACKOFF = Backoff.doubling(1.0, 30.0)  # waits before restarting a failed component
STABLE_RUN = 60.0  # seconds; a component that ran this long before failing starts its backoff over


@dataclass
class Component:
    """One long-running job. ``run`` should never return; if it raises, it is restarted.

    ``deadline``: seconds one piece of its work may take without reporting progress
    (``sidecar.progress``); a component is watched from its first report on.
    """

    name: str
    run: Callable[[], Awaitable[None]]
    deadline: float


async def _watchdog(state: State, period: float = 1.0) -> None:
    """Measure event-loop lag (how late a short sleep wakes up); log components that stop making progress."""
    loop = asyncio.get_running_loop()
    ticks = progress.current()
    while True:
        start = loop.time()
        await ticks.sleep(period, "next tick")
        state.loop_lag = max(0.0, loop.time() - start - period)
        _note_stuck(state)


def _note_stuck(state: State) -> None:
    """Log once when a component's report is overdue and once when it moves again (``/livez`` says it too)."""
    now = time.monotonic()
    for name, health in state.components.items():
        late = health.overdue(now)
        if late is not None and not health.stuck:
            health.stuck = True
            log.error("component_stuck", name=name, doing=late[0], overdue_seconds=round(late[1], 1),
                      deadline=health.deadline)
        elif late is None and health.stuck:
            health.stuck = False
            log.info("component_moving", name=name)


async def _supervise(component: Component, state: State) -> None:
    """Run a component forever, restarting it with backoff when it fails."""
    health = state.components.setdefault(component.name, ComponentHealth(component.deadline))
    progress.attach(progress.Progress(health))
    retries = Retries(RESTART_BACKOFF)
    while True:
        health.alive = True
        health.activities.clear()  # what a failed run was doing is over
        started = time.monotonic()
        try:
            await component.run()
            raise RuntimeError("component returned")
        except asyncio.CancelledError:
            health.alive = False
            raise
        except Exception as exc:
            health.alive = False
            health.restarts += 1
            health.last_error = logs.redact(f"{type(exc).__name__}: {exc}")
            log.error("component_failed", name=component.name, error=health.last_error, exc_info=True)
            if time.monotonic() - started > STABLE_RUN:
                retries.reset()
            await asyncio.sleep(retries.failed())


def _busy_threads() -> list[str]:
    """Threads other than this one and the main one that are doing something: name and where."""
    frames = sys._current_frames()
    out = []
    for thread in threading.enumerate():
        if thread in (threading.main_thread(), threading.current_thread()) or thread.ident not in frames:
            continue
        frame: FrameType | None = frames[thread.ident]
        if frame is None or frame.f_code.co_name == "_worker":  # an idle executor worker, waiting for work
            continue
        calls: list[str] = []  # innermost first, a few deep: the blocking call and the work that made it
        while frame is not None and len(calls) < 4 and frame.f_code.co_name not in ("run", "_worker"):
            calls.append(f"{frame.f_code.co_name} ({os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno})")
            frame = frame.f_back
        out.append(f"{thread.name}: {' < '.join(calls)}")
    return out


def _hard_stop(tasks: list[asyncio.Task[None]]) -> None:
    """The stop deadline passed: say what still ran, then end the process.

    Worker threads of ``asyncio.to_thread`` cannot be cancelled and the interpreter waits for
    them at exit, so one stuck in a blocking call would keep the pod terminating for its whole
    grace period. Runs in a timer thread, so it fires even when the event loop is blocked.
    """
    log.error("stop_deadline_passed", seconds=STOP_DEADLINE, tasks=[t.get_name() for t in tasks if not t.done()],
              threads=_busy_threads())
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def build_components(settings: Settings, state: State) -> list[Component]:
    """The components this configuration enables; heavy modules are imported only when used.

    Each deadline is about twice the longest single wait inside one piece of the component's work
    (for the scripts, the sync's own deadline plus one git call), so only work that has stopped
    moving crosses it.
    """
    components = [Component("watchdog", lambda: _watchdog(state), settings.loop_lag_max)]
    from sidecar.scripts.sync import SyncLoop

    # A sync is cancelled at --sync-timeout: only one that has not ended a git call's time later is stuck.
    components.append(Component("scripts", SyncLoop(settings, state).run,
                                settings.sync_timeout + settings.git_timeout))
    # One client for every REST user (checks and hooks), so the node never sees two requests at once.
    node_rest = NodeRest(settings.node_host, settings.rest_port) if settings.rest_port is not None else None
    if settings.watch:
        from sidecar.watch import Watcher

        # One batch: classification and a git status (bounded by --git-timeout).
        components.append(Component("watch", Watcher(settings, state).run, 2 * settings.git_timeout))
    if settings.hooks():
        from sidecar.hooks.component import Hooks

        components.append(Component("hooks", Hooks(settings, state, node_rest).run, 2 * settings.hook_timeout))
    if settings.kube != "off":
        from sidecar.kube.jobs import kube_jobs

        # One round: loading the configuration and up to two requests, each bounded by --kube-timeout.
        components.extend(Component(name, run, 4 * settings.kube_timeout)
                          for name, run in kube_jobs(settings, state))
    if settings.enabled_checks():
        from sidecar.checks.runner import CheckRunner, CheckSpec

        for name in settings.enabled_checks():
            spec = CheckSpec.from_settings(settings, name)
            runner = CheckRunner(spec, state, client=node_rest)
            components.append(Component(f"check-{name}", runner.run, 2 * spec.timeout + 1))
    if settings.policy_enabled() and node_rest is not None:
        from sidecar.policy.runner import PolicyReader

        # One read: the wait for the REST client (a hook may hold it) and the read itself.
        components.append(Component("policy", PolicyReader(settings, state, node_rest).run,
                                    2 * settings.rest_timeout + settings.hook_timeout))
    return components


async def _stop(tasks: list[asyncio.Task[None]], grace: float = SHUTDOWN_GRACE) -> None:
    """Cancel the component tasks and give them ``grace`` seconds; name every one that did not end cleanly."""
    for task in tasks:
        task.cancel()
    done, pending = await asyncio.wait(tasks, timeout=grace)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.error("component_failed_at_stop", name=task.get_name(), error=repr(task.exception()))
    for task in pending:
        log.error("component_not_stopped", name=task.get_name(), grace_seconds=grace)
    others = asyncio.all_tasks() - set(tasks) - {asyncio.current_task()}
    for task in sorted(others, key=asyncio.Task.get_name):
        log.warning("task_left_at_stop", name=task.get_name(), coro=getattr(task.get_coro(), "__qualname__", "?"))


async def run(settings: Settings, *, ready: asyncio.Event | None = None) -> int:
    """The ``run`` command: serve until SIGTERM/SIGINT; SIGHUP triggers a sync."""
    from sidecar.scripts import lock

    try:  # one writer per volume: a second run on the same link stops here, naming the first
        await asyncio.to_thread(lock.hold, settings.revisions_root, "run", settings.pod_name)
    except lock.Busy as exc:
        log.error("volume_locked", error=str(exc))
        return 1
    except OSError as exc:  # a read-only volume: nobody can write beside us, the scripts side reports it
        log.warning("writer_lock_unavailable", root=str(settings.revisions_root), error=str(exc))
    state = State()
    endpoints = Endpoints(settings, state)
    server = HttpServer(
        endpoints.handle,
        max_connections=settings.http_max_connections,
        header_timeout=settings.http_header_timeout,
        on_error=lambda exc: log.error("http_handler_failed", error=repr(exc)),
    )
    try:
        port = await server.start(settings.http_host, settings.http_port)
    except OSError as exc:
        log.error("http_listen_failed", host=settings.http_host, port=settings.http_port, error=str(exc))
        return 1
    log.info("http_listening", host=settings.http_host, port=port)
    warning = node_type_warning(os.environ)
    if warning is not None:
        log.warning("node_type_refused", detail=warning)

    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    # Armed at the first signal and never disarmed: it also covers the interpreter's exit, which
    # waits for worker threads after this coroutine returned.
    deadline = threading.Timer(STOP_DEADLINE, _hard_stop, args=(tasks,))
    deadline.daemon = True

    def on_stop() -> None:
        if not stop.is_set():
            deadline.start()
        stop.set()

    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, on_stop)
    loop.add_signal_handler(signal.SIGINT, on_stop)
    loop.add_signal_handler(signal.SIGHUP, state.sync_now.set)

    components = build_components(settings, state)
    for c in components:  # all known before any starts: /livez names one that is not running yet
        state.components[c.name] = ComponentHealth(c.deadline)
    tasks += [asyncio.create_task(_supervise(c, state), name=c.name) for c in components]
    if ready is not None:
        ready.set()
    await stop.wait()

    state.shutting_down = True
    log.info("stopping")
    await _stop(tasks)
    await server.stop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(sig)
    log.info("stopped")
    return 0
