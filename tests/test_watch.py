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
from sidecar.watch import Watcher
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
            assert state.scripts.local_edits == 0
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
            await eventually(lambda: total(state) >= 4 and state.scripts.local_edits == 4, what="changes counted")
            assert dict(state.watch.changes) == {"modified": 2, "added": 1, "deleted": 1}
            assert state.scripts.local_edit_files == ["mine/extra.al", "node-deployment/local_script.al",
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
            await eventually(lambda: state.scripts.local_edits == 3, what="edit undone")
            assert state.watch.changes["modified"] == 3
            assert "policies/master.al" not in state.scripts.local_edit_files
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
        await eventually(lambda: state.scripts.local_edits == 1, what="edit in the first revision")

        for n in range(2):  # two swaps: the watch must re-arm each time, not once
            second = pub.publish(pub.commit({f"policies/new{n}.al": "# new\n"}))
            await eventually(lambda second=second: state.watch.path == str(second),  # type: ignore[misc]
                             what="watching the new revision")
            # The new revision carries no edits (the publisher carries them; here it did not).
            await eventually(lambda: state.scripts.local_edits == 0, what="edits recounted for the new tree")
            before = total(state)
            # Writes to the old tree are no longer the published scripts: not counted.
            await in_other_process("import sys; open(sys.argv[1], 'a').write('x')", str(first / "policies/master.al"))
            await in_other_process("import sys; open(sys.argv[1], 'a').write('y')",
                                   str(pub.link / "node-deployment/main.al"))
            await eventually(lambda before=before: total(state) > before,  # type: ignore[misc]
                             what="change in the new tree")
            assert state.watch.recent[-1]["path"] == "node-deployment/main.al"
            await eventually(lambda: state.scripts.local_edit_files == ["node-deployment/main.al"],
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
        await eventually(lambda: state.scripts.local_edit_files == ["policies/master.al"], what="edit counted")


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
        await eventually(lambda: state.scripts.local_edits == 1, what="edit counted")


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
        await eventually(lambda: state.scripts.local_edits == 4, timeout=60, what="changes in the big tree")
        assert dict(state.watch.changes) == {"modified": 2, "deleted": 1, "added": 1}
        # A bulk change larger than the incremental limit is recounted in one pass.
        await in_other_process(
            "import sys\n"
            "for d in range(20):\n"
            "    for f in range(100):\n"
            "        open(f'{sys.argv[1]}/d{d:02d}/f{f:03d}.al', 'a').write('y')\n", str(pub.link))
        await eventually(lambda: state.scripts.local_edits == 2003, timeout=60, what="bulk edit counted")
