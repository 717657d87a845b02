"""Hostile content, shared volumes and stuck work: nothing escapes, nothing is lost, the probes never lie."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sidecar.config import load
from sidecar.events import SyncFailed
from sidecar.scripts import maintain
from sidecar.scripts.seed import ensure_published
from sidecar.scripts.sync import sync_once
from sidecar.scripts.workspace import Workspace
from sidecar.state import State
from tests.conftest import seed, sidecar_env
from tests.githttp import git_daemon, smart_http, tcp_server, tmpfs
from tests.gitrepos import Upstream, git, read_tree

# --- Scripts: symlinks, submodules, credentials, full volumes, history size, stuck work -----------
# (tests of issue 10 items 1, 4, 5, 7, 8 and 11; the sidecar's scripts/ package)

MAIN = "node-deployment/main.al"
PASSWORD = "url-pa55word-never-shown"
DEEP = "a/b/c/d/e/f/g/h/i/j"


def chained_escape(up: Upstream) -> str:
    """The chain from the attack: ``up`` is ten levels deep and climbs ten; ``pw`` climbs once more."""
    (up.work / DEEP).mkdir(parents=True)
    os.symlink("../" * 9 + "..", up.work / DEEP / "up")
    os.symlink(f"{DEEP}/up/" + "../" * 10 + "etc/passwd", up.work / "pw")
    return up.commit({}, "chained links")


def settings_for(link: Path, *args: str) -> Any:
    return load(["run", "--link", str(link), *args], {})


def test_chained_symlinks_that_resolve_outside_are_refused_and_the_last_tree_stays(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    settings = settings_for(link, "--repo", up.url)

    good: dict[str, str] = {}

    async def main() -> tuple[str, list[Any]]:
        ws = Workspace.create(settings, State())
        await ensure_published(ws)
        good.update(read_tree(link))
        events = ws.state.bus.subscribe()
        chained_escape(up)
        result = await sync_once(ws)
        return result, [events.get_nowait() for _ in range(events.qsize())]

    result, events = asyncio.run(main())
    assert good
    assert result == "error"
    assert read_tree(link) == good, "the last good tree stays published"
    assert not (link / "pw").exists()
    failed = [e for e in events if isinstance(e, SyncFailed)]
    assert failed and "'pw' points outside the tree" in failed[0].error


def test_a_refused_tree_is_refused_with_edits_held_or_in_conflict_too(tmp_path: Path) -> None:
    """The symlink check runs while the revision is built; a hold or a conflict never hides it, and
    nothing of the refused tree is left in the revisions folder."""
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"

    async def main() -> list[str]:
        ws = Workspace.create(settings_for(link, "--repo", up.url, "--local-edits", "hold"), State())
        await ensure_published(ws)
        (link / "mine.al").write_text("an edit that holds upstream back\n")
        chained_escape(up)
        results = [await sync_once(ws)]
        ws.settings = settings_for(link, "--repo", up.url)  # carry: the edit no longer holds it back
        results.append(await sync_once(ws))
        await ws.settle()
        return results

    assert asyncio.run(main()) == ["error", "error"]
    assert not (link / "pw").exists()
    revs = link.parent / ".sidecar" / "revs"
    assert len([p for p in revs.iterdir() if p.is_dir()]) == 1, "only the published revision"


def test_refusal_shows_in_status_and_the_log(tmp_path: Path, sidecar_factory: Any) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    sc = sidecar_factory(["--repo", up.url, "--link", str(link), "--period", "0.2", "--jitter", "0"])
    sc.wait_for(lambda: sc.status()["scripts"]["published"], what="published")
    chained_escape(up)
    sc.wait_for(lambda: "points outside the tree" in (sc.status()["scripts"]["last_sync_error"] or ""),
                what="refusal in /status")
    assert "'pw'" in sc.status()["scripts"]["last_sync_error"]
    assert not (link / "pw").exists()
    sc.stop()
    assert "sync_failed" in sc.output() and "points outside the tree" in sc.output()


def test_links_that_stay_inside_through_chains_are_published(tmp_path: Path) -> None:
    """Control case: the same chain that climbs back down into the tree is fine."""
    up = Upstream(tmp_path)
    (up.work / DEEP).mkdir(parents=True)
    os.symlink("../" * 9 + "..", up.work / DEEP / "up")
    os.symlink(f"{DEEP}/up/{MAIN}", up.work / "main-link.al")
    up.commit({}, "inside")
    link = tmp_path / "vol" / "scripts"
    assert seed(link, "--repo", up.url).returncode == 0
    assert (link / "main-link.al").read_text() == read_tree(link)[MAIN]


def test_a_carried_local_link_that_escapes_blocks_the_update(tmp_path: Path) -> None:
    """A link a user made to / is carried like any edit: the new tree would hold it, so it is refused."""
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    assert seed(link, "--repo", up.url).returncode == 0
    os.symlink("/", link / "root")
    up.commit({MAIN: "v2\n"})
    result = seed(link, "--repo", up.url)
    assert "sync_failed" in result.stderr and "'root' points outside the tree" in result.stderr
    assert (link / MAIN).read_text() != "v2\n"
    (link / "root").unlink()
    assert seed(link, "--repo", up.url).returncode == 0
    assert (link / MAIN).read_text() == "v2\n"


def test_fallback_and_adopted_folders_with_chained_links_are_refused(tmp_path: Path) -> None:
    fallback = tmp_path / "fb"
    (fallback / DEEP).mkdir(parents=True)
    os.symlink("../" * 9 + "..", fallback / DEEP / "up")
    os.symlink(f"{DEEP}/up/" + "../" * 10 + "etc/passwd", fallback / "pw")
    result = seed(tmp_path / "vol" / "scripts", "--fallback-dir", str(fallback))
    assert result.returncode == 1 and "'pw' points outside the tree" in result.stderr
    assert not (tmp_path / "vol" / "scripts").exists()

    found = tmp_path / "vol2" / "scripts"  # a plain folder where the link goes: adopted, unless hostile
    found.parent.mkdir()
    os.rename(fallback, found)
    (tmp_path / "empty").mkdir()
    result = seed(found, "--fallback-dir", str(tmp_path / "empty"))
    assert result.returncode == 1 and "points outside the tree" in result.stderr
    assert found.is_dir() and not found.is_symlink() and (found / "pw").is_symlink(), "the folder is untouched"


def test_submodules_get_the_symlink_check(tmp_path: Path) -> None:
    sub = Upstream(tmp_path / "sub", {"lib.al": "library\n"})
    os.symlink("../../../../../etc", sub.work / "etc")  # inside the submodule: climbs out of the tree
    sub.commit({}, "hostile link")
    up = Upstream(tmp_path)
    with git_daemon(tmp_path / "sub") as server:
        git("-c", "protocol.file.allow=always", "submodule", "add", "-q", f"{server}/upstream.git", "vendor/lib",
            cwd=up.work)
        up.commit({}, "add submodule")
        link = tmp_path / "vol" / "scripts"
        result = seed(link, "--repo", up.url, "--submodules", "--first-seed-timeout", "0")
    assert result.returncode == 1
    assert "'vendor/lib/etc' points outside the tree" in result.stderr
    assert not link.exists()


def test_a_submodule_cannot_copy_a_repository_of_the_pod_through_file_urls(tmp_path: Path) -> None:
    secret = Upstream(tmp_path / "secret", {"key.txt": "private data of the pod\n"})
    up = Upstream(tmp_path)
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", secret.url, "stolen", cwd=up.work)
    up.commit({}, "submodule pointing at a local path")
    link = tmp_path / "vol" / "scripts"
    result = seed(link, "--repo", up.url, "--submodules", "--first-seed-timeout", "0")
    assert result.returncode == 1
    assert "transport 'file' not allowed" in result.stderr
    assert not link.exists()
    leaked = [p for p in (tmp_path / "vol").rglob("*") if p.is_file() and b"private data" in p.read_bytes()]
    assert not leaked


def _process_texts(own: int, sidecar: int, sidecar_argv: list[str]) -> tuple[list[bytes], list[str]]:
    """Every process's argv and environment, and the argv of git processes; not this test's own,
    nor the sidecar's, which the user gave the URL (nor a fork of it that has not exec'd yet)."""
    texts, gits = [], []
    argv = b"\0".join(os.fsencode(a) for a in sidecar_argv) + b"\0"
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) in (own, sidecar):
            continue
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes() == argv:
                continue
        except OSError:
            continue
        for name in ("cmdline", "environ"):
            try:
                data = Path(f"/proc/{pid}/{name}").read_bytes()
            except OSError:
                continue
            texts.append(data)
            if name == "cmdline" and b"git" in data.split(b"\0")[0]:
                gits.append(data.replace(b"\0", b" ").decode(errors="replace"))
    return texts, gits


def test_credentials_in_the_url_never_reach_a_child_process(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    up.commit({"big.bin": os.urandom(400_000).hex()}, "a fetch that takes a while")
    link = tmp_path / "vol" / "scripts"
    with smart_http(tmp_path, tmp_path / "web", "edge", PASSWORD, rate="100k") as base:
        url = base.replace("http://", f"http://edge:{PASSWORD}@") + "/upstream.git"
        argv = [sys.executable, "-m", "sidecar", "seed", "--link", str(link), "--repo", url]
        proc = subprocess.Popen(argv, env=sidecar_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        leaked: list[bytes] = []
        seen: set[str] = set()
        while proc.poll() is None:
            texts, gits = _process_texts(os.getpid(), proc.pid, argv)
            leaked += [t for t in texts if PASSWORD.encode() in t]
            seen.update(g for g in gits if "fetch" in g or "remote-http" in g)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode(errors="replace")
    assert any("remote-http" in g for g in seen), f"the scan must have seen the fetch running: {seen}"
    assert not leaked, "the password must never sit in a process's argv or environment"
    assert PASSWORD.encode() not in err
    assert git("rev-parse", "HEAD", cwd=link) == up.head()
    assert not list((link.parent / ".sidecar" / "home").glob("password-*")), "the private copy is removed"


def test_a_full_volume_recovers_once_upstream_is_small_again(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    with tmpfs(tmp_path / "vol", "size=1200k") as vol:
        link = vol / "scripts"
        assert seed(link, "--repo", up.url).returncode == 0
        (link / "mine.al").write_text("mine\n")
        for _ in range(2):  # two attempts: the first leaves whatever a failed fetch leaves
            up.commit({"big.bin": os.urandom(900_000).hex()}, "too large for the volume")
            result = seed(link, "--repo", up.url)
            assert "sync_failed" in result.stderr and "No space left" in result.stderr
        assert "disk_full_cleaned" in result.stderr
        assert not list((vol / ".sidecar" / "repo.git" / "objects" / "pack").glob("tmp_*"))
        up.commit({"big.bin": None, MAIN: "after the large file was removed\n"})
        result = seed(link, "--repo", up.url)
        assert "sync_failed" not in result.stderr, result.stderr[-2000:]
        tree = read_tree(link)
        assert tree[MAIN] == "after the large file was removed\n"
        assert tree["mine.al"] == "mine\n"


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_history_stays_near_what_it_must_hold(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    settings = settings_for(link, "--repo", up.url)
    repo = link.parent / ".sidecar" / "repo.git"

    async def main() -> tuple[int, int]:
        ws = Workspace.create(settings, State())
        await ensure_published(ws)
        (link / "mine.al").write_text("a local edit, carried every time\n")
        first = _size(repo)
        for n in range(3 * maintain.GC_EVERY):
            up.commit({MAIN: f"one-line update {n}\n"})
            assert await sync_once(ws) == "ok"
        return first, _size(repo)

    first, last = asyncio.run(main())
    assert last < 3 * first, f"{first} bytes after the first publication, {last} after {3 * maintain.GC_EVERY}"
    fsck = subprocess.run(["git", "--git-dir", str(repo), "fsck", "--connectivity-only"], capture_output=True,
                          text=True, timeout=60)
    assert fsck.returncode == 0, fsck.stderr
    assert (link / "mine.al").read_text() == "a local edit, carried every time\n"


def test_a_whole_sync_has_a_deadline(tmp_path: Path) -> None:
    fallback = tmp_path / "fb"
    fallback.mkdir()
    (fallback / "main.al").write_text("fallback\n")
    link = tmp_path / "vol" / "scripts"
    assert seed(link, "--fallback-dir", str(fallback)).returncode == 0
    with tcp_server("hang") as port:
        # Each git call may take 60 s; the whole sync only 1 s.
        settings = settings_for(link, "--repo", f"http://127.0.0.1:{port}/x.git", "--git-timeout", "60",
                                "--sync-timeout", "1")

        async def main() -> tuple[str, str | None, float]:
            ws = Workspace.create(settings, State())
            started = time.monotonic()
            result = await sync_once(ws)
            return result, ws.state.scripts.last_sync_error, time.monotonic() - started

        result, error, took = asyncio.run(main())
    assert result == "error"
    assert error is not None and "deadline" in error and "--sync-timeout" in error
    assert took < 60, "cancelled at its deadline, not at the end of the git call"
    assert read_tree(link) == {"main.al": "fallback\n"}


def _mounts_under(path: Path) -> list[str]:
    return [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(path))]


def test_an_old_revision_that_cannot_be_removed_is_reported(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    assert seed(link, "--repo", up.url).returncode == 0
    first = link.resolve()
    # A mount inside the old revision: its folder cannot be deleted while the mount is there.
    (first / "busy").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(first / "busy")], check=True, timeout=30)
    settings = settings_for(link, "--repo", up.url)

    async def main() -> tuple[int, str | None]:
        ws = Workspace.create(settings, State())
        await ensure_published(ws)
        for n in range(2):  # the second sync retires the first revision
            up.commit({MAIN: f"v{n}\n"})
            assert await sync_once(ws) == "ok"
        await ws.settle()
        return ws.state.scripts.cleanup_failures, ws.state.scripts.last_cleanup_error

    try:
        failures, error = asyncio.run(main())
    finally:
        for mount in _mounts_under(tmp_path):
            subprocess.run(["umount", "-l", mount], check=False, timeout=30)
    assert failures >= 1
    assert error is not None and first.name in error and "busy" in error


# --- One writer per volume; the probes tell the truth about the disk ------------------------------
# (tests of issue 10 items 3 and 6: scripts/lock.py and the link guard in scripts/sync.py)


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
    def ours() -> bool:
        try:
            return os.readlink(link).startswith(".sidecar/revs/")
        except FileNotFoundError:  # between moving the person's link aside and restoring ours
            return False

    sc.wait_for(ours, 10, "link repaired")
    sc.wait_for(lambda: sc.get("/readyz")[0] == 200, 10, "ready again")
    [kept] = list((link.parent / ".sidecar").glob("displaced-*"))
    assert kept.is_symlink() and kept.readlink() == elsewhere
    assert (elsewhere / "main.al").read_text() == "not ours\n", "nothing behind the person's link is touched"
    assert read_tree(link) == {"node-deployment/main.al": "process main\n"}
