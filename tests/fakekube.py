"""A stand-in Kubernetes API server: HTTPS on loopback, a bearer token, the API's real JSON shapes.

It serves the few core/v1 calls the sidecar makes (and answers the others as the API does), keeps
the objects it is given, applies merge patches, and records every request for assertions. Faults:
``stop()``/``start()`` (nothing listening), ``forbid`` (403 by resource), ``delay`` (slow answers),
``fail_next`` (one Status answer with a chosen code: 404, 409, 410, 500...).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import trustme

from sidecar.config import Settings, load
from sidecar.kube.client import KubeClient
from sidecar.kube.rbac import CLUSTER_ROLE_RULES, ROLE_RULES
from sidecar.state import KubeState

NAMESPACE = "edgelake"
SERVICE = "edgelake-operator"
POD = "edgelake-operator-0"
SERVICE_ACCOUNT = "edgelake-node"
_PATH = re.compile(r"^/api/v1/(?:namespaces/(?P<ns>[^/]+)/)?(?P<resource>[a-z]+)(?:/(?P<name>[^/]+))?$")
_STATUS_REASONS = {401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "AlreadyExists", 410: "Expired",
                   415: "UnsupportedMediaType", 422: "Invalid", 500: "InternalError"}
_CLUSTER_SCOPED = {"nodes"}


@dataclass
class Recorded:
    """One request the server received."""

    method: str
    path: str
    verb: str  # get | list | create | patch | update | delete
    resource: str
    namespace: str | None
    name: str | None
    headers: dict[str, str]
    body: Any = None
    at: float = field(default_factory=time.monotonic)


def status(code: int, message: str, name: str | None = None, kind: str | None = None) -> dict[str, Any]:
    """A ``Status`` object as the API server sends with an error."""
    payload: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": message, "reason": _STATUS_REASONS.get(code, "Unknown"), "code": code}
    if name is not None or kind is not None:
        payload["details"] = {k: v for k, v in (("name", name), ("kind", kind)) if v is not None}
    return payload


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (also what a strategic merge patch does to plain maps)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def service(name: str = SERVICE, *, type: str = "ClusterIP", cluster_ip: str = "10.96.12.34",
            ports: list[dict[str, Any]] | None = None, ingress: list[dict[str, str]] | None = None,
            external_ips: list[str] | None = None) -> dict[str, Any]:
    """A Service as ``kubectl get svc -o json`` shows it."""
    if ports is None:
        ports = [{"name": "server", "protocol": "TCP", "port": 32148, "targetPort": 32148},
                 {"name": "rest", "protocol": "TCP", "port": 32149, "targetPort": 32149},
                 {"name": "broker", "protocol": "TCP", "port": 32150, "targetPort": 32150}]
    if type in ("NodePort", "LoadBalancer"):
        ports = [{**p, "nodePort": p.get("nodePort", p["port"])} for p in ports]
    spec: dict[str, Any] = {
        "ports": ports, "selector": {"app.kubernetes.io/name": "edgelake"},
        "clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "type": type, "sessionAffinity": "None",
        "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster",
    }
    if type in ("NodePort", "LoadBalancer"):
        spec["externalTrafficPolicy"] = "Cluster"
    if type == "LoadBalancer":
        spec["allocateLoadBalancerNodePorts"] = True
    if external_ips:
        spec["externalIPs"] = external_ips
    return {
        "kind": "Service", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": str(uuid.uuid4()), "resourceVersion": "1",
                     "creationTimestamp": "2026-11-27T10:00:00Z",
                     "labels": {"app.kubernetes.io/name": "edgelake"}},
        "spec": spec,
        "status": {"loadBalancer": {"ingress": ingress} if ingress else {}},
    }


def pod(name: str = POD, node_name: str = "worker-1") -> dict[str, Any]:
    """A running Pod (trimmed to the fields an API answer always has)."""
    return {
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": NAMESPACE, "uid": str(uuid.uuid4()), "resourceVersion": "1",
                     "creationTimestamp": "2026-11-27T10:00:00Z", "labels": {"app.kubernetes.io/name": "edgelake"},
                     "annotations": {"kubectl.kubernetes.io/default-container": "node"}},
        "spec": {"nodeName": node_name, "serviceAccountName": SERVICE_ACCOUNT,
                 "containers": [{"name": "node", "image": "anylogco/edgelake:1.4.2604"}]},
        "status": {"phase": "Running", "hostIP": "192.168.1.10", "podIP": "10.244.1.7",
                   "podIPs": [{"ip": "10.244.1.7"}]},
    }


def node(name: str = "worker-1", external_ip: str | None = "198.51.100.7") -> dict[str, Any]:
    """A Node with its addresses."""
    addresses = [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": name}]
    if external_ip:
        addresses.insert(1, {"type": "ExternalIP", "address": external_ip})
    return {"kind": "Node", "apiVersion": "v1",
            "metadata": {"name": name, "uid": str(uuid.uuid4()), "resourceVersion": "1",
                         "creationTimestamp": "2026-11-27T09:00:00Z"},
            "status": {"addresses": addresses}}


class FakeKube:
    """The server; objects are stored by (resource, namespace, name)."""

    def __init__(self, port: int = 0, token: str = "fake-sa-token-0123456789abcdef") -> None:
        self.port = port  # 0: a free port, chosen at the first start and kept for restarts
        self.token = token
        self.ca = trustme.CA()
        self._cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.objects: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        self.requests: list[Recorded] = []
        self.forbid: set[str] = set()  # resources answered 403
        self.delay = 0.0  # seconds before every answer
        self.fail_next: dict[tuple[str, str], int] = {}  # (verb, resource) -> status code, once
        self._versions = itertools.count(100)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[Any] = set()  # open client sockets, closed by stop()

    # -- lifecycle -----------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> FakeKube:
        """Listen (again) on ``port``."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._cert.configure_cert(context)
        handler = type("Handler", (_Handler,), {"fake": self})
        server = ThreadingHTTPServer(("127.0.0.1", self.port), handler, bind_and_activate=False)
        server.allow_reuse_address = True
        server.daemon_threads = True
        server.server_bind()
        server.server_activate()
        self.port = server.server_address[1]
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._server = server
        return self

    def stop(self) -> None:
        """Stop listening: clients get connection refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for sock in connections:  # kept-alive connections die with the server, as they would
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- client setups -------------------------------------------------------------------------------
    def in_cluster(self, folder: Path) -> tuple[Path, dict[str, str]]:
        """A service account folder (token, ca.crt, namespace) and the pod's environment for it."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "token").write_text(self.token)
        self.ca.cert_pem.write_to_path(str(folder / "ca.crt"))
        (folder / "namespace").write_text(NAMESPACE)
        return folder, {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.port)}

    def kubeconfig(self, folder: Path) -> Path:
        """A kubeconfig with this server, its CA and the token (as a file, like a projected token)."""
        folder.mkdir(parents=True, exist_ok=True)
        ca = folder / "ca.crt"
        self.ca.cert_pem.write_to_path(str(ca))
        token = folder / "token"
        token.write_text(self.token)
        path = folder / "kubeconfig"
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.host, "certificate-authority": str(ca)}}],
            "users": [{"name": "sa", "user": {"tokenFile": str(token)}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "sa", "namespace": NAMESPACE}}],
        }))
        return path

    # -- objects -------------------------------------------------------------------------------------
    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object (as an admin would, not recorded)."""
        resource = obj["kind"].lower() + "s"
        meta = obj["metadata"]
        with self._lock:
            meta["resourceVersion"] = str(next(self._versions))
            self.objects[(resource, meta.get("namespace"), meta["name"])] = obj
        return obj

    def get(self, resource: str, name: str, namespace: str | None = NAMESPACE) -> dict[str, Any] | None:
        with self._lock:
            return copy.deepcopy(self.objects.get((resource, namespace, name)))

    def delete(self, resource: str, name: str, namespace: str | None = NAMESPACE) -> None:
        with self._lock:
            self.objects.pop((resource, namespace, name), None)

    def events(self) -> list[dict[str, Any]]:
        """Stored Events, oldest first."""
        with self._lock:
            found = [copy.deepcopy(o) for (r, _, _), o in self.objects.items() if r == "events"]
        return sorted(found, key=lambda e: int(e["metadata"]["resourceVersion"]))

    def received(self, verb: str | None = None, resource: str | None = None) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if (verb is None or r.verb == verb)
                    and (resource is None or r.resource == resource)]

    def not_allowed_by_rbac(self) -> list[Recorded]:
        """Received requests that the sidecar's Role and ClusterRole would not allow."""
        namespaced = {(g, r, v) for g, r, verbs in ROLE_RULES for v in verbs}
        cluster = {(g, r, v) for g, r, verbs in CLUSTER_ROLE_RULES for v in verbs}
        with self._lock:
            return [r for r in self.requests
                    if ("", r.resource, r.verb) not in (cluster if r.namespace is None else namespaced)]

    # -- the API -------------------------------------------------------------------------------------
    def answer(self, rec: Recorded) -> tuple[int, dict[str, Any]]:
        """What the API server would answer, after authentication."""
        auth = rec.headers.get("authorization", "")
        if not auth.lower().startswith("bearer ") or auth[7:].strip() != self.token:
            return 401, status(401, "Unauthorized")
        if rec.resource in self.forbid:
            scope = f' in the namespace "{rec.namespace}"' if rec.namespace else " at the cluster scope"
            subject = f'{rec.resource} "{rec.name}"' if rec.name else rec.resource
            return 403, status(403, f'{subject} is forbidden: User "system:serviceaccount:{NAMESPACE}:'
                                    f'{SERVICE_ACCOUNT}" cannot {rec.verb} resource "{rec.resource}" in API '
                                    f'group ""{scope}', rec.name, rec.resource)
        with self._lock:
            code = self.fail_next.pop((rec.verb, rec.resource), None)
        if code is not None:
            message = {404: f'{rec.resource} "{rec.name}" not found', 409: f'{rec.resource} "{rec.name}" already '
                       'exists', 410: "too old resource version: 100 (200)"}.get(code, "Internal error occurred")
            return code, status(code, message, rec.name, rec.resource)
        key = (rec.resource, rec.namespace, rec.name or "")
        with self._lock:
            if rec.verb == "get":
                obj = self.objects.get(key)
                if obj is None:
                    return 404, status(404, f'{rec.resource} "{rec.name}" not found', rec.name, rec.resource)
                return 200, copy.deepcopy(obj)
            if rec.verb == "create" and rec.resource == "events":
                return self._create_event(rec)
            if rec.verb == "patch":
                return self._patch(rec, key)
        return 405, status(405, "the server does not allow this method on the requested resource")

    def _create_event(self, rec: Recorded) -> tuple[int, dict[str, Any]]:
        body = rec.body if isinstance(rec.body, dict) else {}
        meta = body.get("metadata") or {}
        name = meta.get("name")
        if meta.get("namespace", rec.namespace) != rec.namespace:
            return 400, status(400, "the namespace of the provided object does not match the namespace sent on "
                                    "the request")
        missing = [f for f in ("reason", "message", "involvedObject") if not body.get(f)]
        if not name or missing or body["involvedObject"].get("namespace") != rec.namespace:
            return 422, status(422, f'Event "{name}" is invalid: {", ".join(missing) or "involvedObject.namespace"}'
                                    ": Required value", name, "events")
        if ("events", rec.namespace, name) in self.objects:
            return 409, status(409, f'events "{name}" already exists', name, "events")
        obj = copy.deepcopy(body)
        obj["metadata"] = {**meta, "namespace": rec.namespace, "uid": str(uuid.uuid4()),
                           "resourceVersion": str(next(self._versions)), "creationTimestamp": _now()}
        self.objects[("events", rec.namespace, name)] = obj
        return 201, copy.deepcopy(obj)

    def _patch(self, rec: Recorded, key: tuple[str, str | None, str]) -> tuple[int, dict[str, Any]]:
        content_type = rec.headers.get("content-type", "")
        if content_type not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            return 415, status(415, f"the body of the request was in an unknown format - accepted media types "
                                    f"include: application/merge-patch+json (got {content_type!r})")
        obj = self.objects.get(key)
        if obj is None:
            return 404, status(404, f'{rec.resource} "{rec.name}" not found', rec.name, rec.resource)
        patched = merge_patch(obj, rec.body)
        patched["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[key] = patched
        return 200, copy.deepcopy(patched)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeKube
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        with self.fake._lock:
            self.fake._connections.add(self.connection)

    def finish(self) -> None:
        with self.fake._lock:
            self.fake._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        match = _PATH.match(url.path)
        resource = match["resource"] if match else url.path
        name = unquote(match["name"]) if match and match["name"] else None
        namespace = unquote(match["ns"]) if match and match["ns"] else None
        verb = {"GET": "get" if name else "list", "POST": "create", "PATCH": "patch", "PUT": "update",
                "DELETE": "delete"}.get(self.command, self.command.lower())
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        rec = Recorded(self.command, self.path, verb, resource, namespace, name,
                       {k.lower(): v for k, v in self.headers.items()}, body)
        with self.fake._lock:
            self.fake.requests.append(rec)
        if self.fake.delay:
            time.sleep(self.fake.delay)
        if match is None or (resource in _CLUSTER_SCOPED) != (namespace is None):
            code, payload = 404, status(404, "the server could not find the requested resource")
        else:
            code, payload = self.fake.answer(rec)
        data = json.dumps(payload).encode()
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the client gave up (timeout): nothing to answer to

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle


def serving(*objects: dict[str, Any]) -> Iterator[FakeKube]:
    """For a fixture: a started server holding ``objects``, stopped afterwards, and no request outside
    the RBAC rules."""
    fake = FakeKube().start()
    for obj in objects:
        fake.put(obj)
    try:
        yield fake
    finally:
        fake.stop()
    outside = [(r.method, r.path) for r in fake.not_allowed_by_rbac()]
    assert not outside, f"requests not allowed by sidecar/kube/rbac.py: {outside}"


def kube_settings(tmp_path: Path, *args: str) -> Settings:
    """Settings of a sidecar in our fake pod, plus ``args``."""
    return load(["run", "--fallback-dir", str(tmp_path), "--pod-name", POD, "--service-name", SERVICE,
                 "--network-env-file", str(tmp_path / "shared" / "network.env"), *args], {})


def client(fake: FakeKube, tmp_path: Path, settings: Settings, state: KubeState) -> KubeClient:
    """A real client configured in-cluster style (token, CA and namespace files, service host/port)."""
    sa_dir, environ = fake.in_cluster(tmp_path / "serviceaccount")
    return KubeClient(settings, state, "in-cluster", environ, sa_dir)


async def until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait (without blocking the loop) until ``predicate()`` is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)
