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
import os
from pathlib import Path

from sidecar.scripts.git import LISTING_CAP, UNFLUSHED, GitError
from sidecar.scripts.layout import Spare, remove_tree, sync_filesystem
from sidecar.scripts.workspace import Workspace, log


def keep_ready(ws: Workspace) -> None:
    """Make sure a spare of the published commit is being made or is ready (background task)."""
    if ws.settings.submodules or (ws.spare_task is not None and not ws.spare_task.done()):
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
            # Flushed now, while idle: a publication from it then flushes only what it changes.
            await asyncio.to_thread(sync_filesystem, path)
        except (GitError, OSError) as exc:
            log.info("spare_not_made", error=str(exc))  # the next publication checks out as usual
            await _remove(ws, path)
            return
        ws.spare = Spare(path, commit)


async def take(ws: Workspace, dest: Path, commit: str) -> list[str] | None:
    """Move the spare to ``dest`` and check ``commit`` out there; None when there is no usable spare.

    Returns every path (file or folder) that changed since the spare was flushed, git's own
    bookkeeping of the worktree included: flushing those makes the revision durable.
    The caller holds the publication lock and removes ``dest`` if this raises.
    """
    spare, ws.spare = ws.spare, None
    if spare is None:
        return None
    try:
        await ws.git.run(["worktree", "move", str(spare.path), str(dest)], git_dir=ws.repo, env=UNFLUSHED)
    except GitError as exc:
        log.info("spare_not_usable", error=str(exc))
        await _remove(ws, spare.path)
        return None
    changed: list[str] = []
    if spare.commit != commit:
        # Only the files that differ between the two commits are written; which ones is listed
        # meanwhile.
        listing = asyncio.ensure_future(ws.git.run(
            ["diff-tree", "-r", "-z", "--name-only", "--no-renames", spare.commit, commit], git_dir=ws.repo,
            cap=LISTING_CAP))
        try:
            await ws.git.run(["checkout", "--quiet", "--detach", "--force", commit], cwd=dest, env=UNFLUSHED)
        finally:
            changed = [p.decode(errors="surrogateescape") for p in (await listing).stdout.split(b"\0") if p]
    return await asyncio.to_thread(touched, dest, spare.path.parent, changed)


def touched(dest: Path, came_from: Path, changed: list[str]) -> list[str]:
    """What a move from ``came_from`` and a checkout of ``changed`` paths wrote: those paths that
    exist, every folder above them, both parent folders of the move, and the worktree's git files
    (its ``.git`` file, and its folder in the repository with its HEAD, index and gitdir). Blocking."""
    paths = {os.fspath(dest), os.fspath(dest.parent), os.fspath(came_from), os.fspath(dest / ".git")}
    for rel in changed:
        parts = rel.split("/")
        for depth in range(1, len(parts) + 1):
            paths.add(os.path.join(dest, *parts[:depth]))
    pointer = (dest / ".git").read_text().strip()
    if pointer.startswith("gitdir:"):
        admin = Path(pointer[7:].strip())
        paths.update(os.fspath(admin / name) for name in ("", "HEAD", "index", "gitdir"))
    return sorted(p.rstrip("/") for p in paths if os.path.lexists(p))


async def discard(ws: Workspace) -> None:
    """Remove the spare (before a new one, or to free space). The caller holds the publication lock."""
    spare, ws.spare = ws.spare, None
    if spare is not None:
        await _remove(ws, spare.path)


async def _remove(ws: Workspace, path: Path) -> None:
    await asyncio.to_thread(remove_tree, path)
    await ws.git.run(["worktree", "prune"], git_dir=ws.repo, check=False)
