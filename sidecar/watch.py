"""Watches the published scripts tree: debounced, classified changes, the local-edit count, an event.

The node reads its scripts through ``--link``, a symlink swapped atomically at each publish, so
the watch follows the link's *target* (the revision folder) and moves to the new one after every
swap. It also survives the folder being deleted and recreated: a second, non-recursive watch on
the folders that hold the link and the target notices both, and a periodic check catches
anything a lost event would miss (watches that stall silently are a known sidecar failure).
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from watchfiles import Change, awatch

from sidecar import logs
from sidecar.config import Settings
from sidecar.events import FilesChanged
from sidecar.scripts.edits import edited_paths
from sidecar.scripts.git import Git, GitError
from sidecar.state import State

log = logs.get("watch")

IGNORED_NAMES = frozenset({".git"})  # git's own files: a worktree has a `.git` file, never edits
VERIFY_PERIOD = 10.0  # seconds between checks that the watched tree is still the published one
BATCH_CAP_MS = 1600  # a continuous stream of changes still yields a batch this often
FULL_SCAN_OVER = 1000  # a batch this large is recounted with one full `git status`, not a huge pathspec
ERROR_PAUSE = 1.0  # seconds before re-arming after the watch itself failed
# The watcher thread wakes every step even when idle; the guard only re-arms, so it wakes less often.
GUARD_STEP_MS = 500


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


def _nearest_existing(path: Path) -> Path:
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path


def resolve(link: Path) -> Tree:
    """Follow the link. A few metadata calls (microseconds), so it runs on the loop."""
    if not os.path.lexists(link):
        return Tree(None, None, (_nearest_existing(link.parent),))
    target = Path(os.path.realpath(link))
    try:
        st = target.stat()
        identity = (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None
    except OSError:
        identity = None
    anchors = dict.fromkeys((_nearest_existing(link.parent), _nearest_existing(target.parent)))
    return Tree(target, identity, tuple(anchors))


def _ignored(rel: str) -> bool:
    return any(part in IGNORED_NAMES for part in rel.split("/"))


class TreeIndex:
    """The files of the watched tree, so raw events can be classified the way a person means them.

    An editor that saves by writing a temporary file and renaming it over the original shows up
    as an "added" path; only knowing the file was already there makes it a modification. A
    folder moved in or out shows up as one path; the index expands it into its files.
    Its methods touch the disk, so they run in a worker thread.
    """

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.files: set[str] = set()

    def _walk(self, folder: str) -> Iterable[str]:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if d not in IGNORED_NAMES]
            rel_dir = os.path.relpath(dirpath, self.root)
            for name in filenames:
                if name not in IGNORED_NAMES:
                    yield name if rel_dir == "." else f"{rel_dir}/{name}"

    def build(self) -> int:
        """Index every file of the tree; return how many."""
        self.files = set(self._walk(self.root))
        return len(self.files)

    def classify(self, raw: Iterable[tuple[Change, str]]) -> tuple[dict[str, str], bool]:
        """Turn one debounced batch into ``{relative path: added|modified|deleted}``.

        The second value is True when the tree's own folder was deleted. A file created and
        removed within the batch (an editor's temporary file) is no change at all.
        """
        prefix = self.root + "/"
        touched: dict[str, set[Change]] = {}
        root_gone = False
        for change, path in raw:
            if not path.startswith(prefix):
                root_gone = root_gone or (path == self.root and change == Change.deleted)
                continue
            rel = path[len(prefix):]
            if not _ignored(rel):
                touched.setdefault(rel, set()).add(change)
        out: dict[str, str] = {}
        for rel in sorted(touched):  # a folder sorts before its files, so its expansion wins
            if rel in out:
                continue
            try:
                mode: int | None = os.lstat(prefix + rel).st_mode
            except OSError:
                mode = None
            if mode is None:
                if rel in self.files:
                    self.files.discard(rel)
                    out[rel] = "deleted"
                else:  # a folder went: its files went with it
                    inside = rel + "/"
                    for gone in [f for f in self.files if f.startswith(inside)]:
                        self.files.discard(gone)
                        out[gone] = "deleted"
            elif stat.S_ISDIR(mode):
                # A folder's own "modified" only says its entries changed; they have events of their own.
                if Change.added in touched[rel]:
                    for new in self._walk(prefix + rel):
                        if new not in self.files:
                            self.files.add(new)
                            out[new] = "added"
            elif rel in self.files:
                out[rel] = "modified"
            else:
                self.files.add(rel)
                out[rel] = "added"
        return out, root_gone


class Watcher:
    """The ``watch`` component: one task, re-armed whenever the published tree changes identity."""

    def __init__(self, settings: Settings, state: State) -> None:
        self.settings = settings
        self.state = state
        self.git = Git(settings.git_timeout, home=settings.revisions_root / "home")
        self.step_ms = max(1, round(settings.watch_debounce * 1000))
        self.cap_ms = max(BATCH_CAP_MS, 2 * self.step_ms)
        self.force_polling: bool | None = None  # None: watchfiles decides (WATCHFILES_FORCE_POLLING)

    async def run(self) -> None:
        """Watch forever, following the link across revision swaps and recreation."""
        ws = self.state.watch
        try:
            while True:
                tree = resolve(self.settings.link)
                failed = await self._watch(tree)
                ws.rearms += 1
                if failed:
                    ws.running = False  # not watching during the pause: /status and the metric say so
                    await asyncio.sleep(ERROR_PAUSE)
        finally:
            ws.running = False

    async def _watch(self, tree: Tree) -> bool:
        """Watch one tree until the link moves or the tree goes; True when the watch itself failed."""
        ws = self.state.watch
        stop = asyncio.Event()
        failed = False

        async def guarded(job: Awaitable[None]) -> None:
            nonlocal failed
            try:
                await job
            except FileNotFoundError:
                stop.set()  # a watched folder vanished between resolve() and the watch: re-arm
            except OSError as exc:
                # Typically the inotify watch or instance limit, shared by every pod of a Kubernetes
                # node: fall back to polling rather than go blind or fail /livez.
                ws.last_error = f"watch failed, polling from now on: {exc}"
                log.warning("watch_failed", error=str(exc), fallback="polling")
                self.force_polling = True
                failed = True
                stop.set()
            except Exception as exc:
                # Anything else (watchfiles refuses a file name that is not UTF-8, say) must not
                # kill the component and fail /livez: note it, pause, re-arm.
                ws.last_error = logs.redact(f"watch failed: {type(exc).__name__}: {exc}")
                log.warning("watch_failed", error=ws.last_error)
                failed = True
                stop.set()

        async with asyncio.TaskGroup() as tg:
            tg.create_task(guarded(self._guard(tree, stop)))
            if not tree.present:
                ws.running, ws.path = False, None
                log.info("watch_waiting", link=str(self.settings.link), anchors=[str(a) for a in tree.anchors])
                return failed
            assert tree.target is not None
            index = TreeIndex(tree.target)
            ready = asyncio.Event()
            tg.create_task(guarded(self._follow(index, ready, stop)))
            # One turn of the loop lets the new task arm its watch (synchronously, in its first step),
            # so nothing written from here on is missed by the index, the count or the watch.
            await asyncio.sleep(0)
            files = await asyncio.to_thread(index.build)
            await self._recount(tree.target)
            ws.running, ws.path = True, str(tree.target)
            ready.set()
            log.info("watching", path=str(tree.target), files=files)
        return failed

    async def _follow(self, index: TreeIndex, ready: asyncio.Event, stop: asyncio.Event) -> None:
        """Handle the tree's batches until ``stop``; set ``stop`` when the tree's folder is deleted."""
        async for raw in awatch(index.root, watch_filter=None, debounce=self.cap_ms, step=self.step_ms,
                                stop_event=stop, force_polling=self.force_polling):
            await ready.wait()  # the index must exist before events can be classified against it
            changes, root_gone = await asyncio.to_thread(index.classify, raw)
            if changes:
                await self._record(Path(index.root), changes)
            if root_gone:
                log.warning("watched_tree_deleted", path=index.root)
                stop.set()

    async def _guard(self, tree: Tree, stop: asyncio.Event) -> None:
        """Set ``stop`` once the link leads elsewhere or the tree appears, vanishes or is recreated."""
        async for _ in awatch(*tree.anchors, watch_filter=None, recursive=False,
                              step=max(self.step_ms, GUARD_STEP_MS),
                              stop_event=stop, rust_timeout=int(VERIFY_PERIOD * 1000), yield_on_timeout=True,
                              force_polling=self.force_polling):
            if resolve(self.settings.link) != tree:
                stop.set()

    async def _record(self, root: Path, changes: dict[str, str]) -> None:
        """Count one batch, list it in /status, announce it, then bring the local-edit count up to date."""
        ws = self.state.watch
        now = time.time()
        kinds = list(changes.values())
        for kind in ("added", "modified", "deleted"):
            if n := kinds.count(kind):
                ws.changes[kind] += n
        ws.batches += 1
        ws.last_change_time = now
        start = max(0, len(changes) - (ws.recent.maxlen or 0))
        ws.recent.extend({"at": now, "kind": k, "path": p} for p, k in islice(changes.items(), start, None))
        paths = list(changes)
        log.info("files_changed", count=len(paths), paths=paths[:5])
        self.state.bus.publish(FilesChanged(
            message=f"{len(paths)} file(s) changed in the published scripts",
            changes=changes, revision=self.state.scripts.revision,
        ))
        await self._recount(root, paths)

    async def _recount(self, root: Path, paths: list[str] | None = None) -> None:
        """Update the local edits: among ``paths`` only (cost of the batch), or the whole tree."""
        if paths is not None and len(paths) > FULL_SCAN_OVER:
            paths = None
        try:
            found = await edited_paths(self.git, root, paths)
        except GitError as exc:
            # Not a git worktree (or git failing): changes are still counted, edits stay as they were.
            self.state.watch.last_error = f"local edits not counted: {exc}"
            log.warning("local_edits_unknown", path=str(root), error=str(exc))
            return
        scripts = self.state.scripts
        # Paths of the batch are re-decided by git; every other edit stands as it was.
        edits = set(found) if paths is None else set(scripts.local_edit_files).difference(paths).union(found)
        scripts.local_edit_files = sorted(edits)
        scripts.local_edits = len(edits)
