"""Real remotes for fault tests: authenticated smart HTTP (nginx + fcgiwrap + git-http-backend),
a server that accepts and never answers, and one that answers garbage. Loopback only."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import free_port, require_tool

BACKEND = "/usr/lib/git-core/git-http-backend"


def stop(*procs: subprocess.Popen[bytes]) -> None:
    """Terminate test servers, killing any that ignore it."""
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A small tmpfs mounted at ``path`` (a read-only or nearly full volume), unmounted after."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True, timeout=30)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True, timeout=30)


@contextlib.contextmanager
def smart_http(project_root: Path, work: Path, user: str, password: str, rate: str | None = None) -> Iterator[str]:
    """Serve ``project_root`` over HTTP with basic auth; yield the base URL.

    ``rate`` (nginx ``limit_rate``, e.g. ``64k``) slows every answer down, so a fetch lasts long
    enough to be looked at while it runs.
    """
    nginx = require_tool("nginx")
    fcgiwrap = require_tool("fcgiwrap")
    if not Path(BACKEND).exists():
        require_tool("git-http-backend", "/usr/lib/git-core")
    work.mkdir(parents=True, exist_ok=True)
    sock = work / "fcgi.sock"
    port = free_port()
    (work / "htpasswd").write_text(f"{user}:{{PLAIN}}{password}\n")
    (work / "nginx.conf").write_text(f"""
user root;
daemon off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log {work}/access.log;
  client_body_temp_path {work}/body;
  fastcgi_temp_path {work}/fastcgi;
  proxy_temp_path {work}/proxy;
  uwsgi_temp_path {work}/uwsgi;
  scgi_temp_path {work}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      auth_basic "git";
      auth_basic_user_file {work}/htpasswd;
      client_max_body_size 0;
      {f"limit_rate {rate};" if rate else ""}
      fastcgi_pass unix:{sock};
      fastcgi_param SCRIPT_FILENAME {BACKEND};
      fastcgi_param GIT_PROJECT_ROOT {project_root};
      fastcgi_param GIT_HTTP_EXPORT_ALL "";
      fastcgi_param REMOTE_USER $remote_user;
      fastcgi_param PATH_INFO $uri;
      fastcgi_param QUERY_STRING $query_string;
      fastcgi_param REQUEST_METHOD $request_method;
      fastcgi_param CONTENT_TYPE $content_type;
      fastcgi_param CONTENT_LENGTH $content_length;
      fastcgi_param GIT_CONFIG_NOSYSTEM 1;
    }}
  }}
}}
""")
    wrap = subprocess.Popen([fcgiwrap, "-s", f"unix:{sock}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    web = subprocess.Popen([nginx, "-p", str(work), "-c", str(work / "nginx.conf")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                if sock.exists():
                    break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"nginx did not start: {(work / 'error.log').read_text(errors='replace')}")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(web, wrap)


@contextlib.contextmanager
def tcp_server(behaviour: str) -> Iterator[int]:
    """A loopback server that ``hang``s (accepts, reads, never answers) or answers ``garbage``."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)
            if behaviour == "garbage":
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(65536)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-advertisement\r\n"
                                 b"Content-Length: 40\r\n\r\n" + b"\x00garbage\xff" * 4)
                    conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        listener.close()
        thread.join(2)
        for conn in held:
            conn.close()


@contextlib.contextmanager
def ssh_server(work: Path, authorized_key: Path) -> Iterator[tuple[int, str]]:
    """A real sshd on loopback accepting ``authorized_key`` for the current user.

    Yields the port and the ``known_hosts`` line of its host key.
    """
    sshd = require_tool("sshd")
    work.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    host_key = work / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True, timeout=30)
    port = free_port()
    (work / "sshd_config").write_text(f"""
ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
AuthorizedKeysFile {authorized_key}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile {work}/sshd.pid
""")
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(work / "sshd_config")],
                            stdout=subprocess.DEVNULL, stderr=open(work / "sshd.log", "wb"))  # noqa: SIM115
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.05)
        pub = (work / "host_ed25519.pub").read_text().split()
        yield port, f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n"
    finally:
        stop(proc)


@contextlib.contextmanager
def git_daemon(base_path: Path) -> Iterator[str]:
    """``git daemon`` serving every repository under ``base_path`` read-only on loopback; yields
    ``git://127.0.0.1:PORT`` (a remote that is not the local file protocol)."""
    daemon = require_tool("git-daemon", "/usr/lib/git-core")
    port = free_port()
    proc = subprocess.Popen([daemon, "--reuseaddr", "--export-all", "--listen=127.0.0.1", f"--port={port}",
                             f"--base-path={base_path}", str(base_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            time.sleep(0.05)
        yield f"git://127.0.0.1:{port}"
    finally:
        stop(proc)
