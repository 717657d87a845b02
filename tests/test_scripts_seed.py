"""Seeding and publishing with real git: sources in order, refs, adoption, safety checks."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.conftest import cli, seed
from tests.githttp import git_daemon
from tests.gitrepos import Upstream, default_files, git, read_tree


def revisions(link: Path) -> list[str]:
    return sorted(p.name for p in (link.parent / ".sidecar" / "revs").iterdir() if p.is_dir())


def assert_published(link: Path, expected: dict[str, str]) -> None:
    assert link.is_symlink(), "the published path must be a symlink"
    assert not os.readlink(link).startswith("/"), "the link must be relative (volume mounted elsewhere)"
    assert read_tree(link) == expected


def test_seed_from_git_publishes_everything_including_dotfiles(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    result = seed(link, "--repo", up.url)
    assert result.returncode == 0, result.stderr
    assert_published(link, default_files())
    assert (link / ".gitignore").exists()
    assert git("rev-parse", "HEAD", cwd=link) == up.head()


def test_seed_from_plain_path_and_shallow_by_default(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    for i in range(3):
        up.commit({f"extra{i}.al": str(i)})
    link = tmp_path / "vol" / "scripts"
    assert seed(link, "--repo", f"file://{up.bare}").returncode == 0
    count = git("rev-list", "--count", "HEAD", cwd=link)
    assert count == "1", "a shallow fetch brings one commit"
    link2 = tmp_path / "vol2" / "scripts"
    assert seed(link2, "--repo", str(up.bare), "--depth", "0").returncode == 0
    assert git("rev-list", "--count", "HEAD", cwd=link2) == "4"


def test_branch_tag_and_pinned_sha(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    first = up.head()
    up.tag("v1")
    git("push", "-q", "origin", "HEAD:refs/heads/pre-develop", cwd=up.work)
    up.commit({"node-deployment/main.al": "v2\n"})
    for ref, expected in (("v1", first), ("pre-develop", first), (first, first), ("main", up.head())):
        link = tmp_path / f"vol-{ref[:8]}" / "scripts"
        result = seed(link, "--repo", up.url, "--ref", ref)
        assert result.returncode == 0, result.stderr
        assert git("rev-parse", "HEAD", cwd=link) == expected, ref


def test_wrong_ref_fails_clearly_without_fallback(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    result = seed(link, "--repo", up.url, "--ref", "no-such-branch", "--first-seed-timeout", "0")
    assert result.returncode == 1
    assert "ref 'no-such-branch' not found on the remote" in result.stderr
    assert not link.exists()


def test_missing_repository_falls_back(tmp_path: Path) -> None:
    fallback = tmp_path / "fallback"
    fallback.mkdir()
    (fallback / "main.al").write_text("fallback\n")
    (fallback / ".hidden").write_text("dot\n")
    link = tmp_path / "vol" / "scripts"
    result = seed(link, "--repo", f"file://{tmp_path}/nope.git", "--fallback-dir", str(fallback),
                  "--first-seed-timeout", "1")
    assert result.returncode == 0, result.stderr
    assert read_tree(link) == {"main.al": "fallback\n", ".hidden": "dot\n"}
    assert "seeding_from_fallback" in result.stderr
    assert revisions(link)[0].startswith("fallback-")


def test_fallback_only_with_a_relative_folder(tmp_path: Path) -> None:
    shutil.copytree(Path(__file__).parent.parent / "examples" / "deployment-scripts", tmp_path / "fallback")
    link = tmp_path / "vol" / "scripts"
    result = cli(["seed", "--link", str(link), "--fallback-dir", "fallback"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (link / "node-deployment" / "main.al").exists()


def test_published_tree_is_never_reseeded_and_later_sync_moves_to_git(tmp_path: Path) -> None:
    fallback = tmp_path / "fallback"
    fallback.mkdir()
    (fallback / "node-deployment").mkdir()
    for rel, content in default_files().items():
        (fallback / rel).parent.mkdir(parents=True, exist_ok=True)
        (fallback / rel).write_text(content)
    link = tmp_path / "vol" / "scripts"
    missing = f"file://{tmp_path}/later.git"
    assert seed(link, "--repo", missing, "--fallback-dir", str(fallback), "--first-seed-timeout", "0").returncode == 0
    assert revisions(link)[0].startswith("fallback-")
    # A user edit on the fallback tree, then git appears with a newer upstream.
    (link / "node-deployment" / "local_script.al").write_text("# mine\n")
    up = Upstream(tmp_path)
    up.commit({"node-deployment/main.al": "upstream v2\n"})
    shutil.move(str(up.bare), str(tmp_path / "later.git"))
    result = seed(link, "--repo", missing, "--fallback-dir", str(fallback))
    assert result.returncode == 0, result.stderr
    tree = read_tree(link)
    assert tree["node-deployment/main.al"] == "upstream v2\n"
    assert tree["node-deployment/local_script.al"] == "# mine\n", "the edit made on the fallback tree is carried"
    assert any(r.startswith("git-") for r in revisions(link))


def test_adopts_a_plain_clone_with_its_edits(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "deployment-scripts"
    git("clone", "-q", up.url, str(link))  # the old shell recipe's result, .git included
    (link / "node-deployment" / "local_script.al").write_text("# edited in place\n")
    (link / "mine.al").write_text("mine\n")
    (link / "README.md").unlink()
    result = seed(link, "--repo", up.url)
    assert result.returncode == 0, result.stderr
    assert link.is_symlink()
    tree = read_tree(link)
    assert tree["node-deployment/local_script.al"] == "# edited in place\n"
    assert tree["mine.al"] == "mine\n"
    assert "README.md" not in tree
    status = git("status", "--porcelain", cwd=link)
    assert "local_script.al" in status and "mine.al" in status and "README.md" in status
    assert list((link.parent / ".sidecar").glob("adopted-*")), "the original folder is kept aside"


def test_adopts_a_moved_tree_without_git_and_conflicts_instead_of_overwriting(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "deployment-scripts"
    link.mkdir(parents=True)
    files = default_files()
    files["node-deployment/local_script.al"] = "# my edit from the mv era\n"
    for rel, content in files.items():
        (link / rel).parent.mkdir(parents=True, exist_ok=True)
        (link / rel).write_text(content)
    up.commit({"node-deployment/local_script.al": "# upstream changed it too\n"})
    result = seed(link, "--repo", up.url)
    assert result.returncode == 0, result.stderr
    assert read_tree(link)["node-deployment/local_script.al"] == "# my edit from the mv era\n"
    assert "sync_conflict" in result.stderr


def test_symlink_escaping_the_tree_is_refused(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    assert seed(link, "--repo", up.url).returncode == 0
    os.symlink("../../../etc/passwd", up.work / "evil.al")
    good = up.head()
    up.commit({})
    result = seed(link, "--repo", up.url)
    assert result.returncode == 0, "the published tree stays; the sync is refused"
    assert "points outside the tree" in result.stderr
    assert git("rev-parse", "HEAD", cwd=link) == good
    # An inside link is fine.
    (up.work / "evil.al").unlink()
    os.symlink("node-deployment/main.al", up.work / "alias.al")
    up.commit({})
    assert seed(link, "--repo", up.url).returncode == 0
    assert (link / "alias.al").read_text() == default_files()["node-deployment/main.al"]


def test_fallback_with_escaping_symlink_is_refused(tmp_path: Path) -> None:
    fallback = tmp_path / "fallback"
    fallback.mkdir()
    os.symlink("/etc/passwd", fallback / "x.al")
    link = tmp_path / "vol" / "scripts"
    result = seed(link, "--fallback-dir", str(fallback))
    assert result.returncode == 1
    assert "points outside the tree" in result.stderr
    assert not link.exists()


def test_keeps_current_and_previous_revisions_only(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    for i in range(4):
        up.commit({"node-deployment/main.al": f"v{i}\n"})
        assert seed(link, "--repo", up.url).returncode == 0
    assert len(revisions(link)) == 2
    markers = list((link.parent / ".sidecar" / "revs").glob("*.ok"))
    assert len(markers) == 2
    worktrees = git("worktree", "list", "--porcelain", cwd=link.parent / ".sidecar" / "repo.git")
    assert worktrees.count("worktree ") == 3  # the bare repository itself + two revisions


def test_volume_owned_by_another_user(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    assert seed(link, "--repo", up.url).returncode == 0
    for dirpath, dirnames, filenames in os.walk(tmp_path / "vol"):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), 12345, 12345)
    up.commit({"node-deployment/main.al": "v2\n"})
    result = seed(link, "--repo", up.url)
    assert result.returncode == 0
    assert "dubious ownership" not in result.stderr
    assert (link / "node-deployment" / "main.al").read_text() == "v2\n"


def test_repository_hooks_never_run(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    assert seed(link, "--repo", up.url).returncode == 0
    marker = tmp_path / "hook-ran"
    hooks = link.parent / ".sidecar" / "repo.git" / "hooks"
    hooks.mkdir(exist_ok=True)
    for name in ("post-checkout", "reference-transaction", "post-index-change"):
        (hooks / name).write_text(f"#!/bin/sh\ntouch {marker}\n")
        (hooks / name).chmod(0o755)
    up.commit({"x.al": "x"})
    assert seed(link, "--repo", up.url).returncode == 0
    assert (link / "x.al").exists()
    assert not marker.exists()


def test_link_path_occupied_by_a_file_is_an_error(tmp_path: Path) -> None:
    link = tmp_path / "vol" / "scripts"
    link.parent.mkdir(parents=True)
    link.write_text("not a folder")
    fallback = tmp_path / "fb"
    fallback.mkdir()
    (fallback / "a.al").write_text("a")
    result = seed(link, "--fallback-dir", str(fallback))
    assert result.returncode == 1
    assert "neither a folder nor a symlink" in result.stderr
    assert link.read_text() == "not a folder"


def test_submodules_are_off_unless_enabled(tmp_path: Path) -> None:
    Upstream(tmp_path / "sub", {"lib.al": "library\n"})
    up = Upstream(tmp_path)
    with git_daemon(tmp_path / "sub") as server:  # file:// is refused for submodules
        git("-c", "protocol.file.allow=always", "submodule", "add", "-q", f"{server}/upstream.git", "vendor/lib",
            cwd=up.work)
        up.commit({}, "add submodule")
        off = tmp_path / "off" / "scripts"
        assert seed(off, "--repo", up.url).returncode == 0
        assert not (off / "vendor" / "lib" / "lib.al").exists()
        on = tmp_path / "on" / "scripts"
        result = seed(on, "--repo", up.url, "--submodules")
        assert result.returncode == 0, result.stderr
        assert (on / "vendor" / "lib" / "lib.al").read_text() == "library\n"


def test_published_files_are_group_writable_for_the_node_container(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    assert seed(link, "--repo", up.url).returncode == 0
    target = link.resolve()
    for path in (target, target / "node-deployment", target / "node-deployment" / "local_script.al"):
        assert path.stat().st_mode & 0o020, f"{path} must be group-writable (umask 002)"


def test_a_published_revision_that_lost_its_marker_is_marked_again(tmp_path: Path) -> None:
    """A publication does not flush the marker on its own (the link only ever names flushed
    files); a power loss that kept the link but lost the marker is mended at the next start."""
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    assert seed(link, "--repo", up.url).returncode == 0
    current = link.resolve()
    marker = current.parent / f"{current.name}.ok"
    marker.unlink()
    result = seed(link, "--repo", up.url)
    assert result.returncode == 0, result.stderr
    assert "revision_marked_again" in result.stderr + result.stdout
    assert link.resolve() == current, "the same tree stays published"
    assert marker.read_text().strip() == git("rev-parse", "HEAD", cwd=link)
