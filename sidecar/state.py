"""The in-memory truth: every component writes its part, the HTTP layer and metrics read it.

Nothing here performs I/O. Each section has one writer; everyone else only reads it:

- ``scripts``: ``scripts/report.py`` (the outcome of seed and sync) and the sync loop's
  ``next_sync_time`` and first-publish error (``scripts/sync.py``).
- ``checks[name]``: that check's ``checks/runner.py`` ``CheckRunner``.
- ``watch``: ``watch/watcher.py``. It keeps its own count of the local edits; readers take the
  newer of the two counts through :meth:`State.local_edits`.
- ``hooks[name]``: that hook's runner in ``hooks/runner.py`` (``hooks/component.py`` creates the entries).
- ``kube``: ``kube/``, one module per field: ``enabled``/``mode`` ``jobs.py``; ``namespace`` and
  ``first_request_time`` ``client.py``; ``problem``/``problems``/``api_errors`` ``health.py`` (on behalf
  of every job); ``identity*`` ``identity.py``; ``events_*`` ``events.py``; ``annotations``
  ``annotations.py``.
- ``policy``: ``policy/runner.py`` ``PolicyReader``.
- ``components[name]``, ``loop_lag``, ``shutting_down``: ``app.py`` (the supervisor and its watchdog),
  except ``components[name].activities``, which the component itself writes through its
  ``progress.Progress`` handle.
- ``sync_now`` is a request, not state: set by whoever asks for a sync (``POST /sync`` in
  ``http/routes.py``, SIGHUP in ``app.py``), cleared by the sync loop that serves it.
- ``bus`` is the fan-out of events (``sidecar.events``), not state.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from sidecar.bus import Bus

# Seconds; shared by every duration histogram so dashboards can compare them.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class Histogram:
    """Cumulative histogram data, exported by metrics.py as a Prometheus histogram."""

    buckets: tuple[float, ...] = DURATION_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        """Record one observation."""
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, cumulative count)`` pairs ending with ``+Inf``."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip(self.buckets, self.counts, strict=False):
            running += n
            out.append((repr(float(bound)), running))
        out.append(("+Inf", self.count))
        return out


# --- scripts ---------------------------------------------------------------------------------------


@dataclass
class ScriptsState:
    """Written by scripts/ (seed and sync)."""

    published: bool = False
    # Set together with ``published`` the first time: the node checks wait on it.
    published_event: asyncio.Event = field(default_factory=asyncio.Event)
    source: str | None = None  # git | fallback | adopted
    ref: str | None = None
    revision: str | None = None
    revision_dir: str | None = None
    published_time: float | None = None
    last_sync_time: float | None = None
    last_sync_result: str | None = None  # ok | noop | error | conflict | held
    last_sync_error: str | None = None
    last_success_time: float | None = None
    next_sync_time: float | None = None
    consecutive_failures: int = 0
    local_edits: int = 0  # as of edits_time (the watcher, when enabled, keeps its own count current)
    local_edit_files: list[str] = field(default_factory=list)
    edits_time: float | None = None
    conflict_files: list[str] = field(default_factory=list)
    syncs: Counter[str] = field(default_factory=Counter)
    sync_duration: Histogram = field(default_factory=Histogram)
    revisions_published: int = 0
    problem: str | None = None  # why the published tree is not there right now (link replaced, root gone)
    held_upstream: str | None = None  # the upstream commit a conflict or a hold keeps back
    adoption: dict[str, Any] = field(default_factory=dict)  # the base an adopted tree got, and why
    cleanup_failures: int = 0  # old revision folders that could not be removed (attempts)
    last_cleanup_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The ``/status`` view."""
        return {
            "published": self.published,
            "source": self.source,
            "ref": self.ref,
            "revision": self.revision,
            "published_time": _iso(self.published_time),
            "last_sync_time": _iso(self.last_sync_time),
            "last_sync_result": self.last_sync_result,
            "last_sync_error": self.last_sync_error,
            "last_success_time": _iso(self.last_success_time),
            "next_sync_time": _iso(self.next_sync_time),
            "consecutive_failures": self.consecutive_failures,
            "local_edits": self.local_edits,
            "local_edit_files": self.local_edit_files[:100],
            "conflict_files": self.conflict_files,
            "held_upstream": self.held_upstream,
            "problem": self.problem,
            "adoption": self.adoption or None,
            "syncs": dict(self.syncs),
            "cleanup_failures": self.cleanup_failures,
            "last_cleanup_error": self.last_cleanup_error,
        }


