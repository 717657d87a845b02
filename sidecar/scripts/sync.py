"""The sync loop: period with jitter, a cheap remote check, backoff on errors, triggers."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

from sidecar import progress
from sidecar.config import Settings, is_sha
from sidecar.scripts import maintain, report, trees
from sidecar.scripts.git import GitError
from sidecar.scripts.publish import head
from sidecar.scripts.recover import SeedError
from sidecar.scripts.seed import ensure_published, publish_from_git
from sidecar.scripts.workspace import Workspace, log
from sidecar.state import State


def pinned(settings: Settings) -> bool:
    """A full commit SHA never moves, so it is never polled once published."""
    return settings.ref is not None and is_sha(settings.ref) and len(settings.ref) == 40


async def sync_once(ws: Workspace) -> str:
    """One sync; returns ``ok``, ``noop``, ``held``, ``conflict`` or ``error`` (recorded in state)."""
    started = time.monotonic()
    settings = ws.settings
    if settings.repo is None:
        return "noop"  # fallback-only: nothing upstream
    progress.current().working("syncing")
    try:
        # One deadline for the whole sync: a git call that keeps answering slowly, or file work
        # that never ends, is cancelled (git's process group killed) instead of stalling the loop.
        async with asyncio.timeout(settings.sync_timeout):
            current = await asyncio.to_thread(ws.layout.current)
            if pinned(settings) and current is not None and current.source == "git" \
                    and await head(ws, current) == settings.ref:
                return "noop"
            result = await publish_from_git(ws)
    except TimeoutError:
        report.sync_done(ws, "error", started, f"sync ran past its deadline ({settings.sync_timeout:g} s, "
                                               "--sync-timeout) and was cancelled")
        return "error"
    except (GitError, trees.UnsafeTree, OSError) as exc:
        report.sync_done(ws, "error", started, str(exc), refused=isinstance(exc, trees.UnsafeTree))
        if maintain.is_disk_full(exc):
            await maintain.free_space(ws)
        return "error"
    report.sync_done(ws, result, started, conflicts=ws.state.scripts.conflict_files)
    if result == "ok":
        await maintain.routine(ws)
    if result != "noop":
        log.info("sync_done", result=result, revision=ws.state.scripts.revision,
                 seconds=round(time.monotonic() - started, 3))
    return result


class SyncLoop:
    """The ``scripts`` component of ``run``: publish first, then keep the tree in sync."""

    def __init__(self, settings: Settings, state: State) -> None:
        self.settings = settings
        self.state = state
        self.ws = Workspace.create(settings, state)

    def _delay(self, failures: int) -> float:
        period = self.settings.period
        if failures:
            period = min(self.settings.backoff_max, max(1.0, period) * 2 ** (failures - 1))
        spread = self.settings.jitter
        return period * random.uniform(1 - spread, 1 + spread)

    async def _wait(self, delay: float) -> None:
        """Sleep ``delay`` seconds, or less when a sync is triggered (POST /sync, SIGHUP)."""
        self.state.scripts.next_sync_time = time.time() + delay
        progress.current().waiting("the next sync", delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.state.sync_now.wait(), delay)
        self.state.sync_now.clear()

    async def _publish_first(self) -> None:
        failures = 0
        while True:
            try:
                await ensure_published(self.ws)
                return
            except (SeedError, GitError, trees.UnsafeTree, OSError) as exc:
                failures += 1
                self.state.scripts.last_sync_error = str(exc)
                log.error("seed_failed", error=str(exc), attempt=failures)
            await self._wait(min(self.settings.backoff_max, 2.0 ** min(failures, 10)))

    async def run(self) -> None:
        """Never returns; cancelled on shutdown (a publication in flight is atomic either way)."""
        await self._publish_first()
        started = time.monotonic()
        while True:
            if pinned(self.settings) and self.state.scripts.source == "git" \
                    and self.state.scripts.revision == self.settings.ref:
                self.state.scripts.next_sync_time = None
                progress.current().waiting("a sync request")
                await self.state.sync_now.wait()  # pinned: only an explicit trigger re-checks
                self.state.sync_now.clear()
            else:
                # Start to start: a sync's own duration does not stretch the period.
                delay = self._delay(self.state.scripts.consecutive_failures)
                await self._wait(max(0.0, started + delay - time.monotonic()))
            started = time.monotonic()
            await sync_once(self.ws)
