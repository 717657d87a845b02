"""In-process unit tests of the scripts package's pure parts: symlink resolution, tree import and
merge, the path layout, edit snapshots, ``ls-remote`` parsing and URL credentials."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from sidecar.scripts import trees
from sidecar.scripts.edits import parse_status, snapshot, split_status
from sidecar.scripts.git import Credentials, Git, GitError, credential_scope, split_userinfo
from sidecar.scripts.layout import Layout, Revision, remove_tree
from sidecar.scripts.loose import names_of
from sidecar.scripts.remote import _parse_ls_remote
from sidecar.scripts.trees import Entry, escapes
from tests.gitrepos import git

# --- symlink resolution in a tree's own namespace -------------------------------------------------


def namespace(*dirs: str, **links: str) -> dict[tuple[str, ...], Entry]:
    """A tree: folders (with their parents) and links (``__`` in a name stands for ``/``)."""
    entries: dict[tuple[str, ...], Entry] = {}
    for d in dirs:
        parts = tuple(d.split("/"))
        for i in range(1, len(parts) + 1):
            entries[parts[:i]] = Entry("dir")
    for name, target in links.items():
        entries[tuple(name.split("__"))] = Entry("link", target)
    return entries


@pytest.mark.parametrize(("tree", "link", "escaping"), [
    (namespace(x="a"), ("x",), False),
    (namespace(x="/etc"), ("x",), True),
    (namespace(x=".."), ("x",), True),
    (namespace("a", a__x=".."), ("a", "x"), False),
    (namespace("a", a__x="../.."), ("a", "x"), True),
    (namespace(x="."), ("x",), False),
    (namespace(x="missing/../.."), ("x",), True),  # dangling, but written to climb out
    (namespace(x="missing/../ok"), ("x",), False),
    # a chain: each link alone stays inside, together they climb out
    (namespace("a/b", a__b__up="../..", x="a/b/up/.."), ("x",), True),
    (namespace("a/b", a__b__up="../..", x="a/b/up/a"), ("x",), False),
    (namespace("a/b", a__b__up="../..", x="a/b/up"), ("x",), False),
    # ".." after a link climbs from where the link points, not from where it is written
    (namespace("a/b/c", a__l="b/c", x="a/l/../../.."), ("x",), False),
    (namespace("a/b/c", a__l="b/c", x="a/l/../../../.."), ("x",), True),
    (namespace("d", d__abs="/", x="d/abs"), ("x",), True),
    (namespace(x="y", y="x"), ("x",), True),  # a loop is refused, never followed forever
])
def test_escapes(tree: dict[tuple[str, ...], Entry], link: tuple[str, ...], escaping: bool) -> None:
    assert (escapes(tree.get, link) is not None) == escaping


def test_the_attack_chain_is_caught_and_named() -> None:
    deep = "a/b/c/d/e/f/g/h/i/j"
    tree = namespace(deep, **{f"{deep.replace('/', '__')}__up": "../" * 9 + "..",
                              "pw": f"{deep}/up/" + "../" * 10 + "etc/passwd"})
    with pytest.raises(trees.UnsafeTree, match="'pw' points outside the tree"):
        trees.check_entries(tree)


def test_the_disk_check_never_follows_a_link_out(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    (root / "a" / "b").mkdir(parents=True)
    os.symlink("../..", root / "a" / "b" / "up")
    os.symlink("a/b/up/a", root / "inside")
    trees.check_dir_symlinks(root)
    os.symlink("a/b/up/..", root / "outside")
    with pytest.raises(trees.UnsafeTree, match="'outside'"):
        trees.check_dir_symlinks(root)


# --- tree import, merge, listing ------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Git, Path]:
    path = tmp_path / "repo.git"
    git("init", "-q", "--bare", str(path))
    return Git(300, tmp_path / "home"), path


def files_of(g: Git, repo: Path, tree: str) -> dict[str, str]:
    async def main() -> dict[str, str]:
        out = await g.out(["ls-tree", "-r", "--name-only", tree], git_dir=repo)
        return {name: await g.out(["cat-file", "blob", f"{tree}:{name}"], git_dir=repo) for name in out.split()}

    return asyncio.run(main())


def import_files(g: Git, repo: Path, folder: Path, files: dict[str, str]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return asyncio.run(trees.import_dir(g, repo, folder, folder.parent / f"{folder.name}.index"))


def test_import_takes_every_file_but_git_s_own(repo: tuple[Git, Path], tmp_path: Path) -> None:
    g, path = repo
    folder = tmp_path / "f"
    (folder / ".git").mkdir(parents=True)
    (folder / ".git" / "config").write_text("not data")
    tree = import_files(g, path, folder, {".gitignore": "*.log\n", "debug.log": "ignored, still data\n"})
    assert files_of(g, path, tree) == {".gitignore": "*.log", "debug.log": "ignored, still data"}
    assert not (tmp_path / "f.index").exists(), "the scratch index is removed"


def test_merge3_carries_clean_edits_and_names_conflicts(repo: tuple[Git, Path], tmp_path: Path) -> None:
    g, path = repo
    lines = "".join(f"line {i}\n" for i in range(10))
    base = import_files(g, path, tmp_path / "base", {"a.al": lines, "b.al": "b\n"})
    ours = import_files(g, path, tmp_path / "ours", {"a.al": lines.replace("line 1\n", "mine\n"), "b.al": "b\n",
                                                     "new.al": "added\n"})
    theirs = import_files(g, path, tmp_path / "theirs", {"a.al": lines.replace("line 8\n", "theirs\n"),
                                                         "b.al": "b upstream\n"})
    merged = asyncio.run(trees.merge3(g, path, base, ours, theirs))
    assert merged.tree is not None and not merged.conflicts
    result = files_of(g, path, merged.tree)
    assert "mine" in result["a.al"] and "theirs" in result["a.al"]
    assert result["b.al"] == "b upstream" and result["new.al"] == "added"

    clash = import_files(g, path, tmp_path / "clash", {"a.al": lines, "b.al": "b mine\n"})
    conflict = asyncio.run(trees.merge3(g, path, base, clash, theirs))
    assert conflict.tree is None and conflict.conflicts == ["b.al"]
    # The short cuts: nothing on one side means the other side as it is.
    assert asyncio.run(trees.merge3(g, path, base, base, theirs)).tree == theirs
    assert asyncio.run(trees.merge3(g, path, base, ours, base)).tree == ours


def test_the_listings_of_a_large_tree_are_whole(repo: tuple[Git, Path], tmp_path: Path) -> None:
    g, path = repo
    long = "a-folder-name-long-enough-to-make-the-listing-large-" * 2
    many = {f"{long}{i % 7}/file-with-a-long-name-{i:05d}.al": f"{i}\n" for i in range(2500)}
    tree = import_files(g, path, tmp_path / "t", {**many, "extra.al": "x\n"})
    # More than the default output cap: the listings are whole, never cut.
    entries = asyncio.run(trees.tree_entries(g, path, tree))
    assert len([e for e in entries.values() if e.kind == "file"]) == 2501
    names = asyncio.run(names_of(g, path, [tree]))
    assert len(names.files) == 2501 and len(names.all) == 2508


def test_output_past_the_cap_is_an_error_not_a_cut(repo: tuple[Git, Path], tmp_path: Path) -> None:
    g, path = repo
    tree = import_files(g, path, tmp_path / "t", {f"f{i:04d}.al": "x\n" for i in range(200)})
    with pytest.raises(GitError, match="printed more than 1000 bytes"):
        asyncio.run(g.run(["ls-tree", "-r", tree], git_dir=path, cap=1000))


# --- edit snapshots -------------------------------------------------------------------------------


def test_parse_status() -> None:
    out = b" M a.al\0?? new dir/b.al\0!! debug.log\0 D gone.al\0?? a.al\0"
    assert parse_status(out) == ["a.al", "debug.log", "gone.al", "new dir/b.al"]
    assert split_status(out) == (["a.al", "gone.al"], ["new dir/b.al", "debug.log", "a.al"])


def test_snapshot_sees_every_change_and_reuses_its_index(tmp_path: Path) -> None:
    work = tmp_path / "w"
    git("init", "-q", str(work))
    (work / "a.al").write_text("a\n")
    git("add", "a.al", cwd=work)
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one", cwd=work)
    g = Git(300, tmp_path / "home")
    index = tmp_path / "snapshot.index"
    head = git("rev-parse", "HEAD^{tree}", cwd=work)
    assert asyncio.run(snapshot(g, work, index)) == head
    (work / "b.al").write_text("added\n")
    (work / "a.al").write_text("edited\n")
    second = asyncio.run(snapshot(g, work, index))
    assert index.exists(), "kept for the next snapshot"
    assert git("ls-tree", "--name-only", second, cwd=work).split() == ["a.al", "b.al"]
    assert git("cat-file", "blob", f"{second}:a.al", cwd=work) == "edited"
    (work / "b.al").unlink()
    third = asyncio.run(snapshot(g, work, index))
    assert git("ls-tree", "--name-only", third, cwd=work).split() == ["a.al"]
    assert git("status", "--porcelain", cwd=work) == "M a.al", "the worktree's own index is untouched"


# --- the path layout ------------------------------------------------------------------------------


def test_revision_names_say_source_and_order(tmp_path: Path) -> None:
    layout = Layout(tmp_path / ".sidecar", tmp_path / "scripts")
    first = layout.new_revision("git", "a" * 40)
    second = layout.new_revision("fallback", "b" * 40)
    assert first.source == "git" and second.source == "fallback"
    assert first.name.startswith("git-aaaaaaaaaaaa-") and first.stamp < second.stamp
    assert Revision(tmp_path / "odd").stamp == 0


def test_layout_publish_retire_and_sweep(tmp_path: Path) -> None:
    layout = Layout(tmp_path / ".sidecar", tmp_path / "scripts")
    layout.prepare()
    assert layout.current() is None and layout.link_kind() == "missing"
    rev = layout.new_revision("git", "c" * 40)
    (rev.path / "sub").mkdir(parents=True)
    (rev.path / "sub" / "f.al").write_text("x")
    layout.mark_complete(rev, "c" * 40)
    layout.swap_link(rev)
    assert layout.link_kind() == "symlink" and layout.current() == rev
    assert os.readlink(layout.link) == os.path.relpath(rev.path, layout.link.parent), "a relative link"
    assert layout.recorded_commit(rev) == "c" * 40 and layout.published() == [rev]

    old = layout.new_revision("git", "d" * 40)
    (old.path / "ro").mkdir(parents=True)
    (old.path / "ro" / "f").write_text("x")
    os.chmod(old.path / "ro", 0o500)  # a read-only folder is deleted too
    layout.mark_complete(old, "d" * 40)
    layout.retire(old)
    assert not old.path.exists() and not (layout.revs / f"{old.name}.ok").exists()
    assert layout.empty_trash(threading.Event()) == []
    assert list(layout.tmp.iterdir()) == []


def test_layout_prepare_drops_what_a_crash_left(tmp_path: Path) -> None:
    layout = Layout(tmp_path / ".sidecar", tmp_path / "scripts")
    layout.prepare()
    (layout.tmp / "index-x").write_text("scratch")
    (layout.home / "password-1-2").write_text("a secret copy")
    (layout.home / "ssh-key-1-2").write_text("a key copy")
    (layout.link.parent / f".{layout.link.name}.tmp-99").symlink_to("nowhere")
    (layout.revs / "git-x-1.ok").write_text("marker of a folder that is gone")
    layout.prepare()
    assert list(layout.tmp.iterdir()) == [] and list(layout.home.iterdir()) == []
    assert not list(layout.link.parent.glob(".scripts.tmp-*"))
    assert layout.stray_markers() == [layout.revs / "git-x-1.ok"]


def test_remove_tree_reports_what_it_could_not_remove(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    (folder / "d").mkdir(parents=True)
    os.symlink("/", folder / "d" / "root")  # removed as a link, never followed
    assert remove_tree(folder) is None and not folder.exists()
    stop = threading.Event()
    stop.set()
    (folder / "d").mkdir(parents=True)
    assert remove_tree(folder, stop) == "stopped" and folder.exists()


# --- ls-remote and URLs ---------------------------------------------------------------------------


def test_parse_ls_remote() -> None:
    sha1, sha2 = "1" * 40, "2" * 40
    text = f"ref: refs/heads/main\tHEAD\n{sha1}\tHEAD\n{sha2}\trefs/tags/v1^{{}}\nshort\trefs/x\n{sha1}\t\n"
    assert _parse_ls_remote(text) == {"HEAD": sha1, "refs/tags/v1^{}": sha2}


@pytest.mark.parametrize(("url", "clean", "user", "password"), [
    ("https://u:p%40ss@host:8443/x.git", "https://host:8443/x.git", "u", "p@ss"),
    ("https://u:a%0Aurl=x@host/x.git", "https://host/x.git", "u", "a%0Aurl=x"),  # no line break decoded
    ("https://token@host/x.git", "https://host/x.git", "token", None),
    ("http://host/x.git", "http://host/x.git", None, None),
    ("ssh://git:secret@host/x.git", "ssh://git@host/x.git", "git", "secret"),
    ("git@host:x.git", "git@host:x.git", None, None),
    ("/srv/x.git", "/srv/x.git", None, None),
])
def test_split_userinfo(url: str, clean: str, user: str | None, password: str | None) -> None:
    assert split_userinfo(url) == (clean, user, password)


def test_a_token_given_as_the_user_name_stays_out_of_the_environment(tmp_path: Path) -> None:
    creds = Credentials(username="tok3n-secret", password="", scope="https://host")
    env = Git(30, tmp_path, creds).env(password_copy=tmp_path / "password-1-1")
    assert not [v for v in env.values() if "tok3n-secret" in v]
    assert env["GIT_CONFIG_KEY_" + str(int(env["GIT_CONFIG_COUNT"]) - 2)] == "credential.https://host.helper"


def test_credential_scope_is_the_repository_s_server_only() -> None:
    assert credential_scope("https://u:p@host:8443/x.git") == "https://host:8443"
    assert credential_scope("ssh://git@host/x.git") is None
    assert credential_scope("/srv/x.git") is None
