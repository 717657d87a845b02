"""Build a revision folder, carry local edits onto it, and publish it atomically.

A revision is checked out into a new worktree, local edits are merged into its files (3-way,
base = the current revision's commit) and loose files are linked across (loose.py), the folder
is flushed and marked complete, then the link is swapped with rename(). Readers see the old
tree or the new one, never a mix. Edits made while this runs are caught by looking again before
and after the swap.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from sidecar import progress
from sidecar.scripts import loose, report, spare, trees
from sidecar.scripts.edits import edited_paths, seed_index
from sidecar.scripts.git import UNFLUSHED, Git, GitError
from sidecar.scripts.layout import Revision, sync_filesystem
from sidecar.scripts.workspace import Workspace, log

Merge = Callable[[Git, Path, str, str, str], Awaitable[trees.MergeResult]]  # (git, repo, base, ours, theirs)
MAX_CATCH_UP = 3  # re-merges when edits keep arriving during one publication


@dataclass
class Outcome:
    """What a publication did: ``published``, ``held`` (policy hold) or ``conflict``."""

    result: str
    revision: Revision | None = None
    conflicts: list[str] = field(default_factory=list)
    edits: list[str] = field(default_factory=list)


async def head(ws: Workspace, rev: Revision) -> str:
    """The commit a revision was built from: its marker says so without a git call (git otherwise)."""
    recorded = await asyncio.to_thread(ws.layout.recorded_commit, rev)
    return recorded or await ws.git.out(["rev-parse", "HEAD"], cwd=rev.path)


async def worktree_add(ws: Workspace, rev: Revision, commit: str) -> None:
    """Check out ``commit`` into a new worktree (from the spare when there is one); on failure
    leave nothing behind."""
    try:
        if not await spare.take(ws, rev.path, commit):
            await ws.git.run(["worktree", "add", "--detach", "--force", str(rev.path), commit], git_dir=ws.repo,
                             env=UNFLUSHED)
        if ws.settings.submodules:
            await ws.git.run(["submodule", "update", "--init", "--recursive", "--depth=1"], cwd=rev.path,
                             remote=True)
    except BaseException:
        await asyncio.shield(discard_revision(ws, rev))
        raise


async def discard_revision(ws: Workspace, rev: Revision) -> None:
    """Remove a revision folder and its worktree bookkeeping."""
    await asyncio.to_thread(ws.layout.forget, rev)
    await ws.git.run(["worktree", "prune"], git_dir=ws.repo, check=False)


async def publish(ws: Workspace, commit: str, source: str, *, carry: bool = True,
                  known: tuple[Revision, str] | None = None, clean: bool = False,
                  gate: Awaitable[None] | None = None, merge: Merge = trees.merge3) -> Outcome:
    """Publish ``commit`` as the new revision, carrying local edits per the policy.

    ``known`` (a revision and its commit) saves a git call when the caller just read them;
    ``clean`` says the caller just found no edits in that revision. ``gate`` (the caller's symlink
    check of ``commit``, running meanwhile) must end without an error before the revision may be
    marked complete.
    ``commit``'s own tree must have passed the symlink check; what local edits add is checked here.
    ``merge`` replaces the 3-way merge of the edits (``resolve`` settles conflicts through it).
    """
    async with ws.lock:
        return await _publish(ws, commit, source, carry, known, clean, gate, merge)


async def _publish(ws: Workspace, commit: str, source: str, carry: bool,
                   known: tuple[Revision, str] | None, clean: bool, gate: Awaitable[None] | None,
                   merge: Merge) -> Outcome:
    policy = ws.settings.local_edits if carry else "discard"
    current = await asyncio.to_thread(ws.layout.current)
    keep_edits = current is not None and policy != "discard"
    reader: loose.Reader | None = None
    if current is not None and keep_edits:
        told = known is not None and known[0] == current
        current_head = known[1] if known is not None and told else await head(ws, current)
        theirs, base = await trees.trees_of(ws.git, ws.repo, commit, current_head)
        reader = loose.Reader(ws.git, ws.repo, base, theirs)
        if clean and told:
            ours = loose.Files(base)
        else:
            ours = await reader.files(current.path, base, ws.scratch("index"))
        if ours.edited(base) and policy == "hold":
            return Outcome("held", edits=await edited_paths(ws.git, current.path))
    else:
        theirs = await trees.tree_of(ws.git, ws.repo, commit)
        base = theirs
        ours = loose.Files(theirs)
    merged = await merge(ws.git, ws.repo, base, ours.tree, theirs)
    if merged.tree is None:
        return Outcome("conflict", conflicts=merged.conflicts)

    report_progress = progress.current()
    report_progress.working("checking out a revision")
    rev = ws.layout.new_revision(source, commit)
    await worktree_add(ws, rev, commit)
    index = ws.layout.index_of(rev)
    flushing: asyncio.Future[None] | None = None
    try:
        files = theirs
        if ws.settings.submodules:  # their files are only known once checked out
            await asyncio.to_thread(trees.check_dir_symlinks, rev.path)
        await asyncio.to_thread(seed_index, rev.path, index)
        if merged.tree != theirs:
            report_progress.working("carrying local edits")
            await trees.apply_tree(ws.git, rev.path, files, merged.tree, index, keep=True)
            files = merged.tree
        carried: dict[str, loose.Inode] = {}
        if current is not None and ours.loose:
            carried = await asyncio.to_thread(loose.relink, current.path, rev.path, ours.loose, {})
        # The flush runs while the edits that arrived meanwhile are looked for; it is repeated
        # when some were carried, before the marker says the revision is whole.
        flushing = asyncio.ensure_future(asyncio.to_thread(sync_filesystem, rev.path))
        late = False
        for _ in range(MAX_CATCH_UP if keep_edits else 0):
            assert current is not None and reader is not None
            again = await reader.files(current.path, base, ws.scratch("index"))
            if again.tree == ours.tree and again.loose == carried:
                break
            late = True
            if again.tree != ours.tree:
                caught = await trees.merge3(ws.git, ws.repo, ours.tree, files, again.tree)
                if caught.tree is None:
                    await _discard_after(flushing, ws, rev)
                    return Outcome("conflict", conflicts=caught.conflicts)
                await trees.apply_tree(ws.git, rev.path, files, caught.tree, index, keep=True)
                files = caught.tree
            carried = await asyncio.to_thread(loose.relink, current.path, rev.path, again.loose, carried)
            ours = again
        # Every symlink must stay inside: upstream's tree was checked before it was fetched in
        # (git) or imported (fallback); local edits carried over may add links of their own.
        # Loose files are regular files by construction.
        report_progress.working("checking and flushing the revision")
        if files != theirs:
            await trees.check_tree_symlinks(ws.git, ws.repo, files)
        if gate is not None:
            await gate
        await flushing
        if late:
            await asyncio.to_thread(sync_filesystem, rev.path)
        await asyncio.to_thread(ws.layout.mark_complete, rev, commit, flushed=True)
    except BaseException:
        await asyncio.shield(_discard_after(flushing, ws, rev))
        raise
    await asyncio.to_thread(ws.layout.swap_link, rev)
    log.info("revision_published", revision=commit, source=source, folder=rev.name)

    # The new revision is live from here on: nothing below may turn it into a failed sync.
    report_progress.working("carrying late edits and cleaning up")
    edits: list[str] = []
    uncarried: list[str] = []
    try:
        if current is not None and reader is not None:
            # Shielded: a stop request must not cut the carry of late edits in half.
            uncarried = await asyncio.shield(_carry_after_swap(ws, reader, current, rev, ours, carried))
        await cleanup(ws)
        # A first publication carries nothing: its edits are none, no need to ask git.
        edits = await edited_paths(ws.git, rev.path) if current is not None else []
    except (GitError, OSError) as exc:
        log.warning("after_publish_step_failed", error=str(exc))
    return Outcome("published", rev, conflicts=uncarried, edits=edits)


async def _discard_after(flushing: asyncio.Future[None] | None, ws: Workspace, rev: Revision) -> None:
    """Discard a revision being built, once a flush of it has ended (its thread reads the folder)."""
    if flushing is not None:
        with contextlib.suppress(OSError):
            await flushing
    await discard_revision(ws, rev)


async def _carry_after_swap(ws: Workspace, reader: loose.Reader, old: Revision, new: Revision,
                            carried: loose.Files, linked: dict[str, loose.Inode]) -> list[str]:
    """A writer that opened a file through the old link may still have written to the old tree.

    ``carried`` is what the old tree held when the new one was built, ``linked`` its loose files
    as linked. Returns the files of late edits that conflict;
    their folder is then kept until a person acts.
    """
    try:
        now = await reader.files(old.path, reader.trees[0], ws.scratch("index"))
        if now.tree == carried.tree and now.loose == linked:
            return []
        index = ws.layout.index_of(new)
        new_now = await reader.files(new.path, reader.trees[1], index, keep=True)
        conflicts: list[str] = []
        if now.tree != carried.tree:
            late = await trees.merge3(ws.git, ws.repo, carried.tree, new_now.tree, now.tree)
            if late.tree is None:
                conflicts = late.conflicts
            else:
                await trees.apply_tree(ws.git, new.path, new_now.tree, late.tree, index, keep=True)
        want, both = loose.merge_links(linked, now.loose, new_now.loose)
        conflicts = sorted({*conflicts, *both})
        await asyncio.to_thread(loose.relink, old.path, new.path, want, new_now.loose)
        if conflicts:
            await asyncio.to_thread(ws.layout.keep, old)
            log.warning("late_edits_conflict", folder=str(old.path), files=conflicts)
            return conflicts
        log.info("late_edits_carried", folder=old.name)
    except (GitError, OSError) as exc:
        await asyncio.to_thread(ws.layout.keep, old)  # unknown: keep the folder rather than guess
        log.warning("late_edits_check_failed", folder=str(old.path), error=str(exc))
    return []


async def cleanup(ws: Workspace) -> None:
    """Keep the current and the previous complete revision; retire every other folder.

    Retiring is a rename; the files are deleted by a background sweep, so a sync's time does not
    grow with the size of the trees it leaves behind. What cannot be retired or deleted is
    reported (``/status`` and a metric), never only swallowed.
    """
    layout = ws.layout
    current = await asyncio.to_thread(layout.current)
    published = await asyncio.to_thread(layout.published)
    keep = {r.name for r in published if current is None or r.name != current.name}
    previous = sorted((r for r in published if r.name in keep), key=lambda r: r.stamp, reverse=True)[:1]
    keep = {r.name for r in previous} | await asyncio.to_thread(layout.kept)
    if current is not None:
        keep.add(current.name)
    removed = False
    failures: list[str] = []
    for rev in await asyncio.to_thread(layout.all_revisions):
        if rev.name not in keep:
            try:
                await asyncio.to_thread(layout.retire, rev)
                removed = True
            except OSError as exc:
                failures.append(f"{rev.name}: {exc.strerror or exc}")
    for marker in await asyncio.to_thread(layout.stray_markers):
        await asyncio.to_thread(marker.unlink, True)
    if removed:
        await ws.git.run(["worktree", "prune"], git_dir=ws.repo, check=False)
    report.cleanup_done(ws, failures, sweep=False)
    if removed:
        ws.sweep(functools.partial(report.cleanup_done, sweep=True))
