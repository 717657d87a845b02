"""The on-volume layout and its atomic operations. Blocking: callers run these in a thread.

    <root>/repo.git/            bare repository: every revision's objects
    <root>/revs/<name>/         one git worktree per revision, <name> = <source>-<sha12>-<ns>
    <root>/revs/<name>.ok       marker: the revision was complete when it was published
    <root>/home/                HOME for git and ssh (scratch)
    <root>/tmp/                 scratch, emptied at start
    <root>/tmp/index-<name>     a revision's snapshot index (stat data of its files)
    <root>/tmp/spare-<n>/       a checkout of the published commit for the next publication (spare.py)
    <root>/tmp/retired-<name>/  an old revision waiting for the background sweep
    <root>/adopted-<ns>/        a tree found where the link should be, kept after adoption
    <root>/displaced-<ns>       a file found where the link should be, kept
    <root>/writer.lock          the one-writer lock (lock.py), naming its holder
    <root>/adoption.json        an adoption made by ``seed``, until ``run`` announces it
    <link> -> relative path to revs/<name>   (swapped with a temp link and rename())
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SOURCES = ("git", "fallback", "adopted")
TRASH = "retired-"  # prefix, in the scratch folder, of revision folders waiting to be deleted


@dataclass(frozen=True)
class Revision:
    """A revision folder and what its name says about it."""

    path: Path

    @property
    def name(self) -> str:
        """Folder name."""
        return self.path.name

    @property
    def source(self) -> str:
        """git, fallback or adopted."""
        return self.name.split("-", 1)[0]

    @property
    def stamp(self) -> int:
        """Creation time in ns (orders revisions)."""
        try:
            return int(self.name.rsplit("-", 1)[1])
        except (IndexError, ValueError):
            return 0


@dataclass(frozen=True)
class Spare:
    """A clean checkout of ``commit`` at ``path`` in the scratch folder, for the next publication."""

    path: Path
    commit: str


_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def sync_filesystem(path: Path) -> None:
    """Flush the one filesystem holding ``path`` (``syncfs``), not every filesystem of the host.

    The node's own data on other filesystems is left to the kernel's pace; ``os.sync`` is the
    fallback only where libc has no ``syncfs``.
    """
    syncfs = getattr(_LIBC, "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}", str(path))
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Layout:
    """Paths under the root and the link, and the few operations that must be atomic."""

    root: Path
    link: Path

    @property
    def repo(self) -> Path:
        return self.root / "repo.git"

    @property
    def revs(self) -> Path:
        return self.root / "revs"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    def prepare(self) -> None:
        """Create the folders; empty the scratch folder; drop temp links a crash left."""
        for path in (self.root, self.revs, self.home, self.tmp, self.link.parent):
            path.mkdir(parents=True, exist_ok=True)
        for entry in self.tmp.iterdir():
            remove_tree(entry)
        for pattern in ("ssh-key-*", "password-*"):  # private copies a killed git call left behind
            for copy in self.home.glob(pattern):
                copy.unlink(missing_ok=True)
        for entry in self.link.parent.glob(f".{self.link.name}.tmp-*"):
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()

    def new_revision(self, source: str, sha: str) -> Revision:
        """A fresh, unused revision path."""
        assert source in SOURCES
        return Revision(self.revs / f"{source}-{sha[:12]}-{time.time_ns()}")

    def link_kind(self) -> str:
        """``symlink``, ``dir`` (a plain folder where the link should be), ``missing`` or ``other``."""
        if self.link.is_symlink():
            return "symlink"
        if not self.link.exists():
            return "missing"
        return "dir" if self.link.is_dir() else "other"

    def current(self) -> Revision | None:
        """The revision the link points to, when it is one of ours and exists."""
        if not self.link.is_symlink():
            return None
        target = (self.link.parent / os.readlink(self.link)).resolve()
        if target.parent != self.revs.resolve() or not target.is_dir():
            return None
        return Revision(self.revs / target.name)

    def published(self) -> list[Revision]:
        """Revisions that were complete when published, newest first."""
        revs = [Revision(p) for p in self.revs.iterdir() if p.is_dir() and (self.revs / f"{p.name}.ok").exists()]
        return sorted(revs, key=lambda r: r.stamp, reverse=True)

    def all_revisions(self) -> list[Revision]:
        """Every revision folder, complete or not."""
        return [Revision(p) for p in self.revs.iterdir() if p.is_dir()]

    def mark_complete(self, rev: Revision, commit: str, *, flushed: bool = False) -> None:
        """Record that ``rev`` is whole (before the link may point at it), with its full commit id.

        ``flushed``: the caller has flushed the filesystem since the revision's last change and
        swaps the link next. The marker is then not flushed on its own: the link is only ever
        swapped to flushed files, and a current revision found without its marker at start is
        marked again (recover), so one journal commit fewer stands between a push and the swap.
        """
        # The checked-out files must be on disk before a marker or a link can name them: after a
        # power loss, a link to empty files would look like a tree full of local edits.
        if not flushed:
            sync_filesystem(rev.path)
        marker = self.revs / f"{rev.name}.ok"
        marker.write_text(commit + "\n")
        if not flushed:
            _fsync_dir(self.revs)

    def recorded_commit(self, rev: Revision) -> str | None:
        """The commit id written in the revision's marker (survives a lost repository)."""
        try:
            text = (self.revs / f"{rev.name}.ok").read_text().strip()
        except OSError:
            return None
        return text if len(text) == 40 else None

    def swap_link(self, rev: Revision) -> None:
        """Point the link at ``rev`` atomically: a temp link, then rename() over the old one."""
        target = os.path.relpath(rev.path, self.link.parent)
        tmp = self.link.parent / f".{self.link.name}.tmp-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(target, tmp)
        os.rename(tmp, self.link)
        _fsync_dir(self.link.parent)

    def move_aside(self) -> Path:
        """Move a plain folder found at the link's path into the root (after adopting it)."""
        dest = self.root / f"adopted-{time.time_ns()}"
        os.rename(self.link, dest)
        return dest

    # -- link inspection (what the probes say about the disk) -------------------------------------
    def link_problem(self) -> str | None:
        """Why no complete tree is published at the link right now, or None. A few lstat calls."""
        try:
            mode = os.lstat(self.link).st_mode
        except FileNotFoundError:
            return "the link is missing"
        except OSError as exc:
            return f"the link cannot be read ({exc.strerror})"
        if stat.S_ISDIR(mode):
            return "a folder is where the link should be"
        if not stat.S_ISLNK(mode):
            return "a file is where the link should be"
        if not self.link_is_ours():
            return "a symlink the sidecar did not write is where the link should be"
        if not (self.repo / "HEAD").exists():
            return "the scripts root is gone"
        rev = self.current()
        if rev is None:
            return "the link points at no revision folder"
        if not (self.revs / f"{rev.name}.ok").exists():
            return "the revision the link points at is not marked complete"
        return None

    def link_is_ours(self) -> bool:
        """The symlink at the link's path was written by us: it names a folder in ``revs`` (existing or not)."""
        target = os.path.abspath(os.path.join(self.link.parent, os.readlink(self.link)))
        return os.path.dirname(target) == os.path.abspath(self.revs)

    @property
    def adoption_record(self) -> Path:
        """An adoption ``seed`` made, for the next ``run`` to show in ``/status`` and send as an Event."""
        return self.root / "adoption.json"

    def take_adoption_record(self) -> str | None:
        """The record's text, removed once read (it is announced once); None when there is none."""
        try:
            text = self.adoption_record.read_text()
        except (FileNotFoundError, NotADirectoryError):
            return None
        self.adoption_record.unlink(missing_ok=True)
        return text

    def displace(self) -> Path:
        """Move a file found at the link's path into the root, where a person finds it again."""
        dest = self.root / f"displaced-{time.time_ns()}"
        os.rename(self.link, dest)
        return dest

    def forget(self, rev: Revision) -> None:
        """Delete a revision folder and its marker (marker first: a half-deleted folder is not 'complete')."""
        with contextlib.suppress(FileNotFoundError):
            (self.revs / f"{rev.name}.ok").unlink()
        self.index_of(rev).unlink(missing_ok=True)
        remove_tree(rev.path)

    def index_of(self, rev: Revision) -> Path:
        """The private index of ``rev``'s files (with stat data), kept between snapshots."""
        return self.tmp / f"index-{rev.name}"

    def retire(self, rev: Revision) -> None:
        """Take a revision out of ``revs`` at once (marker first, then a rename into the scratch
        folder); :meth:`empty_trash` deletes its files later, off the sync's path."""
        with contextlib.suppress(FileNotFoundError):
            (self.revs / f"{rev.name}.ok").unlink()
        self.index_of(rev).unlink(missing_ok=True)
        os.rename(rev.path, self.tmp / f"{TRASH}{rev.name}")

    def empty_trash(self, stop: threading.Event) -> list[str]:
        """Delete retired revisions; return what could not be deleted (and why). Stops early when
        ``stop`` is set (at shutdown), leaving the rest for the next start."""
        failures = []
        for entry in sorted(self.tmp.glob(f"{TRASH}*")):
            if stop.is_set():
                break
            error = remove_tree(entry, stop)
            if error is not None and not stop.is_set():
                failures.append(f"{entry.name[len(TRASH):]}: {error}")
        return failures

    def keep(self, rev: Revision) -> None:
        """Never remove ``rev``: it holds edits that could not be carried (a person decides)."""
        (self.revs / f"{rev.name}.keep").write_bytes(b"")

    def kept(self) -> set[str]:
        """Names of revisions marked with :meth:`keep`."""
        return {m.name[: -len(".keep")] for m in self.revs.glob("*.keep")}

    def stray_markers(self) -> list[Path]:
        """Markers whose revision folder is gone."""
        return [m for m in (*self.revs.glob("*.ok"), *self.revs.glob("*.keep"))
                if not (self.revs / m.name.rsplit(".", 1)[0]).is_dir()]


def remove_tree(path: Path, stop: threading.Event | None = None) -> str | None:
    """Remove a file, link or folder (read-only folders are made writable first).

    Returns None when ``path`` is gone, else what kept it (the first error). Between folders it
    checks ``stop``, so a shutdown does not wait for a large tree to be deleted.
    """
    errors: list[str] = []

    def remove(target: str, op: Callable[[str], None] = os.unlink) -> None:
        try:
            op(target)
        except FileNotFoundError:
            pass
        except OSError as exc:
            errors.append(f"{target}: {exc.strerror}")

    if path.is_symlink() or not path.is_dir():
        remove(str(path))
        return errors[0] if errors else None
    for dirpath, dirnames, filenames in os.walk(path, topdown=False):
        if stop is not None and stop.is_set():
            return "stopped"
        with contextlib.suppress(OSError):
            os.chmod(dirpath, 0o700)
        for name in filenames:
            remove(os.path.join(dirpath, name))
        for name in dirnames:
            full = os.path.join(dirpath, name)
            remove(full, os.unlink if os.path.islink(full) else os.rmdir)
    remove(str(path), os.rmdir)
    return errors[0] if errors and path.exists() else None
