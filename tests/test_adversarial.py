"""Adversarial tests: hostile content, shared volumes, broken disks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import seed, sidecar_env
from tests.gitrepos import read_tree

# --- one writer per volume; the probes tell the truth about the disk (scripts) ---------------------


def fallback_tree(tmp_path: Path) -> Path:
    folder = tmp_path / "fallback"
    (folder / "node-deployment").mkdir(parents=True)
    (folder / "node-deployment" / "main.al").write_text("process main\n")
    return folder


def scripts_line(sc: Any) -> str:
    body = sc.get("/readyz?verbose")[1]
    return next((line for line in body.splitlines() if "scripts" in line), "")


def start(sidecar_factory: Any, link: Path, fallback: Path, *extra: str) -> Any:
    sc = sidecar_factory(["--link", str(link), "--fallback-dir", str(fallback), "--period", "3600", *extra])
    sc.wait_for(lambda: sc.get("/readyz")[0] == 200, 30, "first publication")
    return sc


def test_second_run_on_the_same_volume_exits_1_naming_the_holder(tmp_path: Path, sidecar_factory: Any) -> None:
    link = tmp_path / "vol" / "scripts"
    first = start(sidecar_factory, link, fallback_tree(tmp_path))
    second = sidecar_factory(["--link", str(link), "--fallback-dir", str(tmp_path / "fallback")], start=False)
    second.start(wait_live=False)
    assert second.proc.wait(30) == 1
    out = second.output()
    assert "volume_locked" in out and f"pid {first.proc.pid}" in out, out
    assert first.get("/readyz")[0] == 200, "the first writer goes on"


def test_seed_beside_a_running_sidecar_changes_nothing_when_a_tree_is_published(
        tmp_path: Path, sidecar_factory: Any) -> None:
    link = tmp_path / "vol" / "scripts"
    fallback = fallback_tree(tmp_path)
    start(sidecar_factory, link, fallback)
    before = (os.readlink(link), sorted(p.name for p in (link.parent / ".sidecar" / "revs").iterdir()))
    (fallback / "other.al").write_text("would be a change\n")
    result = seed(link, "--fallback-dir", str(fallback))
    assert result.returncode == 0, result.stderr
    assert "seed_skipped_other_writer" in result.stderr
    after = (os.readlink(link), sorted(p.name for p in (link.parent / ".sidecar" / "revs").iterdir()))
    assert after == before


def test_seed_beside_a_writer_that_has_published_nothing_waits_then_names_it(tmp_path: Path) -> None:
    link = tmp_path / "vol" / "scripts"
    root = link.parent / ".sidecar"
    code = ("import sys, time; from pathlib import Path; from sidecar.scripts import lock; "
            "lock.hold(Path(sys.argv[1]), 'run', 'pod-a'); print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(root)], env=sidecar_env(), stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        fallback = fallback_tree(tmp_path)
        result = seed(link, "--fallback-dir", str(fallback), "--first-seed-timeout", "0")
        assert result.returncode == 1
        assert f"pid {holder.pid} on pod-a, run started" in result.stderr
        assert not link.exists(), "seed never writes beside another writer"
    finally:
        holder.kill()
        holder.wait()
    assert seed(link, "--fallback-dir", str(fallback)).returncode == 0, "the lock dies with its holder"


def test_volume_removed_under_a_running_sidecar_is_reported_then_reseeded(
        tmp_path: Path, sidecar_factory: Any) -> None:
    vol = tmp_path / "vol"
    link = vol / "scripts"
    fallback = fallback_tree(tmp_path)
    sc = start(sidecar_factory, link, fallback)
    hidden = tmp_path / "fallback-away"
    fallback.rename(hidden)  # the repair cannot finish yet: the probes must say so meanwhile
    for entry in vol.iterdir():
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    sc.wait_for(lambda: "[-]scripts failed: the link is missing" in scripts_line(sc), 10, "[-]scripts")
    assert sc.get("/startupz")[0] == 503
    hidden.rename(fallback)
    sc.wait_for(lambda: sc.get("/readyz")[0] == 200, 30, "re-seeded")
    assert read_tree(link) == {"node-deployment/main.al": "process main\n"}
    assert sc.status()["scripts"]["problem"] is None
    assert f'"pid": {sc.proc.pid},' in (vol / ".sidecar" / "writer.lock").read_text(), "the lock is taken again"


def test_link_replaced_by_a_file_keeps_the_file_and_repairs_the_link(tmp_path: Path, sidecar_factory: Any) -> None:
    link = tmp_path / "vol" / "scripts"
    sc = start(sidecar_factory, link, fallback_tree(tmp_path))
    link.unlink()
    link.write_text("someone's notes\n")
    sc.wait_for(lambda: link.is_symlink(), 10, "link repaired")
    sc.wait_for(lambda: sc.get("/readyz")[0] == 200, 10, "ready again")
    [kept] = list((link.parent / ".sidecar").glob("displaced-*"))
    assert kept.read_text() == "someone's notes\n"
    assert "a file is where the link should be" in sc.output()


def test_link_replaced_by_a_folder_adopts_it_and_keeps_it(tmp_path: Path, sidecar_factory: Any) -> None:
    link = tmp_path / "vol" / "scripts"
    sc = start(sidecar_factory, link, fallback_tree(tmp_path))
    shutil.copytree(link, tmp_path / "copy")
    link.unlink()
    (tmp_path / "copy" / "node-deployment" / "main.al").write_text("process my main\n")
    (tmp_path / "copy").rename(link)
    sc.wait_for(lambda: link.is_symlink(), 10, "folder adopted")
    sc.wait_for(lambda: sc.get("/readyz")[0] == 200, 10, "ready again")
    assert read_tree(link) == {"node-deployment/main.al": "process my main\n"}
    assert sc.status()["scripts"]["local_edit_files"] == ["node-deployment/main.al"], \
        "the folder's differences from the last revision are its edits"
    [kept] = list((link.parent / ".sidecar").glob("adopted-*"))
    assert (kept / "node-deployment" / "main.al").read_text() == "process my main\n"


def test_link_replaced_by_a_foreign_symlink_keeps_it_and_repairs(tmp_path: Path, sidecar_factory: Any) -> None:
    link = tmp_path / "vol" / "scripts"
    sc = start(sidecar_factory, link, fallback_tree(tmp_path))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "main.al").write_text("not ours\n")
    tmp_link = link.parent / "tmp-link"
    tmp_link.symlink_to(elsewhere)
    tmp_link.rename(link)
    sc.wait_for(lambda: os.readlink(link).startswith(".sidecar/revs/"), 10, "link repaired")
    sc.wait_for(lambda: sc.get("/readyz")[0] == 200, 10, "ready again")
    [kept] = list((link.parent / ".sidecar").glob("displaced-*"))
    assert kept.is_symlink() and kept.readlink() == elsewhere
    assert (elsewhere / "main.al").read_text() == "not ours\n", "nothing behind the person's link is touched"
    assert read_tree(link) == {"node-deployment/main.al": "process main\n"}
