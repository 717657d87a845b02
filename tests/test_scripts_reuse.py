"""Hard-linking carried files into a new revision: what is linked, what is refused (real files)."""

from __future__ import annotations

import os
from pathlib import Path

from sidecar.scripts.reuse import _link_all


def _trees(tmp_path: Path) -> tuple[Path, Path]:
    old, new = tmp_path / "old", tmp_path / "new"
    (old / "a" / "b").mkdir(parents=True)
    new.mkdir()
    return old, new


def test_links_files_creating_folders_and_replacing_the_new_revisions_own_copy(tmp_path: Path) -> None:
    old, new = _trees(tmp_path)
    (old / "top.al").write_text("top\n")
    (old / "a" / "b" / "deep.al").write_text("deep\n")
    (old / "same.al").write_text("carried\n")
    (new / "same.al").write_text("upstream's\n")

    linked = _link_all(old, new, ["top.al", "a/b/deep.al", "same.al"])

    assert linked == ["top.al", "a/b/deep.al", "same.al"]
    for rel in linked:
        assert os.path.samefile(old / rel, new / rel)
    assert (new / "same.al").read_text() == "carried\n"
    assert not list(new.glob(".*sidecar-link"))


def test_refuses_links_as_sources_and_symlinked_folders_in_the_new_tree(tmp_path: Path) -> None:
    old, new = _trees(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (old / "a" / "b" / "f.al").write_text("f\n")
    (old / "link.al").symlink_to(old / "a" / "b" / "f.al")
    (new / "a").symlink_to(outside)  # a folder swapped for a link: nothing may be written through it

    linked = _link_all(old, new, ["a/b/f.al", "link.al", "missing.al"])

    assert linked == []
    assert list(outside.iterdir()) == []
    assert not (new / "link.al").exists()
    assert not (new / "missing.al").exists()
