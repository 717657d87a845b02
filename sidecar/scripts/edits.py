"""Local edits: what a user changed, added or deleted in a published revision, as git sees it.

Every published revision is a git worktree whose HEAD is the revision it was built from, so the
edits are exactly ``git status`` of that worktree, ignored files included (they are data too).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

from sidecar.scripts.git import LISTING_CAP, Git

# A snapshot's objects only live for the publication that makes it: the files stay the truth,
# so they are not flushed one by one (that fsync was most of the cost of carrying many files).
# Every file over one byte is streamed into one pack per ``git add`` instead of a loose object
# file each: 20,000 added files cost one pack, not 20,000 file creations (10 s against 3 s
# measured). Only the snapshot's own calls see this; merges still treat the files as text.
SNAPSHOT_CONFIG = {"GIT_CONFIG_PARAMETERS": "'core.fsync'='none' 'core.bigFileThreshold'='1'"}

STATUS_ARGS = ("status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored=matching", "--no-renames")


def split_status(out: bytes) -> tuple[list[str], list[str]]:
    """``git status --porcelain=v1 -z`` output as (changed tracked paths, untracked and ignored paths)."""
    tracked: list[str] = []
    untracked: list[str] = []
    for entry in out.split(b"\0"):
        if len(entry) > 3:
            path = entry[3:].decode("utf-8", errors="surrogateescape")
            (untracked if entry[:2] in (b"??", b"!!") else tracked).append(path)
    return tracked, untracked


def parse_status(out: bytes) -> list[str]:
    """Every path from ``git status --porcelain=v1 -z`` output, sorted."""
    tracked, untracked = split_status(out)
    return sorted({*tracked, *untracked})


async def edited_paths(git: Git, worktree: Path, paths: Sequence[str] | None = None) -> list[str]:
    """Paths (relative to the tree) that differ from the revision; only among ``paths`` when given.

    Passing the paths of a watcher batch keeps the cost proportional to the batch, not the tree.
    """
    args = [*STATUS_ARGS]
    if paths is not None:
        if not paths:
            return []
        args += ["--", *(f":(literal){p}" for p in paths)]
    result = await git.run(args, cwd=worktree, cap=LISTING_CAP)
    return parse_status(result.stdout)


def seed_index(worktree: Path, dest: Path) -> bool:
    """Copy the worktree's own index to ``dest`` (its stat data lets git skip clean files)."""
    try:
        pointer = (worktree / ".git").read_text().strip()
        if not pointer.startswith("gitdir:"):
            return False
        shutil.copyfile(Path(pointer[7:].strip()) / "index", dest)
    except OSError:
        return False
    return True


async def snapshot(git: Git, worktree: Path, index_file: Path) -> str:
    """The tree id of the worktree as it is now (every file, ignored ones too), without touching it.

    ``index_file`` is the worktree's private snapshot index, kept from one snapshot to the next:
    its stat data lets git hash only the files changed since, so a tree with many added files
    costs a ``stat`` per file, not a hash. The worktree's own index, which defines "unedited",
    stays as it is.
    """
    return await index_tree(git, worktree, index_file, ["--", "."], SNAPSHOT_CONFIG,
                            fresh=not await asyncio.to_thread(index_file.exists))


async def index_tree(git: Git, worktree: Path, index_file: Path, add: Sequence[str], env: Mapping[str, str],
                     *, stdin: bytes | None = None, fresh: bool) -> str:
    """``git add --all --force ADD`` into the private index ``index_file``, then its tree id.

    ``fresh`` starts the index anew from the worktree's own (whose stat data lets git hash only
    what changed), else from HEAD. A failed call discards the index: never trust a half-done one.
    """
    env = {"GIT_INDEX_FILE": str(index_file), **env}
    try:
        if fresh and not await asyncio.to_thread(seed_index, worktree, index_file):
            await git.run(["read-tree", "HEAD"], cwd=worktree, env=env)
        await git.run(["add", "--all", "--force", *add], cwd=worktree, env=env, stdin=stdin)
        return await git.out(["write-tree"], cwd=worktree, env=env)
    except BaseException:
        await asyncio.to_thread(discard_index, index_file)
        raise


def discard_index(index_file: Path) -> None:
    """Remove a private index and the lock a killed git call may have left beside it."""
    index_file.unlink(missing_ok=True)
    index_file.with_name(index_file.name + ".lock").unlink(missing_ok=True)
