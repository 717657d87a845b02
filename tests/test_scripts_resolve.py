"""Settling a held conflict without hand-merging: ``resolve --take upstream|mine``, with real git."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from sidecar.config import load
from sidecar.events import ConflictResolved, EditsConflict, Event
from sidecar.scripts import resolve
from sidecar.scripts.seed import ensure_published
from sidecar.scripts.sync import sync_once
from sidecar.scripts.workspace import Workspace
from sidecar.state import State
from tests.conftest import cli, free_port, seed
from tests.gitrepos import Upstream, git, read_tree

EDITED = "node-deployment/local_script.al"
OTHER = "sample-code/sample_1.al"
MINE = "# my version\n"
THEIRS = "# upstream's version\n"


def conflicting(tmp_path: Path) -> tuple[Upstream, Path]:
    """A published tree with two local edits, one of which upstream changed too."""
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    assert seed(link, "--repo", up.url).returncode == 0
    (link / EDITED).write_text(MINE)
    (link / OTHER).write_text("# my other edit\n")
    up.commit({EDITED: THEIRS, "sample-code/new.al": "new upstream file\n"})
    return up, link


def post(url: str, body: bytes, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, body, headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_take_upstream_through_the_running_sidecar(tmp_path: Path, sidecar_factory: Any) -> None:
    up, link = conflicting(tmp_path)
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    sc = sidecar_factory(["--link", str(link), "--repo", up.url, "--period", "3600", "--sync-token-file", str(token)],
                         env={"SIDECAR_WATCH": "false"})
    assert post(sc.url + "/sync", b"", "s3cret")[0] == 202
    sc.wait_for(lambda: sc.status()["scripts"]["conflict_files"] == [EDITED], 30, "conflict")
    assert sc.status()["scripts"]["held_upstream"] == up.head(), "the conflict names the commit it holds back"
    assert any(line.get("event") == "sync_conflict" and line.get("upstream") == up.head()
               for line in map(json.loads, sc.output().splitlines())), "and the log says which"

    assert post(sc.url + "/resolve", b'{"take": "upstream"}', "wrong")[0] == 401
    assert post(sc.url + "/resolve", b'{"take": "theirs"}', "s3cret")[0] == 400
    code, body = post(sc.url + "/resolve", b'{"take": "upstream", "paths": ["../etc/passwd"]}', "s3cret")
    assert code == 409 and "not a path inside the tree" in body
    assert read_tree(link)[EDITED] == MINE, "refused requests change nothing"

    result = cli(["resolve", "--take", "upstream", "--http-port", str(sc.port), "--sync-token-file", str(token),
                  "--link", str(tmp_path / "elsewhere" / "unused")])
    assert result.returncode == 0, result.stderr
    tree = read_tree(link)
    assert tree[EDITED] == THEIRS
    assert tree[OTHER] == "# my other edit\n", "edits elsewhere are carried as in any sync"
    assert tree["sample-code/new.al"] == "new upstream file\n"
    [kept] = list((link.parent / ".sidecar").glob("resolved-*"))
    assert (kept / EDITED).read_text() == MINE, "the person's copy is kept under the root"
    assert str(kept) in result.stdout
    status = sc.status()["scripts"]
    assert status["revision"] == up.head() and status["conflict_files"] == [] and status["held_upstream"] is None
    assert status["local_edit_files"] == [OTHER]
    assert "conflict_resolved" in sc.output()
    assert not (tmp_path / "elsewhere").exists(), "the CLI went through the sidecar, not its own --link"


def test_take_mine_on_the_volume_when_no_sidecar_runs(tmp_path: Path) -> None:
    up, link = conflicting(tmp_path)
    result = seed(link, "--repo", up.url)
    assert "sync_conflict" in result.stderr
    result = cli(["resolve", "--take", "mine", EDITED, "--link", str(link), "--repo", up.url,
                  "--http-port", str(free_port())])
    assert result.returncode == 0, result.stderr
    assert git("rev-parse", "HEAD", cwd=link) == up.head()
    tree = read_tree(link)
    assert tree[EDITED] == MINE, "the person's whole file stays"
    assert tree["sample-code/new.al"] == "new upstream file\n"
    assert not list((link.parent / ".sidecar").glob("resolved-*"))
    # The next sync has nothing left to settle: the edit is an ordinary local edit on the new base.
    again = seed(link, "--repo", up.url)
    assert again.returncode == 0 and "sync_conflict" not in again.stderr
    assert read_tree(link)[EDITED] == MINE


def test_resolve_without_a_conflict_says_so_and_changes_nothing(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    assert seed(link, "--repo", up.url).returncode == 0
    (link / EDITED).write_text(MINE)
    before = git("rev-parse", "HEAD", cwd=link)
    result = cli(["resolve", "--take", "upstream", "--link", str(link), "--repo", up.url,
                  "--http-port", str(free_port())])
    assert result.returncode == 1
    assert "nothing conflicts" in result.stderr
    assert git("rev-parse", "HEAD", cwd=link) == before and read_tree(link)[EDITED] == MINE
    assert "Traceback" not in result.stderr


def test_conflict_and_resolution_events_name_the_upstream_commit(tmp_path: Path) -> None:
    """In process: the typed events a conflict and its resolution put on the bus."""
    up, link = conflicting(tmp_path)
    settings = load(["run", "--link", str(link), "--repo", up.url], {})

    async def main() -> list[Event]:
        ws = Workspace.create(settings, State())
        events = ws.state.bus.subscribe()
        await ensure_published(ws)
        assert await sync_once(ws) == "conflict"
        await resolve.resolve(ws, "mine", [EDITED])
        return [events.get_nowait() for _ in range(events.qsize())]

    events = asyncio.run(main())
    [conflict] = [e for e in events if isinstance(e, EditsConflict)]
    assert conflict.upstream == up.head() and conflict.files == (EDITED,)
    assert up.head()[:12] in conflict.message
    [resolved] = [e for e in events if isinstance(e, ConflictResolved)]
    assert (resolved.take, resolved.files, resolved.upstream, resolved.kept_in) == ("mine", (EDITED,), up.head(), None)
