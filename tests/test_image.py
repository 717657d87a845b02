"""The image itself: built from the Dockerfile by a real OCI builder (buildah), then run as uid 10001.

`.ci/build-image` builds it (and, on a machine that cannot pull the public Python image, a Debian
bookworm base with Debian's Python 3.11 made by debootstrap). The image is run with buildah's chroot
isolation: no container runtime is needed, the process shares the host's network (so its port is
reached on loopback) but runs as the image's user, on the image's files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, free_port, require_tool

# The first test builds the image (and, on a fresh machine, its base): minutes, not the usual 300 s.
pytestmark = pytest.mark.timeout(1200)

TAG = "localhost/edgelake-sidecar:test"
UID = "10001:10001"
EXAMPLE_SCRIPTS = ROOT / "examples" / "deployment-scripts"


def buildah() -> list[str]:
    return [require_tool("buildah"), "--storage-driver", "vfs"]


@pytest.fixture(scope="module")
def image() -> Iterator[dict[str, Any]]:
    """Build the image, and a working container of it; its config (entry point, user, ...)."""
    require_tool("debootstrap")
    build = subprocess.run(["bash", str(ROOT / ".ci" / "build-image"), TAG], capture_output=True, text=True,
                           timeout=900, check=False, cwd=ROOT)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    inspect = subprocess.run([*buildah(), "inspect", "--type", "image", TAG], capture_output=True, text=True,
                             timeout=60, check=True)
    config = json.loads(inspect.stdout)["OCIv1"]["config"]
    ctr = subprocess.run([*buildah(), "from", "--pull-never", TAG], capture_output=True, text=True, timeout=120,
                         check=True).stdout.strip()
    try:
        yield {"config": config, "container": ctr}
    finally:
        subprocess.run([*buildah(), "rm", ctr], capture_output=True, timeout=120, check=False)


def run_argv(image: dict[str, Any], argv: list[str], volumes: dict[Path, str] | None = None,
             env: dict[str, str] | None = None) -> list[str]:
    """The command line that runs argv in the image as its user, with host folders mounted."""
    cmd = [*buildah(), "run", "--isolation", "chroot", "--user", UID]
    for host, target in (volumes or {}).items():
        cmd += ["-v", f"{host}:{target}"]
    # Not PID 1 under chroot isolation: tini registers as a subreaper instead, as it reaps in a pod.
    for name, value in {"TINI_SUBREAPER": "1", "SIDECAR_KUBE": "off", **(env or {})}.items():
        cmd += ["-e", f"{name}={value}"]
    return [*cmd, image["container"], "--", *argv]


def entrypoint(image: dict[str, Any], *args: str) -> list[str]:
    """argv as the image's entry point runs it: tini, then the sidecar's console script."""
    return [*image["config"]["Entrypoint"], *args]


def run(image: dict[str, Any], argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(run_argv(image, argv, **kwargs), capture_output=True, text=True, timeout=300,
                          check=False)


def writable(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)  # as fsGroup makes the pod's volumes writable for the sidecar
    return path


def test_entry_point_is_tini_running_the_sidecar_as_10001(image: dict[str, Any]) -> None:
    config = image["config"]
    assert config["Entrypoint"] == ["/usr/bin/tini", "--", "edgelake-sidecar"]
    assert config["Cmd"] == ["run"]
    assert config["User"] == UID
    tini = run(image, ["/usr/bin/tini", "--version"])
    assert tini.returncode == 0 and "tini version" in tini.stdout


def test_version(image: dict[str, Any]) -> None:
    result = run(image, entrypoint(image, "version"))
    assert result.returncode == 0, result.stderr
    version = (ROOT / "sidecar" / "__init__.py").read_text().split('__version__ = "')[1].split('"')[0]
    assert result.stdout.strip() == f"edgelake-sidecar {version}"
    labels = image["config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == version


def test_git_and_ssh_present_for_the_sidecar_user(image: dict[str, Any]) -> None:
    result = run(image, ["sh", "-c", "id -u; git --version; ssh -V 2>&1; getent passwd 10001"])
    assert result.returncode == 0, result.stderr
    uid, git, ssh, passwd = result.stdout.strip().splitlines()
    assert uid == "10001"
    assert git.startswith("git version 2.")
    assert ssh.startswith("OpenSSH_")
    assert passwd.startswith("sidecar:x:10001:10001:")  # OpenSSH refuses a uid without an entry


def test_the_pruned_environment_imports_everything_the_sidecar_uses(image: dict[str, Any]) -> None:
    result = run(image, ["/opt/venv/bin/python", "/check/prune_venv.py", "--check"],
                 volumes={ROOT / "docker": "/check"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "config.kube_config" in result.stdout
    venv_kb, client_kb = (int(run(image, ["du", "-sk", path]).stdout.split()[0])
                          for path in ("/opt/venv", "/opt/venv/lib/python3.11/site-packages/kubernetes"))
    # The unpruned environment is about 168 MB, 126 MB of it the kubernetes client.
    assert client_kb < 2_000 and venv_kb < 60_000, (venv_kb, client_kb)


def test_seed_publishes_the_fallback(image: dict[str, Any], tmp_path: Path) -> None:
    volume = writable(tmp_path / "volume")
    argv = entrypoint(image, "seed", "--fallback-dir", "/fallback", "--link", "/scripts/deployment-scripts")
    result = run(image, argv, volumes={volume: "/scripts", EXAMPLE_SCRIPTS: "/fallback"})
    assert result.returncode == 0, result.stdout + result.stderr
    link = volume / "deployment-scripts"
    assert link.is_symlink()
    main = link / "node-deployment" / "main.al"
    assert main.read_text() == (EXAMPLE_SCRIPTS / "node-deployment" / "main.al").read_text()
    assert main.stat().st_uid == 10001  # written by the image's user, not root


def test_run_answers_livez(image: dict[str, Any], tmp_path: Path) -> None:
    volume = writable(tmp_path / "volume")
    port = free_port()
    argv = run_argv(image, entrypoint(image, "run", "--http-port", str(port), "--fallback-dir", "/fallback",
                                      "--link", "/scripts/deployment-scripts"),
                    volumes={volume: "/scripts", EXAMPLE_SCRIPTS: "/fallback"})
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        status = wait_for_http(f"http://127.0.0.1:{port}/livez", proc, deadline=120)
        assert status == 200, log.read_text()[-3000:]
        assert wait_for_http(f"http://127.0.0.1:{port}/startupz", proc, deadline=120) == 200
        assert (volume / "deployment-scripts" / "node-deployment" / "main.al").exists()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        # `buildah run` does not always pass the signal on to the container's processes: never leave
        # the sidecar behind on the machine, whatever the assertion below says.
        leftovers = subprocess.run(["pgrep", "-u", "10001", "-f", f"--http-port {port}"], capture_output=True,
                                   text=True, check=False)
        subprocess.run(["pkill", "-KILL", "-f", f"edgelake-sidecar run --http-port {port} "], check=False)
    assert leftovers.stdout == "", "the sidecar outlived its container's SIGTERM"


def wait_for_http(url: str, proc: subprocess.Popen[bytes], deadline: float) -> int:
    """The first HTTP status the URL answers with, polling until the deadline (the process must live)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        assert proc.poll() is None, "the sidecar exited"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            if exc.code != 503:
                return exc.code
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer 200 within {deadline} s")

