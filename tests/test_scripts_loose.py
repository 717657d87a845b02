"""Loose files (added files no upstream tree names): which files are loose, how they are linked
into a new revision, and how late changes to the old revision are merged (real files, real git)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from sidecar.config import load
from sidecar.scripts import spare
from sidecar.scripts.layout import Layout, Revision
from sidecar.scripts.loose import Names, _classify, merge_links, relink
from sidecar.scripts.seed import ensure_published
from sidecar.scripts.sync import sync_once
from sidecar.scripts.workspace import Workspace
from sidecar.state import State
from tests.gitrepos import Upstream, git, read_tree


def inode(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return (st.st_dev, st.st_ino)


def test_only_regular_files_no_tree_names_are_loose(tmp_path: Path) -> None:
    root = tmp_path / "t"
    for rel in ("mine.al", "deep/er/x.al", "main.al/under-a-file.al", "policies/new.al", "taken.al"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / "link.al").symlink_to("mine.al")
    names = Names(frozenset({"main.al", "policies", "policies/a.al", "taken.al"}),
                  frozenset({"main.al", "policies/a.al", "taken.al"}))
    paths = ["mine.al", "deep/er/x.al", "main.al/under-a-file.al", "policies/new.al", "taken.al", "link.al",
             "nested-repo/", "gone.al"]

    loose, rest = _classify(root, paths, names)

    assert loose == {p: inode(root / p) for p in ("mine.al", "deep/er/x.al", "policies/new.al")}
    # Under a path a tree has as a file, named by a tree, a symlink, a nested repository: git's job.
    assert sorted(rest) == ["link.al", "main.al/under-a-file.al", "nested-repo/", "taken.al"]


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    old, new = tmp_path / "old", tmp_path / "new"
    (old / "a" / "b").mkdir(parents=True)
    new.mkdir()
    return old, new


def test_relink_links_creates_folders_and_follows_changes(tmp_path: Path) -> None:
    old, new = _pair(tmp_path)
    (old / "top.al").write_text("top\n")
    (old / "a" / "b" / "deep.al").write_text("deep\n")
    want = {"top.al": inode(old / "top.al"), "a/b/deep.al": inode(old / "a" / "b" / "deep.al")}

    held = relink(old, new, want, {})

    assert held == want
    assert os.path.samefile(old / "top.al", new / "top.al")
    assert (new / "a" / "b" / "deep.al").read_text() == "deep\n"
    # The old file replaced by a new one (an editor's save), another deleted: the new tree follows.
    (old / "top.al.tmp").write_text("saved\n")
    os.replace(old / "top.al.tmp", old / "top.al")
    (old / "a" / "b" / "deep.al").unlink()
    held = relink(old, new, {"top.al": inode(old / "top.al")}, held)
    assert held == {"top.al": inode(old / "top.al")}
    assert (new / "top.al").read_text() == "saved\n"
    assert not (new / "a" / "b" / "deep.al").exists()
    assert not [p for p in new.rglob(".*sidecar-link")]


def test_relink_removes_only_the_file_it_linked(tmp_path: Path) -> None:
    old, new = _pair(tmp_path)
    (old / "f.al").write_text("f\n")
    held = relink(old, new, {"f.al": inode(old / "f.al")}, {})
    (new / "f.al").unlink()
    (new / "f.al").write_text("written in the new tree since\n")
    assert relink(old, new, {}, held) == {}
    assert (new / "f.al").read_text() == "written in the new tree since\n"


def test_relink_never_links_a_symlink_nor_writes_through_one(tmp_path: Path) -> None:
    old, new = _pair(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host file\n")
    (old / "f.al").write_text("f\n")
    listed = inode(old / "f.al")
    # Between the listing and the link the file became a symlink to a file outside the tree.
    (old / "f.al").unlink()
    (old / "f.al").symlink_to(outside / "secret")
    (old / "gone").mkdir()
    assert relink(old, new, {"f.al": listed, "missing.al": (0, 1)}, {}) == {}
    assert not os.path.lexists(new / "f.al") and not os.path.lexists(new / "missing.al")
    # A folder of the old tree swapped for a link to the outside: nothing is read through it.
    (old / "a" / "b" / "x.al").write_text("x\n")
    x = inode(old / "a" / "b" / "x.al")
    os.rename(old / "a", tmp_path / "a-aside")
    (old / "a").symlink_to(tmp_path / "a-aside")
    assert relink(old, new, {"a/b/x.al": x}, {}) == {}
    # A folder of the new tree swapped for a link: refused loudly, nothing written outside.
    os.unlink(old / "a")
    os.rename(tmp_path / "a-aside", old / "a")
    (new / "a").symlink_to(outside)
    with pytest.raises(OSError, match="not a real folder"):
        relink(old, new, {"a/b/x.al": x}, {})
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]


def test_merge_links_takes_late_changes_and_reports_both_sided_ones() -> None:
    carried = {"same": (1, 1), "old-changed": (1, 2), "old-deleted": (1, 3), "both": (1, 4), "new-changed": (1, 5)}
    old_now = {"same": (1, 1), "old-changed": (1, 20), "both": (1, 40), "new-changed": (1, 5), "old-added": (1, 6)}
    new_now = {"same": (1, 1), "old-changed": (1, 2), "old-deleted": (1, 3), "both": (1, 41), "new-changed": (1, 50),
               "new-added": (1, 7)}
    want, conflicts = merge_links(carried, old_now, new_now)
    assert want == {"same": (1, 1), "old-changed": (1, 20), "both": (1, 41), "new-changed": (1, 50),
                    "old-added": (1, 6), "new-added": (1, 7)}
    assert conflicts == ["both"]


async def published(tmp_path: Path, *args: str) -> tuple[Upstream, Path, Workspace]:
    """An upstream repository and a workspace that has published it at ``vol/scripts``."""
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    ws = Workspace.create(load(["run", "--link", str(link), "--repo", up.url, *args], {}), State())
    await ensure_published(ws)
    return up, link, ws


def test_a_sync_carries_loose_files_as_links_without_storing_them_in_git(tmp_path: Path) -> None:
    link = tmp_path / "vol" / "scripts"

    async def main() -> None:
        up, _, ws = await published(tmp_path)
        old = link.resolve()
        (link / "data").mkdir()
        (link / "data" / "readings.csv").write_text("unique 8c1f0e loose content\n")
        (link / "node-deployment" / "main.al").write_text("edited upstream file\n")
        up.commit({"node-deployment/other.al": "upstream moved\n"})
        assert await sync_once(ws) == "ok"
        assert link.resolve() != old
        await ws.settle()
        assert os.path.samefile(old / "data" / "readings.csv", link / "data" / "readings.csv")  # noqa: ASYNC240

    asyncio.run(main())
    tree = read_tree(link)
    assert tree["node-deployment/main.al"] == "edited upstream file\n"
    assert tree["node-deployment/other.al"] == "upstream moved\n"
    blob = git("hash-object", str(link / "data" / "readings.csv"))
    repo = link.parent / ".sidecar" / "repo.git"
    found = subprocess.run(["git", "--git-dir", str(repo), "cat-file", "-e", blob], capture_output=True, check=False)
    assert found.returncode != 0, "kept out of git"


def test_a_spare_checkout_becomes_the_next_revision(tmp_path: Path) -> None:
    link = tmp_path / "vol" / "scripts"

    async def main() -> None:
        up, _, ws = await published(tmp_path)
        spare.keep_ready(ws)
        await ws.settle()
        made = ws.spare
        assert made is not None and made.path.is_dir()
        assert made.commit == git("rev-parse", "HEAD", cwd=link)
        (link / "mine.al").write_text("mine\n")
        new = up.commit({"node-deployment/main.al": "v2\n", "README.md": None})
        assert await sync_once(ws, asked=True) == "ok"
        assert ws.spare is None and not made.path.exists(), "moved into place"
        assert git("rev-parse", "HEAD", cwd=link) == new
        assert git("status", "--porcelain", cwd=link) == "?? mine.al"
        # Nothing new upstream: an asked sync fetches by name and publishes nothing.
        before = link.resolve()
        assert await sync_once(ws, asked=True) == "noop"
        assert link.resolve() == before
        spare.keep_ready(ws)
        await ws.settle()
        assert ws.spare is not None and ws.spare.commit == new

    asyncio.run(main())
    tree = read_tree(link)
    assert tree["node-deployment/main.al"] == "v2\n" and "README.md" not in tree
    assert tree["mine.al"] == "mine\n"
    worktrees = git("--git-dir", str(link.parent / ".sidecar" / "repo.git"), "worktree", "list", "--porcelain")
    assert "prunable" not in worktrees


def test_a_fetch_lost_before_it_was_flushed_is_fetched_again(tmp_path: Path) -> None:
    """Fetches skip git's fsync; a power loss may then leave the files they wrote empty (objects
    and the upstream ref). The next sync copes: it fetches again and publishes."""
    link = tmp_path / "vol" / "scripts"
    repo = link.parent / ".sidecar" / "repo.git"

    def files() -> dict[Path, int]:
        return {p: p.stat().st_ino for p in (*(repo / "objects").rglob("*"), *(repo / "refs").rglob("*"))
                if p.is_file()}

    async def main() -> None:
        up, _, ws = await published(tmp_path, "--local-edits", "hold")
        before = await asyncio.to_thread(files)
        (link / "mine.al").write_text("held back\n")
        up.commit({"node-deployment/main.al": "v2\n"})
        assert await sync_once(ws) == "held"
        after = await asyncio.to_thread(files)
        lost = [p for p, ino in after.items() if before.get(p) != ino]
        assert any("objects" in p.parts for p in lost), "the fetch wrote objects"
        for path in lost:  # what a power loss leaves of files whose data never reached the disk
            path.chmod(0o644)
            path.write_bytes(b"")
        (link / "mine.al").unlink()
        assert await sync_once(ws) == "ok"
        await ws.settle()

    asyncio.run(main())
    assert read_tree(link)["node-deployment/main.al"] == "v2\n"


def _save(path: Path, text: str) -> None:
    """Save as an editor does: a new file renamed over the old one (a new inode)."""
    tmp = path.with_name(path.name + ".swp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_late_changes_to_the_old_trees_loose_files_reach_the_new_one(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Writers that opened the old tree before the swap: saves, deletions, new files and an edit of
    an upstream file made right after the swap are carried; a file saved on both sides is a conflict."""
    link = tmp_path / "vol" / "scripts"
    swapped = Layout.swap_link

    def swap_then_write(layout: Layout, rev: Revision) -> None:
        old = layout.link.resolve()
        swapped(layout, rev)
        if not (old / "a.al").exists():
            return  # the first publication
        _save(old / "a.al", "a saved late\n")
        (old / "b.al").unlink()
        (old / "d.al").write_text("d added late\n")
        (old / "node-deployment" / "main.al").write_text("main edited late\n")
        _save(old / "c.al", "c saved in the old tree\n")
        _save(rev.path / "c.al", "c saved in the new tree\n")

    monkeypatch.setattr(Layout, "swap_link", swap_then_write)

    async def main() -> Path:
        up, _, ws = await published(tmp_path)
        old = link.resolve()
        for name in ("a", "b", "c"):
            (link / f"{name}.al").write_text(f"{name}\n")
        up.commit({"sample-code/new.al": "upstream moved\n"})
        assert await sync_once(ws) == "ok"
        assert ws.state.scripts.conflict_files == ["c.al"]
        await ws.settle()
        return old

    old = asyncio.run(main())
    tree = read_tree(link)
    assert tree["a.al"] == "a saved late\n" and "b.al" not in tree and tree["d.al"] == "d added late\n"
    assert tree["node-deployment/main.al"] == "main edited late\n"
    assert tree["c.al"] == "c saved in the new tree\n"
    assert (old / "c.al").read_text() == "c saved in the old tree\n"
    assert (old.parent / f"{old.name}.keep").exists(), "the old folder is kept for a person to decide"
