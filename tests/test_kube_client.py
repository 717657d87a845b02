"""The Kubernetes client: configuration discovery, TLS and token, error classes, timeouts, footprint."""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import inspect
import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import trustme
from fakekube import NAMESPACE, POD, SERVICE, FakeKube, client, kube_settings, service
from packaging.specifiers import SpecifierSet

from sidecar.kube import official
from sidecar.kube.client import KubeClient, KubeError, detect_mode
from sidecar.state import KubeState

ROOT = Path(__file__).resolve().parent.parent


def test_detect_mode(tmp_path: Path) -> None:
    sa = tmp_path / "sa"
    in_pod = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    assert detect_mode("auto", {}, sa) is None
    assert detect_mode("auto", in_pod, sa) is None  # no token: not a pod with a service account
    assert detect_mode("auto", {"KUBECONFIG": "/x"}, sa) == "kubeconfig"
    assert detect_mode("on", {}, sa) == "in-cluster"  # tried, so the failure is reported
    sa.mkdir()
    (sa / "token").write_text("t")
    assert detect_mode("auto", in_pod, sa) == "in-cluster"
    assert detect_mode("auto", {**in_pod, "KUBECONFIG": "/x"}, sa) == "in-cluster"
    assert detect_mode("off", in_pod, sa) is None


async def test_in_cluster_request_carries_token_over_tls(fake: FakeKube, tmp_path: Path) -> None:
    fake.put(service())
    state = KubeState()
    api = client(fake, tmp_path, kube_settings(tmp_path), state)
    answer = await api.request("GET", "services", SERVICE)
    assert answer["spec"]["clusterIP"] == "10.96.12.34"
    assert state.namespace == NAMESPACE  # from the service account's namespace file
    (rec,) = fake.received("get", "services")
    assert rec.path == f"/api/v1/namespaces/{NAMESPACE}/services/{SERVICE}"
    assert rec.headers["authorization"] == f"Bearer {fake.token}"
    assert rec.headers["user-agent"].startswith("edgelake-sidecar/")
    assert state.first_request_time is not None


async def test_kubeconfig_mode(fake: FakeKube, tmp_path: Path) -> None:
    path = fake.kubeconfig(tmp_path / "kube")
    state = KubeState()
    api = KubeClient(kube_settings(tmp_path), state, "kubeconfig", {"KUBECONFIG": str(path)})
    assert (await api.pod())["metadata"]["name"] == POD
    assert state.namespace == NAMESPACE  # from the kubeconfig context
    assert fake.received("get", "pods")[0].headers["authorization"].lower() == f"bearer {fake.token}"


@pytest.mark.parametrize(("name", "reason"), [("localhost", None), ("elsewhere.example", "tls")])
async def test_kubeconfig_tls_server_name_is_the_name_checked(fake: FakeKube, tmp_path: Path, name: str,
                                                              reason: str | None) -> None:
    """The server is dialled by address; its certificate must carry the kubeconfig's tls-server-name."""
    path = fake.kubeconfig(tmp_path / "kube")
    config = json.loads(path.read_text())
    config["clusters"][0]["cluster"]["tls-server-name"] = name
    path.write_text(json.dumps(config))
    api = KubeClient(kube_settings(tmp_path), KubeState(), "kubeconfig", {"KUBECONFIG": str(path)})
    if reason is None:
        assert (await api.pod())["metadata"]["name"] == POD
        return
    with pytest.raises(KubeError) as failed:
        await api.pod()
    assert failed.value.reason == reason and "elsewhere.example" in str(failed.value)


async def test_a_kubeconfig_proxy_is_refused_not_bypassed(fake: FakeKube, tmp_path: Path) -> None:
    path = fake.kubeconfig(tmp_path / "kube")
    config = json.loads(path.read_text())
    config["clusters"][0]["cluster"]["proxy-url"] = "http://127.0.0.1:3128"
    path.write_text(json.dumps(config))
    api = KubeClient(kube_settings(tmp_path), KubeState(), "kubeconfig", {"KUBECONFIG": str(path)})
    with pytest.raises(KubeError) as failed:
        await api.pod()
    assert failed.value.reason == "config" and "proxy-url 'http://127.0.0.1:3128'" in str(failed.value)
    assert fake.received() == []


