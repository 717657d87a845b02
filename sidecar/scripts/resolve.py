"""Settle a held conflict without hand-merging: take upstream's file or keep the person's, then publish.

``upstream``: the file becomes upstream's; the person's copy is kept under the root first
(``<root>/resolved-<ns>/<path>``). ``mine``: the person's whole file stays; upstream's change to it
is dropped. Every other file merges as in any sync, and the upstream commit is published at once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sidecar.events import ConflictResolved
from sidecar.scripts import remote, report, trees
from sidecar.scripts.edits import snapshot
from sidecar.scripts.git import Git
from sidecar.scripts.publish import head, publish
from sidecar.scripts.workspace import Workspace, log

TAKES = ("upstream", "mine")


class NotResolvable(Exception):
    """Nothing to settle, or the choice does not settle it (the message says why)."""


async def _entries(git: Git, repo: Path, tree: str) -> dict[str, tuple[str, str]]:
    """``path -> (mode, object id)`` of every entry of a tree, recursively."""
    out = await git.run(["ls-tree", "-r", "-z", "--full-tree", tree], git_dir=repo)
    entries: dict[str, tuple[str, str]] = {}
    for entry in out.stdout.split(b"\0"):
        meta, tab, raw = entry.partition(b"\t")
        if tab:
            mode, _, oid = meta.decode().split(" ")
            entries[raw.decode(errors="surrogateescape")] = (mode, oid)
    return entries


def _under(path: str, chosen: Sequence[str]) -> bool:
    return any(path == p or path.startswith(p + "/") for p in chosen)


async def _replace(ws: Workspace, tree: str, source: str, chosen: Sequence[str]) -> str:
    """``tree`` with the chosen paths (files or folders) as ``source`` has them (absent there: removed)."""
    git, repo = ws.git, ws.repo
    entries = {p: e for p, e in (await _entries(git, repo, tree)).items() if not _under(p, chosen)}
    entries.update({p: e for p, e in (await _entries(git, repo, source)).items() if _under(p, chosen)})
    index = ws.scratch("index")
    env = {"GIT_INDEX_FILE": str(index)}
    info = b"".join(f"{mode} {oid}\t".encode() + p.encode(errors="surrogateescape") + b"\0"
                    for p, (mode, oid) in entries.items())
    try:
        await git.run(["read-tree", "--empty"], git_dir=repo, env=env)
        await git.run(["update-index", "-z", "--index-info"], git_dir=repo, env=env, stdin=info)
        return await git.out(["write-tree"], git_dir=repo, env=env)
    finally:
        index.unlink(missing_ok=True)


def _keep_copies(worktree: Path, dest: Path, chosen: Sequence[str]) -> list[str]:
    """Copy the person's files among ``chosen`` out of the tree. Blocking: run in a thread."""
    kept = []
    inside = os.path.realpath(worktree)
    for rel in chosen:
        src = worktree / rel
        if not src.exists() and not src.is_symlink():
            continue
        if not os.path.realpath(src.parent).startswith(inside + os.sep) and src.parent != worktree:
            continue  # reached through a link that leaves the tree: not the person's file to keep
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir() and not src.is_symlink():
            shutil.copytree(src, target, symlinks=True)
        else:
            shutil.copy2(src, target, follow_symlinks=False)
        kept.append(rel)
    return kept


def _checked(paths: Sequence[str]) -> list[str]:
    """Paths as the tree names them; anything that would leave the tree is refused."""
    out = []
    for raw in paths:
        rel = raw.strip().strip("/")
        parts = rel.split("/")
        if not rel or "\0" in rel or any(part in ("", ".", "..", ".git") for part in parts):
            raise NotResolvable(f"not a path inside the tree: {raw!r}")
        out.append(rel)
    return out


async def _upstream(ws: Workspace) -> str:
    """The commit the conflict holds back (fetched anew when this process does not know it)."""
    held = ws.state.scripts.held_upstream
    if held is not None and await remote.has_commit(ws.git, ws.repo, held):
        return held
    settings = ws.settings
    assert settings.repo is not None
    sha = await remote.resolve(ws.git, settings.repo, settings.ref)
    return await remote.fetch(ws.git, ws.repo, settings.repo, settings.ref, sha, settings.depth)


async def resolve(ws: Workspace, take: str, paths: Sequence[str]) -> dict[str, Any]:
    """Settle the conflict with upstream as ``take`` says for ``paths`` (all conflicting files when empty)."""
    if take not in TAKES:
        raise NotResolvable(f"--take must be one of {', '.join(TAKES)}, not {take!r}")
    if ws.settings.repo is None:
        raise NotResolvable("no repository is configured: there is no upstream to conflict with")
    if ws.settings.local_edits != "carry":
        raise NotResolvable(f"conflicts arise only with --local-edits carry (this sidecar uses "
                            f"{ws.settings.local_edits})")
    chosen = _checked(paths)
    current = await asyncio.to_thread(ws.layout.current)
    if current is None:
        raise NotResolvable("no tree is published")
    commit = await _upstream(ws)
    current_head = await head(ws, current)
    theirs, base = await trees.trees_of(ws.git, ws.repo, commit, current_head)
    ours = await snapshot(ws.git, current.path, ws.scratch("index"))
    plain = await trees.merge3(ws.git, ws.repo, base, ours, theirs)
    if plain.tree is not None and not chosen:
        raise NotResolvable(f"nothing conflicts with upstream {commit[:12]}: the next sync carries the edits")
    chosen = chosen or plain.conflicts

    async def merge(git: Git, repo: Path, base: str, ours: str, theirs: str) -> trees.MergeResult:
        if take == "upstream":
            ours = await _replace(ws, ours, theirs, chosen)
        else:
            theirs = await _replace(ws, theirs, ours, chosen)
        return await trees.merge3(git, repo, base, ours, theirs)

    trial = await merge(ws.git, ws.repo, base, ours, theirs)
    if trial.tree is None:
        raise NotResolvable(f"still conflicting after taking {take} for {', '.join(chosen)}: "
                            f"{', '.join(trial.conflicts)}")
    kept: list[str] = []
    kept_in: Path | None = None
    if take == "upstream":
        kept_in = ws.layout.root / f"resolved-{time.time_ns()}"
        kept = await asyncio.to_thread(_keep_copies, current.path, kept_in, chosen)
    outcome = await publish(ws, commit, "git", known=(current, current_head), merge=merge)
    if outcome.result != "published" or outcome.revision is None:
        raise NotResolvable(f"the publication did not go through ({outcome.result}: "
                            f"{', '.join(outcome.conflicts)}); edits kept as they are")
    report.published(ws, outcome.revision, commit, outcome.edits, seeded=False)
    result: dict[str, Any] = {"take": take, "paths": chosen, "upstream": commit,
                              "kept_in": str(kept_in) if kept else None, "kept": kept}
    log.info("conflict_resolved", **result)
    ws.state.bus.publish(ConflictResolved(
        message=f"conflict with upstream {commit[:12]} settled by taking {take} for {', '.join(chosen[:10])}"
                + (f"; the local copies are kept in {kept_in}" if kept else ""),
        take=take, files=tuple(chosen), upstream=commit, kept_in=str(kept_in) if kept else None))
    return result
