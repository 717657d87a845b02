"""Writes the outcome of seed and sync into state and onto the bus (one place for both)."""

from __future__ import annotations

import time

from sidecar.events import EditsConflict, EditsHeld, ScriptsSeeded, ScriptsUpdated, SyncFailed, SyncRecovered
from sidecar.scripts.layout import Revision
from sidecar.scripts.workspace import Workspace, log


def published(ws: Workspace, rev: Revision, commit: str, edits: list[str], *, seeded: bool) -> None:
    """A revision is live: record it and announce it (``scripts-seeded`` or ``scripts-updated``)."""
    s = ws.state.scripts
    first = not s.published
    s.published = True
    s.published_event.set()
    s.source = rev.source
    s.ref = ws.settings.ref
    s.revision = commit
    s.revision_dir = str(rev.path)
    s.published_time = time.time()
    s.revisions_published += 1
    set_edits(ws, edits)
    s.conflict_files = []
    event, verb = (ScriptsSeeded, "seeded") if seeded or first else (ScriptsUpdated, "updated")
    ws.state.bus.publish(event(message=f"scripts {verb} from {rev.source} at {commit[:12]}",
                               revision=commit, source=rev.source, path=str(rev.path)))


def found(ws: Workspace, rev: Revision, commit: str, edits: list[str]) -> None:
    """A revision was already published on the volume at start: record it without an announcement."""
    s = ws.state.scripts
    s.published = True
    s.published_event.set()
    s.source = rev.source
    s.ref = ws.settings.ref
    s.revision = commit
    s.revision_dir = str(rev.path)
    set_edits(ws, edits)


def late_conflicts(ws: Workspace, files: list[str]) -> None:
    """Edits written to the old tree during a swap conflict with the new one; the old folder is kept."""
    ws.state.scripts.conflict_files = files
    ws.state.bus.publish(EditsConflict(message="edits made during an update conflict with it; they are kept in "
                                       f"the previous revision folder (files: {', '.join(files[:10])})",
                                       files=tuple(files)))


def set_edits(ws: Workspace, edits: list[str]) -> None:
    """The current list of locally edited paths."""
    ws.state.scripts.local_edits = len(edits)
    ws.state.scripts.local_edit_files = edits
    ws.state.scripts.edits_time = time.time()


def sync_done(ws: Workspace, result: str, started: float, error: str | None = None,
              conflicts: list[str] | None = None, *, refused: bool = False) -> None:
    """Record one sync attempt: ``ok``, ``noop``, ``held``, ``conflict`` or ``error``.

    ``refused``: the new tree was refused (a symlink pointing outside it). That is announced each
    time its reason changes, not only on the first of a run of failures: a person must act.
    """
    s = ws.state.scripts
    now = time.time()
    s.last_sync_time = now
    s.last_sync_result = result
    s.syncs[result] += 1
    s.sync_duration.observe(time.monotonic() - started)
    bus = ws.state.bus
    if result == "error":
        s.consecutive_failures += 1
        announce = s.consecutive_failures == 1 or (refused and error != s.last_sync_error)
        s.last_sync_error = error
        if announce:
            bus.publish(SyncFailed(message=f"scripts sync failing: {error}", error=error or ""))
        log.warning("sync_failed", error=error, consecutive=s.consecutive_failures)
        return
    if s.consecutive_failures:
        bus.publish(SyncRecovered(message=f"scripts sync recovered after {s.consecutive_failures} failures",
                                  failures=s.consecutive_failures))
        log.info("sync_recovered", after_failures=s.consecutive_failures)
    s.consecutive_failures = 0
    s.last_sync_error = None
    s.last_success_time = now
    if result == "conflict":
        s.conflict_files = conflicts or []
        bus.publish(EditsConflict(message="local edits conflict with the upstream update; keeping the current "
                                  f"tree (files: {', '.join(s.conflict_files[:10])})", files=tuple(s.conflict_files)))
        log.warning("sync_conflict", files=s.conflict_files)
    elif result == "held":
        bus.publish(EditsHeld(message=f"local edits hold an upstream update ({s.local_edits} files edited)",
                              files=tuple(s.local_edit_files[:50])))
        log.info("sync_held", edits=s.local_edits)
    else:
        s.conflict_files = []


def cleanup_done(ws: Workspace, failures: list[str], *, sweep: bool) -> None:
    """Old revision folders that could not be removed: counted, shown, logged (never only swallowed).

    A sweep that deleted everything waiting clears the shown error.
    """
    s = ws.state.scripts
    if not failures:
        if sweep:
            s.last_cleanup_error = None
        return
    s.cleanup_failures += len(failures)
    s.last_cleanup_error = "; ".join(failures[:5])
    log.warning("cleanup_failed", failures=failures[:20], total=s.cleanup_failures)
