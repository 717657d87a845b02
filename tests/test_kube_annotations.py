"""Pod annotations follow the published scripts' revision and source."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fakekube import POD, FakeKube, client, kube_settings, until

from sidecar.backoff import Backoff
from sidecar.events import CheckDown, ScriptsSeeded, ScriptsUpdated
from sidecar.kube.annotations import REVISION, SOURCE, AnnotationsJob
from sidecar.kube.health import Health
from sidecar.state import State


def annotations_job(fake: FakeKube, tmp_path: Path, state: State) -> AnnotationsJob:
    settings = kube_settings(tmp_path)
    api = client(fake, tmp_path, settings, state.kube)
    return AnnotationsJob(settings, state, api, Health(state.kube), Backoff.doubling(0.05, 0.2))


def annotations(fake: FakeKube) -> dict[str, str]:
    found = fake.get("pods", POD)
    assert found is not None
    return dict(found["metadata"]["annotations"])


async def test_revision_and_source_follow_the_scripts(fake: FakeKube, tmp_path: Path) -> None:
    state = State()
    state.scripts.published, state.scripts.revision, state.scripts.source = True, "1111aaa", "fallback"
    task = asyncio.create_task(annotations_job(fake, tmp_path, state).run())
    try:
        await until(lambda: annotations(fake).get(REVISION) == "1111aaa")
        assert annotations(fake)[SOURCE] == "fallback"
        assert annotations(fake)["kubectl.kubernetes.io/default-container"] == "node"  # others kept
        update = ScriptsUpdated(message="updated to 2222bbb", revision="2222bbb", source="git", path="/s/2222bbb")
        state.bus.publish(update)
        await until(lambda: annotations(fake).get(REVISION) == "2222bbb")
        assert annotations(fake)[SOURCE] == "git"
        state.bus.publish(update)  # the same values again: nothing to send
        state.bus.publish(CheckDown(message="rest down", check="rest", reason="refused", failures=3))
        await asyncio.sleep(0.2)
    finally:
        task.cancel()
    patches = fake.received("patch", "pods")
    assert len(patches) == 2
    assert patches[0].headers["content-type"] == "application/merge-patch+json"
    assert patches[1].body == {"metadata": {"annotations": {REVISION: "2222bbb", SOURCE: "git"}}}
    assert state.kube.annotations == {REVISION: "2222bbb", SOURCE: "git"}


async def test_patch_is_retried_until_the_api_allows_it(fake: FakeKube, tmp_path: Path) -> None:
    fake.forbid.add("pods")
    state = State()
    task = asyncio.create_task(annotations_job(fake, tmp_path, state).run())
    try:
        state.bus.publish(ScriptsSeeded(message="seeded 3333ccc", revision="3333ccc", source="git", path="/s/3333ccc"))
        await until(lambda: state.kube.api_errors["forbidden"] >= 2)
        assert state.kube.problems["annotations"].startswith(f'forbidden: pods "{POD}" is forbidden')
        fake.forbid.clear()
        await until(lambda: annotations(fake).get(REVISION) == "3333ccc")
        await until(lambda: state.kube.problem is None)
    finally:
        task.cancel()
