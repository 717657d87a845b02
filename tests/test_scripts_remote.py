"""Remotes that need credentials or misbehave: nothing hangs, nothing leaks, nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sidecar.scripts.git import Git
from sidecar.scripts.remote import UPSTREAM_REF, fetch
from tests.conftest import seed, sidecar_env
from tests.githttp import smart_http, ssh_server, tcp_server, tmpfs
from tests.gitrepos import Upstream, git, read_tree

PASSWORD = "pa55-w0rd-never-printed"
MAIN = "node-deployment/main.al"



def test_https_credentials_from_a_file_reread_at_every_sync(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    pw = tmp_path / "secrets" / "password"
    pw.parent.mkdir()
    pw.write_text(PASSWORD + "\n")
    link = tmp_path / "vol" / "scripts"
    with smart_http(tmp_path, tmp_path / "web", "edge", PASSWORD) as base:
        url = f"{base}/upstream.git"
        result = seed(link, "--repo", url, "--git-username", "edge", "--git-password-file", str(pw))
        assert result.returncode == 0, result.stderr
        assert git("rev-parse", "HEAD", cwd=link) == up.head()
        assert PASSWORD not in result.stderr

        # A wrong password: the sync fails clearly, the tree stays, nothing is printed.
        pw.write_text("wrong-password-also-secret")
        up.commit({MAIN: "v2\n"})
        result = seed(link, "--repo", url, "--git-username", "edge", "--git-password-file", str(pw))
        assert result.returncode == 0
        assert "sync_failed" in result.stderr and "Authentication failed" in result.stderr
        assert "wrong-password-also-secret" not in result.stderr
        assert (link / MAIN).read_text() != "v2\n"

        # The file is read again: the right password works without a restart of anything.
        pw.write_text(PASSWORD)
        result = seed(link, "--repo", url, "--git-username", "edge", "--git-password-file", str(pw))
        assert result.returncode == 0
        assert (link / MAIN).read_text() == "v2\n"

        # Without credentials git must not prompt: a prompt would hang until seed()'s timeout raises.
        result = seed(tmp_path / "vol2" / "scripts", "--repo", url, "--first-seed-timeout", "0")
        assert result.returncode == 1
        assert "terminal prompts disabled" in result.stderr or "Authentication failed" in result.stderr


def test_credentials_in_the_url_are_redacted(tmp_path: Path, sidecar_factory: Any) -> None:
    Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    with smart_http(tmp_path, tmp_path / "web", "edge", PASSWORD) as base:
        url = base.replace("http://", f"http://edge:{PASSWORD}@") + "/upstream.git"
        sc = sidecar_factory(["--repo", url, "--link", str(link), "--period", "3600"])
        sc.wait_for(lambda: sc.status()["scripts"]["published"], what="published")
        status = sc.get("/status")[1]
        assert PASSWORD not in status
        assert "<redacted>@127.0.0.1" in status
        sc.stop()
        assert PASSWORD not in sc.output()


def _process_texts() -> list[bytes]:
    texts = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            for name in ("cmdline", "environ"):
                try:
                    texts.append(Path(f"/proc/{pid}/{name}").read_bytes())
                except OSError:
                    pass
    return texts


def test_hanging_remote_times_out_and_secrets_stay_out_of_argv_and_env(tmp_path: Path) -> None:
    pw = tmp_path / "password"
    pw.write_text(PASSWORD)
    fallback = tmp_path / "fb"
    fallback.mkdir()
    (fallback / "main.al").write_text("fallback\n")
    link = tmp_path / "vol" / "scripts"
    with tcp_server("hang") as port:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "seed", "--link", str(link), "--repo", f"http://127.0.0.1:{port}/x.git",
             "--git-username", "u", "--git-password-file", str(pw), "--git-timeout", "2",
             "--first-seed-timeout", "3", "--fallback-dir", str(fallback)],
            env=sidecar_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # git is now waiting on the silent server
        leaked = [t for t in _process_texts() if PASSWORD.encode() in t]
        _, err = proc.communicate(timeout=60)
    assert not leaked, "the password must never sit in a process's argv or environment"
    assert proc.returncode == 0, err
    assert "timed out" in err
    assert read_tree(link) == {"main.al": "fallback\n"}


def test_garbage_answering_remote_is_a_clear_error(tmp_path: Path) -> None:
    link = tmp_path / "vol" / "scripts"
    with tcp_server("garbage") as port:
        result = seed(link, "--repo", f"http://127.0.0.1:{port}/x.git", "--first-seed-timeout", "0",
                      "--git-timeout", "5")
    assert result.returncode == 1
    assert "seed_failed" in result.stderr
    assert not link.exists()


def test_force_push_and_deleted_ref(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    up.commit({MAIN: "v2\n"})
    assert seed(link, "--repo", up.url).returncode == 0
    (link / "mine.al").write_text("mine\n")
    rewritten = up.rewrite({MAIN: "v2 rewritten\n"})
    result = seed(link, "--repo", up.url)
    assert result.returncode == 0, result.stderr
    assert git("rev-parse", "HEAD", cwd=link) == rewritten
    assert (link / MAIN).read_text() == "v2 rewritten\n"
    assert (link / "mine.al").read_text() == "mine\n"

    git("push", "-q", "origin", "HEAD:refs/heads/feature", cwd=up.work)
    link2 = tmp_path / "vol2" / "scripts"
    assert seed(link2, "--repo", up.url, "--ref", "feature").returncode == 0
    git("push", "-q", "origin", ":refs/heads/feature", cwd=up.work)
    result = seed(link2, "--repo", up.url, "--ref", "feature")
    assert result.returncode == 0
    assert "ref 'feature' not found on the remote" in result.stderr
    assert (link2 / MAIN).exists()


def test_corrupt_repository_on_the_volume_is_set_aside_and_edits_kept(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    link = tmp_path / "vol" / "scripts"
    assert seed(link, "--repo", up.url).returncode == 0
    (link / "mine.al").write_text("mine\n")
    repo = link.parent / ".sidecar" / "repo.git"
    for obj in (repo / "objects").rglob("*"):
        if obj.is_file():
            obj.write_bytes(b"corrupt")
    up.commit({MAIN: "v2\n"})
    result = seed(link, "--repo", up.url)
    assert result.returncode == 0, result.stderr
    assert (link / "mine.al").read_text() == "mine\n"
    assert list((link.parent / ".sidecar").glob("repo.git.broken-*"))
    assert (link / MAIN).read_text() == "v2\n"


def test_read_only_volume_fails_clearly_and_touches_nothing(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    with tmpfs(tmp_path / "vol", "size=8m,ro") as vol:
        result = seed(vol / "scripts", "--repo", up.url, "--first-seed-timeout", "0")
        assert result.returncode == 1
        assert "Read-only file system" in result.stderr


def test_full_volume_keeps_the_current_tree(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    with tmpfs(tmp_path / "vol", "size=600k") as vol:
        link = vol / "scripts"
        assert seed(link, "--repo", up.url).returncode == 0
        (link / "mine.al").write_text("mine\n")
        before = read_tree(link)
        up.commit({f"big{i}.bin": os.urandom(200_000).hex() for i in range(3)})
        result = seed(link, "--repo", up.url)
        assert result.returncode == 0
        assert "sync_failed" in result.stderr
        assert read_tree(link) == before
        assert not any(p.name.startswith("git-") and not (p.parent / f"{p.name}.ok").exists()
                       for p in (vol / ".sidecar" / "revs").iterdir() if p.is_dir()), "no partial revision left"


def test_ssh_key_and_known_hosts(tmp_path: Path) -> None:
    up = Upstream(tmp_path)
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "id")], check=True, timeout=30)
    (keys / "id").chmod(0o644)  # as a mounted Secret often is: ssh itself would refuse it
    with smart_ssh(tmp_path, keys) as (url, known_hosts):
        link = tmp_path / "vol" / "scripts"
        result = seed(link, "--repo", url, "--ssh-key-file", str(keys / "id"),
                      "--ssh-known-hosts-file", str(known_hosts), "--first-seed-timeout", "0")
        assert result.returncode == 0, result.stderr
        assert git("rev-parse", "HEAD", cwd=link) == up.head()
        assert not list((link.parent / ".sidecar" / "home").glob("ssh-key-*")), "the key copy is removed"

        # A host key that does not match is refused.
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "other")], check=True,
                       timeout=30)
        other = (keys / "other.pub").read_text().split()
        wrong = tmp_path / "wrong_known_hosts"
        wrong.write_text(known_hosts.read_text().split()[0] + f" {other[0]} {other[1]}\n")
        result = seed(tmp_path / "vol2" / "scripts", "--repo", url, "--ssh-key-file", str(keys / "id"),
                      "--ssh-known-hosts-file", str(wrong), "--first-seed-timeout", "0")
        assert result.returncode == 1
        assert "Host key verification failed" in result.stderr

        # No key: refused at once (BatchMode), never a prompt.
        result = seed(tmp_path / "vol3" / "scripts", "--repo", url, "--ssh-known-hosts-file", str(known_hosts),
                      "--first-seed-timeout", "0")
        assert result.returncode == 1
        assert "Permission denied" in result.stderr


@contextlib.contextmanager
def smart_ssh(tmp_path: Path, keys: Path) -> Iterator[tuple[str, Path]]:
    with ssh_server(tmp_path / "sshd", keys / "id.pub") as (port, known):
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(known)
        yield f"ssh://root@127.0.0.1:{port}{tmp_path}/upstream.git", known_hosts


def test_sigterm_during_a_hanging_fetch_stops_at_once_and_leaves_no_git_behind(
        tmp_path: Path, sidecar_factory: Any) -> None:
    link = tmp_path / "vol" / "scripts"
    with tcp_server("hang") as port:
        sc = sidecar_factory(["--repo", f"http://127.0.0.1:{port}/x.git", "--link", str(link),
                              "--git-timeout", "300", "--first-seed-timeout", "600"])
        assert sc.proc is not None
        sidecar_pid = sc.proc.pid
        # The git call that talks to the hanging server (short local git calls come and go before it).
        server = f"127.0.0.1:{port}"

        def talking() -> set[int]:
            return {pgrp for _, ppid, pgrp, cmd in _processes() if ppid == sidecar_pid and server in cmd}

        sc.wait_for(lambda: bool(talking()), what="git waiting on the server")
        # git runs in its own process group (with git-remote-http under it): remember those groups.
        groups = talking()
        # stop() SIGKILLs after 10 s, long before the fetch's 300 s deadline, and a killed sidecar
        # does not exit 0.
        assert sc.stop(timeout=10) == 0
        leftovers = [cmd for _, _, pgrp, cmd in _processes() if pgrp in groups]
        assert not leftovers, f"git must be killed with its whole group: {leftovers}"


def _processes() -> list[tuple[int, int, int, str]]:
    """(pid, parent pid, process group, command) of every live process."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            if stat[0] == "Z":
                continue
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            out.append((int(pid), int(stat[1]), int(stat[2]), cmd))
        except (OSError, IndexError, ValueError):
            pass
    return out


def test_fetch_names_the_commit_whether_the_ref_is_a_file_or_packed(tmp_path: Path) -> None:
    """The commit is read from the ref file the fetch wrote; a packed ref (after gc) is asked of git."""
    up = Upstream(tmp_path)
    repo = tmp_path / "repo.git"
    git("init", "-q", "--bare", str(repo))
    g = Git(60, tmp_path / "home")
    head = git("rev-parse", "HEAD", cwd=up.work)
    assert asyncio.run(fetch(g, repo, up.url, None, None, 1)) == head
    assert (repo / UPSTREAM_REF).read_text().strip() == head
    git("--git-dir", str(repo), "pack-refs", "--all")
    assert not (repo / UPSTREAM_REF).exists()
    assert asyncio.run(fetch(g, repo, up.url, None, None, 1)) == head, "nothing new: the ref stays packed"
    newer = up.commit({"x.al": "x\n"})
    assert asyncio.run(fetch(g, repo, up.url, None, None, 1)) == newer
