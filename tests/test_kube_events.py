"""Events on the pod: kubelet-like aggregation, a bounded write rate, and API faults."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import structlog.testing
from fakekube import NAMESPACE, POD, FakeKube, client, kube_settings, service, until

from sidecar.backoff import Backoff
from sidecar.events import CheckDown, CheckUp, FilesChanged, ScriptsSeeded, SyncFailed
from sidecar.kube.events import EventsJob
from sidecar.kube.health import Health
from sidecar.kube.identity import IdentityJob
from sidecar.state import State


def events_job(fake: FakeKube, tmp_path: Path, **kwargs: Any) -> tuple[State, EventsJob]:
    state = State()
    settings = kube_settings(tmp_path)
    api = client(fake, tmp_path, settings, state.kube)
    kwargs.setdefault("backoff", Backoff.doubling(0.05, 0.2))
    return state, EventsJob(settings, state, api, Health(state.kube), **kwargs)


DOWN = CheckDown(message="rest check failed 3 times: refused", check="rest", reason="refused", failures=3)


async def test_repeats_become_one_event_with_a_rising_count(fake: FakeKube, tmp_path: Path) -> None:
    state, job = events_job(fake, tmp_path)
    task = asyncio.create_task(job.run())
    try:
        state.bus.publish(DOWN)
        await until(lambda: len(fake.events()) == 1)
        state.bus.publish(DOWN)
        await until(lambda: fake.events()[0]["count"] == 2)
        state.bus.publish(DOWN)
        await until(lambda: fake.events()[0]["count"] == 3)
        state.bus.publish(CheckUp(message="rest check is up", check="rest"))
        # not for `kubectl describe`:
        state.bus.publish(FilesChanged(message="2 files changed", changes={"a": "added"}, revision=None))
        await until(lambda: len(fake.events()) == 2)
        await asyncio.sleep(0.1)
    finally:
        task.cancel()
    down, up = fake.events()
    the_pod = fake.get("pods", POD)
    assert the_pod is not None
    assert down["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "name": POD, "namespace": NAMESPACE,
                                      "uid": the_pod["metadata"]["uid"]}
    assert (down["type"], down["reason"], down["message"]) == ("Warning", "NodePortDown", DOWN.message)
    assert down["source"] == {"component": "edgelake-sidecar", "host": "worker-1"}
    assert down["metadata"]["name"].startswith(POD + ".")
    assert down["firstTimestamp"] <= down["lastTimestamp"]
    assert (up["type"], up["reason"], up["count"]) == ("Normal", "NodePortUp", 1)
    assert len(fake.received("create", "events")) == 2 and len(fake.received("patch", "events")) == 2
    assert len(fake.events()) == 2  # files-changed made none
    assert state.kube.events_sent == 4


async def test_write_rate_is_bounded_and_counts_stay_right(fake: FakeKube, tmp_path: Path) -> None:
    state, job = events_job(fake, tmp_path, burst=3, refill=0.5)
    task = asyncio.create_task(job.run())
    try:
        started = time.monotonic()
        for i in range(60):
            state.bus.publish(DOWN if i % 2 else SyncFailed(message="git ls-remote: timeout", error="timeout"))
            await asyncio.sleep(0.01)
        # (and the job has seen its last write answered: it counts after the answer)
        await until(lambda: sum(e["count"] for e in fake.events()) == 60 and not job.dirty)
        elapsed = time.monotonic() - started
    finally:
        task.cancel()
    writes = len(fake.received("create", "events")) + len(fake.received("patch", "events"))
    assert writes <= 3 + elapsed / 0.5 + 1, (writes, elapsed)  # burst, then one per refill
    assert sorted(e["count"] for e in fake.events()) == [30, 30]
    assert state.kube.events_folded == 60 - writes


async def test_forbidden_events_degrade_once_and_identity_keeps_working(fake: FakeKube, tmp_path: Path) -> None:
    fake.forbid.add("events")
    fake.put(service())
    state, job = events_job(fake, tmp_path)
    identity = IdentityJob(job.settings, state.kube, job.client, job.health)
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(job.run())
        try:
            state.bus.publish(DOWN)
            await until(lambda: state.kube.api_errors["forbidden"] >= 3)
            await identity.refresh()
        finally:
            task.cancel()
    assert state.kube.problems["events"].startswith('forbidden: events is forbidden: User "system:serviceaccount')
    assert [e["event"] for e in logs].count("kube_degraded") == 1
    assert state.kube.identity_written and "identity" not in state.kube.problems
    fake.forbid.clear()  # permission granted: the pending occurrence is written
    task = asyncio.create_task(job.run())
    try:
        await until(lambda: len(fake.events()) == 1)
        await until(lambda: "events" not in state.kube.problems)
    finally:
        task.cancel()


async def test_expired_event_is_created_again(fake: FakeKube, tmp_path: Path) -> None:
    _, job = events_job(fake, tmp_path)
    job.add(DOWN)
    await job.write(job.series[next(iter(job.series))])
    first = fake.events()[0]["metadata"]["name"]
    fake.delete("events", first)  # the API server's event TTL passed
    job.add(DOWN)
    await job.write(job.series[next(iter(job.series))])
    (again,) = fake.events()
    assert again["metadata"]["name"] != first and again["count"] == 2
    assert [r.verb for r in fake.received(resource="events")] == ["create", "patch", "create"]


async def test_api_down_then_up_delivers_what_happened(fake: FakeKube, tmp_path: Path) -> None:
    fake.stop()
    state, job = events_job(fake, tmp_path)
    task = asyncio.create_task(job.run())
    try:
        state.bus.publish(ScriptsSeeded(message="seeded revision abc123 from git", revision="abc123", source="git",
                                        path="/scripts/rev-abc123"))
        state.bus.publish(DOWN)
        await until(lambda: state.kube.api_errors["unreachable"] >= 2)
        fake.start()
        await until(lambda: len(fake.events()) == 2)
    finally:
        task.cancel()
    assert {e["reason"] for e in fake.events()} == {"ScriptsSeeded", "NodePortDown"}


async def test_many_different_messages_of_one_reason_are_combined(fake: FakeKube, tmp_path: Path) -> None:
    """client-go's EventAggregator: the tenth different message in ten minutes starts a combined Event."""
    _, job = events_job(fake, tmp_path)
    for i in range(12):
        job.add(SyncFailed(message=f"git fetch failed: attempt {i}", error=f"attempt {i}"))
        while job.dirty:
            key = next(iter(job.dirty))
            await job.write(job.series[key])
            job.dirty.pop(key)
    stored = fake.events()
    assert len(stored) == 10
    assert [e["count"] for e in stored] == [1] * 9 + [3]
    assert stored[-1]["message"] == "(combined from similar events): git fetch failed: attempt 11"


