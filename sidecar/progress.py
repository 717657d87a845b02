"""Time has one model: each component says what it is doing and by when it will say so again.

The supervisor gives every component task a ``Progress`` handle (``current()`` returns it inside the
task and the tasks it starts) with the component's deadline: how long a piece of work may go on
without progress before the component counts as stuck. A component reports through it:

- ``working("fetch")``: work started or advanced; the next report is due within the deadline;
- ``waiting("next sync", 30)``: idle until a known time; due 30 s plus the deadline from now;
- ``waiting("bus events")``: idle until something outside happens; never due (idle is not stuck).

``/livez`` fails and the supervisor logs ``component_stuck`` once a report is overdue (a hung sync,
a request that never returns). The supervisor does not cancel a stuck component: its work may sit in
a thread that cannot be stopped, and a second copy beside it could write the same files. A failing
``/livez`` lets the kubelet restart the container instead.

A component whose parts run concurrently (one per hook, say) gives each its own ``part(name)``: the
component is stuck when any part is.
"""

from __future__ import annotations

import asyncio
import contextvars
import time

from sidecar.config import Settings
from sidecar.state import Activity, ComponentHealth, State


class Progress:
    """Writes one activity of one component (``ComponentHealth.activities[part]``)."""

    def __init__(self, health: ComponentHealth, name: str = "") -> None:
        self.health = health
        self.name = name

    def working(self, doing: str) -> None:
        """Work started or moved on; report again within the component's deadline."""
        deadline = self.health.deadline
        now = time.monotonic()
        self._set(doing, None if deadline is None else now + deadline)

    def waiting(self, doing: str, seconds: float | None = None) -> None:
        """Idle for ``seconds`` (None: until something outside happens, with no time limit)."""
        deadline = self.health.deadline
        due = None if seconds is None or deadline is None else time.monotonic() + seconds + deadline
        self._set(doing, due)

    async def sleep(self, seconds: float, doing: str) -> None:
        """``asyncio.sleep`` that says what it waits for."""
        self.waiting(doing, seconds)
        await asyncio.sleep(seconds)

    def part(self, name: str) -> Progress:
        """A handle for a part of the component that runs beside the others."""
        return Progress(self.health, name)

    def _set(self, doing: str, due: float | None) -> None:
        self.health.activities[self.name] = Activity(doing, time.time(), due)


# Set by the supervisor in each component's task; tasks and threads started from there inherit it.
_current: contextvars.ContextVar[Progress] = contextvars.ContextVar("progress")


def current() -> Progress:
    """The running component's handle; outside a supervised task (a test, a CLI command), a detached one."""
    try:
        return _current.get()
    except LookupError:
        return Progress(ComponentHealth())


def attach(progress: Progress) -> None:
    """Make ``progress`` the handle of the running task (the supervisor calls this in each component)."""
    _current.set(progress)


def liveness(settings: Settings, state: State) -> list[str]:
    """Why the sidecar itself is not live (never the node's or git's trouble); empty when it is."""
    problems = []
    if state.loop_lag > settings.loop_lag_max:
        problems.append(f"event loop lagging {state.loop_lag:.2f} s")
    now = time.monotonic()
    for name, component in state.components.items():
        if not component.alive:
            problems.append(f"component {name} not running")
        elif (late := component.overdue(now)) is not None:
            problems.append(f"component {name} stuck: {late[0]} is {late[1]:.0f} s past its deadline "
                            f"({component.deadline:g} s)")
    return problems
