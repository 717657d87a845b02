"""One writer per volume: an exclusive ``flock`` on a file in the root, held for the process lifetime.

Two writers on one link lose edits and can publish a tree that is not whole, so ``run``, ``seed`` and
``resolve`` take this lock before they touch anything else under the root. The kernel drops the
lock when the process dies, even by SIGKILL, so a crash never leaves the volume locked.

The file holds who has it (pid, host or pod name, start time, command), written after the lock is
taken, so a second writer can name the holder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = "writer.lock"


class Busy(Exception):
    """Another process holds the volume's writer lock."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"another writer holds {path}: {holder}")
        self.path = path
        self.holder = holder


def _describe(raw: str) -> str:
    """The holder as one line, from the lock file's text (which a broken writer may have left odd)."""
    try:
        info = json.loads(raw)
        return (f"pid {int(info['pid'])} on {str(info['host'])[:253]}, {str(info['command'])[:20]} "
                f"started {str(info['started'])[:40]}")
    except (ValueError, KeyError, TypeError):
        return "holder unknown (it has not written its name yet)"


def holder(path: Path) -> str:
    """Who holds the lock at ``path``, as written in the file."""
    try:
        with path.open("r", errors="replace") as f:
            return _describe(f.read(4096))
    except OSError as exc:
        return f"holder unreadable ({exc.strerror})"


@dataclass
class WriterLock:
    """The held lock: an open descriptor on the lock file. Blocking calls: cheap syscalls only."""

    path: Path
    fd: int
    identity: str

    @classmethod
    def take(cls, root: Path, command: str, host: str | None = None) -> WriterLock:
        """Take the lock in ``root`` (created when missing) without waiting; raise :class:`Busy` when held."""
        root.mkdir(parents=True, exist_ok=True)
        path = root / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o664)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise Busy(path, holder(path)) from None
            raise
        identity = json.dumps({
            "pid": os.getpid(),
            "host": host or socket.gethostname(),
            "command": command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        })
        os.ftruncate(fd, 0)
        os.pwrite(fd, identity.encode() + b"\n", 0)
        return cls(path, fd, identity)

    def still_ours(self) -> bool:
        """True while the lock file at ``path`` is the one we hold (an ``rm -rf`` of the root removes it)."""
        try:
            on_disk = os.stat(self.path, follow_symlinks=False)
        except OSError:
            return False
        held = os.fstat(self.fd)
        return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)

    def renew(self) -> WriterLock:
        """After the root was removed: take the lock on a new file, then let the old one go."""
        host = json.loads(self.identity)["host"]
        fresh = WriterLock.take(self.path.parent, json.loads(self.identity)["command"], host)
        self.release()
        return fresh

    def release(self) -> None:
        """Let the lock go (the kernel also does at exit)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = -1


_held: list[WriterLock] = []  # the process's lock: one per process, kept until exit


def hold(root: Path, command: str, host: str | None = None) -> WriterLock:
    """Take the volume's lock for the rest of the process (see :meth:`WriterLock.take`)."""
    lock = WriterLock.take(root, command, host)
    _held[:] = [lock]
    return lock


def check_held() -> bool:
    """Re-take the lock when its file was removed under us (``rm -rf`` of the root); False if lost.

    False means another process took the lock on the new file: this one must stop writing.
    """
    if not _held or _held[0].still_ours():
        return True
    try:
        _held[0] = _held[0].renew()
    except Busy:
        return False
    return True
