"""Odd input costs a clear error, never a component: file names that are not UTF-8, broken request
targets, a hand-edited env file, a publication whose clean-up fails after the swap."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path, PurePosixPath
from typing import Any

from sidecar.config import load
from sidecar.hooks.process import ExecAction
from sidecar.hooks.rest import RestAction
from sidecar.hooks.trigger import Trigger
from sidecar.kube.identity import HEADER, read_previous
from sidecar.noderest import NodeRest
from sidecar.scripts import publish as publish_module
from sidecar.scripts.git import GitError
from sidecar.scripts.seed import ensure_published
from sidecar.scripts.sync import sync_once
from sidecar.scripts.workspace import Workspace
from sidecar.state import State
from tests.gitrepos import Upstream


def test_a_file_name_that_is_not_utf8_does_not_kill_the_watch(tmp_path: Path, sidecar_factory: Any) -> None:
    fallback = tmp_path / "fb"
    fallback.mkdir()
    (fallback / "main.al").write_text("x\n")
    link = tmp_path / "vol" / "scripts"
    sc = sidecar_factory(["--fallback-dir", str(fallback), "--link", str(link)])
    sc.wait_for(lambda: sc.status()["watch"]["running"], what="watching")
    rearms = sc.status()["watch"]["rearms"]
    with open(os.fsencode(link) + b"/caf\xe9.al", "wb") as f:  # as `touch $'caf\xe9.al'` does
        f.write(b"latin-1 name\n")
    # The watch reads names as bytes: the odd one is a change like any other, not a failure.
    sc.wait_for(lambda: sc.status()["watch"]["changes"].get("added", 0) == 1, what="the odd name counted")
    status = sc.status()
    assert status["watch"]["last_error"] is None and status["watch"]["rearms"] == rearms
    assert status["components"]["watch"]["restarts"] == 0
    assert sc.get("/livez")[0] == 200
    (link / "main.al").write_text("edited\n")
    sc.wait_for(lambda: sc.status()["watch"]["changes"].get("modified", 0) >= 1, what="edit counted")


def test_hooks_leave_out_names_that_cannot_be_sent(tmp_path: Path) -> None:
    odd = "new/caf\udce9.al"  # how os.walk hands over a name that is not UTF-8
    trigger = Trigger("change", "files-changed", changes={odd: "added", "ok.al": "added", "a\nb.al": "added"})
    rest = RestAction("process {path}", NodeRest("127.0.0.1", 1), PurePosixPath("/app/scripts"))
    assert rest.commands(trigger) == ["process /app/scripts/ok.al"]
    env = ExecAction(["true"], tmp_path).env("change-exec", trigger)
    assert env["SIDECAR_CHANGED_COUNT"] == "3"


def test_broken_request_targets_get_400_not_a_reset(sidecar_factory: Any, tmp_path: Path) -> None:
    fallback = tmp_path / "fb"
    fallback.mkdir()
    sc = sidecar_factory(["--fallback-dir", str(fallback), "--link", str(tmp_path / "v" / "s")])
    for head in (b"GET //[::1/x?a HTTP/1.1\r\n\r\n", b"POST /sync HTTP/1.1\r\nContent-Length: " + b"9" * 5000
                 + b"\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", sc.port), timeout=5) as conn:
            conn.sendall(head)
            answer = conn.recv(4096)
        assert answer.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431")), answer[:80]
    assert sc.get("/livez")[0] == 200


def test_a_hand_edited_identity_file_is_rewritten_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "network.env"
    path.write_text(HEADER + "EXTERNAL_IP='1.2.3.4\n")  # an unbalanced quote
    assert read_previous(path) is None


def test_a_failing_clean_up_after_the_swap_still_reports_the_new_revision(tmp_path: Path,
                                                                          monkeypatch: Any) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    settings = load(["run", "--link", str(link), "--repo", up.url], {})

    async def broken_cleanup(ws: Workspace) -> None:
        raise GitError("git worktree timed out", reason="timeout")

    async def main() -> State:
        state = State()
        ws = Workspace.create(settings, state)
        await ensure_published(ws)
        monkeypatch.setattr(publish_module, "cleanup", broken_cleanup)
        up.commit({"node-deployment/main.al": "v2\n"})
        assert await sync_once(ws) == "ok"
        return state

    state = asyncio.run(main())
    assert state.scripts.revision == up.head(), "the state must follow the link"
    assert (link / "node-deployment" / "main.al").read_text() == "v2\n"
