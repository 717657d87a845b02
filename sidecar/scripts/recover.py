"""Start-up repair: find or restore a consistent published tree, adopt foreign trees, lose no edits.

Run before anything else touches the volume. After a crash at any instant it leaves:
the link pointing at one complete revision (or nothing published yet), every user edit in place,
and no partial revision folders or temp links.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sidecar.scripts import basefind, remote, report, trees
from sidecar.scripts.edits import edited_paths, seed_index
from sidecar.scripts.git import GitError
from sidecar.scripts.layout import Revision
from sidecar.scripts.publish import cleanup, discard_revision, head, worktree_add
from sidecar.scripts.workspace import Workspace, log


class SeedError(Exception):
    """Nothing could be published (and nothing was before)."""


async def ensure_repo(ws: Workspace) -> None:
    """Make sure the bare repository exists and is usable; set a broken one aside and start anew."""
    repo = ws.repo
    if await asyncio.to_thread((repo / "HEAD").exists):
        check = await ws.git.run(["rev-parse", "--git-dir"], git_dir=repo, check=False)
        objects_ok = await asyncio.to_thread((repo / "objects").is_dir)
        if check.returncode == 0 and objects_ok:
            return
        aside = repo.with_name(f"repo.git.broken-{time.time_ns()}")
        await asyncio.to_thread(repo.rename, aside)
        log.warning("repository_broken_set_aside", moved_to=str(aside))
    elif await asyncio.to_thread(repo.exists):
        aside = repo.with_name(f"repo.git.broken-{time.time_ns()}")
        await asyncio.to_thread(repo.rename, aside)
        log.warning("repository_broken_set_aside", moved_to=str(aside))
    await ws.git.run(["init", "--bare", "--quiet", str(repo)])


async def fallback_commit(ws: Workspace) -> str | None:
    """The fallback folder as a commit, or None when there is no usable fallback folder."""
    folder = ws.settings.fallback_dir
    if folder is None or not await asyncio.to_thread(folder.is_dir):
        return None
    await asyncio.to_thread(trees.check_dir_symlinks, folder)
    tree = await trees.import_dir(ws.git, ws.repo, folder, ws.scratch("index"))
    return await trees.commit(ws.git, ws.repo, tree, "fallback scripts")


async def _clone_head(ws: Workspace, folder: Path) -> str | None:
    """The commit of a plain clone (the old shell recipe), fetched into our repository; None if unusable."""
    if not await asyncio.to_thread((folder / ".git").exists):
        return None
    try:
        sha = await ws.git.out(["rev-parse", "HEAD"], cwd=folder)
        await ws.git.run(["fetch", "--no-tags", "--no-write-fetch-head", str(folder), f"+{sha}:refs/sidecar/adopted"],
                         git_dir=ws.repo)
        return sha
    except GitError as exc:
        log.warning("adopt_clone_unusable", folder=str(folder), error=str(exc))
        return None


async def _refetch(ws: Workspace, commit: str | None) -> str | None:
    """A known commit, fetched again when the repository lost it; None when impossible."""
    if commit is None:
        return None
    if await remote.has_commit(ws.git, ws.repo, commit):
        return commit
    if ws.settings.repo is None:
        return None
    try:
        return await remote.fetch(ws.git, ws.repo, ws.settings.repo, commit, commit, ws.settings.depth)
    except GitError as exc:
        log.warning("refetch_failed", commit=commit, error=str(exc))
        return None


async def _base_for(ws: Workspace, folder: Path, known_base: str | None) -> tuple[str, list[str]]:
    """The base commit of an adopted tree, and the base's files to add to it (see :func:`adopt`)."""
    base = await _refetch(ws, known_base)
    if base is not None:
        report.adopted(ws, basefind.Match(base, "the revision published before"))
        return base, []
    base = await _clone_head(ws, folder)
    if base is not None:
        report.adopted(ws, basefind.Match(base, "the folder's own clone"))
        return base, []
    match = await basefind.find_base(ws, folder)
    if match.commit is not None:
        report.adopted(ws, match)
        return match.commit, match.not_moved
    base = await fallback_commit(ws)
    fallback = "the fallback folder's files" if base is not None else "an empty base: every file counts as an edit"
    if base is None:
        base = await trees.commit(ws.git, ws.repo, trees.EMPTY_TREE, "empty base")
    report.adopted(ws, basefind.Match(None, f"{match.reason}; base: {fallback}"))
    return base, []


