"""Reload hooks: run an action when a revision is published or local files change, without storms.

Each configured hook (``--on-<trigger>-<action>``) has one runner. A runner runs its action one
at a time; triggers that arrive meanwhile coalesce into one pending trigger (the latest wins; a
change trigger keeps the paths of the ones it replaced, since they still need handling). Runs
start at most once per ``MIN_INTERVAL``, have a timeout, and failures retry with exponential
backoff. Nothing here blocks the event loop: processes, HTTP and the node's REST server are all
awaited with deadlines, so the probes and the sync go on whatever a hook does.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import time
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from sidecar import __version__, logs, noderest, procs
from sidecar.config import Settings, redact_url
from sidecar.events import Event, FilesChanged, ScriptsPublished, ScriptsSeeded
from sidecar.state import HookState, State

log = logs.get("hooks")

MIN_INTERVAL = 1.0  # seconds between the starts of one hook's runs: a flood runs it once a second at most
BACKOFF_INITIAL = 1.0  # seconds before the first retry; doubles up to --hook-backoff-max
REST_MAX_FILES = 20  # beyond this many files one batch is a bulk change, not edits to process one by one
ENV_PATHS_MAX = 32 * 1024  # bytes of SIDECAR_CHANGED_PATHS; Linux refuses one variable over 128 KiB
ERROR_MAX = 300  # characters of an error kept in /status


@dataclass(frozen=True)
class Trigger:
    """Why a hook should run: a published revision, or local files that changed."""

    trigger: str  # change | publish
    event: str  # files-changed | scripts-seeded | scripts-updated
    revision: str | None = None
    source: str | None = None
    changes: dict[str, str] = field(default_factory=dict)  # path -> added|modified|deleted, oldest first
    at: float = field(default_factory=time.time)

    def merged(self, newer: Trigger) -> Trigger:
        """This pending trigger with a newer one folded in: the newer wins.

        A publish only matters for its latest revision. A change keeps the older paths too (each
        still needs processing), with the newer kind for a path seen twice.
        """
        if self.trigger != "change":
            return newer
        changes = dict(self.changes)
        for path, kind in newer.changes.items():
            changes.pop(path, None)  # re-inserted last: the order stays the order of the changes
            changes[path] = kind
        return replace(newer, changes=changes)

    def payload(self, hook: str) -> dict[str, Any]:
        """The JSON document a webhook receives and an exec hook reads on its standard input."""
        return {
            "hook": hook,
            "trigger": self.trigger,
            "event": self.event,
            "revision": self.revision,
            "source": self.source,
            "changes": [{"path": p, "kind": k} for p, k in self.changes.items()],
            "time": self.at,
        }


class HookError(Exception):
    """A run that failed; retried with backoff. The message must already be free of secrets."""


class HookSkipped(Exception):
    """A run that decided not to act; not retried."""


class Action(Protocol):
    """One kind of action; ``run`` raises HookError or HookSkipped, or returns when it succeeded."""

    kind: str

    async def run(self, hook: str, trigger: Trigger, timeout: float) -> None:
        """Perform the action once for ``trigger`` within ``timeout`` seconds."""


class RestAction:
    """Send a command to the node through the sidecar's single REST connection.

    With ``{path}`` (relative to the tree) or ``{abspath}`` (through the published link) in the
    template, one command per changed file that still exists; otherwise one command per run.
    """

    kind = "rest"

    def __init__(self, template: str, host: str, port: int, link: Path) -> None:
        self.template = template
        self.host = host
        self.port = port
        self.link = link

    def commands(self, trigger: Trigger) -> list[str]:
        """The commands one run sends, in order; raises HookSkipped when there is nothing sensible to send."""
        if "{path}" not in self.template and "{abspath}" not in self.template:
            return [self.template]
        # A name with a line break cannot travel in a header; a name that is not UTF-8 could not be
        # told to the node either: such files are left out, never retried for ever.
        files = [p for p, kind in trigger.changes.items() if kind != "deleted" and _sendable(p)]
        if not files:
            raise HookSkipped("only deletions or unsendable file names: no file to process")
        if len(files) > REST_MAX_FILES:
            raise HookSkipped(f"{len(files)} files changed at once (more than {REST_MAX_FILES}): a bulk change "
                              "is not replayed file by file")
        # Plain replacement, not str.format: node commands often hold braces (JSON policies).
        return [self.template.replace("{path}", p).replace("{abspath}", str(self.link / p)) for p in files]

    async def run(self, hook: str, trigger: Trigger, timeout: float) -> None:
        """Send each command; stop at the first the node refuses."""
        for command in self.commands(trigger):
            try:
                answer = await noderest.command(self.host, self.port, command, timeout=timeout)
            except noderest.NodeRestError as exc:
                raise HookError(f"node {exc.reason}: {exc}") from None
            if not 200 <= answer.status < 300:
                raise HookError(f"node answered {answer.status} to {command!r}: {answer.text[:120].strip()}")


def _sendable(path: str) -> bool:
    """A file name the node can be sent in a header: no line break or NUL, and valid UTF-8."""
    if any(c in path for c in "\r\n\0"):
        return False
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # os.walk gives undecodable bytes as surrogates
        return False
    return True


class ExecAction:
    """Run a command without a shell; the trigger is in its environment and, as JSON, on its stdin."""

    kind = "exec"

    def __init__(self, argv: list[str], link: Path) -> None:
        self.argv = argv
        self.link = link

    def env(self, hook: str, trigger: Trigger) -> dict[str, str]:
        """The child's environment: ours without SIDECAR_* settings, plus the trigger."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIDECAR_")}
        paths, size = [], 0
        for path in trigger.changes:
            size += len(os.fsencode(path)) + 1
            if size > ENV_PATHS_MAX:
                break  # the full list is on stdin; SIDECAR_CHANGED_COUNT tells the list was cut
            paths.append(path)
        env.update({
            "SIDECAR_HOOK": hook,
            "SIDECAR_TRIGGER": trigger.trigger,
            "SIDECAR_EVENT": trigger.event,
            "SIDECAR_REVISION": trigger.revision or "",
            "SIDECAR_SOURCE": trigger.source or "",
            "SIDECAR_SCRIPTS": str(self.link),
            "SIDECAR_CHANGED_PATHS": "\n".join(paths),
            "SIDECAR_CHANGED_COUNT": str(len(trigger.changes)),
        })
        return env

    async def run(self, hook: str, trigger: Trigger, timeout: float) -> None:
        """Run the command; a non-zero exit is a failure. Output is capped and drained by procs.run."""
        stdin = json.dumps(trigger.payload(hook)).encode()
        try:
            result = await procs.run(self.argv, timeout=timeout, env=self.env(hook, trigger), stdin=stdin)
        except OSError as exc:
            raise HookError(f"{self.argv[0]} could not start: {exc.strerror or exc}") from None
        if result.returncode != 0:
            lines = result.stderr.decode(errors="replace").strip().splitlines()
            raise HookError(f"exit {result.returncode}" + (f": {lines[-1]}" if lines else ""))