async def test_error_statuses_are_classified(fake: FakeKube, tmp_path: Path) -> None:
    api = client(fake, tmp_path, kube_settings(tmp_path), KubeState())
    with pytest.raises(KubeError) as missing:
        await api.request("GET", "services", "nope")
    assert (missing.value.reason, missing.value.status) == ("not-found", 404)
    assert str(missing.value) == 'services "nope" not found'  # the Status object's message
    fake.forbid.add("services")
    with pytest.raises(KubeError) as forbidden:
        await api.request("GET", "services", SERVICE)
    assert forbidden.value.reason == "forbidden" and "cannot get resource" in str(forbidden.value)
    for code, reason in ((409, "conflict"), (410, "gone"), (500, "server-error")):
        fake.fail_next[("patch", "pods")] = code
        with pytest.raises(KubeError) as failed:
            await api.request("PATCH", "pods", POD, {"metadata": {}}, "application/merge-patch+json")
        assert failed.value.reason == reason


async def test_wrong_token_and_wrong_ca(fake: FakeKube, tmp_path: Path) -> None:
    settings = kube_settings(tmp_path)
    sa_dir, environ = fake.in_cluster(tmp_path / "sa")
    (sa_dir / "token").write_text("not-the-token")
    with pytest.raises(KubeError) as unauthorized:
        await KubeClient(settings, KubeState(), "in-cluster", environ, sa_dir).request("GET", "services", SERVICE)
    assert unauthorized.value.reason == "unauthorized"
    assert "not-the-token" not in str(unauthorized.value)
    (sa_dir / "token").write_text(fake.token)
    trustme.CA().cert_pem.write_to_path(str(sa_dir / "ca.crt"))  # a CA that did not sign the server
    with pytest.raises(KubeError) as tls:
        await KubeClient(settings, KubeState(), "in-cluster", environ, sa_dir).request("GET", "services", SERVICE)
    assert tls.value.reason == "tls" and "CERTIFICATE_VERIFY_FAILED" in str(tls.value)


async def test_missing_configuration_is_a_config_error(tmp_path: Path) -> None:
    api = KubeClient(kube_settings(tmp_path), KubeState(), "in-cluster", {}, tmp_path / "none")
    with pytest.raises(KubeError) as failed:
        await api.request("GET", "services", SERVICE)
    assert failed.value.reason == "config" and "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set" \
        in str(failed.value)


@pytest.mark.parametrize(("broken", "problem"), [
    ("token", "service account token"),
    ("ca.crt", "cluster CA"),
    ("empty-token", "is empty"),
    ("port", "KUBERNETES_SERVICE_PORT is not a port: '6443x'"),
])
async def test_a_broken_service_account_is_a_config_error(fake: FakeKube, tmp_path: Path, broken: str,
                                                          problem: str) -> None:
    sa_dir, environ = fake.in_cluster(tmp_path / "sa")
    if broken == "token" or broken == "ca.crt":
        (sa_dir / broken).unlink()
    elif broken == "empty-token":
        (sa_dir / "token").write_text("\n")
    else:
        environ = {**environ, "KUBERNETES_SERVICE_PORT": "6443x"}
    api = KubeClient(kube_settings(tmp_path), KubeState(), "in-cluster", environ, sa_dir)
    with pytest.raises(KubeError) as failed:
        await api.request("GET", "services", SERVICE)
    assert failed.value.reason == "config" and problem in str(failed.value), str(failed.value)
    assert fake.received() == []


async def test_a_token_that_goes_away_degrades_the_request(fake: FakeKube, tmp_path: Path) -> None:
    fake.put(service())
    api = client(fake, tmp_path, kube_settings(tmp_path), KubeState())
    await api.request("GET", "services", SERVICE)
    (tmp_path / "serviceaccount" / "token").unlink()
    with pytest.raises(KubeError) as failed:
        await api.request("GET", "services", SERVICE)
    assert failed.value.reason == "config" and "token" in str(failed.value)


async def test_an_endless_answer_is_cut_off(fake: FakeKube, tmp_path: Path) -> None:
    big = service()
    big["metadata"]["annotations"] = {"x": "y" * (5 * 1024 * 1024)}
    fake.put(big)
    api = client(fake, tmp_path, kube_settings(tmp_path), KubeState())
    with pytest.raises(KubeError) as failed:
        await api.request("GET", "services", SERVICE)
    assert failed.value.reason == "bad-response" and "over" in str(failed.value)


async def test_api_down_then_back(fake: FakeKube, tmp_path: Path) -> None:
    fake.put(service())
    api = client(fake, tmp_path, kube_settings(tmp_path), KubeState())
    await api.request("GET", "services", SERVICE)  # a kept-alive connection exists now
    fake.stop()
    with pytest.raises(KubeError) as down:
        await api.request("GET", "services", SERVICE)
    assert down.value.reason == "unreachable"
    fake.start()
    assert (await api.request("GET", "services", SERVICE))["kind"] == "Service"


