"""Kubernetes Events on the pod for what a person wants in ``kubectl describe pod``.

Like kubelet's event recorder (client-go ``EventCorrelator``): an occurrence with the same type,
reason and message as an earlier one is not a new Event; the existing Event's ``count`` and
``lastTimestamp`` are patched. Once ten different messages of one type and reason come within ten
minutes, further ones go to one Event, "(combined from similar events): <latest message>", as
client-go's ``EventAggregator`` does (a failure whose text changes must not mint an Event each time).
Writes are bounded by a token bucket (a burst, then one write per
``refill`` seconds); occurrences that arrive while no write is allowed are folded into the pending
count, so the count stays right while the API sees few writes. Events are core/v1, as kubelet
writes them, so ``kubectl describe`` and ``kubectl get events`` show the count.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sidecar import logs, progress
from sidecar.backoff import Backoff, Retries
from sidecar.config import Settings
from sidecar.events import Event, Kind
from sidecar.kube.client import STRATEGIC_MERGE_PATCH, KubeClient, KubeError
from sidecar.kube.health import API_BACKOFF, Health, next_event
from sidecar.state import State

log = logs.get("kube.events")

COMPONENT = "edgelake-sidecar"
REASONS = {  # the kinds a person wants in `kubectl describe pod`, with their Event reason
    Kind.SCRIPTS_SEEDED: "ScriptsSeeded",
    Kind.SCRIPTS_UPDATED: "ScriptsUpdated",
    Kind.SYNC_FAILED: "SyncFailed",
    Kind.SYNC_RECOVERED: "SyncRecovered",
    Kind.EDITS_HELD: "LocalEditsHeld",
    Kind.EDITS_CONFLICT: "LocalEditsConflict",
    Kind.SCRIPTS_ADOPTED: "ScriptsAdopted",
    Kind.SCRIPTS_LOST: "ScriptsLost",
    Kind.CONFLICT_RESOLVED: "LocalEditsResolved",
    Kind.CHECK_DOWN: "NodePortDown",
    Kind.CHECK_UP: "NodePortUp",
    Kind.POLICY_DRIFT: "PolicyDrift",
    Kind.DUPLICATE_POLICIES: "DuplicatePolicies",
    Kind.POLICY_MATCHES: "PolicyMatches",
    Kind.NODE_LIVEZ_FAILING: "NodeLivenessFailing",
    Kind.NODE_LIVEZ_OK: "NodeLivenessOk",
    Kind.HOOK_REFUSED: "HookRefused",
}
MAX_MESSAGE = 1024
SIMILAR_MAX = 10  # different messages of one (type, reason) before they are combined (client-go's default)
SIMILAR_WINDOW = 600.0  # seconds those messages must come within
COMBINED = "(combined from similar events): "


def _timestamp(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclass
class Series:
    """Every occurrence of one (type, reason, message): one Event in the API."""

    type: str
    reason: str
    message: str
    count: int = 0  # occurrences so far
    written: int = 0  # the count the API has
    first: float = 0.0
    last: float = 0.0
    name: str | None = None  # the Event's name once created


class TokenBucket:
    """``burst`` writes at once, then one more every ``refill`` seconds."""

    def __init__(self, burst: int, refill: float) -> None:
        self.burst = burst
        self.refill = refill
        self.tokens = float(burst)
        self._at = time.monotonic()

    def wait(self) -> float:
        """Seconds until a token is available (0: now)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self._at) / self.refill)
        self._at = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) * self.refill

    def take(self) -> None:
        self.tokens -= 1


