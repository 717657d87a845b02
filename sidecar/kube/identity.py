"""The node's network identity: read the pod's Service, write its stable addresses into an env file.

A node pod that comes back with a new IP declares a new policy in the shared metadata on every
restart. The Service's addresses outlive the pod, so the node's start command sources this file
(``set -a; . FILE; set +a``) and advertises them instead. Variables (the node's own names):

- ``OVERLAY_IP``: the Service's ClusterIP. The node puts it in its policy as ``local_ip`` (the address
  other nodes in the cluster dial); it lives as long as the Service. Not the load balancer's address:
  that one is for peers outside the cluster and goes to ``EXTERNAL_IP``. None for a headless Service.
- ``EXTERNAL_IP``: the load balancer's IP or hostname, else the Service's first ``externalIPs`` entry,
  else (``--node-external-ip``, NodePort and LoadBalancer Services only) the Kubernetes node's
  ExternalIP. The node's scripts do not read it themselves; ``local_script.al`` or the start command can.
- ``ANYLOG_SERVER_PORT``, ``ANYLOG_REST_PORT``, ``ANYLOG_BROKER_PORT``: the Service port that maps each
  node port (found by port name, else by target port). The node binds and advertises one number,
  so a port is written only when the Service's port equals its target port; otherwise it is reported.
- ``ANYLOG_SERVER_NODE_PORT``, ``ANYLOG_REST_NODE_PORT``, ``ANYLOG_BROKER_NODE_PORT``: node ports of a
  NodePort or LoadBalancer Service.

The file has no timestamp: the same Service gives the same bytes, and it is rewritten only when a
value changes. It is replaced atomically (temp file, fsync, rename, fsync of the folder), so the node
reads the old file or the new one, never half of one. When the API cannot be read, the last file stays.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import shlex
import time
from pathlib import Path
from typing import Any

from sidecar import logs, progress
from sidecar.backoff import Backoff, Retries
from sidecar.config import Settings
from sidecar.kube.client import KubeClient, KubeError
from sidecar.kube.health import Health
from sidecar.state import KubeState

log = logs.get("kube.identity")

HEADER = "# Network identity of this EdgeLake node, written by edgelake-sidecar. Do not edit.\n"
ORDER = ("OVERLAY_IP", "EXTERNAL_IP", "ANYLOG_SERVER_PORT", "ANYLOG_REST_PORT", "ANYLOG_BROKER_PORT",
         "ANYLOG_SERVER_NODE_PORT", "ANYLOG_REST_NODE_PORT", "ANYLOG_BROKER_NODE_PORT")
# Node port -> (variable prefix, Service port names that mean it).
PORT_NAMES = {
    "tcp": ("ANYLOG_SERVER", ("server", "tcp", "anylog-server", "anylog-tcp")),
    "rest": ("ANYLOG_REST", ("rest", "anylog-rest")),
    "broker": ("ANYLOG_BROKER", ("broker", "mqtt", "anylog-broker")),
}
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_LINE = re.compile(r"^([A-Z_][A-Z0-9_]*)=(.*)$")


def _address(value: Any) -> str | None:
    """``value`` when it is an IP address or a DNS name, else None (never write junk to a sourced file)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value if _HOSTNAME.match(value) else None


def _port_number(value: Any) -> int | None:
    return value if isinstance(value, int) and 0 < value < 65536 else None


def compute(service: dict[str, Any], settings: Settings, node_external_ip: str | None = None
            ) -> tuple[dict[str, str], list[str]]:
    """The variables a Service gives, and the problems found in it (ports the node cannot use)."""
    spec = service.get("spec") or {}
    values: dict[str, str] = {}
    problems: list[str] = []
    cluster_ip = _address(spec.get("clusterIP"))
    if cluster_ip and cluster_ip != "None":  # a headless Service has the literal clusterIP "None"
        values["OVERLAY_IP"] = cluster_ip
    else:
        problems.append("the Service has no ClusterIP (headless or ExternalName): no OVERLAY_IP")
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    candidates = [i.get("ip") for i in ingress] + [i.get("hostname") for i in ingress]
    candidates += list(spec.get("externalIPs") or [])
    if spec.get("type") in ("NodePort", "LoadBalancer"):
        candidates.append(node_external_ip)
    external = next((a for a in map(_address, candidates) if a), None)
    if external:
        values["EXTERNAL_IP"] = external
    ports = [p for p in spec.get("ports") or [] if (p.get("protocol") or "TCP") == "TCP"]
    for check, (prefix, names) in PORT_NAMES.items():
        known = getattr(settings, f"{check}_port")
        entry = next((p for p in ports if (p.get("name") or "").lower() in names), None)
        if entry is None and known is not None:
            entry = next((p for p in ports if p.get("targetPort") == known), None)
        if entry is None:
            continue
        port, target = _port_number(entry.get("port")), entry.get("targetPort", entry.get("port"))
        if port is not None and (target == port or isinstance(target, str)):
            values[f"{prefix}_PORT"] = str(port)
        elif port is not None:
            problems.append(f"Service port {entry.get('name') or port} is {port} but targets {target}: the node "
                            f"binds and advertises one port, so make port and targetPort equal")
        node_port = _port_number(entry.get("nodePort"))
        if node_port is not None:
            values[f"{prefix}_NODE_PORT"] = str(node_port)
    return values, problems