async def test_slow_api_times_out_and_never_blocks_the_loop(fake: FakeKube, tmp_path: Path) -> None:
    fake.put(service())
    fake.delay = 10.0
    api = client(fake, tmp_path, kube_settings(tmp_path, "--kube-timeout", "1.5"), KubeState())
    lags: list[float] = []

    async def ticker() -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - start - 0.01)

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    with pytest.raises(KubeError) as slow:
        await api.request("GET", "services", SERVICE)
    elapsed = time.monotonic() - started
    task.cancel()
    assert slow.value.reason == "timeout"
    # Bounds from the design, not the machine's speed: the request gave up at its 1.5 s timeout, long
    # before the server's 10 s answer; and the loop kept turning, where a blocking call would have
    # stalled it for the whole timeout.
    assert 1.4 < elapsed < fake.delay, elapsed
    assert len(lags) >= 5 and max(lags) < 1.5, (len(lags), max(lags))


def _imported_by_a_request(mode: str, environ: dict[str, str], sa_dir: Path) -> list[str]:
    """The ``kubernetes`` and ``urllib3`` modules a fresh process has loaded after one request."""
    script = f"""
import asyncio, json, sys
from sidecar.config import load
from sidecar.kube.client import KubeClient
from sidecar.state import KubeState
settings = load(["run", "--fallback-dir", "/tmp"], {{}})
api = KubeClient(settings, KubeState(), {mode!r}, {environ!r}, __import__("pathlib").Path({str(sa_dir)!r}))
answer = asyncio.run(api.request("GET", "services", {SERVICE!r}))
assert answer["kind"] == "Service"
modules = sorted(m for m in sys.modules if m.startswith(("kubernetes", "urllib3")))
from kubernetes import client  # the whole package still imports afterwards, for whoever needs it
assert client.CoreV1Api and client.Configuration is sys.modules["kubernetes.client.configuration"].Configuration
print(json.dumps(modules))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    modules: list[str] = json.loads(out.stdout)
    return modules


def test_in_a_pod_nothing_of_the_official_client_is_imported(fake: FakeKube, tmp_path: Path) -> None:
    """Footprint: the service account's files are read directly."""
    fake.put(service())
    sa_dir, environ = fake.in_cluster(tmp_path / "sa")
    assert _imported_by_a_request("in-cluster", environ, sa_dir) == []


def test_with_a_kubeconfig_only_the_loader_is_imported(fake: FakeKube, tmp_path: Path) -> None:
    """Footprint: the kubeconfig loader and its Configuration, not the client's API and model classes."""
    fake.put(service())
    environ = {"KUBECONFIG": str(fake.kubeconfig(tmp_path / "kube"))}
    modules = _imported_by_a_request("kubeconfig", environ, tmp_path)
    assert "kubernetes.config.kube_config" in modules and "kubernetes.client.configuration" in modules
    assert not any(m.startswith(("kubernetes.client.models", "kubernetes.client.api")) for m in modules), modules


def test_the_installed_client_has_the_layout_official_py_loads() -> None:
    """official.py imports modules of the kubernetes package by path, skipping its ``__init__``: a release
    that moves or changes them must fail here, not in a user's cluster. Raise the bound in pyproject.toml
    only with this test passing."""
    declared = next(d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
                    if d.startswith("kubernetes"))
    installed = importlib.metadata.version("kubernetes")
    assert SpecifierSet(declared.removeprefix("kubernetes")).contains(installed), (declared, installed)
    root = Path(importlib.util.find_spec("kubernetes").origin or "").parent  # type: ignore[union-attr]
    for module in ("client/configuration.py", "config/kube_config.py", "config/exec_provider.py",
                   "config/config_exception.py", "config/dateutil.py"):
        assert (root / module).is_file(), module
    kube_config = official.module("config.kube_config")
    assert {"config_file", "client_configuration", "persist_config"} <= set(
        inspect.signature(kube_config.load_kube_config).parameters)
    assert "config_file" in inspect.signature(kube_config.list_kube_config_contexts).parameters
    configuration = official.module("client.configuration").Configuration()
    assert kube_config.Configuration is type(configuration)  # the loader fills in the class we read
    for attribute in ("host", "ssl_ca_cert", "cert_file", "key_file", "verify_ssl", "tls_server_name"):
        assert hasattr(configuration, attribute), attribute
    assert isinstance(configuration.auth_settings(), dict)


async def test_a_rotated_token_is_used(fake: FakeKube, tmp_path: Path) -> None:
    """kubelet rotates the projected token; the next request reads the new one."""
    fake.put(service())
    api = client(fake, tmp_path, kube_settings(tmp_path), KubeState())
    await api.request("GET", "services", SERVICE)
    fake.token = "rotated-token-fedcba9876543210"
    (tmp_path / "serviceaccount" / "token").write_text(fake.token)
    await api.request("GET", "services", SERVICE)
    assert fake.received("get", "services")[-1].headers["authorization"] == f"Bearer {fake.token}"