async def test_name_conflict_and_server_error_are_retried(fake: FakeKube, tmp_path: Path) -> None:
    state, job = events_job(fake, tmp_path)
    fake.fail_next[("create", "events")] = 409
    task = asyncio.create_task(job.run())
    try:
        state.bus.publish(DOWN)
        await until(lambda: len(fake.events()) == 1)
        fake.fail_next[("patch", "events")] = 500
        state.bus.publish(DOWN)
        await until(lambda: fake.events()[0]["count"] == 2)
    finally:
        task.cancel()
    assert state.kube.api_errors == {"conflict": 1, "server-error": 1}
    assert [r.verb for r in fake.received(resource="events")] == ["create", "create", "patch", "patch"]


async def test_waiting_for_the_next_event_never_swallows_a_cancellation() -> None:
    """An event that arrives in the same turn as the cancellation must not keep the job running.

    On Python 3.11 ``asyncio.wait_for`` returns such an event instead of raising, and the job's loop
    then waits for ever: a stop that never ends (seen as a test hanging until its timeout).
    """
    from sidecar.kube.health import next_event

    for timeout in (None, 30.0):
        queue: asyncio.Queue[Any] = asyncio.Queue()
        task = asyncio.create_task(next_event(queue, timeout))
        for _ in range(3):
            await asyncio.sleep(0)  # the task now waits in queue.get()
        queue.put_nowait(SyncFailed(message="x", error="x"))
        task.cancel()
        try:
            got = await task
        except asyncio.CancelledError:
            continue
        raise AssertionError(f"timeout={timeout}: the cancellation was swallowed, the task returned {got!r}")
