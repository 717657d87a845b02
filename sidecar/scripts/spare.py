"""A spare checkout of the published commit, made while the sidecar is idle.

Creating files is the slow part of a publication where the volume's metadata is not cached:
a new inode can cost a millisecond, a checkout of a few hundred files 0.1 to 0.3 s. After each
sync the run loop checks out the published commit into a spare folder in the background; the
next publication moves the spare into place and checks out only the files upstream changed.

The spare lives in the scratch folder (emptied at every start), is never published as it is,
and is made and taken under the publication lock. Trees with submodules get no spare: git
does not move a worktree that holds submodules.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sidecar.scripts.git import UNFLUSHED, GitError
from sidecar.scripts.layout import Spare, remove_tree
from sidecar.scripts.workspace import Workspace, log


def keep_ready(ws: Workspace) -> None:
    """Make sure a spare of the published commit is being made or is ready (background task).

    Called after every sync: when the spare already holds the published commit (a sync that
    found nothing new) it costs nothing, not even the publication lock.
    """
    if ws.settings.submodules or (ws.spare_task is not None and not ws.spare_task.done()):
        return
    if ws.spare is not None and ws.spare.commit == ws.state.scripts.revision:
        return
    ws.spare_task = asyncio.create_task(prepare(ws), name="scripts-spare")


async def prepare(ws: Workspace) -> None:
    """Check out the published commit into a fresh spare folder, unless the spare already has it."""
    async with ws.lock:
        current = await asyncio.to_thread(ws.layout.current)
        commit = await asyncio.to_thread(ws.layout.recorded_commit, current) if current is not None else None
        if commit is None or (ws.spare is not None and ws.spare.commit == commit):
            return
        await discard(ws)
        path = ws.scratch("spare")
        try:
            await ws.git.run(["worktree", "add", "--detach", "--force", str(path), commit], git_dir=ws.repo,
                             env=UNFLUSHED)
        except GitError as exc:
            log.info("spare_not_made", error=str(exc))  # the next publication checks out as usual
            await _remove(ws, path)
            return
        ws.spare = Spare(path, commit)


async def take(ws: Workspace, dest: Path, commit: str) -> bool:
    """Move the spare to ``dest`` and check ``commit`` out there; False when there is no usable spare.

    The caller holds the publication lock and removes ``dest`` if this raises.
    """
    spare, ws.spare = ws.spare, None
    if spare is None:
        return False
    try:
        await ws.git.run(["worktree", "move", str(spare.path), str(dest)], git_dir=ws.repo, env=UNFLUSHED)
    except GitError as exc:
        log.info("spare_not_usable", error=str(exc))
        await _remove(ws, spare.path)
        return False
    if spare.commit != commit:
        # Only the files that differ between the two commits are written.
        await ws.git.run(["checkout", "--quiet", "--detach", "--force", commit], cwd=dest, env=UNFLUSHED)
    return True


async def discard(ws: Workspace) -> None:
    """Remove the spare (before a new one, or to free space). The caller holds the publication lock."""
    spare, ws.spare = ws.spare, None
    if spare is not None:
        await _remove(ws, spare.path)


async def _remove(ws: Workspace, path: Path) -> None:
    await asyncio.to_thread(remove_tree, path)
    await ws.git.run(["worktree", "prune"], git_dir=ws.repo, check=False)
