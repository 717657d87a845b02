"""The watched tree: where the link leads, its files and folder watches, and raw changes classified.

Everything here touches the disk, so the watcher calls it from a worker thread. Nothing follows a
symlink: folders are found with ``lstat`` (``DirEntry.is_dir(follow_symlinks=False)``), so a link
to ``/`` in the tree is one file, never a way out. The number of entries is bounded; past the
limit :class:`TooLarge` is raised and the watcher falls back to counting edits once a period.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import sidecar.watch.inotify as inotify

IGNORED_NAMES = frozenset({".git"})  # git's own files: a worktree has a `.git` file, never edits
TREE_MASK = inotify.CONTENT | inotify.SELF


class Change(enum.Enum):
    """What happened to one path, as a person means it."""

    ADDED = "added"
    MODIFIED = "modified"
    DELETED = "deleted"


class TooLarge(Exception):
    """The tree holds more entries than the watch may keep track of."""


class Stopped(Exception):
    """The walk was asked to stop (the watch is being shut down)."""


@dataclass(frozen=True)
class Tree:
    """Where the link leads right now, and the folders whose entries tell when that changes."""

    target: Path | None  # the revision folder (the link's target), None without a link
    identity: tuple[int, int] | None  # (device, inode) of the folder; None when it does not exist
    anchors: tuple[Path, ...]  # existing folders watched non-recursively for swaps and recreation

    @property
    def present(self) -> bool:
        """True when the target folder exists and can be watched."""
        return self.target is not None and self.identity is not None


def nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that is a folder."""
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path


