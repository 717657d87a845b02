"""The node REST client in process: method choice, request bytes, parsing and de-chunking, one request at a time."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.noderest import MAX_ANSWER, NodeRest, NodeRestError, dechunk, method_for, parse, request_bytes
from tests.fakenode import FakeNode, method_accepted


@pytest.mark.parametrize(("command", "method"), [
    ("get status", "GET"),
    ("GET STATUS where format = json", "GET"),
    ("get !local_scripts", "GET"),
    ("help", "GET"),
    ("test node", "GET"),
    ("blockchain get operator where name = x", "GET"),
    ("blockchain read", "GET"),
    ("blockchain drop policy", "POST"),  # two words win over one
    ("query status", "GET"),
    ("job status", "GET"),
    ("job run 3", "POST"),
    ("time file get", "GET"),  # three words
    ("file get !x", "GET"),
    ("file to !dest_dir/x.json", "GET"),
    ("sql db format = table select 1", "GET"),  # either: GET
    ("process /app/deployment-scripts/node-deployment/main.al", "POST"),
    ("set debug on", "POST"),
    ("run tcp server", "POST"),
    ("reset event log", "POST"),
    ("exit tcp", "POST"),
    ("", "POST"),
])
def test_method_for(command: str, method: str) -> None:
    assert method_for(command) == method


@pytest.mark.parametrize("command", [
    "get status", "get event log", "help", "blockchain get * bring.count", "blockchain drop policy x",
    "process /x.al", "set x = 1", "run tcp server", "sql d select 1", "print hello", "wait 1",
    "time file get", "time file summary", "job run 1", "job stop all", "query explain 1", "analyze output",
    "subprocess ls", "file retrieve x", "reset error log", "Get Status",
])
def test_the_method_chosen_is_the_one_the_node_accepts(command: str) -> None:
    """Against the stand-in's copy of the node's own decision (written from the node's source)."""
    accepted, _ = method_accepted(method_for(command), command)
    assert accepted


def test_the_wrong_method_is_refused() -> None:
    assert method_accepted("GET", "process /x.al") == (False, "process")
    assert method_accepted("POST", "get status") == (False, "get")
    assert method_accepted("GET", "set x = 1")[0] is False


def test_request_bytes() -> None:
    raw = request_bytes("POST", "/", "::1", 32149, {"User-Agent": "AnyLog/1.23", "command": "process /a b.al"})
    assert raw == (b"POST / HTTP/1.1\r\nHost: [::1]:32149\r\nUser-Agent: AnyLog/1.23\r\ncommand: process /a b.al\r\n"
                   b"Connection: close\r\n\r\n")
    for bad in ("get status\r\nX: y", "get\nstatus", "get\x00"):
        with pytest.raises(NodeRestError) as info:
            request_bytes("GET", "/", "h", 1, {"command": bad})
        assert info.value.reason == "bad-command"


@pytest.mark.parametrize(("body", "decoded"), [
    (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
    (b"5;ext=1\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b'{"err_code": 6}', b'{"err_code": 6}'),  # the node's error bodies claim chunked without framing
    (b"", b""),
    (b"zz\r\nhello", b"zz\r\nhello"),
    (b"-5\r\nhello", b"-5\r\nhello"),
    (b"5", b"5"),
])
def test_dechunk(body: bytes, decoded: bytes) -> None:
    assert dechunk(body) == decoded


def test_parse_answers() -> None:
    ok = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nrunningEXTRA", 0.1)
    assert (ok.status, ok.reason_phrase, ok.text, ok.headers["connection"]) == (200, "OK", "running", "close")
    assert ok.error() is None
    chunked = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 0)
    assert chunked.body == b"abc"
    json_phrase = parse(b'HTTP/1.1 400 {"err_code": 6}\r\nTransfer-Encoding: chunked\r\n\r\n{"err_code": 6}', 0)
    assert json_phrase.status == 400 and json_phrase.json() == {"err_code": 6}
    assert json_phrase.error() is not None and "err_code 6" in json_phrase.error()  # type: ignore[operator]
    no_status = parse(b"HTTP/1.1 204\r\n\r\n", 0)
    assert no_status.status == 204 and no_status.reason_phrase == ""


@pytest.mark.parametrize(("status", "body", "refused"), [
    (200, b"el@1.2.3.4:32048 running", False),
    (200, b'{"err_code": 26, "err_text": "Failed to read script"}', True),  # an error body is a refusal
    (400, b'{"err_code": 156, "err_text": "Wrong HTTP method used"}', True),
    (404, b"", True),
    (500, b"Internal error", False),  # the node's trouble, not a refusal: retried
    (200, b"[1, 2]", False),
])
def test_error_tells_a_refusal(status: int, body: bytes, refused: bool) -> None:
    answer = parse(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n" % (status, len(body)) + body, 0)
    assert (answer.error() is not None) == refused


@pytest.mark.parametrize("raw", [
    b"",
    b"HTTP/1.1 200 OK\r\n",  # no end of head
    b"\x00\xffthis is not HTTP\r\n\r\n",
    b"HTTP/1.1 \xb2\xb2 OK\r\n\r\n",  # digits to isdigit(), not to int()
    b"SSH-2.0-OpenSSH\r\n\r\n",
    b"HTTP/1.1 " + b"9" * 5000 + b" OK\r\n\r\n",
])
def test_parse_refuses_what_is_not_http(raw: bytes) -> None:
    with pytest.raises(NodeRestError) as info:
        parse(raw, 0)
    assert info.value.reason == "bad-response"


async def _server(answer: bytes, *, hold: float = 0.0) -> tuple[asyncio.Server, int, list[bytes]]:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        if hold:
            await asyncio.sleep(hold)
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


async def test_command_sends_the_method_and_reads_to_the_close() -> None:
    body = b"x" * 200_000  # more than one read
    server, port, seen = await _server(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body)
    try:
        answer = await NodeRest("127.0.0.1", port).command("process /a.al", timeout=5)
    finally:
        server.close()
    assert answer.body == body
    assert seen[0].startswith(b"POST / HTTP/1.1\r\n") and b"command: process /a.al\r\n" in seen[0]
    assert b"User-Agent: AnyLog/1.23\r\n" in seen[0]


async def test_health_has_no_command() -> None:
    server, port, seen = await _server(b'HTTP/1.1 200 OK\r\n\r\n{"status": "healthy"}')
    try:
        answer = await NodeRest("127.0.0.1", port).health(timeout=5)
    finally:
        server.close()
    assert answer.json() == {"status": "healthy"}
    assert seen[0].startswith(b"GET /health HTTP/1.1\r\n") and b"command" not in seen[0].lower()


async def test_an_endless_answer_is_cut_at_the_cap() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
        try:
            while True:
                writer.write(b"y" * 65536)
                await writer.drain()
        except ConnectionError:
            pass

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        answer = await NodeRest("127.0.0.1", server.sockets[0].getsockname()[1]).command("get x", timeout=10)
    finally:
        server.close()
    assert len(answer.body) <= MAX_ANSWER


async def test_one_request_at_a_time_and_the_lock_wait_is_not_the_timeout(node: FakeNode) -> None:
    client = NodeRest("127.0.0.1", node.rest.port)
    answers = await asyncio.gather(*(client.command("get status", timeout=2) for _ in range(20)))
    assert all(a.status == 200 for a in answers)
    assert node.rest.max_open == 1 and node.rest.commands["get status"] == 20


@pytest.mark.parametrize(("setup", "reason"), [("closed", "refused"), ("hang", "timeout"), ("reset", "reset")])
async def test_failures_have_reasons(node: FakeNode, setup: str, reason: str) -> None:
    if setup == "closed":
        node.rest.close()
    else:
        node.rest.mode = setup
    with pytest.raises(NodeRestError) as info:
        await NodeRest("127.0.0.1", node.rest.port).command("get status", timeout=0.3)
    assert info.value.reason == reason
