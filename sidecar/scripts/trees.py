"""Tree-level git plumbing: import a folder, 3-way merge of trees, apply a tree change to files.

Everything here works on object ids in the bare repository and never touches a worktree's index,
because a worktree's index defines what "unedited" means for local edits.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sidecar.scripts.edits import discard_index
from sidecar.scripts.git import LISTING_CAP, Git, GitError

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
                           git_dir=repo, check=False, cap=LISTING_CAP)
    lines = result.stdout.decode(errors="surrogateescape").splitlines()
    if result.returncode == 0 and lines:
        return MergeResult(lines[0].strip(), [])
    if result.returncode == 1 and lines:
        return MergeResult(None, sorted({line for line in lines[1:] if line.strip()}))
    raise GitError(f"merge-tree failed ({result.returncode}): {result.stderr.decode(errors='replace')[-300:]}")


async def apply_tree(git: Git, worktree: Path, old: str, new: str, index_file: Path, *, keep: bool = False) -> None:
    """Change the worktree's files from tree ``old`` to tree ``new``; its own index stays as it is.

    Requires the files to be exactly ``old`` now (true right after a checkout or a snapshot).
    ``index_file``, when it exists, is an index of those files with their stat data (a copy of
    the checkout's own index, or a snapshot's): then only the files that differ are written.
    Without one, or when git finds it stale, every file is written anew. ``keep`` leaves the
    index (now describing ``new``) for the next operation on the same files.
    """
    env = {"GIT_INDEX_FILE": str(index_file)}
    done = False
    try:
        if old != new:
            if await asyncio.to_thread(index_file.exists):
                result = await git.run(["read-tree", "-m", "-u", old, new], cwd=worktree, env=env, check=False)
                done = result.returncode == 0
            if not done:
                await git.run(["read-tree", old], cwd=worktree, env=env)
                # --reset: this index has no stat data, so a plain -m would call every file "not up
                # to date"; the caller guarantees the files are exactly ``old``.
                await git.run(["read-tree", "--reset", "-u", new], cwd=worktree, env=env)
        done = True
    finally:
        if not keep or not done:
            await asyncio.to_thread(discard_index, index_file)


MAX_LINK_HOPS = 40  # as the kernel's ELOOP limit: a longer chain is refused, not followed


@dataclass(frozen=True)
class Entry:
    """One name in a tree's namespace: a ``dir``, a ``file`` or a ``link`` (with its target)."""

    kind: str
    target: str = ""


Lookup = Callable[[tuple[str, ...]], "Entry | None"]


def escapes(lookup: Lookup, link: tuple[str, ...]) -> str | None:
    """Why the symlink at ``link`` resolves outside the tree, or None when it stays inside.

    Resolution works like the kernel's, but inside the tree's own namespace: each component is
    looked up, links met on the way are followed (chains, and ``..`` after a link, which climbs
    from where the link points, not from where it is written). ``lookup`` gets a path of real
    folders plus one last name and returns what that name is (None: it does not exist). Past a
    missing name or a file the rest is taken as written: a dangling link that would climb out
    once something appears is refused as well.
    """
    pending: list[str] = []  # components still to resolve, the next one last

    def push(target: str) -> bool:
        if target.startswith("/"):
            return False
        pending.extend(reversed([c for c in target.split("/") if c not in ("", ".")]))
        return True

    entry = lookup(link)
    if entry is None or entry.kind != "link":
        return None
    if not push(entry.target):
        return f"absolute target {entry.target!r}"
    stack: list[str] = list(link[:-1])
    real = len(stack)  # how many folders at the bottom of ``stack`` exist as real folders
    hops = 1
    while pending:
        name = pending.pop()
        if name == "..":
            if not stack:
                return f"climbs above the tree ({entry.target!r})"
            stack.pop()
            real = min(real, len(stack))
            continue
        found = lookup((*stack, name)) if real == len(stack) else None
        if found is not None and found.kind == "link":
            hops += 1
            if hops > MAX_LINK_HOPS:
                return f"more than {MAX_LINK_HOPS} links in a chain"
            if not push(found.target):
                return f"reaches an absolute target {found.target!r} through {'/'.join((*stack, name))!r}"
            continue
        if found is not None and found.kind == "dir" and real == len(stack):
            real += 1
        stack.append(name)
    return None


async def tree_entries(git: Git, repo: Path, rev: str) -> dict[tuple[str, ...], Entry]:
    """Every name in a tree (folders included), with the targets of its symlinks; no checkout."""
    listing = await git.run(["ls-tree", "-r", "-t", "-z", "--full-tree", rev], git_dir=repo, cap=LISTING_CAP)
    entries: dict[tuple[str, ...], Entry] = {}
    links: list[tuple[str, tuple[str, ...]]] = []
    for raw in listing.stdout.split(b"\0"):
        if not raw:
            continue
        meta, _, raw_path = raw.partition(b"\t")
        mode, _, oid = meta.decode().split(" ")
        path = tuple(raw_path.decode(errors="surrogateescape").split("/"))
        if mode == "120000":
            links.append((oid, path))
        # A submodule (160000) is a folder whose files are only known once it is checked out.
        entries[path] = Entry("dir" if mode in ("040000", "160000") else "file")
    if links:
        batch = await git.run(["cat-file", "--batch"], git_dir=repo, cap=LISTING_CAP,
                              stdin=b"".join(oid.encode() + b"\n" for oid, _ in links))
        data = batch.stdout
        for _, path in links:
            header, _, data = data.partition(b"\n")
            size = int(header.split()[2])
            entries[path] = Entry("link", data[:size].decode(errors="surrogateescape"))
            data = data[size + 1 :]
    return entries


def check_entries(entries: dict[tuple[str, ...], Entry]) -> None:
    """Raise UnsafeTree for the first symlink that resolves outside the tree."""
    for path in sorted(p for p, e in entries.items() if e.kind == "link"):
        why = escapes(entries.get, path)
        if why is not None:
            raise UnsafeTree(f"symlink {'/'.join(path)!r} points outside the tree: {why}")


async def check_tree_symlinks(git: Git, repo: Path, rev: str) -> None:
    """Refuse a commit or tree with a symlink that resolves outside it, from the listing alone."""
    check_entries(await tree_entries(git, repo, rev))


def _disk_lookup(root: Path) -> Lookup:
    def lookup(path: tuple[str, ...]) -> Entry | None:
        # Every component but the last is a real folder already resolved, so lstat never
        # follows a link out of the tree.
        full = root.joinpath(*path)
        try:
            mode = full.lstat().st_mode
        except OSError:
            return None
        if stat.S_ISLNK(mode):
            return Entry("link", os.readlink(full))
        return Entry("dir" if stat.S_ISDIR(mode) else "file")

    return lookup


def check_dir_symlinks(folder: Path) -> None:
    """The same rule for a folder on disk (a checkout with submodules). Blocking: run in a thread."""
    lookup = _disk_lookup(folder)
    for dirpath, dirnames, filenames in os.walk(folder):
        if ".git" in dirnames:
            dirnames.remove(".git")
        rel = Path(dirpath).relative_to(folder).parts
        for name in sorted(dirnames + filenames):
            if (Path(dirpath) / name).is_symlink():
                why = escapes(lookup, (*rel, name))
                if why is not None:
                    raise UnsafeTree(f"symlink {'/'.join((*rel, name))!r} points outside the tree: {why}")
