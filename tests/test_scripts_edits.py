"""Local edits are data: carry, hold, discard, conflicts, deletions, and edits racing a sync."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from sidecar.config import load
from sidecar.scripts.publish import publish
from sidecar.scripts.seed import ensure_published
from sidecar.scripts.sync import sync_once
from sidecar.scripts.workspace import Workspace
from sidecar.state import State
from tests.conftest import seed as seed_cli
from tests.gitrepos import Upstream, default_files, git, read_tree

LOCAL = "node-deployment/local_script.al"
MAIN = "node-deployment/main.al"


def seed(link: Path, *args: str) -> str:
    result = seed_cli(link, *args)
    assert result.returncode == 0, result.stderr
    return result.stderr


def edit_tree(link: Path) -> None:
    (link / LOCAL).write_text("# my local edit\n")
    (link / "mine.al").write_text("added by a user\n")
    (link / "debug.log").write_text("ignored by .gitignore but still data\n")
    (link / "README.md").unlink()


def assert_edits_present(link: Path) -> None:
    tree = read_tree(link)
    assert tree[LOCAL] == "# my local edit\n"
    assert tree["mine.al"] == "added by a user\n"
    assert tree["debug.log"] == "ignored by .gitignore but still data\n"
    assert "README.md" not in tree


def test_carry_reapplies_edits_onto_new_revision(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    seed(link, "--repo", up.url)
    edit_tree(link)
    new = up.commit({MAIN: "main v2\n", "sample-code/new.al": "new upstream file\n"})
    seed(link, "--repo", up.url)
    assert git("rev-parse", "HEAD", cwd=link) == new
    assert_edits_present(link)
    tree = read_tree(link)
    assert tree[MAIN] == "main v2\n"
    assert tree["sample-code/new.al"] == "new upstream file\n"
    # Restart (another seed) and a no-op sync change nothing.
    seed(link, "--repo", up.url)
    assert_edits_present(link)


def test_carry_merges_edits_in_the_same_file_when_they_do_not_overlap(tmp_path: Path) -> None:
    lines = [f"line {i}\n" for i in range(20)]
    up = Upstream(tmp_path, {MAIN: "".join(lines)})
    link = tmp_path / "vol" / "scripts"
    seed(link, "--repo", up.url)
    mine = lines.copy()
    mine[2] = "line 2 edited locally\n"
    (link / MAIN).write_text("".join(mine))
    theirs = lines.copy()
    theirs[17] = "line 17 changed upstream\n"
    up.commit({MAIN: "".join(theirs)})
    seed(link, "--repo", up.url)
    text = (link / MAIN).read_text()
    assert "line 2 edited locally" in text and "line 17 changed upstream" in text


def test_conflict_keeps_the_current_tree_and_reports_files(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    seed(link, "--repo", up.url)
    before = git("rev-parse", "HEAD", cwd=link)
    (link / LOCAL).write_text("# mine\n")
    up.commit({LOCAL: "# theirs\n"})
    err = seed(link, "--repo", up.url)
    assert "sync_conflict" in err and LOCAL in err
    assert git("rev-parse", "HEAD", cwd=link) == before
    assert (link / LOCAL).read_text() == "# mine\n"


def test_user_deleting_a_file_upstream_changed_is_a_conflict_not_a_loss(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    seed(link, "--repo", up.url)
    (link / LOCAL).unlink()
    up.commit({LOCAL: "# theirs\n"})
    err = seed(link, "--repo", up.url)
    assert "sync_conflict" in err
    assert not (link / LOCAL).exists()


def test_hold_keeps_the_tree_until_the_edits_are_gone(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    seed(link, "--repo", up.url)
    old = git("rev-parse", "HEAD", cwd=link)
    (link / "mine.al").write_text("x\n")
    new = up.commit({MAIN: "v2\n"})
    err = seed(link, "--repo", up.url, "--local-edits", "hold")
    assert "sync_held" in err
    assert git("rev-parse", "HEAD", cwd=link) == old
    (link / "mine.al").unlink()
    seed(link, "--repo", up.url, "--local-edits", "hold")
    assert git("rev-parse", "HEAD", cwd=link) == new


def test_discard_only_when_asked_and_the_previous_tree_still_holds_them(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    seed(link, "--repo", up.url)
    old_dir = link.resolve()
    (link / LOCAL).write_text("# mine\n")
    up.commit({MAIN: "v2\n"})
    seed(link, "--repo", up.url, "--local-edits", "discard")
    assert read_tree(link)[LOCAL] == default_files()[LOCAL]
    assert (old_dir / LOCAL).read_text() == "# mine\n", "kept in the previous revision folder"



def test_edits_made_while_a_publication_runs_are_not_lost(tmp_path: Path) -> None:
    """A writer keeps editing through the link while many revisions are published."""
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    settings = load(["run", "--link", str(link), "--repo", up.url], {})
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            # Each edit is a new file: the last content of each must survive.
            (link / f"edit-{i}.al").write_text(f"edit {i}\n")
            written.append(i)
            i += 1
            time.sleep(0.002)

    async def main() -> None:
        ws = Workspace.create(settings, State())
        await ensure_published(ws)
        thread = threading.Thread(target=writer)
        thread.start()
        try:
            for n in range(8):
                up.commit({MAIN: f"v{n}\n"})
                assert await sync_once(ws) == "ok"
        finally:
            stop.set()
            thread.join()
        # One more sync picks up anything written in the last instant into the old tree.
        up.commit({MAIN: "final\n"})
        assert await sync_once(ws) == "ok"

    asyncio.run(main())
    tree = read_tree(link)
    missing = [i for i in written if tree.get(f"edit-{i}.al") != f"edit {i}\n"]
    assert not missing, f"{len(missing)} of {len(written)} edits lost: {missing[:10]}"
    assert tree[MAIN] == "final\n"


def test_publish_is_serialized_and_fallback_commit_republishes(tmp_path: Path) -> None:
    fallback = tmp_path / "fb"
    fallback.mkdir()
    (fallback / "a.al").write_text("a\n")
    link = tmp_path / "vol" / "scripts"
    settings = load(["run", "--link", str(link), "--fallback-dir", str(fallback)], {})

    async def main() -> list[str]:
        ws = Workspace.create(settings, State())
        await ensure_published(ws)
        commit = git("rev-parse", "HEAD", cwd=link)
        outcomes = await asyncio.gather(*(publish(ws, commit, "fallback") for _ in range(4)))
        return [o.result for o in outcomes]

    assert asyncio.run(main()) == ["published"] * 4
    assert read_tree(link) == {"a.al": "a\n"}
    assert len([p for p in (link.parent / ".sidecar" / "revs").iterdir() if p.is_dir()]) == 2