def resolve(link: Path) -> Tree:
    """Follow the link. A few metadata calls (microseconds), so it may run on the loop."""
    if not os.path.lexists(link):
        return Tree(None, None, (nearest_existing(link.parent),))
    target = Path(os.path.realpath(link))
    try:
        st = os.stat(target)
        identity = (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None
    except OSError:
        identity = None
    anchors = dict.fromkeys((nearest_existing(link.parent), nearest_existing(target.parent)))
    return Tree(target, identity, tuple(anchors))


def _ignored(rel: str) -> bool:
    return any(part in IGNORED_NAMES for part in rel.split("/"))


class TreeIndex:
    """The files and folders of the watched tree, so raw events can be classified as a person means them.

    An editor that saves by writing a temporary file and renaming it over the original shows up
    as an "added" path; only knowing the file was already there makes it a modification. A
    folder moved in or out shows up as one path; the index expands it into its files. Each folder
    gets an inotify watch (when ``notify`` is given) before it is listed, so nothing created after
    the listing goes unseen. Paths are relative to the root, ``/``-separated.
    """

    def __init__(self, root: Path, limit: int, notify: inotify.Inotify | None = None) -> None:
        self.root = str(root)
        self.limit = limit
        self.notify = notify
        self.files: set[str] = set()
        self.dirs: dict[str, int] = {}  # relative folder ("" is the root) -> watch descriptor
        self.by_wd: dict[int, str] = {}
        # Folders the event loop watched the moment they appeared, until a walk indexes them. The
        # loop is its only writer; the classifying thread only looks names up in it.
        self.early: dict[int, str] = {}
        self.stop = False  # set from the loop to end a walk early

    @property
    def entries(self) -> int:
        """Files and folders tracked now."""
        return len(self.files) + len(self.dirs)

    def _full(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def _add_dir(self, rel: str) -> None:
        if rel not in self.dirs and self.entries >= self.limit:
            raise TooLarge(f"more than {self.limit} files and folders")
        wd = self.notify.add(os.fsencode(self._full(rel)), TREE_MASK) if self.notify is not None else -1
        self.dirs[rel] = wd
        if wd >= 0:
            self.by_wd[wd] = rel  # the same folder seen again (moved) keeps its descriptor, new name

    def _walk(self, top: str, since_ns: int | None, touched: list[str]) -> list[str]:
        """Index and watch what is under ``top``; return the files new to the index.

        Files whose inode changed after ``since_ns`` are appended to ``touched``.
        """
        new: list[str] = []
        stack = [top]
        while stack:
            if self.stop:
                raise Stopped
            rel = stack.pop()
            try:
                self._add_dir(rel)
                listing = os.scandir(self._full(rel))
            except (FileNotFoundError, NotADirectoryError):
                continue  # gone (or replaced) since its parent was listed: its own event says so
            with listing:
                for entry in listing:
                    if entry.name in IGNORED_NAMES:
                        continue
                    child = f"{rel}/{entry.name}" if rel else entry.name
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        continue
                    if is_dir:
                        stack.append(child)
                        continue
                    if child in self.files:
                        continue
                    if self.entries + 1 > self.limit:
                        raise TooLarge(f"more than {self.limit} files and folders")
                    if since_ns is not None:
                        try:
                            if _changed_ns(entry.stat(follow_symlinks=False)) > since_ns:
                                touched.append(child)
                        except OSError:
                            continue
                    self.files.add(child)
                    new.append(child)
        return new

    def build(self, since_ns: int | None = None) -> list[str]:
        """Index (and watch) the whole tree; return the files whose inode changed after ``since_ns``."""
        touched: list[str] = []
        self._walk("", since_ns, touched)
        return sorted(touched)

    def release(self) -> None:
        """Drop every watch and forget the tree (the fallback to counting keeps nothing per file)."""
        if self.notify is not None:
            for wd in self.by_wd:
                self.notify.remove(wd)
        self.files, self.dirs, self.by_wd = set(), {}, {}

    def _forget_dir(self, rel: str) -> None:
        """A folder went: drop its watches and those under it (unless a move gave them a new name)."""
        inside = rel + "/"
        for gone in [d for d in self.dirs if d == rel or d.startswith(inside)]:
            wd = self.dirs.pop(gone)
            if self.by_wd.get(wd) == gone:
                del self.by_wd[wd]
                if self.notify is not None:
                    self.notify.remove(wd)

    def _folder(self, wd: int) -> str | None:
        folder = self.by_wd.get(wd)
        return folder if folder is not None else self.early.get(wd)

    def watch_new(self, ev: inotify.RawEvent) -> None:
        """Event-loop side: a folder appeared in a watched one; watch it now, not when its batch closes.

        A writer filling a new folder keeps its batch open this way (the folder's own events flow
        at once), as one batch rather than one for the folder and more for its files.
        """
        if self.notify is None or not ev.mask & inotify.IN_ISDIR or not ev.mask & (inotify.IN_CREATE
                                                                                    | inotify.IN_MOVED_TO):
            return
        parent = self._folder(ev.wd)
        if parent is None or len(self.early) >= self.limit:
            return
        rel = f"{parent}/{os.fsdecode(ev.name)}" if parent else os.fsdecode(ev.name)
        if _ignored(rel):
            return
        try:
            self.early[self.notify.add(os.fsencode(self._full(rel)), TREE_MASK)] = rel
        except OSError:
            return  # gone already, or over the kernel's limit: the batch's walk decides

    def settle(self) -> None:
        """Event-loop side, between batches: forget early watches a walk has indexed since."""
        for wd in [wd for wd in self.early if wd in self.by_wd]:
            del self.early[wd]

    def translate(self, events: Iterable[inotify.RawEvent]) -> tuple[list[tuple[Change, str]], bool]:
        """Raw inotify events of the tree's watches -> ``(change, relative path)``; True if the root went."""
        out: list[tuple[Change, str]] = []
        root_gone = False
        for ev in events:
            folder = self._folder(ev.wd)
            if folder is None:
                continue  # a watch already dropped (its folder moved out or went)
            if ev.mask & (inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF | inotify.IN_UNMOUNT):
                root_gone = root_gone or folder == ""
                continue
            if not ev.name or ev.mask & inotify.IN_IGNORED:
                continue
            name = os.fsdecode(ev.name)
            rel = f"{folder}/{name}" if folder else name
            if ev.mask & (inotify.IN_CREATE | inotify.IN_MOVED_TO):
                out.append((Change.ADDED, rel))
            elif ev.mask & (inotify.IN_DELETE | inotify.IN_MOVED_FROM):
                out.append((Change.DELETED, rel))
            else:
                out.append((Change.MODIFIED, rel))
        return out, root_gone

    def classify(self, raw: Iterable[tuple[Change, str]]) -> dict[str, str]:
        """Turn one debounced batch into ``{relative path: added|modified|deleted}``.

        Each path is looked at as it is now: a file created and removed within the batch (an
        editor's temporary file) is no change at all; a folder that appeared counts as its files
        (and gets its watches); a folder that went counts as the files the index knew in it.
        Raises :class:`TooLarge` when what appeared takes the tree past the limit.
        """
        touched: dict[str, set[Change]] = {}
        for change, rel in raw:
            if not _ignored(rel):
                touched.setdefault(rel, set()).add(change)
        out: dict[str, str] = {}
        for rel in sorted(touched):  # a folder sorts before its files, so its expansion wins
            if rel in out:
                continue
            try:
                mode: int | None = os.lstat(self._full(rel)).st_mode
            except OSError:
                mode = None
            if mode is None:
                self._gone(rel, out)
            elif stat.S_ISDIR(mode):
                if rel in self.files:  # a file replaced by a folder
                    self.files.discard(rel)
                    out[rel] = Change.DELETED.value
                # A folder's own "modified" only says its entries changed; they have events of their own.
                if Change.ADDED in touched[rel] or rel not in self.dirs:
                    for new in self._walk(rel, None, []):
                        out[new] = Change.ADDED.value
            elif rel in self.files:
                out[rel] = Change.MODIFIED.value
            else:
                self._gone(rel, out)  # a folder replaced by a file: its files went
                if self.entries + 1 > self.limit:
                    raise TooLarge(f"more than {self.limit} files and folders")
                self.files.add(rel)
                out[rel] = Change.ADDED.value
        return out

    def _gone(self, rel: str, out: dict[str, str]) -> None:
        if rel in self.files:
            self.files.discard(rel)
            out[rel] = Change.DELETED.value
        if rel in self.dirs:  # a folder went: its files went with it
            inside = rel + "/"
            for gone in [f for f in self.files if f.startswith(inside)]:
                self.files.discard(gone)
                out[gone] = Change.DELETED.value
            self._forget_dir(rel)


def _changed_ns(st: os.stat_result) -> int:
    """When a file was last changed by a person: its inode change time, which a file moved in also gets.

    A file with more than one link is a carried file shared with another revision: making or removing
    that revision moves its change time, so only its modification time tells an edit.
    """
    return st.st_mtime_ns if st.st_nlink > 1 else st.st_ctime_ns