# --- node checks -----------------------------------------------------------------------------------


@dataclass
class CheckResult:
    """One run of one check."""

    ok: bool
    reason: str  # ok | refused | timeout | reset | bad-status | bad-body | ...
    duration: float
    at: float
    detail: str = ""


@dataclass
class CheckState:
    """Written by checks/runner.py, one per enabled check."""

    name: str
    up: bool | None = None  # None until the thresholds have decided
    consecutive_ok: int = 0
    consecutive_fail: int = 0
    failing_since: float | None = None  # wall time of the first failure of the current run of failures
    # The same instant on the monotonic clock: /node/livez measures "failing for how long" with it,
    # so a wall-clock step can never make it restart the node.
    failing_since_monotonic: float | None = None
    last: CheckResult | None = None
    history: deque[CheckResult] = field(default_factory=lambda: deque(maxlen=20))
    results: Counter[str] = field(default_factory=Counter)
    duration: Histogram = field(default_factory=Histogram)
    transitions: int = 0
    node_name: str | None = None  # the name the REST check reports

    def as_dict(self) -> dict[str, Any]:
        """The ``/status`` view."""
        return {
            "up": self.up,
            "consecutive_ok": self.consecutive_ok,
            "consecutive_fail": self.consecutive_fail,
            "failing_since": _iso(self.failing_since),
            "node_name": self.node_name,
            "results": dict(self.results),
            "recent": [
                {"ok": r.ok, "reason": r.reason, "duration_ms": round(r.duration * 1000, 2), "at": _iso(r.at),
                 **({"detail": r.detail} if r.detail else {})}
                for r in self.history
            ],
        }


# --- watch and hooks -------------------------------------------------------------------------------


@dataclass
class WatchState:
    """Written by watch/."""

    running: bool = False  # a tree is being watched file by file right now
    mode: str = "waiting"  # inotify | counting (too large, or no inotify) | waiting (no tree) | failed
    path: str | None = None  # the revision folder being watched (the link's target)
    entries: int = 0  # files and folders watched one by one
    local_edits: int | None = None  # the watcher's own count of the tree's edits, None until counted
    local_edit_files: list[str] = field(default_factory=list)
    edits_complete: bool = True  # False: a count capped by its size, or new folders counted once
    edits_time: float | None = None
    changes: Counter[str] = field(default_factory=Counter)  # added | modified | deleted
    batches: int = 0  # debounced batches that held at least one change
    rearms: int = 0  # times the watch moved to a new or recreated tree
    last_change_time: float | None = None
    last_error: str | None = None
    recent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=50))  # at (epoch), kind, path

    def as_dict(self) -> dict[str, Any]:
        """The ``/status`` view."""
        return {
            "running": self.running,
            "mode": self.mode,
            "path": self.path,
            "entries": self.entries,
            "local_edits": self.local_edits,
            "edits_complete": self.edits_complete,
            "changes": dict(self.changes),
            "batches": self.batches,
            "rearms": self.rearms,
            "last_change_time": _iso(self.last_change_time),
            "last_error": self.last_error,
            "recent": [{**r, "at": _iso(r["at"])} for r in self.recent],
        }


