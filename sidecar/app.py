"""Starts the components as supervised tasks, serves the endpoints, handles signals and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sidecar import logs
from sidecar.backoff import Backoff, Retries
from sidecar.config import Settings
from sidecar.http.routes import Endpoints
from sidecar.http.server import HttpServer
from sidecar.state import ComponentHealth, State

log = logs.get("app")

SHUTDOWN_GRACE = 4.0  # seconds; the whole stop fits in 5 s, well inside any pod grace period
RESTART_BACKOFF = Backoff.doubling(1.0, 30.0)  # waits before restarting a failed component
STABLE_RUN = 60.0  # seconds; a component that ran this long before failing starts its backoff over


@dataclass
class Component:
    """One long-running job. ``run`` should never return; if it raises, it is restarted."""

    name: str
    run: Callable[[], Awaitable[None]]


async def _watchdog(state: State, period: float = 1.0) -> None:
    """Measure event-loop lag: how late a short sleep wakes up."""
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(period)
        state.loop_lag = max(0.0, loop.time() - start - period)


async def _supervise(component: Component, state: State) -> None:
    """Run a component forever, restarting it with backoff when it fails."""
    health = state.components.setdefault(component.name, ComponentHealth())
    retries = Retries(RESTART_BACKOFF)
    while True:
        health.alive = True
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


def build_components(settings: Settings, state: State) -> list[Component]:
    """The components this configuration enables; heavy modules are imported only when used."""
    components = [Component("watchdog", lambda: _watchdog(state))]
    from sidecar.scripts.sync import SyncLoop

    components.append(Component("scripts", SyncLoop(settings, state).run))
    if settings.watch:
        from sidecar.watch import Watcher

        components.append(Component("watch", Watcher(settings, state).run))
    if settings.hooks():
        from sidecar.hooks import Hooks

        components.append(Component("hooks", Hooks(settings, state).run))
    if settings.kube != "off":
        from sidecar.kube.jobs import kube_jobs

        components.extend(Component(name, run) for name, run in kube_jobs(settings, state))
    if settings.enabled_checks():
        from sidecar.checks.runner import CheckRunner, CheckSpec

        for name in settings.enabled_checks():
            runner = CheckRunner(CheckSpec.from_settings(settings, name), state)
            components.append(Component(f"check-{name}", runner.run))
    return components


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

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, state.sync_now.set)

    tasks = [asyncio.create_task(_supervise(c, state), name=c.name) for c in build_components(settings, state)]
    endpoints.components = [t.get_name() for t in tasks]
    if ready is not None:
        ready.set()
    await stop.wait()

    state.shutting_down = True
    log.info("stopping")
    for task in tasks:
        task.cancel()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), SHUTDOWN_GRACE)
    await server.stop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(sig)
    log.info("stopped")
    return 0
