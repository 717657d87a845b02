"""The ``watch`` component: the changes a person makes in the published tree, and its local-edit count.

The node reads its scripts through ``--link``, a symlink the publisher swaps atomically, so the
watch follows the link's *target* (the revision folder) and moves to the new one after every
swap. One inotify instance holds both the tree's folder watches and non-recursive watches on
the folders that hold the link and the target, so its queue orders every event: what happened in
the tree before the link moved was a person's edit of the published scripts; what happens after
(the publisher carrying edits, the old revision being pruned) is not, and is never announced.
Edits made while the watch was not armed (between a publication and the arming, or while events
were lost) are found at arming from the files' change times and git's view of the tree.

Past :data:`MAX_ENTRIES` files and folders, or when the kernel refuses inotify, the watch falls
back to counting the edits once every :data:`COUNT_PERIOD` seconds and announces nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from itertools import islice
from pathlib import Path

import sidecar.watch.inotify as inotify
from sidecar import logs, procs, progress
from sidecar.config import Settings
from sidecar.events import FilesChanged
from sidecar.scripts.edits import STATUS_ARGS
from sidecar.scripts.git import Git, GitError
from sidecar.state import State
from sidecar.watch.tree import Change, TooLarge, Tree, TreeIndex, nearest_existing, resolve

log = logs.get("watch")

VERIFY_PERIOD = 10.0  # seconds between checks that the watched tree is still the published one
BATCH_CAP = 1.6  # a continuous stream of changes still yields a batch this often (seconds)
FULL_SCAN_OVER = 1000  # a batch this large is recounted with one full `git status`, not a huge pathspec
ERROR_PAUSE = 1.0  # seconds before re-arming after the watch itself failed
MAX_ENTRIES = 100_000  # files and folders watched one by one; past it, edits are counted once a period
COUNT_PERIOD = 60.0  # seconds between edit counts once the tree is too large to watch
MAX_PENDING = 50_000  # raw events held between two batches; more is treated as a lost queue
ANCHOR_MASK = (inotify.IN_CREATE | inotify.IN_DELETE | inotify.IN_MOVED_FROM | inotify.IN_MOVED_TO
               | inotify.SELF)
RESUME_MARGIN_NS = 1_000_000_000  # after lost events, look back this much further (coarse file clocks)


class Events:
    """Raw events of one inotify instance, read by the event loop whenever the kernel has some."""

    def __init__(self, notify: inotify.Inotify) -> None:
        self.notify = notify
        self.index: TreeIndex | None = None  # once set, new folders are watched as their events are read
        self.pending: list[inotify.RawEvent] = []
        self.overflow = False
        self.arrived = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(notify.fd, self._read)

    def _read(self) -> None:
        events = self.notify.read()
        if self.overflow:
            return  # the batch is lost anyway; keep nothing
        if self.index is not None:
            for ev in events:
                self.index.watch_new(ev)
        self.pending.extend(events)
        if len(self.pending) > MAX_PENDING:
            self.overflow, self.pending = True, []
        self.arrived.set()

    async def batch(self, step: float, cap: float, timeout: float) -> list[inotify.RawEvent]:
        """The next batch: wait up to ``timeout`` for a first event, then until ``step`` passes quietly."""
        # asyncio.timeout, not wait_for, here and below: 3.11's wait_for can swallow a cancellation.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.arrived.wait()
        deadline = self.loop.time() + cap
        while self.pending and not self.overflow:
            self.arrived.clear()
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(min(step, remaining)):
                    await self.arrived.wait()
            except TimeoutError:
                break
        out, self.pending = self.pending, []
        self.arrived.clear()
        return out

    def close(self) -> None:
        """Stop reading and release the instance (every watch goes with it)."""
        self.loop.remove_reader(self.notify.fd)
        self.notify.close()


class Anchors:
    """Non-recursive watches on the folders holding the link and the target: which names matter there."""

    def __init__(self, notify: inotify.Inotify) -> None:
        self.notify = notify
        self.names: dict[int, frozenset[str] | None] = {}  # wd -> names that matter (None: any)

    def add(self, folder: Path, name: str | None) -> None:
        """Watch ``folder`` for ``name`` (any entry when ``name`` is None or the folder is a stand-in)."""
        exact = nearest_existing(folder)
        wd = self.notify.add(os.fsencode(exact), ANCHOR_MASK)
        names = None if name is None or exact != folder else frozenset({name})
        known = self.names.get(wd, frozenset())
        self.names[wd] = None if names is None or known is None else known | names

    def moved(self, ev: inotify.RawEvent) -> bool:
        """True when ``ev`` may mean the link leads elsewhere now (or that events were lost)."""
        if ev.mask & inotify.IN_Q_OVERFLOW:
            return True
        if ev.wd not in self.names:
            return False
        names = self.names[ev.wd]
        return names is None or bool(ev.mask & inotify.SELF) or os.fsdecode(ev.name) in names


def _status_entries(out: bytes) -> tuple[dict[str, str], bool]:
    """``git status --porcelain=v1 -z`` -> ``{path: two-letter code}``, and whether the output was whole."""
    complete = len(out) < procs.OUTPUT_CAP
    entries = out.split(b"\0")
    if not complete:
        entries = entries[:-1]  # cut at the cap: the last entry may be partial
    return {e[3:].decode(errors="surrogateescape"): e[:2].decode(errors="replace") for e in entries if len(e) > 3}, \
        complete


def _kind(code: str | None) -> str:
    if code is not None and (code in ("??", "!!") or code.startswith("A")):
        return Change.ADDED.value
    return Change.MODIFIED.value


def _deleted_since(root: Path, codes: dict[str, str], since_ns: int) -> list[str]:
    """Files git calls deleted whose nearest remaining folder changed after ``since_ns``."""
    out = []
    for rel, code in codes.items():
        if "D" not in code or os.path.lexists(root / rel):
            continue
        try:
            if os.lstat(nearest_existing((root / rel).parent)).st_mtime_ns > since_ns:
                out.append(rel)
        except OSError:
            continue
    return out


class Watcher:
    """The ``watch`` component: one task, re-armed whenever the published tree changes identity."""

    def __init__(self, settings: Settings, state: State, *, max_entries: int = MAX_ENTRIES,
                 count_period: float = COUNT_PERIOD) -> None:
        self.settings = settings
        self.state = state
        self.git = Git(settings.git_timeout, home=settings.revisions_root / "home")
        self.step = settings.watch_debounce
        self.cap = max(BATCH_CAP, 2 * self.step)
        self.max_entries = max_entries
        self.count_period = count_period
        self.edits: set[str] = set()
        # After lost events on a tree: (its identity, the time from which its changes are unannounced).
        self.resume: tuple[tuple[int, int], int] | None = None

    async def run(self) -> None:
        """Watch forever, following the link across revision swaps and recreation."""
        ws = self.state.watch
        try:
            while True:
                try:
                    await self._session()
                except (OSError, GitError) as exc:
                    ws.running, ws.mode = False, "failed"
                    ws.last_error = logs.redact(f"watch failed: {exc}")
                    log.warning("watch_failed", error=ws.last_error)
                    await asyncio.sleep(ERROR_PAUSE)
                ws.rearms += 1
        finally:
            ws.running = False

    async def _session(self) -> None:
        """Arm on the tree the link leads to now; return when it should be armed again."""
        ws = self.state.watch
        link = self.settings.link
        try:
            notify = inotify.Inotify()
        except OSError as exc:  # EMFILE: the instance limit, shared by every pod of a Kubernetes node
            await self._count_only(resolve(link), None, f"inotify unavailable ({exc.strerror})")
            return
        events: Events | None = None
        index: TreeIndex | None = None
        try:
            anchors = Anchors(notify)
            anchors.add(link.parent, link.name)  # first: a swap from here on leaves an event in the queue
            tree = resolve(link)
            events = Events(notify)
            if tree.target is not None:
                anchors.add(tree.target.parent, tree.target.name)  # its (re)creation, or its going
            if not tree.present:
                ws.running, ws.path, ws.mode = False, None, "waiting"
                log.info("watch_waiting", link=str(link))
                while not await self._wait_for_move(events, anchors, tree, VERIFY_PERIOD):
                    pass
                return
            assert tree.target is not None and tree.identity is not None
            since = self._since(tree)
            progress.current().working("indexing the tree")
            index = TreeIndex(tree.target, self.max_entries, notify)
            try:
                touched = await asyncio.to_thread(index.build, since)
            except (TooLarge, OSError) as exc:
                if isinstance(exc, OSError) and exc.errno != errno.ENOSPC:
                    raise
                await asyncio.to_thread(index.release)
                index = None
                why = str(exc) if isinstance(exc, TooLarge) else "the kernel's inotify watch limit was reached"
                await self._count_only(tree, (events, anchors), why)
                return
            events.index = index
            await self._arm(tree, index, touched, since)
            await self._follow(tree, index, events, anchors)
        finally:
            if index is not None:
                index.stop = True  # a walk still running in its thread ends at its next folder
            if events is not None:
                events.close()
            else:
                notify.close()

    def _since(self, tree: Tree) -> int:
        """From when changes to ``tree`` are unannounced: its publication, this process's start, or lost events."""
        try:
            published = os.lstat(self.settings.link).st_ctime_ns  # the swap created the link
        except OSError:
            published = 0
        resume, self.resume = self.resume, None
        if resume is not None and resume[0] == tree.identity:
            return resume[1]  # the same tree again: only what the lost events may have hidden
        return max(published, int(self.state.started * 1e9))

    async def _arm(self, tree: Tree, index: TreeIndex, touched: list[str], since: int) -> None:
        """The tree is indexed and watched: count its edits, announce what changed before this moment."""
        ws = self.state.watch
        assert tree.target is not None
        codes = await self._count(tree.target)
        caught_up: dict[str, str] = {rel: _kind(codes.get(rel)) for rel in touched}
        if codes:
            for rel in await asyncio.to_thread(_deleted_since, tree.target, codes, since):
                caught_up[rel] = Change.DELETED.value
        ws.running, ws.path, ws.mode, ws.entries = True, str(tree.target), "inotify", index.entries
        ws.last_error = None  # whatever failed or limited the watch before, it watches file by file now
        log.info("watching", path=str(tree.target), files=len(index.files), folders=len(index.dirs),
                 unannounced=len(caught_up))
        if caught_up:
            await self._record(tree.target, dict(sorted(caught_up.items())), recount=False)

    async def _follow(self, tree: Tree, index: TreeIndex, events: Events, anchors: Anchors) -> None:
        """Handle the tree's batches until the link moves, the tree goes or events are lost."""
        assert tree.target is not None and tree.identity is not None
        report = progress.current()
        while True:
            synced = time.time_ns()
            report.waiting("changes in the tree", VERIFY_PERIOD)
            batch = await events.batch(self.step, self.cap, VERIFY_PERIOD)
            report.working("classifying changes")
            if events.overflow:
                log.warning("watch_events_lost", path=str(tree.target))
                self.resume = (tree.identity, synced - RESUME_MARGIN_NS)
                return
            cut = next((i for i, ev in enumerate(batch) if anchors.moved(ev)), None)
            mine = batch if cut is None else batch[:cut]  # after the link moved: not the published tree
            if mine:
                try:
                    changes, root_gone = await asyncio.to_thread(self._classify, index, mine)
                except TooLarge:
                    self.resume = (tree.identity, synced - RESUME_MARGIN_NS)
                    return  # re-armed: the walk finds it too large and falls back to counting
                index.settle()
                self.state.watch.entries = index.entries
                if changes:
                    await self._record(tree.target, changes)
                if root_gone:
                    log.warning("watched_tree_deleted", path=str(tree.target))
                    return
            if cut is not None:
                if batch[cut].mask & inotify.IN_Q_OVERFLOW:
                    self.resume = (tree.identity, synced - RESUME_MARGIN_NS)
                return
            if not batch and resolve(self.settings.link) != tree:
                return

    @staticmethod
    def _classify(index: TreeIndex, batch: list[inotify.RawEvent]) -> tuple[dict[str, str], bool]:
        raw, root_gone = index.translate(batch)
        return index.classify(raw), root_gone

    async def _wait_for_move(self, events: Events | None, anchors: Anchors | None, tree: Tree,
                             timeout: float) -> bool:
        """Wait up to ``timeout``; True when the link (may have) moved from ``tree``."""
        progress.current().waiting("the link to move", timeout)
        if events is None or anchors is None:
            await asyncio.sleep(timeout)
        else:
            batch = await events.batch(self.step, self.cap, timeout)
            if events.overflow or any(anchors.moved(ev) for ev in batch):
                return True
        return resolve(self.settings.link) != tree

    async def _count_only(self, tree: Tree, watching: tuple[Events, Anchors] | None, why: str) -> None:
        """Too large to watch (or no inotify): count the edits once a period until the link moves."""
        ws = self.state.watch
        ws.running, ws.path, ws.mode = False, str(tree.target) if tree.target else None, "counting"
        ws.last_error = f"not watching file by file ({why}); counting local edits every {self.count_period:g} s"
        log.warning("watch_limited", path=ws.path, reason=why, count_period=self.count_period)
        events, anchors = watching if watching is not None else (None, None)
        while True:
            if tree.present:
                assert tree.target is not None
                await self._count(tree.target, collapse=True)
            deadline = time.monotonic() + self.count_period
            while (left := deadline - time.monotonic()) > 0:
                if await self._wait_for_move(events, anchors, tree, min(left, VERIFY_PERIOD)):
                    return

    async def _record(self, root: Path, changes: dict[str, str], *, recount: bool = True) -> None:
        """Count one batch, list it in /status, announce it, then bring the local-edit count up to date."""
        ws = self.state.watch
        now = time.time()
        kinds = list(changes.values())
        for kind in Change:
            if n := kinds.count(kind.value):
                ws.changes[kind.value] += n
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
        if recount:
            await self._count(root, paths if len(paths) <= FULL_SCAN_OVER else None)

    async def _count(self, root: Path, paths: list[str] | None = None, *, collapse: bool = False) -> dict[str, str]:
        """Bring the watch's local-edit count up to date: among ``paths`` (cost of the batch) or the whole tree.

        ``collapse`` lists a new folder once instead of file by file (the count of a huge tree).
        Returns git's code for each edited path it listed.
        """
        args = [a if not (collapse and a == "--untracked-files=all") else "--untracked-files=normal"
                for a in STATUS_ARGS]
        if paths is not None:
            args += ["--", *(f":(literal){p}" for p in paths)]
        ws = self.state.watch
        progress.current().working("counting edits")
        try:
            result = await self.git.run(args, cwd=root)
        except GitError as exc:
            # Not a git worktree (or git failing): changes are still counted, edits stay as they were.
            ws.last_error = f"local edits not counted: {exc}"
            log.warning("local_edits_unknown", path=str(root), error=str(exc))
            return {}
        codes, complete = _status_entries(result.stdout)
        # Paths of the batch are re-decided by git; every other edit stands as it was.
        self.edits = set(codes) if paths is None else self.edits.difference(paths).union(codes)
        ws.local_edits = len(self.edits)
        ws.local_edit_files = sorted(self.edits)
        ws.edits_complete = complete and not collapse
        ws.edits_time = time.time()
        return codes
