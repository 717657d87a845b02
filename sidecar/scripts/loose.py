"""Loose files: files a user added that no upstream tree names, carried by hard link outside git.

Most local files are of this kind (data, logs, scripts of one's own). Nothing upstream can
conflict with them, so they need no merge, and hashing them into git objects at every sync was
most of the cost of carrying many files. A publication lists them (``git status``), links each
into the new revision (no data copied: both revisions share the file, which is what carrying
means) and compares inode numbers to see what changed while it ran.

Everything else a user changed (edits of upstream's files, added symlinks, added files where an
upstream tree has a file or a folder) is snapshotted into a git tree and merged as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sidecar.scripts.edits import STATUS_ARGS, discard_index, index_tree, split_status
from sidecar.scripts.git import LISTING_CAP, Git

Inode = tuple[int, int]  # (st_dev, st_ino): which file a path holds, whatever its content


@dataclass(frozen=True)
class Files:
    """A revision's files as a publication sees them: a git tree, and the loose files beside it."""

    tree: str
    loose: Mapping[str, Inode] = field(default_factory=dict)

    def edited(self, base: str) -> bool:
        """Whether these files differ from the revision ``base`` they were checked out from."""
        return self.tree != base or bool(self.loose)


@dataclass(frozen=True)
class Names:
    """Every path an upstream tree names: ``all`` of them, and ``files`` (what is not a folder).

    A loose path is one no tree names, under no path a tree names as a file: nothing upstream
    touches it.
    """

    all: frozenset[str]
    files: frozenset[str]

    def free_folder(self, folder: str) -> bool:
        """No tree names ``folder`` or a folder above it as a file."""
        while folder:
            if folder in self.files:
                return False
            folder = folder.rpartition("/")[0]
        return True


async def names_of(git: Git, repo: Path, trees: Iterable[str]) -> Names:
    """The names of every entry of ``trees`` (folders included), from their listings."""
    every: set[str] = set()
    files: set[str] = set()
    for tree in dict.fromkeys(trees):
        out = await git.run(["ls-tree", "-r", "-t", "-z", "--full-tree", tree], git_dir=repo, cap=LISTING_CAP)
        for raw in out.stdout.split(b"\0"):
            if not raw:
                continue
            meta, _, raw_path = raw.partition(b"\t")
            path = raw_path.decode(errors="surrogateescape")
            every.add(path)
            if not meta.startswith(b"040000"):
                files.add(path)
    return Names(frozenset(every), frozenset(files))


def _classify(root: Path, paths: list[str], names: Names) -> tuple[dict[str, Inode], list[str]]:
    """Split untracked paths into loose regular files (with their inodes) and the rest. Blocking.

    Each folder is read once (``scandir``: type and inode number come with the names), not one
    ``lstat`` per file: for 20,000 files that is several times faster.
    """
    loose: dict[str, Inode] = {}
    rest: list[str] = []
    by_folder: dict[str, list[tuple[str, str]]] = {}
    for rel in paths:
        folder, _, name = rel.rpartition("/")
        if not name or rel in names.all:
            rest.append(rel)
        else:
            by_folder.setdefault(folder, []).append((rel, name))
    device = os.lstat(root).st_dev
    prefix = os.fspath(root)
    for folder, members in by_folder.items():
        if not names.free_folder(folder):
            rest += [rel for rel, _ in members]
            continue
        try:
            with os.scandir(f"{prefix}/{folder}" if folder else prefix) as listing:
                found = {entry.name: entry for entry in listing}
        except OSError:
            found = {}
        for rel, name in members:
            entry = found.get(name)
            if entry is None:
                continue  # gone since git listed it: nothing to carry
            if entry.is_file(follow_symlinks=False):
                loose[rel] = (device, entry.inode())
            else:
                rest.append(rel)
    return loose, rest


class Reader:
    """Reads the files of the revisions of one publication: ``base`` is the current revision's
    commit tree, ``theirs`` upstream's new tree; a path either names is never loose."""

    def __init__(self, git: Git, repo: Path, base: str, theirs: str) -> None:
        self.git = git
        self.repo = repo
        self.trees = (base, theirs)
        self._names: Names | None = None

    async def names(self) -> Names:
        if self._names is None:
            self._names = await names_of(self.git, self.repo, self.trees)
        return self._names

    async def files(self, worktree: Path, head_tree: str, index_file: Path, *, keep: bool = False) -> Files:
        """What ``worktree`` (checked out at ``head_tree``) holds now.

        Changed tracked files and untracked ones that are not loose are added to ``index_file``
        (seeded from the worktree's own index, whose stat data lets git hash only what changed)
        and written as a tree. ``keep`` leaves the index, for applying a tree to the same files.
        """
        status = await self.git.run(STATUS_ARGS, cwd=worktree, cap=LISTING_CAP)
        tracked, untracked = split_status(status.stdout)
        loose: dict[str, Inode] = {}
        if untracked:
            loose, bound = await asyncio.to_thread(_classify, worktree, untracked, await self.names())
            tracked += bound
        if not tracked:
            return Files(head_tree, loose)
        spec = b"".join(p.encode(errors="surrogateescape") + b"\0" for p in tracked)
        tree = await index_tree(self.git, worktree, index_file, ["--pathspec-from-file=-", "--pathspec-file-nul"],
                                {"GIT_LITERAL_PATHSPECS": "1"}, stdin=spec, fresh=True)
        if not keep:
            await asyncio.to_thread(discard_index, index_file)
        return Files(tree, loose)


