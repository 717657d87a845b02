"""The endpoint server's request parser, in process: raw bytes -> verdict, a differential test against
h11 (the sidecar never answers more requests than h11 parses from the same bytes), and the server's
framing over real loopback sockets: 100-continue, a body arriving while reading is paused, smuggling."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import h11
import pytest

from sidecar.http.parser import MAX_BODY, HttpError, Request, RequestReader, Waiting
from sidecar.http.server import HttpServer, Response

Verdict = list[str | int]  # "METHOD /path body" per request answered, then the refusal's status if any


def answered(data: bytes, chunk: int | None = None) -> Verdict:
    """What the server does with ``data`` as one connection: the requests it answers, then its refusal.

    Mirrors ``_Connection``: requests are answered in order until one is refused or one ends the
    connection (``Connection: close``, HTTP/1.0).
    """
    reader = RequestReader("test")
    verdict: Verdict = []
    pieces = [data] if chunk is None else [data[i : i + chunk] for i in range(0, len(data), chunk)]
    try:
        for piece in pieces:
            reader.feed(piece)
            while not isinstance(request := reader.next(), Waiting):
                verdict.append(f"{request.method} {request.path} {request.body.decode('latin-1')}".rstrip())
                if not request.keep_alive:
                    return verdict
    except HttpError as exc:
        verdict.append(exc.status)
    return verdict


H = b"Host: x\r\n"
SMUGGLE = b"GET /livez HTTP/1.1\r\nX: a\nContent-Length: 25\r\n\r\nGET /status HTTP/1.1\r\n\r\n"
TABLE: list[tuple[str, bytes, Verdict]] = [
    ("plain", b"GET /livez HTTP/1.1\r\n" + H + b"\r\n", ["GET /livez"]),
    ("pipelined with a body", b"POST /sync HTTP/1.1\r\n" + H + b"Content-Length: 3\r\n\r\nabcGET /x HTTP/1.1\r\n"
     + H + b"\r\n", ["POST /sync abc", "GET /x"]),
    ("query and escapes", b"GET /readyz%3F?verbose&x=1 HTTP/1.1\r\n" + H + b"\r\n", ["GET /readyz?"]),
    ("HTTP/1.0 without Host, then closed", b"GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\n\r\n", ["GET /a"]),
    ("HTTP/1.0 keep-alive still closes", b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n",
     ["GET /a"]),
    ("Connection close among tokens", b"GET /a HTTP/1.1\r\n" + H + b"Connection: keep-alive, Close\r\n\r\n"
     b"GET /b HTTP/1.1\r\n" + H + b"\r\n", ["GET /a"]),
    ("token method other than the known ones", b"M-SEARCH /a HTTP/1.1\r\n" + H + b"\r\n", ["M-SEARCH /a"]),
    ("tab and obs-text in a value", b"GET /a HTTP/1.1\r\n" + H + b"X: a\tb \xe9 \r\n\r\n", ["GET /a"]),
    ("bare LF smuggling", SMUGGLE, [400]),
    ("bare LF ends the head", b"GET /a HTTP/1.1\nHost: x\n\n", [400]),
    ("bare CR in a value", b"GET /a HTTP/1.1\r\n" + H + b"X: a\rb\r\n\r\n", [400]),
    ("bare CR in the request line", b"GET /a\r HTTP/1.1\r\n" + H + b"\r\n", [400]),
    ("NUL in a value", b"GET /a HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n", [400]),
    ("NUL in the target", b"GET /a\x00 HTTP/1.1\r\n" + H + b"\r\n", [400]),
    ("a bad head after a good request", b"GET /a HTTP/1.1\r\n" + H + b"\r\nGET /b HTTP/1.1\nHost: x\r\n\r\n",
     ["GET /a", 400]),
    ("control character in a value", b"GET /a HTTP/1.1\r\n" + H + b"X: \x1b[2J\r\n\r\n", [400]),
    ("method not a token", b"G(T /a HTTP/1.1\r\n" + H + b"\r\n", [400]),
    ("empty method", b" /a HTTP/1.1\r\n" + H + b"\r\n", [400]),
    ("field name not a token", b"GET /a HTTP/1.1\r\n" + H + b"X(y): 1\r\n\r\n", [400]),
    ("space before the colon", b"GET /a HTTP/1.1\r\n" + H + b"X : 1\r\n\r\n", [400]),
    ("obs-fold", b"GET /a HTTP/1.1\r\n" + H + b"X: 1\r\n 2\r\n\r\n", [400]),
    ("no colon", b"GET /a HTTP/1.1\r\n" + H + b"no colon here\r\n\r\n", [400]),
    ("two spaces", b"GET /a  HTTP/1.1\r\n" + H + b"\r\n", [400]),
    ("absolute form", b"GET http://x/a HTTP/1.1\r\n" + H + b"\r\n", [400]),
    ("asterisk form", b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n", [400]),
    ("HTTP/2.0", b"GET /a HTTP/2.0\r\n" + H + b"\r\n", [505]),
    ("lower-case version", b"GET /a http/1.1\r\n" + H + b"\r\n", [400]),
    ("no Host in HTTP/1.1", b"GET /a HTTP/1.1\r\n\r\n", [400]),
    ("two Hosts", b"GET /a HTTP/1.1\r\n" + H + H + b"\r\n", [400]),
    ("two equal Content-Lengths", b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nx",
     [400]),
    ("Content-Length list", b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: 1, 1\r\n\r\nx", [400]),
    ("negative Content-Length", b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: -1\r\n\r\n", [400]),
    ("Unicode digit Content-Length", b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: \xb2\r\n\r\n", [400]),
    ("thousands of digits", b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: " + b"9" * 5000 + b"\r\n\r\n", [413]),
    ("leading zeros are a length", b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: 0000000000002\r\n\r\nok",
     ["POST /a ok"]),
    ("too large a body", b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1), [413]),
    ("chunked", b"POST /a HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", [501]),
    ("chunked and a length", b"POST /a HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
     [501]),
    ("unknown expectation", b"POST /a HTTP/1.1\r\n" + H + b"Expect: 200-ok\r\nContent-Length: 1\r\n\r\nx", [417]),
    ("too many headers", b"GET /a HTTP/1.1\r\n" + H + b"".join(b"h%d: v\r\n" % i for i in range(80)) + b"\r\n",
     [431]),
    ("too large a head", b"GET /a HTTP/1.1\r\n" + H + b"X: " + b"a" * 9000 + b"\r\n\r\n", [431]),
    ("an unfinished head", b"GET /a HTTP/1.1\r\n" + H, []),
    ("an unfinished body", b"POST /a HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n\r\nab", []),
    ("an empty line first", b"\r\nGET /a HTTP/1.1\r\n" + H + b"\r\n", [400]),
]


@pytest.mark.parametrize(("data", "verdict"), [(d, v) for _, d, v in TABLE], ids=[name for name, _, _ in TABLE])
def test_parser_verdicts(data: bytes, verdict: Verdict) -> None:
    assert answered(data) == verdict
    # Split anywhere (a CR in one packet, its LF in the next), the verdict is the same.
    assert answered(data, chunk=1) == verdict
    assert answered(data, chunk=7) == verdict


def test_a_bad_byte_is_refused_before_the_head_is_complete() -> None:
    reader = RequestReader("test")
    reader.feed(b"GET /a HTTP/1.1\r\nX: a\r")
    assert isinstance(reader.next(), Waiting)  # that CR may be followed by its LF
    reader.feed(b"X")
    with pytest.raises(HttpError) as err:
        reader.next()
    assert err.value.status == 400


def test_expect_100_continue_is_reported_only_while_a_body_is_awaited() -> None:
    reader = RequestReader("test")
    reader.feed(b"POST /sync HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n")
    waiting = reader.next()
    assert isinstance(waiting, Waiting) and waiting.head is not None and waiting.head.expect_continue
    reader.feed(b"ok")
    request = reader.next()
    assert isinstance(request, Request) and request.body == b"ok"
    reader.feed(b"GET /a HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")  # 1.0 clients never wait
    waiting = reader.next()
    assert isinstance(waiting, Waiting) and waiting.head is not None and not waiting.head.expect_continue


# --- differential: the sidecar against h11 ------------------------------------------------------------


def h11_requests(data: bytes) -> int:
    """Requests h11 parses completely from ``data`` on one connection, answering each as it comes."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    count = 0
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return count
        if event is h11.NEED_DATA or event is h11.PAUSED:
            return count
        if isinstance(event, h11.EndOfMessage):
            count += 1
            conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
            conn.send(h11.EndOfMessage())
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return count  # MUST_CLOSE: h11 reads nothing more on this connection
            conn.start_next_cycle()


