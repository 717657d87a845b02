"""The request parser of the endpoint server: bytes in, requests or a refusal out (RFC 9112).

Pure and incremental: :class:`RequestReader` holds one connection's unread bytes and hands out
complete requests. It is stricter than the RFC allows, never more lenient, so that no proxy in
front of the sidecar can frame a byte stream differently from it (request smuggling):

- lines end with CRLF; a bare CR, a bare LF or a NUL anywhere in a head is refused (400), as soon
  as it arrives, not when the head is complete;
- the method and every field name are tokens; field values hold visible characters, spaces and
  tabs only; a folded line (obs-fold) is refused;
- a request has at most one ``Host``, an HTTP/1.1 one exactly one; ``Content-Length`` appears at most once; a
  ``Transfer-Encoding`` is refused (501): the endpoints take small bodies with a length only;
- ``Expect: 100-continue`` is reported so the server can send a 100; any other expectation is 417;
- only ``/``-paths (origin-form) are served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

MAX_HEAD = 8192
MAX_HEADERS = 64
MAX_BODY = 64 * 1024

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) (HTTP/[0-9]\.[0-9])")
_FIELD = re.compile(rb"(" + _TOKEN + rb"):(.*)", re.DOTALL)
_FIELD_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # every control character but HTAB
# A CR not followed by LF, an LF not preceded by CR, a NUL. Searched with a start position, the
# look-behind still sees the byte before it.
_BAD_HEAD_BYTE = re.compile(rb"\x00|\r(?!\n)|(?<!\r)\n")


class HttpError(Exception):
    """The request is refused with ``status``; the connection is closed after the answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Request:
    """A parsed request."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names; repeated headers joined with ", "
    body: bytes
    peer: str
    keep_alive: bool = True  # the client may send another request on this connection
    expect_continue: bool = False  # the client waits for a 100 before it sends the body


@dataclass
class Waiting:
    """More bytes are needed; ``head`` is the parsed head when only the body is still arriving."""

    head: Request | None


def parse_head(head: bytes, peer: str) -> tuple[Request, int]:
    """Parse a request head (without its final CRLF CRLF); return the request and its body length."""
    lines = head.split(b"\r\n")
    line = _REQUEST_LINE.fullmatch(lines[0])
    if line is None:
        raise HttpError(400, "malformed request line")
    method, target, version = (part.decode("ascii") for part in line.groups())
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(505, "unsupported HTTP version")
    if not target.startswith("/"):
        raise HttpError(400, "malformed target")
    if len(lines) - 1 > MAX_HEADERS:
        raise HttpError(431, "too many headers")
    headers: dict[str, str] = {}
    counts: dict[str, int] = {}
    for raw in lines[1:]:
        field = _FIELD.fullmatch(raw)
        if field is None:  # no colon, a name that is not a token, space before the colon, obs-fold
            raise HttpError(400, "malformed header")
        value = field.group(2).strip(b" \t")
        if _FIELD_CONTROL.search(value):
            raise HttpError(400, "control character in a header value")
        key = field.group(1).decode("ascii").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
        counts[key] = counts.get(key, 0) + 1
    if counts.get("host", 0) > 1 or (version == "HTTP/1.1" and "host" not in counts):
        raise HttpError(400, "a request needs one Host header (HTTP/1.1), never two")
    if "transfer-encoding" in headers:
        raise HttpError(501, "chunked request bodies are not accepted")
    length = 0
    if "content-length" in headers:
        raw_length = headers["content-length"]
        if counts["content-length"] > 1 or not (raw_length.isascii() and raw_length.isdigit()):
            raise HttpError(400, "bad Content-Length")
        if len(raw_length.lstrip("0")) > 9 or int(raw_length) > MAX_BODY:
            raise HttpError(413, "request body too large")
        length = int(raw_length)
    expect_continue = False
    if "expect" in headers:
        if headers["expect"].lower() != "100-continue":
            raise HttpError(417, "only Expect: 100-continue is understood")
        expect_continue = version == "HTTP/1.1" and length > 0  # HTTP/1.0 clients do not wait for it
    if "?" in target or "%" in target or "#" in target:
        try:
            split = urlsplit(target)
        except ValueError:  # a broken IPv6 authority in a target such as //[::1/x
            raise HttpError(400, "malformed target") from None
        path, query = unquote(split.path), parse_qs(split.query, keep_blank_values=True)
    else:  # the probes' plain paths: skip the URL parser
        path, query = target, {}
    # HTTP/1.0 connections close after one answer, keep-alive or not: a proxy that frames them as
    # HTTP/1.0 does (one request per connection) then never sees a second answer.
    connection = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    keep_alive = version == "HTTP/1.1" and "close" not in connection
    return Request(method, path, query, headers, b"", peer, keep_alive, expect_continue), length


class RequestReader:
    """One connection's unread bytes, turned into requests one at a time."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.buffer = bytearray()
        self._checked = 0  # bytes of the current head already scanned for bad bytes
        self._head: Request | None = None  # the current request's head, once complete
        self._length = 0
        self._body_start = 0

    def feed(self, data: bytes) -> None:
        """Add received bytes."""
        self.buffer += data

    def next(self) -> Request | Waiting:
        """The next complete request (removed from the buffer), or what is still awaited.

        Raises :class:`HttpError` for a request that must be refused; the connection is then done.
        """
        if self._head is None:
            end = self.buffer.find(b"\r\n\r\n", max(0, self._checked - 3))
            stop = end if end >= 0 else len(self.buffer)
            if end < 0 and self.buffer.endswith(b"\r"):
                stop -= 1  # its LF may be in the next packet
            bad = _BAD_HEAD_BYTE.search(self.buffer, self._checked, stop)
            if bad is not None:
                raise HttpError(400, "bare CR, bare LF or NUL in the request head")
            self._checked = stop
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    raise HttpError(431, "request head too large")
                return Waiting(None)
            if end > MAX_HEAD:
                raise HttpError(431, "request head too large")
            self._head, self._length = parse_head(bytes(self.buffer[:end]), self.peer)
            self._body_start = end + 4
        stop = self._body_start + self._length
        if len(self.buffer) < stop:
            return Waiting(self._head)
        request, self._head = self._head, None
        request.body = bytes(self.buffer[self._body_start : stop])
        del self.buffer[:stop]
        self._checked = 0
        return request
