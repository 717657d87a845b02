"""One connection to the Kubernetes API: which configuration, how a request goes out, what an error means.

In a pod the service account's files are the configuration; with ``KUBECONFIG`` the official
client's loader reads it (``official.py``). ``transport.py`` carries each request. The requests
themselves are six fixed paths, built here instead of through ``CoreV1Api`` for footprint. Requests
block, so each runs in its own daemon thread with a deadline; the event loop never waits on it, and a
hung request never delays the process's exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sidecar import __version__, logs
from sidecar.config import Settings
from sidecar.kube import official, transport
from sidecar.state import KubeState

IN_CLUSTER_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
USER_AGENT = f"edgelake-sidecar/{__version__}"
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

_STATUS_REASONS = {401: "unauthorized", 403: "forbidden", 404: "not-found", 409: "conflict", 410: "gone",
                   422: "invalid", 429: "throttled"}


def detect_mode(kube: str, environ: Mapping[str, str], sa_dir: Path = IN_CLUSTER_DIR) -> str | None:
    """The configuration to use: ``in-cluster``, ``kubeconfig``, or None when Kubernetes is off.

    ``auto`` is on inside a pod (``KUBERNETES_SERVICE_HOST`` and a service account token) or with
    ``KUBECONFIG``; ``on`` without either still tries in-cluster, so the failure is reported.
    """
    if kube == "off":
        return None
    if environ.get("KUBERNETES_SERVICE_HOST") and (sa_dir / "token").is_file():
        return "in-cluster"
    if environ.get("KUBECONFIG"):
        return "kubeconfig"
    return "in-cluster" if kube == "on" else None


class KubeError(Exception):
    """A request that failed; ``reason`` is a short word (``forbidden``, ``timeout``...), ``status`` 0 without
    an HTTP answer."""

    def __init__(self, reason: str, status: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status


async def in_daemon_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a daemon thread. Not ``asyncio.to_thread``: the default executor is joined when the
    process exits, so a request hanging until its timeout would hold up SIGTERM past the pod's grace."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if not future.done():
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

    def work() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as exc:  # handed to the awaiting task, which decides
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="kube-request", daemon=True).start()
    return await future


def _status_error(status: int, body: bytes | str | None) -> KubeError:
    """A KubeError from an HTTP error answer, with the message of its ``Status`` object."""
    reason = _STATUS_REASONS.get(status, "server-error" if status >= 500 else f"http-{status}")
    message = f"HTTP {status}"
    try:
        payload = json.loads(body or b"")
        if isinstance(payload, dict) and payload.get("message"):
            message = str(payload["message"])
    except ValueError:
        pass
    return KubeError(reason, status, message[:500])


class KubeClient:
    """Shared by the identity, events and annotations jobs; loads its configuration on first use."""

    def __init__(self, settings: Settings, state: KubeState, mode: str, environ: Mapping[str, str],
                 sa_dir: Path = IN_CLUSTER_DIR) -> None:
        self.settings = settings
        self.state = state
        self.mode = mode
        self.environ = dict(environ)
        self.sa_dir = sa_dir
        self.namespace: str = settings.pod_namespace or ""
        self._endpoint: transport.Endpoint | None = None
        self._pod: dict[str, Any] | None = None
        self._connect_lock = asyncio.Lock()
        self._pod_lock = asyncio.Lock()

    async def connect(self) -> None:
        """Load the configuration once (in a thread: it reads files, may run a kubeconfig exec plugin)."""
        async with self._connect_lock:
            if self._endpoint is None:
                try:
                    # A hung kubeconfig exec plugin must not hold every job behind this lock.
                    await asyncio.wait_for(in_daemon_thread(self._load), self.settings.kube_timeout)
                except TimeoutError:
                    raise KubeError("config", 0, f"{self.mode} configuration: loading took over "
                                    f"{self.settings.kube_timeout:g} s") from None
                self.state.namespace = self.namespace

    def _load(self) -> None:
        try:
            if self.mode == "in-cluster":
                self._endpoint = transport.in_cluster(self.sa_dir, self.environ)
                namespace_file = self.sa_dir / "namespace"
                if not self.namespace and namespace_file.is_file():
                    self.namespace = namespace_file.read_text().strip()
            else:
                self._endpoint = transport.from_configuration(self._load_kubeconfig())
        except transport.ConfigError as exc:
            raise KubeError("config", 0, f"{self.mode} configuration: {exc}") from None
        except Exception as exc:  # any broken kubeconfig (missing file, bad YAML, exec plugin failure)
            raise KubeError("config", 0, f"{self.mode} configuration: {type(exc).__name__}: {exc}") from None
        self.namespace = self.namespace or "default"
        with contextlib.suppress(KubeError):
            logs.add_secret(self._authorization().removeprefix("Bearer ").removeprefix("bearer ").strip())

    def _load_kubeconfig(self) -> Any:
        """The official loader's ``Configuration`` for ``$KUBECONFIG``; the namespace of its current context."""
        configuration = official.module("client.configuration").Configuration()
        kube_config = official.module("config.kube_config")
        path = self.environ["KUBECONFIG"]
        kube_config.load_kube_config(config_file=path, client_configuration=configuration, persist_config=False)
        if not self.namespace:
            _, context = kube_config.list_kube_config_contexts(config_file=path)
            self.namespace = (context or {}).get("context", {}).get("namespace") or ""
        return configuration

    def _authorization(self) -> str:
        """The current Authorization header (a rotated or refreshed token is read again)."""
        assert self._endpoint is not None
        try:
            return self._endpoint.authorization() or ""
        except Exception as exc:  # an unreadable token file, a failing exec plugin: degrade, never crash the job
            raise KubeError("config", 0, f"credentials: {type(exc).__name__}: {exc}") from None

    # -- requests ------------------------------------------------------------------------------------
    async def request(self, method: str, resource: str, name: str = "", body: Any = None,
                      content_type: str = JSON) -> dict[str, Any]:
        """Send one request about a core/v1 ``resource`` (in our namespace, ``nodes`` cluster-wide) in a
        thread; return the decoded JSON answer or raise KubeError."""
        await self.connect()
        if self.state.first_request_time is None:
            self.state.first_request_time = time.time()
        timeout = self.settings.kube_timeout
        try:
            # The socket timeout bounds the connect and each read; this bounds the whole request.
            result: dict[str, Any] = await asyncio.wait_for(
                in_daemon_thread(self._send, method, self._path(resource, name), body, content_type), 2 * timeout)
        except TimeoutError:
            raise KubeError("timeout", 0, f"no complete answer within {2 * timeout:g} s") from None
        return result

    def _send(self, method: str, path: str, body: Any, content_type: str) -> dict[str, Any]:
        assert self._endpoint is not None
        headers = {"Accept": JSON, "User-Agent": USER_AGENT}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        try:
            status, answer = transport.send(self._endpoint, method, path, headers, data, self.settings.kube_timeout)
        except transport.ConfigError as exc:
            raise KubeError("config", 0, f"credentials: {exc}") from None
        except transport.AnswerTooLarge as exc:
            raise KubeError("bad-response", 0, str(exc)) from None
        except ssl.SSLError as exc:  # before OSError: it is a subclass
            raise KubeError("tls", 0, str(exc)[:300]) from None
        except TimeoutError:
            raise KubeError("timeout", 0, f"no answer within {self.settings.kube_timeout:g} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise KubeError("unreachable", 0, f"{type(exc).__name__}: {exc}"[:300]) from None
        if not 200 <= status < 300:
            raise _status_error(status, answer)
        try:
            payload = json.loads(answer)
        except ValueError:
            raise KubeError("bad-response", status, "the answer is not JSON") from None
        if not isinstance(payload, dict):
            raise KubeError("bad-response", status, "the answer is not a JSON object")
        return payload

    def _path(self, resource: str, name: str) -> str:
        base = "/api/v1/" if resource == "nodes" else f"/api/v1/namespaces/{quote(self.namespace, safe='')}/"
        return base + resource + (f"/{quote(name, safe='')}" if name else "")

    async def pod(self) -> dict[str, Any]:
        """Our pod, read once (its uid and node do not change for the life of the pod)."""
        if not self.settings.pod_name:
            raise KubeError("no-pod-name", 0, "POD_NAME (--pod-name) is not set")
        async with self._pod_lock:
            if self._pod is None:
                self._pod = await self.request("GET", "pods", self.settings.pod_name)
            return self._pod