# (well formed, hostile or odd): a part is taken from the first list 85 % of the time.
METHODS = ([b"GET", b"POST", b"HEAD", b"get", b"M-SEARCH"], [b"G T", b"GE\x00T", b"", b"P(ST", b"GET\t"])
TARGETS = ([b"/livez", b"/readyz?verbose", b"/a%20b", b"/status#x"],
           [b"*", b"http://x/y", b"/a b", b"/\x7f", b"/\xe9", b"//[::1/x?a", b""])
VERSIONS = ([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"], [b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 ", b"HTTP/1", b"HTTP/1.2"])
FIELDS = ([b"Connection: close", b"Connection: keep-alive", b"Expect: 100-continue", b"X: a\tb", b"X: \xe9t\xe9",
           b"X-Y_Z~!: ok", b"X:", b"Accept: */*", b"Connection: keep-alive, close"],
          [b"Host:", b"Host: x", b"Expect: nothing", b"Transfer-Encoding: chunked", b"Transfer-Encoding: identity",
           b"X: a\x01b", b"X : y", b" folded: y", b"\tfolded", b"X(y): z", b"X: a\nContent-Length: 25", b"X: a\rb",
           b"Content-Length:  3 ", b"Content-Length: +3", b"Content-Length: 0x3", b"Content-Length: 3, 3",
           b"Content-Length: 003", b"Content-Length: 3"])
