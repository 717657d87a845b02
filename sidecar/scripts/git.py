"""Async git CLI: every call has a timeout, runs without hooks or prompts, and never leaks credentials.

Credentials are read from files by git's own credential helper and SSH command at each call;
they never appear in argv or the environment of the sidecar. Output shown in errors is redacted.
"""

from __future__ import annotations

import os
import shlex
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sidecar import logs, procs

# Applied to every call: no hooks, no prompts, any volume owner, no system/global config surprises.
BASE_CONFIG: tuple[tuple[str, str], ...] = (
    ("core.hooksPath", "/dev/null"),
    ("safe.directory", "*"),
    ("core.askPass", ""),
    ("credential.helper", ""),
    # ``user``: local paths and file:// only for commands the sidecar runs itself (the repository
    # the user named); git marks the clones a .gitmodules asks for as not from the user, so a
    # hostile submodule cannot copy any repository on the pod.
    ("protocol.file.allow", "user"),
    ("submodule.recurse", "false"),
    ("advice.detachedHead", "false"),
    ("gc.auto", "0"),
    ("checkout.workers", "0"),  # parallel checkout, one worker per core: revisions appear sooner
    ("maintenance.auto", "false"),
    ("core.fsync", "committed"),
    # Carried files are hard links shared by two revisions: a new link changes a file's ctime,
    # not its content, so ctime alone must not make git hash the file again.
    ("core.trustctime", "false"),
    ("init.defaultBranch", "main"),
    ("user.name", "edgelake-sidecar"),
    ("user.email", "sidecar@localhost"),
)


# For git calls that prepare a publication: no fsync of their own. The syncfs before a revision's
# marker (layout.mark_complete) makes their objects, refs and files durable in one go, and a sync
# that fetched but published nothing flushes at its end. Each fsync is a journal commit, which on
# a disk another process keeps busy costs 40 to 150 ms: git's own made a fetch 4 times slower.
UNFLUSHED = {"GIT_CONFIG_PARAMETERS": "'core.fsync'='none'"}


# Listings of whole trees (ls-tree, diff-tree, status, cat-file) of up to about a million files.
LISTING_CAP = 256 * 1024 * 1024


class GitError(Exception):
    """A git command failed; the message is redacted and says what failed."""

    def __init__(self, message: str, *, reason: str = "git", stderr: str = "") -> None:
        super().__init__(logs.redact(message))
        self.reason = reason
        self.stderr = logs.redact(stderr)


@dataclass(frozen=True)
class Credentials:
    """Where credentials live. Files are read by git itself, at each call.

    ``password`` is one taken out of the repository URL: it is handed to git through a private
    file that exists only while a remote call runs, never through argv or the environment.
    ``scope`` (``https://host:port``) limits the credential helper to the repository's server,
    so a submodule on another server is never offered the password.
    """

    username: str | None = None
    password_file: Path | None = None
    ssh_key_file: Path | None = None
    known_hosts_file: Path | None = None
    ssh_connect_timeout: int = 15
    password: str | None = field(default=None, repr=False)
    scope: str | None = None


def split_userinfo(url: str) -> tuple[str, str | None, str | None]:
    """``url`` without its password (and, for http(s), without its user name), the user, the password.

    ``https://user:pass@host/x.git`` gives ``https://host/x.git``, ``user``, ``pass`` (decoded).
    Anything that is not a URL with user info comes back unchanged.
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url, None, None
    if not parts.scheme or "@" not in parts.netloc:
        return url, None, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    raw_user, colon, raw_password = userinfo.partition(":")
    user = _unquote(raw_user) or None
    password = _unquote(raw_password) if colon else None
    keep_user = parts.scheme not in ("http", "https") and raw_user
    netloc = f"{raw_user}@{hostport}" if keep_user else hostport
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), user, password


def _unquote(text: str) -> str:
    # A decoded line break could add lines to the credential helper's answer: keep such text as written.
    decoded = urllib.parse.unquote(text)
    return text if any(ord(c) < 0x20 or c == "\x7f" for c in decoded) else decoded


def credential_scope(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) repository URL: where its credentials may be sent."""
    try:
        parts = urllib.parse.urlsplit(split_userinfo(url)[0])
    except ValueError:
        return None
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else None


def _helper(username: str | None, password_file: Path) -> str:
    # A shell credential helper: reads the password file when git asks, so the secret never
    # sits in our argv or environment. The file path is not a secret.
    user = shlex.quote(username or "git")
    pw = shlex.quote(str(password_file))
    return (
        "!f() { test \"$1\" = get || exit 0; "
        f"echo username={user}; printf 'password=%s\\n' \"$(cat {pw})\"; }}; f"
    )


def _answer_helper(answer_file: Path) -> str:
    # The whole answer (user name and password, both from the URL) sits in the private file: a
    # token given as the user name stays out of the environment too.
    return f"!f() {{ test \"$1\" = get || exit 0; cat {shlex.quote(str(answer_file))}; }}; f"


def _ssh_command(creds: Credentials, key_copy: Path | None) -> str:
    parts = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={creds.ssh_connect_timeout}",
             "-o", "IdentitiesOnly=yes"]
    if key_copy is not None:
        parts += ["-i", str(key_copy)]
    if creds.known_hosts_file is not None:
        parts += ["-o", f"UserKnownHostsFile={creds.known_hosts_file}", "-o", "StrictHostKeyChecking=yes"]
    else:
        parts += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    return shlex.join(parts)


