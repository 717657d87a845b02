"""How one request reaches the API server: HTTPS with the cluster's CA, and a bearer token or client certificate.

In a pod, the service account's files are read directly, as client-go's ``rest.InClusterConfig`` does:
``token`` (read again at every request, so a token the kubelet rotated is used at once), ``ca.crt``
and ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT``. The official client is loaded only for a
kubeconfig (contexts, exec plugins, token files: see ``official.py``), and only its ``Configuration``
is read from it. Either way a request is one ``http.client`` connection: no urllib3 pool to tune,
nothing of the official client loaded in a pod.

Everything here blocks; ``client.py`` runs it in a daemon thread with a deadline.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

MAX_ANSWER = 4 * 1024 * 1024  # bytes; the objects read (a Service, a pod, a node) are a few KiB


class ConfigError(Exception):
    """The configuration cannot work (a missing file, an unset variable, a bad certificate)."""


class AnswerTooLarge(Exception):
    """The server sent more than ``MAX_ANSWER`` bytes."""


@dataclass(frozen=True)
class Endpoint:
    """Where requests go and how they authenticate."""

    host: str  # a name or an address (an IPv6 one without brackets)
    port: int
    tls: ssl.SSLContext | None  # None: plain HTTP (only a kubeconfig can ask for it)
    server_name: str | None  # the name the certificate must carry, when not ``host``
    authorization: Callable[[], str | None]  # the Authorization header, computed at each request


def _token_reader(path: Path) -> Callable[[], str | None]:
    def authorization() -> str | None:
        try:
            token = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"service account token {path}: {exc}") from None
        return f"Bearer {token}" if token else None

    return authorization


def in_cluster(sa_dir: Path, environ: Mapping[str, str]) -> Endpoint:
    """The API server of the pod's cluster, from the service account folder and the pod's environment."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST", ""), environ.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise ConfigError("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (not in a pod?)")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"KUBERNETES_SERVICE_PORT is not a port: {port!r}")
    try:
        context = ssl.create_default_context(cafile=str(sa_dir / "ca.crt"))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cluster CA {sa_dir / 'ca.crt'}: {exc}") from None
    authorization = _token_reader(sa_dir / "token")
    if authorization() is None:
        raise ConfigError(f"service account token {sa_dir / 'token'} is empty")
    return Endpoint(host.strip("[]"), int(port), context, None, authorization)


def from_configuration(configuration: Any) -> Endpoint:
    """The endpoint an official client ``Configuration`` (loaded from a kubeconfig) describes."""
    url = urlsplit(configuration.host)
    if url.scheme not in ("https", "http") or not url.hostname:
        raise ConfigError(f"server {configuration.host!r} is not an http(s) URL")
    if getattr(configuration, "proxy", None):
        raise ConfigError(f"proxy-url {configuration.proxy!r}: the sidecar talks to the API server directly")
    context: ssl.SSLContext | None = None
    if url.scheme == "https":
        try:
            context = ssl.create_default_context(cafile=configuration.ssl_ca_cert if configuration.verify_ssl else None)
            if not configuration.verify_ssl:  # insecure-skip-tls-verify: the user asked for it in the kubeconfig
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if configuration.cert_file:
                context.load_cert_chain(configuration.cert_file, configuration.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLS files of the kubeconfig: {exc}") from None

    def authorization() -> str | None:
        # auth_settings() runs the loader's refresh hook: exec plugins and token files are read again.
        for auth in configuration.auth_settings().values():
            if auth["in"] == "header" and auth["key"].lower() == "authorization" and auth["value"]:
                return str(auth["value"])
        return None

    return Endpoint(url.hostname, url.port or (443 if url.scheme == "https" else 80), context,
                    configuration.tls_server_name or None, authorization)


class _HTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection whose certificate may carry a name other than the host it connects to."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, server_name: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._server_name = server_name
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self._server_name)


def send(endpoint: Endpoint, method: str, path: str, headers: dict[str, str], body: bytes | None,
         timeout: float) -> tuple[int, bytes]:
    """One request on its own connection; ``(status, body)``. ``timeout`` bounds the connect and each read."""
    authorization = endpoint.authorization()
    if authorization:
        headers = {**headers, "Authorization": authorization}
    conn: http.client.HTTPConnection
    if endpoint.tls is None:
        conn = http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=timeout)
    elif endpoint.server_name:
        conn = _HTTPSConnection(endpoint.host, endpoint.port, endpoint.tls, endpoint.server_name, timeout)
    else:
        conn = http.client.HTTPSConnection(endpoint.host, endpoint.port, timeout=timeout, context=endpoint.tls)
    try:
        conn.request(method, path, body, headers)
        response = conn.getresponse()
        data = response.read(MAX_ANSWER + 1)
        if len(data) > MAX_ANSWER:
            raise AnswerTooLarge(f"the answer is over {MAX_ANSWER} bytes")
        return response.status, data
    finally:
        conn.close()
