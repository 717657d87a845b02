"""Prometheus exposition of ``state``, read at scrape time by one custom collector.

Components never touch prometheus_client: they keep counters and histograms in ``state`` and this
module turns them into metric families when ``/metrics`` is scraped. prometheus_client costs about
0.1 s and 14 MB to import, so the endpoints load this module (in a worker thread) at the first
scrape rather than at start-up.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from sidecar import __version__, health, progress
from sidecar.config import Settings
from sidecar.state import Histogram, State

PREFIX = "edgelake_sidecar_"
# The classic text format; generate_latest writes it (names here are all legacy-valid).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _gauge(name: str, doc: str, value: float | None = None, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value, labels=None if value is not None else list(labels))


def _counter(name: str, doc: str, labels: Iterable[str]) -> CounterMetricFamily:
    return CounterMetricFamily(PREFIX + name, doc, labels=list(labels))


def _by(name: str, doc: str, label: str, counts: Mapping[str, int]) -> CounterMetricFamily:
    """A counter with one sample per ``label`` value."""
    family = _counter(name, doc, [label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family


def _histogram(name: str, doc: str, label: str | None, series: dict[str, Histogram]) -> HistogramMetricFamily:
    """One histogram per label value; with ``label`` None, ``series`` holds one unlabelled histogram."""
    family = HistogramMetricFamily(PREFIX + name, doc, labels=[label] if label else [])
    for value, hist in series.items():
        family.add_metric([value] if label else [], [(le, float(n)) for le, n in hist.cumulative()], hist.total)
    return family


class StateCollector:
    """Builds every ``edgelake_sidecar_*`` family from ``state`` at each scrape."""

    def __init__(self, settings: Settings, state: State) -> None:
        self.settings = settings
        self.state = state

    def collect(self) -> Iterator[Metric]:
        """Every family, in a stable order."""
        yield from self._sidecar()
        yield from self._probes()
        yield from self._checks()
        yield from self._scripts()
        yield from self._watch_and_hooks()
        yield from self._kube()
        yield from self._policy()

    def _sidecar(self) -> Iterator[Metric]:
        s = self.state
        yield InfoMetricFamily(PREFIX + "build", "Version of the sidecar and of Python.",
                               value={"version": __version__, "python_version": platform.python_version()})
        yield _gauge("event_loop_lag_seconds", "How late the event loop's watchdog woke up, last measurement.",
                     s.loop_lag)
        up = _gauge("component_up", "1 while a component task is running.", labels=["component"])
        restarts = _counter("component_restarts", "Times a component task failed and was restarted.",
                            ["component"])
        stuck = _gauge("component_stuck", "1 while a component's work is past its progress deadline.",
                       labels=["component"])
        now = time.monotonic()
        for name, comp in sorted(s.components.items()):
            up.add_metric([name], 1.0 if comp.alive else 0.0)
            restarts.add_metric([name], comp.restarts)
            stuck.add_metric([name], 0.0 if comp.overdue(now) is None else 1.0)
        yield from (up, restarts, stuck)

    def _probes(self) -> Iterator[Metric]:
        verdicts = {
            "livez": not progress.liveness(self.settings, self.state),
            "startupz": health.all_ok(health.startup(self.settings, self.state)),
            "readyz": health.all_ok(health.readiness(self.settings, self.state)),
            "node_livez": health.node_liveness(self.settings, self.state).ok,
        }
        family = _gauge("probe_passing", "1 when the probe endpoint would answer 200 now.", labels=["probe"])
        for probe, ok in verdicts.items():
            family.add_metric([probe], 1.0 if ok else 0.0)
        yield family

    def _checks(self) -> Iterator[Metric]:
        checks = sorted(self.state.checks.items())
        gating = set(self.settings.gating_checks())
        up = _gauge("check_up", "1 when the node check is up after its thresholds, 0 when down or undecided.",
                    labels=["check"])
        gates = _gauge("check_gates_readiness", "1 when the check gates /readyz.", labels=["check"])
        failures = _gauge("check_consecutive_failures", "Consecutive failed runs of the check.", labels=["check"])
        results = _counter("check_results", "Check runs by result reason (ok, refused, timeout, ...).",
                           ["check", "reason"])
        transitions = _counter("check_transitions", "Times the check changed between up and down.", ["check"])
        node = _gauge("node_info", "The node name and address the REST check last reported.", labels=["node"])
        for name, check in checks:
            up.add_metric([name], 1.0 if check.up else 0.0)
            gates.add_metric([name], 1.0 if name in gating else 0.0)
            failures.add_metric([name], check.consecutive_fail)
            transitions.add_metric([name], check.transitions)
            for reason, count in sorted(check.results.items()):
                results.add_metric([name, reason], count)
            if check.node_name:
                node.add_metric([check.node_name], 1.0)
        yield from (up, gates, failures, results, transitions, node)
        yield _histogram("check_duration_seconds", "Duration of one check run.", "check",
                         {name: check.duration for name, check in checks})

    def _scripts(self) -> Iterator[Metric]:
        sc = self.state.scripts
        yield _gauge("scripts_published", "1 once a scripts revision is published.", 1.0 if sc.published else 0.0)
        info = InfoMetricFamily(PREFIX + "scripts_revision", "The published scripts revision.",
                                labels=["revision", "source", "ref"])
        if sc.published:
            info.add_metric([sc.revision or "", sc.source or "", sc.ref or ""], {})
        yield info
        if sc.last_success_time is not None:
            yield _gauge("scripts_last_success_timestamp_seconds", "Unix time of the last successful sync.",
                         sc.last_success_time)
        if sc.published_time is not None:
            yield _gauge("scripts_published_timestamp_seconds", "Unix time the current revision was published.",
                         sc.published_time)
        yield _by("scripts_syncs", "Syncs by result (ok, noop, error, conflict, held).", "result", sc.syncs)
        yield _histogram("scripts_sync_duration_seconds", "Duration of one sync.", None, {"": sc.sync_duration})
        yield _gauge("scripts_sync_consecutive_failures", "Failed syncs since the last success.",
                     sc.consecutive_failures)
        yield _gauge("scripts_local_edits", "Files changed, added or deleted locally in the published tree.",
                     self.state.local_edits()[0])
        yield _gauge("scripts_conflict_files", "Files whose local edits conflict with the upstream update.",
                     len(sc.conflict_files))
        yield CounterMetricFamily(PREFIX + "scripts_revisions_published", "Revisions published since start.",
                                  value=sc.revisions_published)
        yield CounterMetricFamily(PREFIX + "scripts_cleanup_failures", "Failed removals of old revision folders.",
                                  value=sc.cleanup_failures)

    def _watch_and_hooks(self) -> Iterator[Metric]:
        w = self.state.watch
        yield _gauge("watch_running", "1 while the published tree is watched.", 1.0 if w.running else 0.0)
        changes = _counter("watch_changes", "Changes seen in the published tree, by kind.", ["kind"])
        for kind, count in sorted(w.changes.items()):
            changes.add_metric([kind], count)
        yield changes
        if w.last_change_time is not None:
            yield _gauge("watch_last_change_timestamp_seconds", "Unix time of the last change seen.",
                         w.last_change_time)
        hooks = sorted(self.state.hooks.items())
        runs = _counter("hook_runs", "Hook runs by hook and result (ok, error, timeout, skipped).",
                        ["hook", "result"])
        triggers = _counter("hook_triggers", "Triggers a hook received (pending ones coalesce into one run).",
                            ["hook"])
        failures = _gauge("hook_consecutive_failures", "Failed runs of the hook since its last success.",
                          labels=["hook"])
        pending = _gauge("hook_pending", "1 while a hook run is waiting.", labels=["hook"])
        for name, hook in hooks:
            triggers.add_metric([name], hook.triggers)
            failures.add_metric([name], hook.consecutive_failures)
            pending.add_metric([name], 1.0 if hook.pending else 0.0)
            for result, count in sorted(hook.runs.items()):
                runs.add_metric([name, result], count)
        yield from (runs, triggers, failures, pending)
        yield _histogram("hook_duration_seconds", "Duration of one hook run.", "hook",
                         {name: hook.duration for name, hook in hooks})

    def _kube(self) -> Iterator[Metric]:
        k = self.state.kube
        yield _gauge("kube_enabled", "1 when the Kubernetes API is in use.", 1.0 if k.enabled else 0.0)
        yield _gauge("kube_identity_written", "1 once the network identity env file is written.",
                     1.0 if k.identity_written else 0.0)
        yield _gauge("kube_problems", "Kubernetes jobs currently degraded (see /status kube.problems).",
                     len(k.problems))
        errors = _counter("kube_api_errors", "Kubernetes API calls that failed, by reason.", ["reason"])
        for error, count in sorted(k.api_errors.items()):
            errors.add_metric([error], count)
        yield errors
        yield CounterMetricFamily(PREFIX + "kube_events", "Events recorded on the pod.", value=k.events_sent)


    def _policy(self) -> Iterator[Metric]:
        p = self.state.policy
        if not p.enabled:
            return
        # Absent until the first answered read: before it nothing is known either way.
        if p.matches is not None:
            yield _gauge("node_policy_matches",
                         "1 when a policy of this node in the network's metadata carries its stable addresses.",
                         1.0 if p.matches else 0.0)
        if p.count is not None:
            yield _gauge("node_policies", "Policies in the network's metadata with this node's name and company.",
                         p.count)
        yield _by("node_policy_reads", "Reads of the node's policy by result (ok, error).", "result", p.reads)


class Exposition:
    """A registry of the state collector plus the process, platform and GC collectors."""

    def __init__(self, settings: Settings, state: State) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StateCollector(settings, state))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def render(self) -> bytes:
        """The text exposition, now."""
        return generate_latest(self.registry)
