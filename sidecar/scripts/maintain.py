"""Keep the volume's history small: routine garbage collection, and freeing space after a full volume.

The bare repository only has to hold what the published revisions, the previous one and the
upstream ref need. Everything else (older fetched commits, throw-away merge commits, snapshot
objects) is dropped by ``git gc --prune=now`` every ``GC_EVERY`` publications, after the sync that
published, so it never delays a revision becoming visible. It runs under the publication lock:
pruning while a publication writes objects could drop objects it is about to use.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
from pathlib import Path

from sidecar.scripts import spare
from sidecar.scripts.git import GitError
from sidecar.scripts.layout import Layout, remove_tree
from sidecar.scripts.publish import cleanup
from sidecar.scripts.workspace import Workspace, log

GC_EVERY = 10  # publications between two garbage collections


def is_disk_full(exc: BaseException) -> bool:
    """Whether a failure says the volume is full."""
    if isinstance(exc, GitError):
        return exc.reason == "disk-full"
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _drop_scratch(layout: Layout) -> int:
    """Delete what a failed git call and the snapshots leave: temporary packs and objects, and
    the private snapshot indexes (they name objects a prune may drop; they are rebuilt)."""
    removed = 0
    objects = layout.repo / "objects"
    patterns = [(objects / "pack", "tmp_*"), (objects / "pack", "*.keep"), (objects, "incoming-*"),
                (layout.tmp, "index-*")]
    patterns += [(d, "tmp_obj_*") for d in objects.glob("??")]
    for folder, pattern in patterns:
        for path in folder.glob(pattern):
            if path.is_dir():
                remove_tree(path)
            else:
                path.unlink(missing_ok=True)
            removed += 1
    return removed


async def collect(ws: Workspace) -> None:
    """Drop unreachable objects and pack the rest (under the publication lock)."""
    async with ws.lock:
        await asyncio.to_thread(_drop_scratch, ws.layout)
        await ws.git.run(["worktree", "prune"], git_dir=ws.repo, check=False)
        await ws.git.run(["gc", "--quiet", "--prune=now"], git_dir=ws.repo)
    ws.publications_since_gc = 0


async def routine(ws: Workspace) -> None:
    """After a publication: collect garbage once every ``GC_EVERY`` publications."""
    ws.publications_since_gc += 1
    if ws.publications_since_gc < GC_EVERY:
        return
    try:
        await collect(ws)
    except (GitError, OSError) as exc:
        log.warning("gc_failed", error=str(exc))


async def free_space(ws: Workspace) -> None:
    """After a sync failed on a full volume: remove everything that is not needed, so the next
    sync can succeed once upstream is smaller again. The published tree is never touched."""
    async with ws.lock:
        dropped = await asyncio.to_thread(_drop_scratch, ws.layout)
        await spare.discard(ws)
        await cleanup(ws)
        await ws.settle()
        await ws.git.run(["worktree", "prune"], git_dir=ws.repo, check=False)
        # prune needs no new space (repack would): it only deletes unreachable loose objects.
        result = await ws.git.run(["prune", "--expire=now"], git_dir=ws.repo, check=False)
    log.warning("disk_full_cleaned", scratch_removed=dropped, prune_ok=result.returncode == 0,
                free_bytes=await asyncio.to_thread(_free_bytes, ws.layout.root))


ZLIB_HEADERS = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")


def _damaged(path: Path, magic: bytes | tuple[bytes, ...]) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError:
        return True
    return not head.startswith(magic)


def drop_damaged(layout: Layout) -> list[str]:
    """Delete what a power loss can leave of files git wrote without flushing (see ``UNFLUSHED``):
    empty or zero-filled loose objects, packs and refs. They only ever hold what the last fetch
    brought, which the next fetch brings again. Returns what was deleted. Blocking."""
    dropped: list[str] = []
    objects = layout.repo / "objects"
    for path in objects.glob("??/*"):
        if _damaged(path, ZLIB_HEADERS):
            dropped.append(str(path.relative_to(layout.repo)))
            path.unlink(missing_ok=True)
    for pack in objects.glob("pack/pack-*.pack"):
        idx = pack.with_suffix(".idx")
        if _damaged(pack, b"PACK") or _damaged(idx, b"\377tOc"):
            for part in pack.parent.glob(f"{pack.stem}.*"):
                dropped.append(str(part.relative_to(layout.repo)))
                part.unlink(missing_ok=True)
    for ref in (layout.repo / "refs").rglob("*"):
        if ref.is_file() and not re.fullmatch(rb"[0-9a-f]{40}\n?", ref.read_bytes()):
            dropped.append(str(ref.relative_to(layout.repo)))
            ref.unlink(missing_ok=True)
    return dropped


async def repair(ws: Workspace) -> bool:
    """After git found the repository damaged: drop the damaged files. Whether any were dropped."""
    async with ws.lock:
        dropped = await asyncio.to_thread(drop_damaged, ws.layout)
    if dropped:
        log.warning("repository_repaired", dropped=dropped[:20], count=len(dropped))
    return bool(dropped)


def _free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize
