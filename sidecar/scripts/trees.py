"""Tree-level git plumbing: import a folder, 3-way merge of trees, apply a tree change to files.

Everything here works on object ids in the bare repository and never touches a worktree's index,
because a worktree's index defines what "unedited" means for local edits.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from sidecar.scripts.git import Git, GitError

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


class UnsafeTree(Exception):
    """A tree contains a symlink that points outside it."""


@dataclass(frozen=True)
class MergeResult:
    """A 3-way merge: the merged tree, or the conflicting paths."""

    tree: str | None
    conflicts: list[str]


async def commit(git: Git, repo: Path, tree: str, message: str, parents: tuple[str, ...] = ()) -> str:
    """Make a commit object for ``tree`` (no ref points at it)."""
    args = ["commit-tree", tree, "-m", message]
    for parent in parents:
        args += ["-p", parent]
    return await git.out(args, git_dir=repo)


async def tree_of(git: Git, repo: Path, rev: str) -> str:
    """The tree id of a commit."""
    return (await trees_of(git, repo, rev))[0]


async def trees_of(git: Git, repo: Path, *revs: str) -> list[str]:
    """The tree ids of several commits, in one git call."""
    out = await git.out(["rev-parse", *(f"{rev}^{{tree}}" for rev in revs)], git_dir=repo)
    return out.split()


async def import_dir(git: Git, repo: Path, folder: Path, index_file: Path) -> str:
    """Store a plain folder's files (all of them, .gitignore'd ones too; never .git) as a tree."""
    env = {"GIT_INDEX_FILE": str(index_file), "GIT_WORK_TREE": str(folder)}
    try:
        await git.run(["add", "--all", "--force", "--", "."], git_dir=repo, cwd=folder, env=env)
        return await git.out(["write-tree"], git_dir=repo, cwd=folder, env=env)
    finally:
        index_file.unlink(missing_ok=True)  # noqa: ASYNC240 - one metadata unlink


async def merge3(git: Git, repo: Path, base: str, ours: str, theirs: str) -> MergeResult:
    """3-way merge of trees. ``ours`` keeps local edits; ``theirs`` is the new upstream tree.

    git 2.39 has no ``merge-tree --merge-base``, so the base is given through history: two
    throw-away commits whose only parent is a commit of ``base``.
    """
    if ours == base:
        return MergeResult(theirs, [])
    if theirs == base or ours == theirs:
        return MergeResult(ours, [])
    base_c = await commit(git, repo, base, "base")
    ours_c = await commit(git, repo, ours, "local edits", (base_c,))
    theirs_c = await commit(git, repo, theirs, "upstream", (base_c,))
    result = await git.run(["merge-tree", "--write-tree", "--name-only", "--no-messages", ours_c, theirs_c],
                           git_dir=repo, check=False)
    lines = result.stdout.decode(errors="surrogateescape").splitlines()
    if result.returncode == 0 and lines:
        return MergeResult(lines[0].strip(), [])
    if result.returncode == 1 and lines:
        return MergeResult(None, sorted({line for line in lines[1:] if line.strip()}))
    raise GitError(f"merge-tree failed ({result.returncode}): {result.stderr.decode(errors='replace')[-300:]}")


async def apply_tree(git: Git, worktree: Path, old: str, new: str, index_file: Path) -> None:
    """Change the worktree's files from tree ``old`` to tree ``new``; its own index stays as it is.

    Requires the files to be exactly ``old`` now (true right after a checkout or a snapshot).
    """
    if old == new:
        return
    env = {"GIT_INDEX_FILE": str(index_file)}
    try:
        await git.run(["read-tree", old], cwd=worktree, env=env)
        # --reset: the private index has no stat data, so a plain -m would call every file "not
        # up to date"; the caller guarantees the files are exactly ``old``.
        await git.run(["read-tree", "--reset", "-u", new], cwd=worktree, env=env)
    finally:
        index_file.unlink(missing_ok=True)  # noqa: ASYNC240 - one metadata unlink


def _escapes(path: str, target: str) -> bool:
    if target.startswith("/"):
        return True
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    return joined == ".." or joined.startswith("../")


async def check_tree_symlinks(git: Git, repo: Path, rev: str) -> None:
    """Refuse a revision with a symlink pointing outside its own tree (absolute or via ``..``)."""
    listing = await git.run(["ls-tree", "-r", "-z", "--full-tree", rev], git_dir=repo)
    links: list[tuple[str, str]] = []
    for entry in listing.stdout.split(b"\0"):
        if entry.startswith(b"120000 "):
            meta, _, raw_path = entry.partition(b"\t")
            links.append((meta.split()[2].decode(), raw_path.decode(errors="surrogateescape")))
    if not links:
        return
    batch = await git.run(["cat-file", "--batch"], git_dir=repo,
                          stdin=b"".join(oid.encode() + b"\n" for oid, _ in links))
    data = batch.stdout
    for _, path in links:
        header, _, data = data.partition(b"\n")
        size = int(header.split()[2])
        target = data[:size].decode(errors="surrogateescape")
        data = data[size + 1 :]
        if _escapes(path, target):
            raise UnsafeTree(f"symlink {path!r} points outside the tree ({target!r})")


def check_dir_symlinks(folder: Path) -> None:
    """The same rule for a plain folder (the fallback). Blocking: run in a thread."""
    for dirpath, dirnames, filenames in os.walk(folder):
        if ".git" in dirnames:
            dirnames.remove(".git")
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            if full.is_symlink():
                rel = full.relative_to(folder).as_posix()
                target = str(full.readlink())
                if _escapes(rel, target):
                    raise UnsafeTree(f"symlink {rel!r} points outside the tree ({target!r})")
