"""The watch's pure parts, in process: inotify records, the tree index, change classification."""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest

import sidecar.watch.inotify as inotify
from sidecar.watch.tree import Change, TooLarge, TreeIndex
from sidecar.watch.watcher import Anchors, _status_entries

A, M, D = Change.ADDED, Change.MODIFIED, Change.DELETED


def make(root: Path, files: dict[str, str]) -> None:
    """Write ``files`` under ``root``."""
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small tree with a .git file, like a worktree."""
    root = tmp_path / "tree"
    make(root, {"main.al": "m\n", "policies/master.al": "p\n", "policies/deep/x.al": "x\n", ".git": "gitdir: x\n"})
    return root


def indexed(root: Path, limit: int = 1000) -> TreeIndex:
    """The tree indexed without inotify (classification alone)."""
    index = TreeIndex(root, limit)
    index.build()
    return index


def test_build_lists_files_not_git_and_never_follows_links(tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    make(outside, {f"f{i}": "x" for i in range(50)})
    (tree / "up").symlink_to("/")
    (tree / "out").symlink_to(outside)
    index = indexed(tree)
    assert index.files == {"main.al", "policies/master.al", "policies/deep/x.al", "up", "out"}
    assert set(index.dirs) == {"", "policies", "policies/deep"}


@pytest.mark.parametrize(("on_disk", "raw", "expected"), [
    # Edited in place.
    ({"main.al": "edited"}, [(M, "main.al")], {"main.al": "modified"}),
    # Saved through a temporary file renamed over the original (sed -i, many editors).
    ({"main.al": "edited"}, [(A, "main.al.tmp"), (D, "main.al.tmp"), (A, "main.al")], {"main.al": "modified"}),
    # A scratch file that came and went within the batch is no change.
    ({}, [(A, "scratch"), (M, "scratch"), (D, "scratch")], {}),
    # A new file.
    ({"new.al": "n"}, [(A, "new.al"), (M, "new.al")], {"new.al": "added"}),
    # git's own files never count.
    ({".git": "gitdir: y\n"}, [(M, ".git"), (A, "policies/.git")], {}),
    # A folder's own "modified" only means its entries changed.
    ({}, [(M, "policies")], {}),
])
def test_classify_table(tree: Path, on_disk: dict[str, str], raw: list[tuple[Change, str]],
                        expected: dict[str, str]) -> None:
    index = indexed(tree)
    make(tree, on_disk)
    assert index.classify(raw) == expected


def test_deletions_of_a_file_and_of_a_folder(tree: Path) -> None:
    index = indexed(tree)
    (tree / "main.al").unlink()
    (tree / "policies/deep/x.al").unlink()
    (tree / "policies/deep").rmdir()
    (tree / "policies/master.al").unlink()
    (tree / "policies").rmdir()
    assert index.classify([(D, "main.al"), (D, "policies")]) == {
        "main.al": "deleted", "policies/master.al": "deleted", "policies/deep/x.al": "deleted"}
    assert index.files == set() and set(index.dirs) == {""}


def test_a_folder_moved_in_counts_as_its_files_and_is_watched(tree: Path) -> None:
    index = indexed(tree)
    make(tree, {"mine/a.al": "a", "mine/sub/b.al": "b"})
    assert index.classify([(A, "mine")]) == {"mine/a.al": "added", "mine/sub/b.al": "added"}
    assert {"mine", "mine/sub"} <= set(index.dirs)
    # Its files are known now: a later write is a modification.
    assert index.classify([(M, "mine/a.al")]) == {"mine/a.al": "modified"}


def test_a_file_replaced_by_a_folder_and_back(tree: Path) -> None:
    index = indexed(tree)
    (tree / "main.al").unlink()
    make(tree, {"main.al/inner.al": "i"})
    assert index.classify([(D, "main.al"), (A, "main.al")]) == {"main.al": "deleted", "main.al/inner.al": "added"}
    (tree / "main.al/inner.al").unlink()
    (tree / "main.al").rmdir()
    make(tree, {"main.al": "file again"})
    assert index.classify([(D, "main.al"), (A, "main.al")]) == {"main.al": "added", "main.al/inner.al": "deleted"}


def test_a_link_added_to_the_tree_is_one_file(tree: Path) -> None:
    index = indexed(tree)
    (tree / "root").symlink_to("/")
    assert index.classify([(A, "root")]) == {"root": "added"}
    assert "root" not in index.dirs


def test_the_index_is_bounded(tree: Path) -> None:
    with pytest.raises(TooLarge):
        indexed(tree, limit=4)  # 3 folders and 3 files
    index = indexed(tree, limit=8)
    make(tree, {f"bulk/f{i}": "x" for i in range(5)})
    with pytest.raises(TooLarge):
        index.classify([(A, "bulk")])


def test_build_reports_files_changed_since_a_moment(tree: Path) -> None:
    # A file's change time comes from a coarse clock: wait until it moves past the mark.
    mark = time.time_ns()
    while time.time_ns() < mark + 20_000_000:
        time.sleep(0.005)
    make(tree, {"policies/master.al": "edited"})
    os.chmod(tree / "main.al", 0o755)
    assert TreeIndex(tree, 100).build(since_ns=mark) == ["main.al", "policies/master.al"]


def test_a_carried_file_whose_link_count_changes_is_no_edit(tree: Path, tmp_path: Path) -> None:
    # Carried files are hard links shared with the previous revision: making or removing that
    # revision moves their change time, which must not count as an edit; writing to them must.
    mark = time.time_ns()
    while time.time_ns() < mark + 20_000_000:
        time.sleep(0.005)
    os.link(tree / "main.al", tmp_path / "previous-revision-main.al")
    assert TreeIndex(tree, 100).build(since_ns=mark) == []
    (tree / "main.al").write_text("edited through the shared link")
    assert TreeIndex(tree, 100).build(since_ns=mark) == ["main.al"]


def pack(wd: int, mask: int, name: bytes = b"", cookie: int = 0) -> bytes:
    """One ``struct inotify_event`` as the kernel writes it (name padded with NULs)."""
    padded = name + b"\0" * (16 - len(name) % 16) if name else b""
    return struct.pack("iIII", wd, mask, cookie, len(padded)) + padded


def test_parse_splits_kernel_records() -> None:
    buf = pack(1, inotify.IN_CREATE, b"a.al") + pack(2, inotify.IN_DELETE_SELF) + pack(1, inotify.IN_MODIFY,
                                                                                        b"\xff\xfe")
    events = inotify.parse(buf)
    assert [(e.wd, e.mask, e.name) for e in events] == [
        (1, inotify.IN_CREATE, b"a.al"), (2, inotify.IN_DELETE_SELF, b""), (1, inotify.IN_MODIFY, b"\xff\xfe")]


def test_translate_maps_watches_to_paths(tree: Path) -> None:
    index = indexed(tree)
    index.by_wd = {1: "", 2: "policies"}
    raw, root_gone = index.translate(inotify.parse(
        pack(1, inotify.IN_MOVED_TO, b"main.al") + pack(2, inotify.IN_CLOSE_WRITE, b"master.al")
        + pack(2, inotify.IN_MOVED_FROM, b"old.al") + pack(9, inotify.IN_CREATE, b"unknown")
        + pack(2, inotify.IN_IGNORED) + pack(1, inotify.IN_MODIFY, b"\xff.al")))
    assert raw == [(A, "main.al"), (M, "policies/master.al"), (D, "policies/old.al"),
                   (M, os.fsdecode(b"\xff.al"))]
    assert not root_gone
    assert index.translate(inotify.parse(pack(2, inotify.IN_DELETE_SELF)))[1] is False
    assert index.translate(inotify.parse(pack(1, inotify.IN_DELETE_SELF)))[1] is True


def test_anchor_events_that_move_the_link(tmp_path: Path) -> None:
    (tmp_path / "vol").mkdir()
    notify = inotify.Inotify()
    try:
        anchors = Anchors(notify)
        anchors.add(tmp_path / "vol", "deployment-scripts")
        anchors.add(tmp_path / "missing" / "revs", "rev-1")  # stands in for its nearest existing folder
        vol = next(wd for wd, names in anchors.names.items() if names is not None)
        other = next(wd for wd, names in anchors.names.items() if names is None)
        assert anchors.moved(inotify.RawEvent(vol, inotify.IN_MOVED_TO, 0, b"deployment-scripts"))
        assert not anchors.moved(inotify.RawEvent(vol, inotify.IN_CREATE, 0, b".deployment-scripts.tmp-1"))
        assert anchors.moved(inotify.RawEvent(vol, inotify.IN_DELETE_SELF, 0, b""))
        assert anchors.moved(inotify.RawEvent(other, inotify.IN_CREATE, 0, b"anything"))
        assert anchors.moved(inotify.RawEvent(-1, inotify.IN_Q_OVERFLOW, 0, b""))
        assert not anchors.moved(inotify.RawEvent(12345, inotify.IN_CREATE, 0, b"deployment-scripts"))
    finally:
        notify.close()


def test_a_link_cannot_be_watched_as_a_folder(tmp_path: Path) -> None:
    (tmp_path / "up").symlink_to("/")
    notify = inotify.Inotify()
    try:
        with pytest.raises(OSError):
            notify.add(os.fsencode(tmp_path / "up"), inotify.CONTENT)
    finally:
        notify.close()


def test_status_entries_whole_and_cut() -> None:
    out = b" M a.al\0?? new dir/f\0 D gone.al\0"
    assert _status_entries(out) == ({"a.al": " M", "new dir/f": "??", "gone.al": " D"}, True)
    big = b"".join(f"?? f{i:07d}\0".encode() for i in range(30_000))
    codes, complete = _status_entries(big[:256 * 1024])
    assert not complete
    assert all(len(path) == 8 for path in codes)  # the entry cut in half is dropped