@dataclass
class HookState:
    """Written by hooks/runner.py, one per configured hook (named ``<trigger>-<action>``, e.g. ``change-rest``)."""

    name: str
    triggers: int = 0  # triggers received; runs stay far fewer because pending triggers coalesce
    runs: Counter[str] = field(default_factory=Counter)  # ok | error | timeout | refused | skipped
    duration: Histogram = field(default_factory=Histogram)
    last_result: str | None = None
    last_error: str | None = None
    last_run_time: float | None = None
    consecutive_failures: int = 0
    next_retry_time: float | None = None  # set while a failed run waits out its backoff
    pending: bool = False
    stopped: bool = False  # the last trigger was refused too often and dropped; waits for the next

    def as_dict(self) -> dict[str, Any]:
        """The ``/status`` view."""
        return {
            "triggers": self.triggers,
            "runs": dict(self.runs),
            "last_result": self.last_result,
            "last_error": self.last_error,
            "last_run_time": _iso(self.last_run_time),
            "consecutive_failures": self.consecutive_failures,
            "next_retry_time": _iso(self.next_retry_time),
            "pending": self.pending,
            "stopped": self.stopped,
        }


# --- kubernetes ------------------------------------------------------------------------------------


@dataclass
class KubeState:
    """Written by kube/."""

    enabled: bool = False
    mode: str = "off"  # off | in-cluster | kubeconfig
    namespace: str | None = None
    problem: str | None = None  # every current problem on one line (summary of ``problems``)
    problems: dict[str, str] = field(default_factory=dict)  # job -> "reason: message", said once
    identity_written: bool = False
    identity: dict[str, str] = field(default_factory=dict)
    identity_source: str | None = None  # service (read now) | file (a previous run's, API not read yet)
    identity_time: float | None = None  # when the Service was last read successfully
    events_sent: int = 0  # API writes (creates and count patches)
    events_folded: int = 0  # occurrences added to an Event's count without their own write
    annotations: dict[str, str] = field(default_factory=dict)  # as last patched onto the pod
    api_errors: Counter[str] = field(default_factory=Counter)
    first_request_time: float | None = None  # wall time of the first API request

    def as_dict(self) -> dict[str, Any]:
        """The ``/status`` view."""
        return {
            "enabled": self.enabled,
            "mode": self.mode,
            "namespace": self.namespace,
            "problem": self.problem,
            "problems": dict(self.problems),
            "identity_written": self.identity_written,
            "identity": self.identity,
            "identity_source": self.identity_source,
            "identity_time": _iso(self.identity_time),
            "events_sent": self.events_sent,
            "events_folded": self.events_folded,
            "annotations": self.annotations,
            "api_errors": dict(self.api_errors),
            "first_request_time": _iso(self.first_request_time),
        }


@dataclass
class ResolveRequest:
    """A person's choice for a held conflict (POST /resolve), answered by the scripts component."""

    take: str  # upstream | mine
    paths: tuple[str, ...]  # empty: every conflicting file
    answer: asyncio.Future[dict[str, Any]]


# --- the node's policy ----------------------------------------------------------------------------


@dataclass
class PolicyState:
    """Written by policy/runner.py: what the last read of the node's own policy found."""

    enabled: bool = False
    kind: str | None = None  # the policy type read (operator, master, ...)
    name: str | None = None  # the node name the policies were looked up by
    company: str | None = None
    verdict: str | None = None  # match | drift | missing | duplicates; None before the first answer
    matches: bool | None = None
    count: int | None = None  # policies carrying this node's name and company
    summary: str | None = None  # one sentence: what was found, which field differs
    policy: dict[str, Any] | None = None  # the policy that speaks for the node (id, addresses, differences)
    policies: list[dict[str, Any]] = field(default_factory=list)  # every one of them (capped)
    expected: dict[str, str] = field(default_factory=dict)  # the addresses it should carry
    expected_source: str | None = None  # kubernetes (the identity file's values) | environment
    last_read_time: float | None = None  # wall time of the last answered read
    next_read_time: float | None = None
    last_error: str | None = None  # why the last read got no verdict (None after a verdict)
    reads: Counter[str] = field(default_factory=Counter)  # ok | error

    def as_dict(self) -> dict[str, Any]:
        """The ``/status`` view (``node.policy``)."""
        return {
            "enabled": self.enabled,
            "type": self.kind,
            "name": self.name,
            "company": self.company,
            "verdict": self.verdict,
            "matches": self.matches,
            "count": self.count,
            "duplicates": None if self.count is None else self.count > 1,
            "summary": self.summary,
            "id": (self.policy or {}).get("id"),
            "policy": self.policy,
            "policies": self.policies,
            "expected": self.expected,
            "expected_source": self.expected_source,
            "last_read_time": _iso(self.last_read_time),
            "next_read_time": _iso(self.next_read_time),
            "last_error": self.last_error,
            "reads": dict(self.reads),
        }