class EventsJob:
    """Turns bus events into Events: aggregates, bounds the rate, retries with backoff."""

    def __init__(self, settings: Settings, state: State, client: KubeClient, health: Health, *,
                 burst: int = 25, refill: float = 30.0, cache: int = 256, backoff: Backoff = API_BACKOFF) -> None:
        self.settings = settings
        self.kube = state.kube
        self.client = client
        self.health = health
        self.queue = state.bus.subscribe()
        self.bucket = TokenBucket(burst, refill)
        self.cache_size = cache
        self.retries = Retries(backoff)
        self.series: OrderedDict[tuple[str, str, str], Series] = OrderedDict()  # least recently seen first
        self.dirty: OrderedDict[tuple[str, str, str], None] = OrderedDict()  # series with unwritten counts
        self.similar: dict[tuple[str, str], tuple[set[str], float]] = {}  # messages seen, when last

    def add(self, event: Event) -> None:
        """Count one occurrence of a bus event (events that are not for people are ignored)."""
        reason = REASONS.get(event.kind)
        if reason is None:
            return
        kind = "Warning" if event.warning else "Normal"
        message = event.message[:MAX_MESSAGE]
        now = time.time()
        key = (kind, reason, message)
        messages, last = self.similar.get((kind, reason), (set(), now))
        if now - last > SIMILAR_WINDOW:
            messages = set()
        messages.add(message)
        self.similar[(kind, reason)] = (messages, now)
        if len(messages) >= SIMILAR_MAX:
            messages.discard(message)  # keeps the set bounded, as client-go does
            key, message = (kind, reason, COMBINED), (COMBINED + message)[:MAX_MESSAGE]
        series = self.series.pop(key, None) or Series(kind, reason, message, first=now)
        series.count += 1
        series.last = now
        series.message = message
        self.series[key] = series
        self.dirty[key] = None
        while len(self.series) > self.cache_size:  # forget the oldest series that has nothing to write
            oldest = next((k for k in self.series if k not in self.dirty), None)
            if oldest is None:
                break
            del self.series[oldest]

    async def run(self) -> None:
        """Never returns: waits for bus events, writes what the rate allows, backs off on API errors."""
        report = progress.current()
        while True:
            if not self.dirty:
                report.waiting("bus events")
                event = await next_event(self.queue, None)
                assert event is not None
                self.add(event)
            while not self.queue.empty():
                self.add(self.queue.get_nowait())
            wait = self.bucket.wait()
            if wait > 0:
                report.waiting("the write rate", wait)
                event = await next_event(self.queue, wait)
                if event is not None:
                    self.add(event)
                continue
            key = next(iter(self.dirty))
            self.bucket.take()
            report.working("writing an Event")
            try:
                await self.write(self.series[key])
            except KubeError as exc:
                self.health.fail("events", exc.reason, str(exc))
                await self._collect_for(self.retries.failed())
                continue
            self.dirty.pop(key, None)
            self.health.ok("events")
            self.retries.reset()

    async def _collect_for(self, seconds: float) -> None:
        """Wait, still counting the bus events that arrive (the queue must not overflow meanwhile)."""
        progress.current().waiting("retry after an API error", seconds)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            event = await next_event(self.queue, left)
            if event is not None:
                self.add(event)

    async def write(self, series: Series) -> None:
        """Create the Event, or patch its count; an Event that expired (404) is created again."""
        count = series.count
        if series.name is not None:
            patch = {"count": count, "lastTimestamp": _timestamp(series.last), "message": series.message}
            try:
                await self.client.request("PATCH", "events", series.name, patch, STRATEGIC_MERGE_PATCH)
            except KubeError as exc:
                if exc.status != 404:
                    raise
                series.name = None  # the API server dropped it (events live an hour by default)
        if series.name is None:
            name = f"{self.settings.pod_name}.{time.time_ns():x}"  # kubelet's naming: <object>.<hex nanos>
            await self.client.request("POST", "events", body=await self._body(series, name, count))
            series.name = name
        self.kube.events_sent += 1
        self.kube.events_folded += max(0, count - series.written - 1)
        series.written = count
        log.debug("event_written", reason=series.reason, count=count, name=series.name)

    async def _body(self, series: Series, name: str, count: int) -> dict[str, Any]:
        pod = await self.client.pod()  # the uid lets `kubectl describe pod` find the Event
        meta = pod.get("metadata") or {}
        namespace = self.client.namespace
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": self.settings.pod_name,
                               "namespace": namespace, "uid": meta.get("uid", "")},
            "reason": series.reason,
            "message": series.message,
            "type": series.type,
            "count": count,
            "firstTimestamp": _timestamp(series.first),
            "lastTimestamp": _timestamp(series.last),
            "source": {"component": COMPONENT, "host": (pod.get("spec") or {}).get("nodeName", "")},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.settings.pod_name,
        }