ENDINGS = [b"\n", b"\r", b"\r\r\n", b"\n\r", b""]


def pick(rng: random.Random, pools: tuple[list[bytes], list[bytes]]) -> bytes:
    return rng.choice(pools[0] if rng.random() < 0.85 else pools[1])


def generate(rng: random.Random) -> bytes:
    """One connection's worth of bytes: a few requests, well and badly formed, sometimes mutated."""
    out = b""
    for _ in range(rng.randint(1, 3)):
        fields = [pick(rng, FIELDS) for _ in range(rng.randint(0, 3))]
        if rng.random() < 0.9:
            fields.insert(rng.randint(0, len(fields)), b"Host: x")
        body = b""
        if rng.random() < 0.4:
            body = rng.choice([b"abc", b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n", b"0\r\n\r\n", b"x" * 30])
            length = rng.choice([len(body), len(body), len(body) - 1, len(body) + 1, 25])
            fields.insert(rng.randint(0, len(fields)), b"Content-Length: %d" % max(length, 0))
        lines = [b" ".join([pick(rng, METHODS), pick(rng, TARGETS), pick(rng, VERSIONS)]), *fields, b""]
        out += b"".join(line + (rng.choice(ENDINGS) if rng.random() < 0.03 else b"\r\n") for line in lines) + body
    if rng.random() < 0.3:  # mutate: replace, insert or delete one byte
        at = rng.randrange(len(out))
        byte = bytes([rng.choice([0, 9, 10, 13, 32, 58, 127, 255, rng.randrange(256)])])
        out = rng.choice([out[:at] + byte + out[at + 1 :], out[:at] + byte + out[at:], out[:at] + out[at + 1 :]])
    return out


def test_never_more_requests_than_h11_parses() -> None:
    rng = random.Random(9112)
    accepted = 0
    for i in range(10_000):
        data = generate(rng)
        ours = [v for v in answered(data) if isinstance(v, str)]
        theirs = h11_requests(data)
        assert len(ours) <= theirs, f"case {i}: sidecar {ours}, h11 {theirs}: {data!r}"
        accepted += bool(ours)
    assert accepted > 2_000, "the generator must also make requests both parsers accept"


# --- the server itself, over loopback -------------------------------------------------------------------


@pytest.fixture
async def http() -> AsyncIterator[HttpServer]:
    async def handle(request: Request) -> Response:
        return Response(200, f"{request.method} {request.path} {len(request.body)}\r\n".encode())

    srv = HttpServer(handle, header_timeout=30)
    await srv.start("127.0.0.1", 0)
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
def server(http: HttpServer) -> int:
    return http.port


async def _talk(port: int, data: bytes) -> bytes:
    """Send ``data``, end the sending side, and read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


def _statuses(answer: bytes) -> list[int]:
    return [int(line.split(b" ")[1]) for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


async def test_the_smuggling_request_gets_one_answer(server: int) -> None:
    assert _statuses(await _talk(server, SMUGGLE)) == [400]


async def test_the_server_answers_what_the_parser_accepts(server: int) -> None:
    """The parser's verdicts hold for the server: a sample of the generated streams, over loopback."""
    rng = random.Random(7230)
    for _ in range(150):
        data = generate(rng)
        served = [s for s in _statuses(await _talk(server, data)) if s == 200]
        assert len(served) == len([v for v in answered(data) if isinstance(v, str)]) <= h11_requests(data), data


async def test_expect_100_continue_gets_a_100_before_the_body(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    writer.write(b"POST /sync HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
    assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"body")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert await reader.readline() == b"POST /sync 4\r\n"
    writer.write(b"POST /sync HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 200 "), "the body came with the head: no 100 needed"
    writer.close()


async def test_a_body_still_arriving_while_reading_is_paused_is_read(http: HttpServer) -> None:
    """Pipelined requests and most of a body, together past MAX_BUFFER: reading pauses with the last
    request's head complete and its body not. The rest of the body is read then, not after a 408."""
    small = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    body = b"b" * MAX_BODY
    big = b"POST /sync HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
    reader, writer = await asyncio.open_connection("127.0.0.1", http.port)
    writer.write(small * 400 + big + body[:-100])
    deadline = asyncio.get_running_loop().time() + 10
    while not any(c.read_paused for c in http._conns):  # the condition this test is about
        assert asyncio.get_running_loop().time() < deadline, "reading never paused"
        await asyncio.sleep(0.001)
    answers = asyncio.ensure_future(_read_answers(reader, 401))
    writer.write(body[-100:])
    bodies = await asyncio.wait_for(answers, 20)  # far below the 30 s header timeout
    assert bodies[-1] == b"POST /sync %d\r\n" % MAX_BODY
    writer.close()


async def _read_answers(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    bodies = []
    for _ in range(count):
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        bodies.append(await reader.readline())
    return bodies