class WebhookAction:
    """POST the trigger as JSON. The URL may carry a token: it is registered as a secret and never shown."""

    kind = "webhook"

    def __init__(self, url: str) -> None:
        self.url = url
        self.shown = redact_url(url)
        # Whatever the URL carries beyond its address may be a token: never print it anywhere.
        parts = urlsplit(url)
        query_values = [pair.partition("=")[2] for pair in parts.query.split("&")]
        for secret in (parts.query, parts.password or "", *query_values):
            logs.add_secret(secret)

    async def run(self, hook: str, trigger: Trigger, timeout: float) -> None:
        """One POST with a total timeout; any status outside 2xx is a failure (redirects are not followed)."""
        import aiohttp  # only when a webhook is configured: it is the heaviest import here

        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                    session.post(self.url, json=trigger.payload(hook), allow_redirects=False,
                                 headers={"User-Agent": f"edgelake-sidecar/{__version__}"}) as resp:
                status = resp.status
        except aiohttp.ClientError as exc:
            raise HookError(logs.redact(f"{self.shown}: {type(exc).__name__}: {exc}")) from None
        if not 200 <= status < 300:
            raise HookError(f"{self.shown} answered {status}")


class HookRunner:
    """Runs one hook's action: never overlapping itself, coalescing triggers, retrying with backoff."""

    def __init__(self, name: str, action: Action, hook_state: HookState, *, timeout: float, backoff_max: float,
                 min_interval: float = MIN_INTERVAL, backoff_initial: float = BACKOFF_INITIAL) -> None:
        self.name = name
        self.action = action
        self.hs = hook_state
        self.timeout = timeout
        self.backoff_max = backoff_max
        self.min_interval = min_interval
        self.backoff_initial = backoff_initial
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
        while True:
            await self._wake.wait()
            pause = last_start + self.min_interval - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)  # triggers arriving now join the pending one
            self._wake.clear()
            trigger, self._pending = self._pending, None
            self.hs.pending = False
            if trigger is None:
                continue
            last_start = loop.time()
            if await self._attempt(trigger):
                continue
            # The failed trigger waits again, under anything newer that arrived during the run.
            self._pending = trigger if self._pending is None else trigger.merged(self._pending)
            self.hs.pending = True
            delay = min(self.backoff_max, self.backoff_initial * 2 ** (self.hs.consecutive_failures - 1))
            self.hs.next_retry_time = time.time() + delay
            await asyncio.sleep(delay)  # new triggers do not cut a backoff short
            self.hs.next_retry_time = None
            self._wake.set()

    async def _attempt(self, trigger: Trigger) -> bool:
        """Run the action once and record the outcome; False when it should be retried."""
        hs = self.hs
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
        except HookError as exc:
            result, error = "error", str(exc)
        except Exception as exc:  # a bug or odd input must cost one failed run, not the component
            result, error = "error", f"{type(exc).__name__}: {exc}"
        duration = time.monotonic() - started
        hs.runs[result] += 1
        hs.duration.observe(duration)
        hs.last_result = result
        hs.last_error = logs.redact(error)[:ERROR_MAX] if error else None
        retry = result in ("error", "timeout")
        hs.consecutive_failures = hs.consecutive_failures + 1 if retry else 0
        (log.warning if retry else log.info)("hook_run", hook=self.name, result=result,
                                             duration_ms=round(duration * 1000, 1), error=hs.last_error,
                                             changes=len(trigger.changes), revision=trigger.revision)
        return not retry


def _action(kind: str, value: str, settings: Settings) -> Action:
    if kind == "rest":
        assert settings.rest_port is not None  # config's cross-checks require it
        return RestAction(value, settings.node_host, settings.rest_port, settings.link)
    if kind == "exec":
        return ExecAction(shlex.split(value), settings.link)
    return WebhookAction(value)


class Hooks:
    """The ``hooks`` component: turns bus events into triggers for the configured hooks."""

    def __init__(self, settings: Settings, state: State, **runner_options: float) -> None:
        self.settings = settings
        self.state = state
        # Subscribed now, before any component runs, so the first publish is not missed.
        self.queue = state.bus.subscribe()
        self.runners: dict[str, list[HookRunner]] = {"change": [], "publish": []}
        for (trigger, kind), value in settings.hooks().items():
            name = f"{trigger}-{kind}"
            hook_state = state.hooks.setdefault(name, HookState(name))
            self.runners[trigger].append(HookRunner(
                name, _action(kind, value, settings), hook_state, timeout=settings.hook_timeout,
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
