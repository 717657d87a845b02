"""Writes the outcome of seed and sync into state and onto the bus (one place for both)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sidecar.events import (
    EditsConflict,
    EditsHeld,
    ScriptsAdopted,
    ScriptsLost,
    ScriptsSeeded,
    ScriptsUpdated,
    SyncFailed,
    SyncRecovered,
)
from sidecar.scripts.layout import Revision
from sidecar.scripts.workspace import Workspace, log

if TYPE_CHECKING:
    from sidecar.scripts.basefind import Match


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
    s.problem = None
    s.held_upstream = None
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
    s.problem = None
    set_edits(ws, edits)


def adopted(ws: Workspace, match: Match) -> None:
    """The base an adopted tree got (or why it got none): the log, ``/status`` and an Event."""
    if match.commit is None:
        log.warning("adoption_base_not_found", reason=match.reason, commits_searched=match.searched)
    else:
        log.info("adoption_base", base=match.commit, reason=match.reason, identical=match.identical,
                 edited=match.edited[:20], added=match.added[:20], missing=match.missing[:20],
                 not_moved=match.not_moved[:20])
    adoption_known(ws, match.as_dict())


def adoption_known(ws: Workspace, record: dict[str, Any]) -> None:
    """Show an adoption (``Match.as_dict()``) in ``/status`` and as an Event: this process's, or the
    one a ``seed`` run made before (it had no one to send the Event to)."""
    ws.state.scripts.adoption = record
    base = record.get("base")
    counts = (f"{record.get('identical')} identical, {record.get('edited')} edited, {record.get('added')} added, "
              f"{record.get('missing')} missing")
    message = (f"adopted the tree found at the link on base {str(base)[:12]} ({record.get('reason')}; {counts})"
               if base else f"adopted the tree found at the link without a matching upstream commit: "
                            f"{record.get('reason')}")
    ws.state.bus.publish(ScriptsAdopted(message=message, base=base, reason=str(record.get("reason")),
                                        identical=int(record.get("identical") or 0),
                                        edited=tuple(record.get("edited_files") or ()),
                                        added=tuple(record.get("added_files") or ()),
                                        missing=tuple(record.get("missing_files") or ())))


def lost(ws: Workspace, problem: str) -> None:
    """The published tree is not there any more (link or root gone or replaced): not ready until repaired."""
    s = ws.state.scripts
    first = s.problem is None
    s.published = False
    s.problem = problem
    if first:
        log.error("scripts_lost", problem=problem)
        ws.state.bus.publish(ScriptsLost(message=f"the published scripts are gone: {problem}; repairing",
                                         problem=problem))


def moved_aside(ws: Workspace, what: str, where: str) -> None:
    """A file or folder a person put where the link was is kept in the root."""
    log.warning("link_path_content_kept", found=what, moved_to=where)
    ws.state.bus.publish(ScriptsLost(message=f"a {what} was where the link should be; it is kept at {where}",
                                     problem=f"a {what} is where the link should be", kept_at=where))


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
    held = s.held_upstream or "unknown"
    if result == "conflict":
        s.conflict_files = conflicts or []
        bus.publish(EditsConflict(message=f"local edits conflict with upstream commit {held[:12]}; keeping the "
                                  f"current tree (files: {', '.join(s.conflict_files[:10])}); settle it with "
                                  "`edgelake-sidecar resolve --take upstream|mine`",
                                  files=tuple(s.conflict_files), upstream=s.held_upstream))
        log.warning("sync_conflict", files=s.conflict_files, upstream=s.held_upstream)
    elif result == "held":
        bus.publish(EditsHeld(message=f"local edits hold upstream commit {held[:12]} back "
                              f"({s.local_edits} files edited)", files=tuple(s.local_edit_files[:50]),
                              upstream=s.held_upstream))
        log.info("sync_held", edits=s.local_edits, upstream=s.held_upstream)
    else:  # late edits a publication could not carry stay listed (the caller passes them on)
        s.conflict_files = conflicts or []
        s.held_upstream = None


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