def render(values: dict[str, str], source: str) -> str:
    """The env file's text: a header, then ``NAME=value`` lines in a fixed order (shell-quoted)."""
    lines = [HEADER, f"# From {source}. The node's start command: set -a; . <this file>; set +a\n"]
    lines += [f"{name}={shlex.quote(values[name])}\n" for name in ORDER if name in values]
    return "".join(lines)


def parse(text: str) -> dict[str, str]:
    """The variables of an env file written by :func:`render`."""
    values = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match:
            parts = shlex.split(match[2])
            values[match[1]] = parts[0] if parts else ""
    return values


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a reader sees the old file or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.chmod(0o644)
    tmp.replace(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a crash
    finally:
        os.close(fd)


def read_previous(path: Path) -> dict[str, str] | None:
    """The values of a file this sidecar wrote before (a restarted container), or None."""
    try:
        text = path.read_text(encoding="utf-8")
        return parse(text) if text.startswith(HEADER) else None
    except (OSError, UnicodeDecodeError, ValueError):  # ValueError: an edit broke its quoting
        return None


class IdentityJob:
    """Keeps the env file in step with the Service: quickly until complete, then every ``--kube-period``."""

    def __init__(self, settings: Settings, state: KubeState, client: KubeClient, health: Health,
                 backoff: Backoff | None = None) -> None:
        assert settings.network_env_file is not None and settings.service_name
        self.settings = settings
        self.state = state
        self.client = client
        self.health = health
        self.path: Path = settings.network_env_file
        # Also "not complete yet" retries with it: quick at first, never slower than the period.
        self.retries = Retries(backoff or Backoff.doubling(1.0, min(30.0, settings.kube_period), jitter=0.2))
        self._text: str | None = None

    async def run(self) -> None:
        """Never returns; API errors degrade, they do not stop the job."""
        previous = await asyncio.to_thread(read_previous, self.path)
        if previous is not None and not self.state.identity_written:
            # A restarted container in the same pod: the file on the shared volume is still the
            # Service's, so the node may start even while the API is unreachable.
            self.state.identity, self.state.identity_source = previous, "file"
            self.state.identity_written = True
            log.info("identity_kept", path=str(self.path), **previous)
        report = progress.current()
        while True:
            report.working("reading the Service")
            delay = await self.refresh()
            await report.sleep(delay, "next read of the Service")

    async def refresh(self) -> float:
        """Read the Service once, write the file if it changed; return the seconds until the next read."""
        try:
            service = await self.client.request("GET", "services", self.settings.service_name or "")
            node_ip = await self._node_external_ip(service)
        except KubeError as exc:
            self.health.fail("identity", exc.reason, str(exc))
            return self.retries.failed()
        values, problems = compute(service, self.settings, node_ip)
        text = render(values, f"Service {self.client.namespace}/{self.settings.service_name}")
        if text != self._text:
            try:
                await asyncio.to_thread(write_atomic, self.path, text)
            except OSError as exc:
                self.health.fail("identity", "write", f"{self.path}: {exc}", api=False)
                return self.retries.failed()
            if values != self.state.identity or not self.state.identity_written:
                log.info("identity_written", path=str(self.path), **values)
            self._text = text
        self.state.identity, self.state.identity_source = values, "service"
        self.state.identity_written = True
        self.state.identity_time = time.time()
        if problems:
            self.health.fail("identity", "ports", "; ".join(problems), api=False)
        else:
            self.health.ok("identity")
        if self._pending(service, values):
            return self.retries.failed()  # e.g. the load balancer has no address yet: look again soon
        self.retries.reset()
        return self.settings.kube_period

    async def _node_external_ip(self, service: dict[str, Any]) -> str | None:
        """The Kubernetes node's ExternalIP, only with --node-external-ip and for a Service with node ports."""
        if not self.settings.node_external_ip or (service.get("spec") or {}).get("type") not in (
                "NodePort", "LoadBalancer"):
            return None
        node_name = ((await self.client.pod()).get("spec") or {}).get("nodeName")
        if not node_name:
            return None
        node = await self.client.request("GET", "nodes", node_name)
        addresses = (node.get("status") or {}).get("addresses") or []
        return next((a.get("address") for a in addresses if a.get("type") == "ExternalIP"), None)

    @staticmethod
    def _pending(service: dict[str, Any], values: dict[str, str]) -> bool:
        """True while a LoadBalancer Service waits for its address."""
        return (service.get("spec") or {}).get("type") == "LoadBalancer" and "EXTERNAL_IP" not in values