# --- the whole ---------------------------------------------------------------------------------------


@dataclass
class Activity:
    """What one part of a component is doing, and by when it must report again (see sidecar.progress)."""

    doing: str
    since: float  # wall time it started, for /status
    due: float | None  # monotonic deadline of its next report; None: waiting on something outside, never late


@dataclass
class ComponentHealth:
    """One supervised component task: written by app.py, except ``activities``, which the component
    itself writes through its ``Progress`` handle."""

    deadline: float | None = None  # seconds of work without progress before it counts as stuck; None: not tracked
    alive: bool = False
    restarts: int = 0
    last_error: str | None = None
    stuck: bool = False  # the supervisor has logged it as stuck and not yet as moving again
    activities: dict[str, Activity] = field(default_factory=dict)  # "" is the component's main activity

    def overdue(self, now: float) -> tuple[str, float] | None:
        """The activity most past its deadline at monotonic ``now``, and by how many seconds; None if none is."""
        late = [(a.doing, now - a.due) for a in self.activities.values() if a.due is not None and now > a.due]
        return max(late, key=lambda item: item[1]) if late else None

    def as_dict(self, now: float) -> dict[str, Any]:
        """The ``/status`` view."""
        late = self.overdue(now)
        return {
            "alive": self.alive,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "deadline_seconds": self.deadline,
            "doing": {part or "main": {"doing": a.doing, "since": _iso(a.since)}
                      for part, a in self.activities.items()},
            "overdue_seconds": None if late is None else round(late[1], 3),
        }


@dataclass
class State:
    """Everything the sidecar knows right now."""

    started: float = field(default_factory=time.time)
    bus: Bus = field(default_factory=Bus)
    scripts: ScriptsState = field(default_factory=ScriptsState)
    checks: dict[str, CheckState] = field(default_factory=dict)
    watch: WatchState = field(default_factory=WatchState)
    hooks: dict[str, HookState] = field(default_factory=dict)
    kube: KubeState = field(default_factory=KubeState)
    policy: PolicyState = field(default_factory=PolicyState)
    components: dict[str, ComponentHealth] = field(default_factory=dict)
    loop_lag: float = 0.0
    shutting_down: bool = False
    sync_now: asyncio.Event = field(default_factory=asyncio.Event)  # set by POST /sync and SIGHUP
    resolve_requests: asyncio.Queue[ResolveRequest] = field(default_factory=asyncio.Queue)  # POST /resolve

    def local_edits(self) -> tuple[int, list[str]]:
        """The freshest count of local edits: the publisher's (at its last sync) or the watcher's.

        Each section has its own writer; readers (``/status``, the metrics) take the newer one.
        """
        s, w = self.scripts, self.watch
        if w.local_edits is not None and w.edits_time is not None and (s.edits_time is None
                                                                       or w.edits_time >= s.edits_time):
            return w.local_edits, w.local_edit_files
        return s.local_edits, s.local_edit_files


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int((ts % 1) * 1000):03d}Z"
