"""Shared test fixtures: the sidecar as a real process, free ports, and required tools."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.fakenode import FakeNode

if TYPE_CHECKING:
    from fakekube import FakeKube

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_tool(name: str, *extra_dirs: str) -> str:
    """Path of a tool the test needs; skip without it locally, fail in CI (CI must install it)."""
    path = shutil.which(name) or next(
        (str(Path(d) / name) for d in ("/usr/sbin", "/sbin", *extra_dirs) if (Path(d) / name).exists()), None
    )
    if path is None:
        if IN_CI:
            pytest.fail(f"required tool {name!r} is missing in CI (.ci/setup must install it)")
        pytest.skip(f"{name} not installed")
    return path


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sidecar_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for running the sidecar from this checkout, without inherited SIDECAR_* or node vars."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SIDECAR_") and not k.startswith("ANYLOG_") and k not in
           ("NODE_TYPE", "LOCAL_SCRIPTS", "EDGELAKE_PATH", "POD_NAME", "POD_NAMESPACE", "KUBECONFIG")}
    env["PYTHONPATH"] = str(ROOT)
    env["SIDECAR_KUBE"] = "off"
    env["SIDECAR_LOG_FORMAT"] = "json"
    env.update(extra or {})
    return env


def cli(args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 120,
        **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sidecar ARGS`` to completion."""
    return subprocess.run([sys.executable, "-m", "sidecar", *args], env=sidecar_env(env), text=True,
                          capture_output=True, timeout=timeout, **kwargs)


def seed(link: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m sidecar seed --link LINK ARGS`` to completion."""
    return cli(["seed", "--link", str(link), *args], env=env)


def http_get(url: str, timeout: float = 5, **headers: str) -> tuple[int, str]:
    """GET a URL; return (status, body) for any status."""
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


class Sidecar:
    """``python -m sidecar run`` as a real child process on a free port."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None, log_path: Path | None = None,
                 command: Sequence[str] = (sys.executable, "-m", "sidecar")):
        self.command = list(command)
        self.port = free_port()
        self.args = ["run", "--http-host", "127.0.0.1", "--http-port", str(self.port), *args]
        self.env = sidecar_env(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_file: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_live: bool = True, timeout: float = 60) -> Sidecar:
        out: Any = subprocess.PIPE
        if self.log_path is not None:
            self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
            out = self._log_file
        self.proc = subprocess.Popen([*self.command, *self.args], env=self.env,
                                     stdout=out, stderr=subprocess.STDOUT if out is not subprocess.PIPE
                                     else subprocess.PIPE, start_new_session=True)
        if wait_live:
            self.wait_for(lambda: self.get("/livez")[0] == 200, timeout, "livez")
        return self

    def get(self, path: str, **headers: str) -> tuple[int, str]:
        try:
            return http_get(self.url + path, **headers)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return 0, ""

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        assert code == 200, body
        result: dict[str, Any] = json.loads(body)
        return result

    def wait_for(self, predicate: Any, timeout: float = 60, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"sidecar exited with {self.proc.returncode} waiting for {what}: "
                                     f"{self.output()}")
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}: {self.output()[-3000:]}")

    def output(self) -> str:
        if self.log_path is not None and self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._log_file is not None:
            self._log_file.close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group (the sidecar and its git children)."""
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        if self._log_file is not None:
            self._log_file.close()


@pytest.fixture
def sidecar_factory(tmp_path: Path) -> Iterator[Any]:
    """Start sidecars with ``factory(args, env=...)``; all are stopped at the end of the test."""
    started: list[Sidecar] = []

    def factory(args: Sequence[str], env: dict[str, str] | None = None, start: bool = True,
                wait_live: bool = True) -> Sidecar:
        sc = Sidecar(args, env, log_path=tmp_path / f"sidecar-{len(started)}.log")
        started.append(sc)
        if start:
            sc.start(wait_live=wait_live)
        return sc

    yield factory
    for sc in started:
        if sc.proc is not None and sc.proc.poll() is None:
            sc.kill()


@pytest.fixture
def fake() -> Iterator[FakeKube]:
    """The loopback Kubernetes API server (tests/fakekube.py) holding our pod; stopped at the end, and the
    test fails if the sidecar sent a request that sidecar/kube/rbac.py does not allow."""
    from fakekube import pod, serving

    yield from serving(pod())


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[int]:
    """A real mosquitto on a free loopback port; yields the port once it accepts connections."""
    exe = require_tool("mosquitto")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.025)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def node() -> Iterator[FakeNode]:
    """The stand-in EdgeLake node (tests/fakenode.py) on free loopback ports, named ``el-test``."""
    with FakeNode("el-test") as fake:
        yield fake