class _Folders:
    """Open folder handles under one root, each reached without following a symlink."""

    def __init__(self, root: Path, create: bool) -> None:
        self.create = create
        self.fds: dict[str, int | None] = {"": os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)}

    def get(self, folder: str) -> int | None:
        """A handle of ``folder`` (relative), or None when it is missing or not a real folder."""
        if folder in self.fds:
            return self.fds[folder]
        parent_name, _, name = folder.rpartition("/")
        parent = self.get(parent_name)
        fd = None
        if parent is not None:
            if self.create:
                with contextlib.suppress(OSError):  # already there; or not, and the open says
                    os.mkdir(name, dir_fd=parent)
            with contextlib.suppress(OSError):
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
        self.fds[folder] = fd
        return fd

    def close(self) -> None:
        for fd in self.fds.values():
            if fd is not None:
                os.close(fd)


def _same(dir_fd: int, name: str, inode: Inode) -> bool:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == inode


def relink(old: Path, new: Path, want: Mapping[str, Inode], have: Mapping[str, Inode]) -> dict[str, Inode]:
    """Make ``new``'s loose files those of ``old`` listed in ``want``, as hard links. Blocking.

    ``have`` is what an earlier call linked into ``new``: unchanged paths are left alone, paths
    no longer wanted are removed (only while they still hold the file linked then). Returns what
    ``new`` holds now. Folders are reached without following symlinks on either side, and a
    path that turns out not to be a regular file when linked is removed again: nothing a link
    points to can get in. A file gone from ``old`` since the listing is not carried (it was
    deleted); any other failure raises OSError, so the publication fails rather than drop a file.
    """
    held = dict(have)
    src, dst = _Folders(old, create=False), _Folders(new, create=True)
    try:
        for rel in have.keys() - want.keys():
            folder, _, name = rel.rpartition("/")
            fd = dst.get(folder)
            if fd is not None and _same(fd, name, have[rel]):
                os.unlink(name, dir_fd=fd)
            held.pop(rel)
        for rel, inode in want.items():
            if have.get(rel) == inode:
                continue
            folder, _, name = rel.rpartition("/")
            sfd = src.get(folder)
            if sfd is None:
                continue  # the folder is gone or replaced since the listing: the next listing says
            dfd = dst.get(folder)
            if dfd is None:
                raise OSError(f"cannot carry {rel!r}: its folder in the new revision is not a real folder")
            if _link(sfd, dfd, name):
                held[rel] = inode  # as listed: listings are compared with listings
            else:
                held.pop(rel, None)
    finally:
        src.close()
        dst.close()
    return held


def _link(sfd: int, dfd: int, name: str) -> bool:
    """Link ``name`` across (over what is there); False when nothing regular was there to link."""
    target = name
    try:
        os.link(name, target, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    except FileExistsError:  # an earlier link of this path, to a file since replaced
        target = f".{name}.sidecar-link"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target, dir_fd=dfd)
        try:
            os.link(name, target, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
    if not stat.S_ISREG(os.stat(target, dir_fd=dfd, follow_symlinks=False).st_mode):
        os.unlink(target, dir_fd=dfd)  # a symlink or so took the file's place since the listing
        return False
    if target != name:
        os.replace(target, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    return True


def merge_links(carried: Mapping[str, Inode], old_now: Mapping[str, Inode],
                new_now: Mapping[str, Inode]) -> tuple[dict[str, Inode], list[str]]:
    """After the swap: what ``new`` must hold so late changes to ``old``'s loose files reach it,
    and the paths changed on both sides since ``carried`` (conflicts: left as they are in ``new``)."""
    want = dict(new_now)
    conflicts = []
    for rel in carried.keys() | old_now.keys():
        before, theirs, mine = carried.get(rel), old_now.get(rel), new_now.get(rel)
        if theirs == before:
            continue
        if mine != before:
            if mine != theirs:
                conflicts.append(rel)
            continue
        if theirs is None:
            want.pop(rel, None)
        else:
            want[rel] = theirs
    return want, sorted(conflicts)
