"""Hostile content, shared volumes and stuck work: nothing escapes, nothing is lost, the probes never lie."""

from __future__ import annotations

import asyncio
import os
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
    result = seed(found, "--fallback-dir", str(tmp_path / "missing"))
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


def _process_texts(*skip: int) -> tuple[list[bytes], list[str]]:
    """Every process's argv and environment (but those of ``skip``), and the argv of git processes."""
    texts, gits = [], []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) in skip:
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
        proc = subprocess.Popen([sys.executable, "-m", "sidecar", "seed", "--link", str(link), "--repo", url],
                                env=sidecar_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        leaked: list[bytes] = []
        seen: set[str] = set()
        while proc.poll() is None:
            # The sidecar itself was given the URL by the user; none of its children may see it.
            texts, gits = _process_texts(os.getpid(), proc.pid)
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