class Git:
    """Runs git with the sidecar's hygiene; ``home`` is a writable scratch folder (HOME for git/ssh)."""

    def __init__(self, timeout: float, home: Path, credentials: Credentials | None = None) -> None:
        self.timeout = timeout
        self.home = home
        self.credentials = credentials or Credentials()
        self.calls = 0

    def env(self, key_copy: Path | None = None, extra: Mapping[str, str] | None = None,
            password_copy: Path | None = None) -> dict[str, str]:
        """The environment of every git call (config passed through GIT_CONFIG_* so argv stays short)."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(self.home),
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_OPTIONAL_LOCKS": "0",
            "GIT_ASKPASS": "/bin/false",
            "SSH_ASKPASS": "/bin/false",
            "LC_ALL": "C",
        }
        config = list(BASE_CONFIG)
        creds = self.credentials
        key = f"credential.{creds.scope}.helper" if creds.scope else "credential.helper"
        if creds.password_file is not None:
            config.append((key, _helper(creds.username, creds.password_file)))
        elif password_copy is not None:
            config.append((key, _answer_helper(password_copy)))
        config.append(("core.sshCommand", _ssh_command(creds, key_copy)))
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for i, (key, value) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{i}"] = key
            env[f"GIT_CONFIG_VALUE_{i}"] = value
        if extra:
            env.update(extra)
        return env

    async def run(
        self,
        args: Sequence[str],
        *,
        cwd: Path | None = None,
        git_dir: Path | None = None,
        check: bool = True,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        remote: bool = False,
        cap: int = procs.OUTPUT_CAP,
    ) -> procs.ProcResult:
        """Run ``git ARGS``; raise GitError on failure (when ``check``) or on timeout.

        ``remote`` calls get a private copy of the SSH key (ssh insists on 0600 files, while a
        mounted Secret is often 0644) and of a password taken from the URL, deleted right after
        the call. Output past ``cap`` bytes is an error, never silently cut: listings of large
        trees pass ``LISTING_CAP``.
        """
        argv = ["git"]
        if git_dir is not None:
            argv += ["--git-dir", str(git_dir)]
        argv += list(args)
        creds = self.credentials
        self.calls += 1
        key_copy = pw_copy = None
        try:
            if remote and creds.ssh_key_file is not None:
                data = creds.ssh_key_file.read_bytes()
                key_copy = self._private_copy("ssh-key", data if data.endswith(b"\n") else data + b"\n")
            if remote and creds.password is not None and creds.password_file is None:
                answer = f"username={creds.username or 'git'}\npassword={creds.password}\n"
                pw_copy = self._private_copy("password", answer.encode())
            result = await procs.run(argv, timeout=timeout or self.timeout, cwd=cwd,
                                     env=self.env(key_copy, env, pw_copy), stdin=stdin, cap=cap)
        except procs.ProcTimeout as exc:
            raise GitError(f"git {args[0]} timed out: {exc}", reason="timeout") from None
        except OSError as exc:
            raise GitError(f"git {args[0]} could not start: {exc}", reason="io") from None
        finally:
            for copy in (key_copy, pw_copy):
                if copy is not None:
                    copy.unlink(missing_ok=True)
        if len(result.stdout) >= cap:
            raise GitError(f"git {args[0]} printed more than {cap} bytes", reason="too-large")
        if check and result.returncode != 0:
            err = result.stderr.decode(errors="replace").strip()
            raise GitError(f"git {args[0]} failed ({result.returncode}): {_last_lines(err)}",
                           reason=classify(err), stderr=err)
        return result

    async def out(self, args: Sequence[str], **kwargs: object) -> str:
        """Run git and return its stdout as stripped text."""
        result = await self.run(args, **kwargs)  # type: ignore[arg-type]
        return result.stdout.decode(errors="replace").strip()

    def _private_copy(self, what: str, data: bytes) -> Path:
        """A file only this user can read, named per call (``Layout.prepare`` removes strays)."""
        self.home.mkdir(parents=True, exist_ok=True)
        path = self.home / f"{what}-{os.getpid()}-{self.calls}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return path


_BOILERPLATE = ("hint:", "Please make sure you have the correct access rights", "and the repository exists.")


_KEY_WORDS = ("fatal:", "error:", "failed", "denied", "refused", "not found", "timed out", "could not", "unable")


def _last_lines(text: str, n: int = 3) -> str:
    """The lines that say what went wrong: those with a key word first, without git's boilerplate."""
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith(_BOILERPLATE) and set(line.strip()) != {"@"}]
    key = [line for line in lines if any(word in line.lower() for word in _KEY_WORDS)]
    chosen = (key or lines)[:n]
    return " | ".join(chosen) if chosen else "no message"


def classify(stderr: str) -> str:
    """A short reason for a git failure, for metrics and status."""
    low = stderr.lower()
    checks = (
        ("ref-not-found", ("couldn't find remote ref", "no such ref", "not our ref", "unknown revision")),
        ("auth", ("authentication failed", "could not read username", "could not read password",
                  "returned error: 401", "returned error: 403", "permission denied (publickey",
                  "host key verification failed")),
        ("not-found", ("does not appear to be a git repository", "repository not found", "returned error: 404",
                       "does not exist")),
        ("unreachable", ("could not resolve", "connection refused", "timed out", "unable to access",
                         "network is unreachable", "connection reset", "early eof")),
        ("disk-full", ("no space left",)),
        ("io", ("read-only file system", "permission denied")),
        ("corrupt", ("corrupt", "bad object", "not a git repository", "loose object", "missing blob")),
        ("protocol", ("protocol error", "bad line length", "invalid packet", "unexpected")),
    )
    for reason, needles in checks:
        if any(needle in low for needle in needles):
            return reason
    return "git"
