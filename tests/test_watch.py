"""The watcher on real files and real git worktrees: edits by other processes, swaps, deletion, size."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sidecar import config
from sidecar.config import Settings
from sidecar.events import FilesChanged
from sidecar.http.routes import Endpoints
from sidecar.http.server import HttpServer
from sidecar.state import State
from sidecar.watch.watcher import Watcher
from tests.conftest import http_get
from tests.published import Published, eventually, git, in_other_process

pytestmark = pytest.mark.timeout(120)

SCRIPTS = {
    "node-deployment/main.al": "process !local_scripts/local_script.al\n",
    "node-deployment/local_script.al": "# user script\n",
    "policies/master.al": "# policy\n",
}


def settings_for(pub: Published, *extra: str) -> Settings:
    """Settings as the sidecar would load them for this layout (no node, no kube)."""
    return config.load(["run", "--link", str(pub.link), "--root", str(pub.root), "--fallback-dir",
                        str(pub.history), "--kube", "off", *extra], environ={})


@contextlib.asynccontextmanager
async def watching(settings: Settings, state: State) -> AsyncIterator[Watcher]:
    """The watch component running in this loop, stopped at the end."""
    watcher = Watcher(settings, state)
    task = asyncio.create_task(watcher.run())
    try:
        yield watcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def total(state: State) -> int:
    """Changes counted so far, every kind."""
    return sum(state.watch.changes.values())


@pytest.fixture
def pub(tmp_path: Path) -> Published:
    """Scripts published at one revision."""
    published = Published(tmp_path)
    published.publish(published.commit(SCRIPTS))
    return published


async def test_edits_by_another_process_reach_state_and_status(pub: Published) -> None:
    settings = settings_for(pub)
    state = State()
    server = HttpServer(Endpoints(settings, state).handle, max_connections=4, header_timeout=5)
    port = await server.start("127.0.0.1", 0)
    events = state.bus.subscribe()
    try:
        async with watching(settings, state):
            await eventually(lambda: state.watch.running, what="watch running")
            assert state.watch.local_edits == 0
            # Another process: edit in place, save the way sed -i and many editors do (a temporary
            # file renamed over the original), add a file, delete one, and leave a scratch file
            # that comes and goes within the batch.
            await in_other_process(
                "import os, sys\n"
                "t = sys.argv[1]\n"
                "open(t + '/node-deployment/local_script.al', 'a').write('run x\\n')\n"
                "open(t + '/policies/.tmp', 'w').write('new\\n'); os.replace(t + '/policies/.tmp', t + "
                "'/policies/master.al')\n"
                "os.makedirs(t + '/mine'); open(t + '/mine/extra.al', 'w').write('x\\n')\n"
                "os.remove(t + '/node-deployment/main.al')\n"
                "open(t + '/scratch', 'w').close(); os.remove(t + '/scratch')\n",
                str(pub.link))
            await eventually(lambda: total(state) >= 4 and state.watch.local_edits == 4, what="changes counted")
            assert dict(state.watch.changes) == {"modified": 2, "added": 1, "deleted": 1}
            assert state.watch.local_edit_files == ["mine/extra.al", "node-deployment/local_script.al",
                                                      "node-deployment/main.al", "policies/master.al"]
            event = events.get_nowait()
            assert isinstance(event, FilesChanged)
            assert event.changes == {"mine/extra.al": "added", "node-deployment/local_script.al": "modified",
                                           "node-deployment/main.al": "deleted", "policies/master.al": "modified"}

            code, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/status")
            assert code == 200
            status = json.loads(body)
            assert status["scripts"]["local_edits"] == 4
            assert status["watch"]["changes"] == {"modified": 2, "added": 1, "deleted": 1}
            assert {(r["kind"], r["path"]) for r in status["watch"]["recent"]} == {
                ("added", "mine/extra.al"), ("modified", "node-deployment/local_script.al"),
                ("deleted", "node-deployment/main.al"), ("modified", "policies/master.al")}

            # Putting a file back as it was is a change, and one edit fewer: git decides, per batch.
            await in_other_process("import sys; open(sys.argv[1], 'w').write(sys.argv[2])",
                                   str(pub.link / "policies/master.al"), SCRIPTS["policies/master.al"])
            await eventually(lambda: state.watch.local_edits == 3, what="edit undone")
            assert state.watch.changes["modified"] == 3
            assert "policies/master.al" not in state.watch.local_edit_files
    finally:
        await server.stop()


async def test_git_files_are_not_changes(pub: Published) -> None:
    state = State()
    async with watching(settings_for(pub), state):
        await eventually(lambda: state.watch.running, what="watch running")
        gitfile = pub.link / ".git"  # a worktree's .git is a file pointing into the history
        await in_other_process("import sys; p = sys.argv[1]; open(p, 'a').write(''); "
                               "open(sys.argv[2], 'a').write('x')", str(gitfile), str(pub.link / "policies/master.al"))
        await eventually(lambda: total(state) == 1, what="the script change")
        assert [r["path"] for r in state.watch.recent] == ["policies/master.al"]


async def test_follows_revision_swaps(pub: Published) -> None:
    state = State()
    first = pub.link.resolve()
    async with watching(settings_for(pub), state):
        await eventually(lambda: state.watch.path == str(first), what="watching the first revision")
        await in_other_process("import sys; open(sys.argv[1], 'a').write('x')", str(first / "policies/master.al"))
        await eventually(lambda: state.watch.local_edits == 1, what="edit in the first revision")

        for n in range(2):  # two swaps: the watch must re-arm each time, not once
            second = pub.publish(pub.commit({f"policies/new{n}.al": "# new\n"}))
            await eventually(lambda second=second: state.watch.path == str(second),  # type: ignore[misc]
                             what="watching the new revision")
            # The new revision carries no edits (the publisher carries them; here it did not).
            await eventually(lambda: state.watch.local_edits == 0, what="edits recounted for the new tree")
            before = total(state)
            # Writes to the old tree are no longer the published scripts: not counted.
            await in_other_process("import sys; open(sys.argv[1], 'a').write('x')", str(first / "policies/master.al"))
            await in_other_process("import sys; open(sys.argv[1], 'a').write('y')",
                                   str(pub.link / "node-deployment/main.al"))
            await eventually(lambda before=before: total(state) > before,  # type: ignore[misc]
                             what="change in the new tree")
            assert state.watch.recent[-1]["path"] == "node-deployment/main.al"
            await eventually(lambda: state.watch.local_edit_files == ["node-deployment/main.al"],
                             what="the edit counted against the new revision")
            assert total(state) == before + 1
        assert state.watch.rearms >= 2


async def test_survives_the_tree_deleted_and_restored(pub: Published) -> None:
    state = State()
    tree = pub.link.resolve()
    async with watching(settings_for(pub), state):
        await eventually(lambda: state.watch.running, what="watch running")
        rearms = state.watch.rearms
        await asyncio.to_thread(shutil.rmtree, tree)
        await eventually(lambda: not state.watch.running, what="watch noticing the tree is gone")
        assert state.watch.rearms > rearms
        # Restored at the same place (as a repair or a volume coming back would do it).
        await asyncio.to_thread(pub.publish, git("rev-parse", "HEAD", cwd=pub.history))
        await eventually(lambda: state.watch.running and state.watch.path == str(tree), what="watch re-armed")
        await in_other_process("import sys; open(sys.argv[1], 'a').write('x')", str(pub.link / "policies/master.al"))
        await eventually(lambda: state.watch.local_edit_files == ["policies/master.al"], what="edit counted")


async def test_waits_for_the_first_publish(tmp_path: Path) -> None:
    pub = Published(tmp_path)
    revision = pub.commit(SCRIPTS)
    state = State()
    async with watching(settings_for(pub), state):
        await asyncio.sleep(0.2)  # let it arm on nothing
        assert not state.watch.running
        await asyncio.to_thread(pub.publish, revision)
        await eventually(lambda: state.watch.running, what="watch starting once published")
        await in_other_process("import sys; open(sys.argv[1], 'a').write('x')", str(pub.link / "policies/master.al"))
        await eventually(lambda: state.watch.local_edits == 1, what="edit counted")


async def test_ten_thousand_files(tmp_path: Path) -> None:
    pub = Published(tmp_path)
    files = {f"d{d:02d}/f{f:03d}.al": f"# {d} {f}\n" for d in range(100) for f in range(100)}
    await asyncio.to_thread(lambda: pub.publish(pub.commit(files)))
    state = State()
    async with watching(settings_for(pub), state):
        await eventually(lambda: state.watch.running, timeout=60, what="watch running on 10,000 files")
        await in_other_process(
            "import os, sys\n"
            "t = sys.argv[1]\n"
            "open(t + '/d00/f000.al', 'a').write('x')\n"
            "open(t + '/d99/f099.al', 'a').write('x')\n"
            "os.remove(t + '/d50/f050.al')\n"
            "open(t + '/d50/new.al', 'w').write('x')\n", str(pub.link))
        await eventually(lambda: state.watch.local_edits == 4, timeout=60, what="changes in the big tree")
        assert dict(state.watch.changes) == {"modified": 2, "deleted": 1, "added": 1}
        # A bulk change larger than the incremental limit is recounted in one pass.
        await in_other_process(
            "import sys\n"
            "for d in range(20):\n"
            "    for f in range(100):\n"
            "        open(f'{sys.argv[1]}/d{d:02d}/f{f:03d}.al', 'a').write('y')\n", str(pub.link))
        await eventually(lambda: state.watch.local_edits == 2003, timeout=60, what="bulk edit counted")


async def test_links_out_of_the_tree_are_never_followed(pub: Published, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    state = State()
    events = state.bus.subscribe()
    async with watching(settings_for(pub), state):
        await eventually(lambda: state.watch.running, what="watch running")
        entries = state.watch.entries
        # A user links the whole filesystem and an outside folder into the tree.
        await in_other_process("import os, sys; os.symlink('/', sys.argv[1] + '/root'); "
                               "os.symlink(sys.argv[2], sys.argv[1] + '/policies/out')", str(pub.link), str(outside))
        await eventually(lambda: total(state) == 2, what="the two links counted as files")
        assert {(r["kind"], r["path"]) for r in state.watch.recent} == {("added", "root"), ("added", "policies/out")}
        # Writes behind the links are outside the tree: nothing. A write in the tree, after them,
        # shows the watch has seen everything up to there.
        await in_other_process("import sys; open(sys.argv[1] + '/x.al', 'w').write('x'); "
                               "open(sys.argv[2] + '/main.al', 'a').write('y')",
                               str(outside), str(pub.link / "node-deployment"))
        await eventually(lambda: total(state) == 3, what="the write in the tree")
        assert state.watch.recent[-1]["path"] == "node-deployment/main.al"
        assert state.watch.entries == entries + 2  # the links themselves, nothing behind them
        assert state.watch.mode == "inotify"
        paths = set()
        while not events.empty():
            paths |= set(events.get_nowait().changes)
        assert paths == {"root", "policies/out", "node-deployment/main.al"}


async def test_a_tree_too_large_to_watch_is_counted_once_a_period(tmp_path: Path) -> None:
    pub = Published(tmp_path)
    pub.publish(pub.commit({f"d{i}/f{j}.al": "x\n" for i in range(5) for j in range(10)}))
    state = State()
    events = state.bus.subscribe()
    watcher = Watcher(settings_for(pub), state, max_entries=30, count_period=0.2)
    task = asyncio.create_task(watcher.run())
    try:
        await eventually(lambda: state.watch.mode == "counting", what="fallback to counting")
        assert not state.watch.running
        assert "counting local edits" in (state.watch.last_error or "")
        await in_other_process("import os, sys; open(sys.argv[1] + '/d0/f0.al', 'a').write('y'); "
                               "os.makedirs(sys.argv[1] + '/bulk'); "
                               "[open(f'{sys.argv[1]}/bulk/{n}', 'w').close() for n in range(100)]", str(pub.link))
        # The new folder counts once (its files are not listed one by one), the edit once.
        await eventually(lambda: state.watch.local_edits == 2, what="edits counted")
        assert state.watch.local_edit_files == ["bulk/", "d0/f0.al"]
        assert not state.watch.edits_complete
        assert events.empty()  # counting announces nothing
        assert state.local_edits()[0] == 2  # /status and the metric read the newer count
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_edits_made_before_the_watch_is_armed_are_announced(pub: Published) -> None:
    state = State()  # the process started before the tree was published
    events = state.bus.subscribe()
    # Published with no edits; then, before the watch arms, a user edits, adds and deletes.
    await in_other_process(
        "import os, sys, time\n"
        "t = sys.argv[1]\n"
        "time.sleep(0.05)\n"  # past the link's change time on the file system's coarse clock
        "open(t + '/node-deployment/local_script.al', 'a').write('run y\\n')\n"
        "open(t + '/policies/new.al', 'w').write('n\\n')\n"
        "os.remove(t + '/node-deployment/main.al')\n", str(pub.link))
    async with watching(settings_for(pub), state):
        await eventually(lambda: not events.empty(), what="the catch-up announcement")
        event = events.get_nowait()
        assert isinstance(event, FilesChanged)
        assert event.changes == {"node-deployment/local_script.al": "modified", "policies/new.al": "added",
                                       "node-deployment/main.al": "deleted"}
        assert state.watch.local_edits == 3


async def test_publications_swaps_and_pruning_are_not_changes(pub: Published) -> None:
    state = State()
    events = state.bus.subscribe()
    async with watching(settings_for(pub), state):
        await eventually(lambda: state.watch.running, what="watch running")
        previous = [pub.link.resolve()]
        for n in range(8):
            # As the publisher does it: a new worktree, the link swapped, the revision before the
            # previous one removed, with no pause for the watcher to catch up.
            await asyncio.to_thread(pub.publish, pub.commit({f"policies/p{n}.al": f"# {n}\n"}))
            previous.append(pub.link.resolve())
            if len(previous) > 2:
                await asyncio.to_thread(shutil.rmtree, previous.pop(0))
        await eventually(lambda: state.watch.path == str(previous[-1]), what="watching the last revision")
        rearms = state.watch.rearms
        # A person's edit after all that is the first and only announcement.
        await in_other_process("import sys; open(sys.argv[1], 'a').write('x')", str(pub.link / "policies/master.al"))
        await eventually(lambda: not events.empty(), what="the person's edit")
        event = events.get_nowait()
        assert event.changes == {"policies/master.al": "modified"}
        assert events.empty() and total(state) == 1
        assert state.watch.rearms == rearms
