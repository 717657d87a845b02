"""The sync loop: period with jitter, a cheap remote check, backoff on errors, triggers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time

from sidecar import progress
from sidecar.config import Settings, pinned
from sidecar.scripts import lock, maintain, report, resolve, spare, trees
from sidecar.scripts.git import GitError
from sidecar.scripts.publish import head
from sidecar.scripts.recover import SeedError
from sidecar.scripts.seed import ensure_published, publish_from_git
from sidecar.scripts.workspace import Workspace, log
from sidecar.state import State


async def sync_once(ws: Workspace, *, asked: bool = False) -> str:
    """One sync; returns ``ok``, ``noop``, ``held``, ``conflict`` or ``error`` (recorded in state).

    ``asked``: someone asked for this sync (``POST /sync``, SIGHUP), so upstream most likely moved.
    """
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
            try:
                result = await publish_from_git(ws, ask_first=not asked)
            except GitError as exc:
                if exc.reason != "corrupt" or not await maintain.repair(ws):
                    raise
                result = await publish_from_git(ws, ask_first=False)  # once, on the repaired repository
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


GUARD_PERIOD = 0.5  # seconds between looks at the link and the root: a lost tree is noticed within a second


class SyncLoop:
    """The ``scripts`` component of ``run``: publish first, then keep the tree in sync and whole."""

    def __init__(self, settings: Settings, state: State) -> None:
        self.settings = settings
        self.state = state
        self.ws = Workspace.create(settings, state)
        self.repair = asyncio.Event()  # set by the guard: the published tree is gone or replaced
        self.lock_lost = False

    def _delay(self, failures: int) -> float:
        period = self.settings.period
        if failures:
            period = min(self.settings.backoff_max, max(1.0, period) * 2 ** (failures - 1))
        spread = self.settings.jitter
        return period * random.uniform(1 - spread, 1 + spread)

    async def _wait(self, delay: float) -> bool:
        """Sleep ``delay`` seconds, or less when a sync is triggered (POST /sync, SIGHUP, a repair);
        return whether it was triggered."""
        self.state.scripts.next_sync_time = time.time() + delay
        progress.current().waiting("the next sync", delay)
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that meets a trigger.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self.state.sync_now.wait()
        asked = self.state.sync_now.is_set()
        self.state.sync_now.clear()
        return asked

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

    async def _guard(self) -> None:
        """Look at the link and the root every GUARD_PERIOD; on a problem, report it and ask for a repair."""
        while True:
            await asyncio.sleep(GUARD_PERIOD)
            if self.repair.is_set() or self.ws.lock.locked():
                continue  # a repair or a publication is under way: the link may be mid-change
            problem, held = await asyncio.to_thread(self._look)
            if not held:
                self.lock_lost = True
                problem = "another process took the volume's writer lock after the root was removed"
            if problem is not None and not self.ws.lock.locked():
                report.lost(self.ws, problem)
                self.repair.set()
                self.state.sync_now.set()

    def _look(self) -> tuple[str | None, bool]:
        """One look at the disk (a few lstat calls, in one thread hop): the link's problem, the lock held."""
        return self.ws.layout.link_problem(), lock.check_held()

    async def _repair(self) -> None:
        log.warning("scripts_repairing", problem=self.state.scripts.problem)
        progress.current().working("repairing the published tree")
        if not await asyncio.to_thread(lock.check_held):  # the root may be new: its lock file too
            self.lock_lost = True
            return
        await self._publish_first()
        self.repair.clear()
        log.info("scripts_repaired", revision=self.state.scripts.revision, source=self.state.scripts.source)

    async def _announce_seeded_adoption(self) -> None:
        """Show and send the adoption an init container's ``seed`` made (it had no one to tell)."""
        text = await asyncio.to_thread(self.ws.layout.take_adoption_record)
        if text is None:
            return
        try:
            record = json.loads(text)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            log.warning("adoption_record_unreadable", error=str(exc))
            return
        report.adoption_known(self.ws, record)

    async def run(self) -> None:
        """Never returns; cancelled on shutdown (a publication in flight is atomic either way)."""
        await self._publish_first()
        spare.keep_ready(self.ws)
        await self._announce_seeded_adoption()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._guard())
            tg.create_task(self._loop())

    async def _loop(self) -> None:
        started = time.monotonic()
        while True:
            asked = False
            if self.lock_lost:
                await asyncio.Event().wait()  # never write beside the writer that holds the lock now
            if self.repair.is_set():
                await self._repair()
            elif pinned(self.settings) and self.state.scripts.source == "git" \
                    and self.state.scripts.revision == self.settings.ref:
                self.state.scripts.next_sync_time = None
                progress.current().waiting("a sync request")
                await self.state.sync_now.wait()  # pinned: only an explicit trigger re-checks
                self.state.sync_now.clear()
                asked = True
            else:
                # Start to start: a sync's own duration does not stretch the period.
                delay = self._delay(self.state.scripts.consecutive_failures)
                asked = await self._wait(max(0.0, started + delay - time.monotonic()))
            await self._serve_resolves()
            if self.repair.is_set() or self.lock_lost:
                continue
            started = time.monotonic()
            await sync_once(self.ws, asked=asked)
            spare.keep_ready(self.ws)  # the next publication then writes only what upstream changed

    async def _serve_resolves(self) -> None:
        """Settle the conflicts people asked to settle (POST /resolve) before the next sync."""
        queue = self.state.resolve_requests
        while not queue.empty():
            request = queue.get_nowait()
            if request.answer.done():  # the asker gave up waiting
                continue
            progress.current().working("settling a conflict")
            try:
                result = await resolve.resolve(self.ws, request.take, request.paths)
            except resolve.NotResolvable as exc:
                request.answer.set_result({"ok": False, "error": str(exc)})
            except (GitError, OSError) as exc:
                request.answer.set_result({"ok": False, "error": f"resolve failed: {exc}"})
            else:
                request.answer.set_result({"ok": True, **result})
