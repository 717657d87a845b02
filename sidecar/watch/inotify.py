"""Linux inotify through ctypes: directory watches that never follow a symlink, read without a thread.

watchfiles (the notify crate) walks a recursive watch with symlinks followed, in its inotify
backend and in its polling fallback alike, so a link to ``/`` in the tree sent it through the
whole filesystem. Here every watch is added with ``IN_DONT_FOLLOW | IN_ONLYDIR`` on folders the
caller found with ``lstat``, and the descriptor is non-blocking so the event loop reads it
(``loop.add_reader``): no thread that could hold the process at exit.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from dataclasses import dataclass

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_UNMOUNT = 0x2000
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000

# Everything that changes a file's content or presence; never reads (the node reading its scripts
# must cost nothing). Not IN_ATTRIB: carried files are hard links shared by consecutive revisions, so
# making or removing a revision changes their link count, and that is the sidecar's work, not an edit.
CONTENT = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
SELF = IN_DELETE_SELF | IN_MOVE_SELF
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)
_READ_SIZE = 64 * 1024

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]


@dataclass(frozen=True)
class RawEvent:
    """One inotify event: the watch it came from, what happened, and the entry's name (bytes)."""

    wd: int
    mask: int
    cookie: int
    name: bytes


def _error(what: str, path: bytes | None = None) -> OSError:
    code = ctypes.get_errno()
    return OSError(code, f"{what}: {os.strerror(code)}", os.fsdecode(path) if path is not None else None)


def parse(buffer: bytes) -> list[RawEvent]:
    """Split what one read() returned into events."""
    events = []
    offset = 0
    while offset + _HEADER.size <= len(buffer):
        wd, mask, cookie, size = _HEADER.unpack_from(buffer, offset)
        start = offset + _HEADER.size
        events.append(RawEvent(wd, mask, cookie, buffer[start:start + size].rstrip(b"\0")))
        offset = start + size
    return events


class Inotify:
    """One inotify instance. Close it to drop every watch at once."""

    def __init__(self) -> None:
        fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise _error("inotify_init1")  # EMFILE: the per-user instance limit, shared by the node's pods
        self.fd: int = fd

    def add(self, path: bytes, mask: int) -> int:
        """Watch the folder ``path`` itself (never a link's target); return the watch descriptor."""
        wd = _libc.inotify_add_watch(self.fd, path, mask | IN_DONT_FOLLOW | IN_ONLYDIR | IN_EXCL_UNLINK)
        if wd < 0:
            raise _error("inotify_add_watch", path)  # ENOSPC: the per-user watch limit
        return int(wd)

    def remove(self, wd: int) -> None:
        """Stop one watch (gone already is fine: the kernel drops watches of deleted folders)."""
        _libc.inotify_rm_watch(self.fd, wd)

    def read(self) -> list[RawEvent]:
        """Every event queued now (empty when none)."""
        events: list[RawEvent] = []
        while True:
            try:
                chunk = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                return events
            if not chunk:
                return events
            events.extend(parse(chunk))

    def close(self) -> None:
        """Release the instance and its watches."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
