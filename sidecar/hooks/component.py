"""The ``hooks`` component: turns bus events into triggers for the configured hooks."""

from __future__ import annotations

import asyncio
import shlex
from fnmatch import fnmatchcase

from sidecar import progress
from sidecar.config import Settings
from sidecar.events import Event, FilesChanged, ScriptsPublished, ScriptsSeeded
from sidecar.hooks.process import ExecAction
from sidecar.hooks.rest import RestAction
from sidecar.hooks.runner import HookRunner
from sidecar.hooks.trigger import Action, Trigger
from sidecar.hooks.webhook import WebhookAction
from sidecar.noderest import NodeRest
from sidecar.state import HookState, State


def _action(kind: str, value: str, settings: Settings, client: NodeRest | None) -> Action:
    if kind == "rest":
        assert client is not None  # config's cross-checks require a REST port, and app builds its client
        return RestAction(value, client, settings.node_scripts)
    if kind == "exec":
        return ExecAction(shlex.split(value), settings.link)
    return WebhookAction(value)


class Hooks:
    """The ``hooks`` component: turns bus events into triggers for the configured hooks."""

    def __init__(self, settings: Settings, state: State, client: NodeRest | None, **runner_options: float) -> None:
        self.settings = settings
        self.state = state
        # Subscribed now, before any component runs, so the first publish is not missed.
        self.queue = state.bus.subscribe()
        self.runners: dict[str, list[HookRunner]] = {"change": [], "publish": []}
        for (trigger, kind), value in settings.hooks().items():
            name = f"{trigger}-{kind}"
            hook_state = state.hooks.setdefault(name, HookState(name))
            self.runners[trigger].append(HookRunner(
                name, _action(kind, value, settings, client), hook_state, state.bus, timeout=settings.hook_timeout,
                backoff_max=settings.hook_backoff_max, **runner_options))

    async def run(self) -> None:
        """Run every hook's runner and feed them from the bus, forever."""
        async with asyncio.TaskGroup() as tg:
            for runner in (*self.runners["change"], *self.runners["publish"]):
                tg.create_task(runner.run(), name=f"hook-{runner.name}")
            report = progress.current()
            while True:
                report.waiting("bus events")
                self.dispatch(await self.queue.get())

    def dispatch(self, event: Event) -> None:
        """Submit the triggers one event means; events of other kinds are ignored."""
        if isinstance(event, FilesChanged):
            glob = self.settings.on_change_glob
            changes = {p: k for p, k in event.changes.items() if fnmatchcase(p, glob)}
            if changes:
                trigger = Trigger("change", event.kind, event.revision, changes=changes)
                for runner in self.runners["change"]:
                    runner.submit(trigger)
        elif isinstance(event, ScriptsPublished):
            trigger = Trigger("publish", event.kind, event.revision, event.source)
            for runner in self.runners["publish"]:
                # At seed the node has not started yet (it starts after /startupz) and reads the
                # scripts itself: processing them through REST too would run them twice.
                if isinstance(event, ScriptsSeeded) and runner.action.kind == "rest":
                    continue
                runner.submit(trigger)