async def adopt(ws: Workspace, folder: Path, *, move_aside: bool, known_base: str | None = None) -> Revision:
    """Publish the files of ``folder`` as a revision whose base lets edits be recognised later.

    Base: ``known_base`` (the commit a broken revision was built from, fetched again), else the
    folder's own clone HEAD when it has a usable ``.git`` (its edits are exact), else the commit of
    the configured ref's history whose files match best (a copy without ``.git``, see basefind),
    else the fallback folder's tree (the node image's copy of the same scripts), else the empty
    tree (every file then counts as an edit, so an update conflicts instead of overwriting anything).
    """
    base, not_moved = await _base_for(ws, folder, known_base)
    # After the base: the blobs the base shares with the folder are in the repository by now,
    # so importing writes only what the person changed.
    files = await trees.import_dir(ws.git, ws.repo, folder, ws.scratch("index"))
    files = await basefind.restore(ws.git, ws.repo, files, base, not_moved, ws.scratch("index"))
    await trees.check_tree_symlinks(ws.git, ws.repo, files)  # a found tree is held to the same rule
    rev = ws.layout.new_revision("adopted", base)
    await worktree_add(ws, rev, base)
    try:
        # The checkout's own index (stat data) lets git write only the files the folder changed.
        index = ws.layout.index_of(rev)
        await asyncio.to_thread(seed_index, rev.path, index)
        await trees.apply_tree(ws.git, rev.path, await trees.tree_of(ws.git, ws.repo, base), files, index,
                               keep=True)
        await asyncio.to_thread(ws.layout.mark_complete, rev, base)
    except BaseException:
        await asyncio.shield(discard_revision(ws, rev))
        raise
    if move_aside:
        moved = await asyncio.to_thread(ws.layout.move_aside)
        log.info("adopted_tree_kept", moved_to=str(moved))
    await asyncio.to_thread(ws.layout.swap_link, rev)
    log.info("tree_adopted", folder=str(folder), revision=rev.name)
    return rev


async def _healthy(ws: Workspace, rev: Revision) -> bool:
    try:
        await head(ws, rev)
        await edited_paths(ws.git, rev.path)
    except GitError as exc:
        log.warning("revision_unreadable", folder=rev.name, error=str(exc))
        return False
    return True


async def recover(ws: Workspace) -> Revision | None:
    """Repair the volume after whatever happened before; return the published revision, if any."""
    async with ws.lock:
        return await _recover(ws)


async def _recover(ws: Workspace) -> Revision | None:
    layout = ws.layout
    await asyncio.to_thread(layout.prepare)
    await ensure_repo(ws)
    kind = await asyncio.to_thread(layout.link_kind)
    published = await asyncio.to_thread(layout.published)
    if kind == "other":
        if not published:  # nothing of ours was ever here: a wrong --link, not a replaced link
            raise SeedError(f"{layout.link} exists and is neither a folder nor a symlink")
        moved = await asyncio.to_thread(layout.displace)
        report.moved_aside(ws, "file", str(moved))
    if kind == "symlink" and not await asyncio.to_thread(layout.link_is_ours):
        moved = await asyncio.to_thread(layout.displace)  # a person's link is kept, not overwritten
        report.moved_aside(ws, f"symlink to {await asyncio.to_thread(moved.readlink)}", str(moved))
    if kind == "dir":
        if not await asyncio.to_thread(lambda: any(layout.link.iterdir())):
            await asyncio.to_thread(layout.link.rmdir)
        else:
            log.info("adopting_existing_tree", folder=str(layout.link))
            # A folder put where our link was: what it differs by from the last revision are edits.
            known = await asyncio.to_thread(layout.recorded_commit, published[0]) if published else None
            current: Revision | None = await adopt(ws, layout.link, move_aside=True, known_base=known)
            await cleanup(ws)
            return current
    current = await asyncio.to_thread(layout.current)
    if current is None and published:
        current = published[0]
        await asyncio.to_thread(layout.swap_link, current)
        log.warning("link_repaired", folder=current.name)
    if current is not None and not await _healthy(ws, current):
        # The revision's git data is gone or corrupt: its files are what counts. Start the
        # repository anew if it is the culprit, then adopt the files as they are.
        check = await ws.git.run(["fsck", "--connectivity-only", "--no-dangling"], git_dir=ws.repo, check=False)
        if check.returncode != 0:
            aside = ws.repo.with_name(f"repo.git.broken-{time.time_ns()}")
            await asyncio.to_thread(ws.repo.rename, aside)
            await ws.git.run(["init", "--bare", "--quiet", str(ws.repo)])
            log.warning("repository_broken_set_aside", moved_to=str(aside))
        known = await asyncio.to_thread(layout.recorded_commit, current)
        current = await adopt(ws, current.path, move_aside=False, known_base=known)
    if current is not None and not await asyncio.to_thread(layout.recorded_commit, current):
        # The link is only swapped to flushed files; a power loss may still have lost the marker.
        await asyncio.to_thread(layout.mark_complete, current, await head(ws, current))
        log.info("revision_marked_again", folder=current.name)
    # A crash between removing a revision folder and pruning leaves git's record of it behind.
    await ws.git.run(["worktree", "prune"], git_dir=ws.repo, check=False)
    await cleanup(ws)
    return current
