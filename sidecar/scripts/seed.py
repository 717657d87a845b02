"""First publication: what is on the volume, else git (retried for a bounded time), else the fallback.

``publish_from_git`` is also the body of every later sync (``sync.py``), which imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import TypeVar

from sidecar.config import pinned
from sidecar.scripts import remote, report, trees
from sidecar.scripts.edits import edited_paths
from sidecar.scripts.git import GitError
from sidecar.scripts.layout import Revision, sync_filesystem
from sidecar.scripts.publish import head, publish
from sidecar.scripts.recover import SeedError, fallback_commit, recover
from sidecar.scripts.workspace import Workspace, log

T = TypeVar("T")


async def publish_from_git(ws: Workspace, *, ask_first: bool = True) -> str:
    """One git round: resolve the ref, fetch, check and publish; return the sync result.

    ``ask_first=False`` (a sync someone asked for: upstream most likely moved) skips the cheap
    ``ls-remote`` check and fetches the ref by name at once, one round trip fewer.
    """
    settings = ws.settings
    assert settings.repo is not None
    current = await asyncio.to_thread(ws.layout.current)
    sha: str | None = None
    current_head: str | None = None
    if current is not None:  # the cheap check first; a first seed fetches by name straight away
        current_head = await head(ws, current)
        if ask_first or pinned(settings):
            sha = await remote.resolve(ws.git, settings.repo, settings.ref)
            if current.source == "git" and current_head == sha:
                return await _unchanged(ws, current)
    fetching = remote.fetch(ws.git, ws.repo, settings.repo, settings.ref, sha, settings.depth)
    clean = False
    if current is not None and settings.local_edits != "discard":
        # The edits are looked for while the fetch runs: with none, publishing starts at once
        # (edits made from here on are caught by the look after the checkout).
        looking = asyncio.ensure_future(edited_paths(ws.git, current.path))
        commit = await _beside(looking, fetching)
        clean = not await looking
    else:
        commit = await fetching
    published = False
    try:
        if current is not None and current.source == "git" and current_head == commit:
            return await _unchanged(ws, current)
        # The symlink check runs while the revision is built; the revision waits for it before
        # it may be marked complete, and a hold or a conflict does not hide a refusal.
        checking = asyncio.ensure_future(trees.check_tree_symlinks(ws.git, ws.repo, commit))
        known = (current, current_head) if current is not None and current_head is not None else None
        outcome = await _beside(checking, publish(ws, commit, "git", known=known, clean=clean, gate=checking))
        await checking
        published = outcome.result == "published"
    finally:
        if not published:  # what the fetch wrote is flushed by a publication, else here
            with contextlib.suppress(OSError):
                await asyncio.to_thread(sync_filesystem, ws.repo)
    if outcome.revision is not None:
        report.published(ws, outcome.revision, commit, outcome.edits, seeded=current is None)
        if outcome.conflicts:  # late edits that could not be carried: their folder is kept
            report.late_conflicts(ws, outcome.conflicts)
        return "ok"
    if outcome.result == "held":
        report.set_edits(ws, outcome.edits)
    ws.state.scripts.held_upstream = commit  # the commit a hold or a conflict keeps back
    ws.state.scripts.conflict_files = outcome.conflicts
    return outcome.result


async def _beside(side: asyncio.Future[None] | asyncio.Future[list[str]], main: Awaitable[T]) -> T:
    """Await ``main`` while ``side`` runs; when ``main`` fails, stop ``side`` before passing the error on."""
    try:
        return await main
    except BaseException:
        side.cancel()
        await asyncio.wait([side])
        raise


async def _unchanged(ws: Workspace, current: Revision) -> str:
    """Upstream has not moved: nothing to publish."""
    if not ws.settings.watch:  # the watcher, when enabled, keeps its own count current
        report.set_edits(ws, await edited_paths(ws.git, current.path))
    return "noop"


async def _publish_fallback(ws: Workspace) -> None:
    commit = await fallback_commit(ws)
    if commit is None:
        raise SeedError(f"fallback folder {ws.settings.fallback_dir} does not exist")
    outcome = await publish(ws, commit, "fallback")
    assert outcome.revision is not None  # nothing was published, so nothing can hold or conflict
    report.published(ws, outcome.revision, commit, outcome.edits, seeded=True)


async def first_seed(ws: Workspace) -> None:
    """Publish for the first time: git, retried until ``--first-seed-timeout``, then the fallback."""
    settings = ws.settings
    deadline = time.monotonic() + settings.first_seed_timeout
    error: str | None = None
    if settings.repo is not None:
        delay = 0.5
        while True:
            started = time.monotonic()
            try:
                await publish_from_git(ws)
                report.sync_done(ws, "ok", started)
                return
            except (GitError, trees.UnsafeTree) as exc:
                error = str(exc)
                report.sync_done(ws, "error", started, error)
            if time.monotonic() + delay > deadline:
                if settings.fallback_dir is None:
                    raise SeedError(f"git unreachable and no fallback folder: {error}")
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
    log.warning("seeding_from_fallback", folder=str(settings.fallback_dir), git_error=error)
    await _publish_fallback(ws)


async def ensure_published(ws: Workspace) -> None:
    """Make sure a revision is published: repair or adopt what is there, else seed."""
    current = await recover(ws)
    if current is not None:
        report.found(ws, current, await head(ws, current), await edited_paths(ws.git, current.path))
        log.info("scripts_found", folder=current.name, source=current.source)
        return
    await first_seed(ws)
