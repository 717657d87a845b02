"""The ``hooks`` component: turns bus events into triggers for the configured hooks."""

from __future__ import annotations

import asyncio
import shlex
from fnmatch import fnmatchcase

from sidecar.bus import Event
from sidecar.config import Settings
from sidecar.hooks.process import ExecAction
from sidecar.hooks.rest import RestAction
from sidecar.hooks.runner import HookRunner
from sidecar.hooks.trigger import Action, Trigger
from sidecar.hooks.webhook import WebhookAction
from sidecar.noderest import NodeRest
from sidecar.state import HookState, State

PUBLISH_EVENTS = ("scripts-seeded", "scripts-updated")


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
            while True:
                self.dispatch(await self.queue.get())

    def dispatch(self, event: Event) -> None:
        """Submit the triggers one event means; events of other kinds are ignored."""
        data = event.data
        if event.kind == "files-changed":
            glob = self.settings.on_change_glob
            changes = {p: k for p, k in data.get("kinds", {}).items() if fnmatchcase(p, glob)}
            if changes:
                trigger = Trigger("change", event.kind, data.get("revision"), changes=changes)
                for runner in self.runners["change"]:
                    runner.submit(trigger)
        elif event.kind in PUBLISH_EVENTS:
            trigger = Trigger("publish", event.kind, data.get("revision"), data.get("source"))
            for runner in self.runners["publish"]:
                # At seed the node has not started yet (it starts after /startupz) and reads the
                # scripts itself: processing them through REST too would run them twice.
                if event.kind == "scripts-seeded" and runner.action.kind == "rest":
                    continue
                runner.submit(trigger)
