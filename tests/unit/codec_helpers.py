"""Helpers shared by the codec tests: feeding bytes in pieces, and reading what comes out."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from edgeproxy.errors import ClientError
from edgeproxy.http.events import END_OF_MESSAGE, NEED_DATA, RequestHead
from edgeproxy.http.interface import HeadCodec
from edgeproxy.http.reader import RequestReader

MODES = ("whole", "lines", "bytes")
MAX_HEAD = 16 * 1024


def pieces(data: bytes, mode: str) -> Iterator[bytes]:
    """`data` as one read, one read per line, or one read per byte."""
    if mode == "whole":
        yield data
    elif mode == "lines":
        yield from data.splitlines(keepends=True)
    elif mode == "bytes":
        for i in range(len(data)):
            yield data[i : i + 1]
    else:
        raise ValueError(f"unknown mode {mode!r}")


def read_message(codec: HeadCodec, data: bytes, mode: str) -> tuple[RequestHead, bytes]:
    """Feed `data` in pieces; return the head and the body of the first message."""
    reader = RequestReader(codec, MAX_HEAD)
    head: RequestHead | None = None
    body = b""
    for piece in pieces(data, mode):
        reader.feed(piece)
        while (event := reader.next_event()) is not NEED_DATA:
            if event is END_OF_MESSAGE:
                assert head is not None
                return head, body
            if isinstance(event, RequestHead):
                head = event
            else:
                assert isinstance(event, bytes)
                body += event
    raise AssertionError("the message never ended")


def comparable(head: RequestHead, body: bytes) -> tuple[object, ...]:
    """What must not differ between codecs (h11 lowercases Transfer-Encoding's value)."""
    headers = [(n, v.lower() if n == b"transfer-encoding" else v) for n, v in head.headers]
    return (
        head.method, head.target, head.version, headers, head.host, head.content_length,
        head.chunked, head.keep_alive, head.expect_continue, body,
    )  # fmt: skip


def spelled_names(head: RequestHead) -> list[bytes]:
    """The field names as they go upstream: as the client spelled them."""
    return [name for name, _ in (head.spelled or head.headers)]


Outcome = tuple[tuple[tuple[object, ...], ...], int | None]


def read_stream(codec: HeadCodec, reads: Iterable[bytes], max_head: int = MAX_HEAD) -> Outcome:
    """Every request in a pipelined stream, as the connection reads them: the complete
    requests (comparable), then the status a refusal would be answered with (or None).

    A request still incomplete when the reads end is not counted (the connection would
    wait for more), and neither is anything after a refusal (the connection closes).
    """
    reader = RequestReader(codec, max_head)
    requests: list[tuple[object, ...]] = []
    head: RequestHead | None = None
    body: list[bytes] = []
    try:
        for data in reads:
            reader.feed(data)
            while (event := reader.next_event()) is not NEED_DATA:
                if isinstance(event, RequestHead):
                    head, body = event, []
                elif event is END_OF_MESSAGE:
                    assert head is not None
                    requests.append((*comparable(head, b"".join(body)), spelled_names(head)))
                    head = None
                    reader.start_next()
                else:
                    assert isinstance(event, bytes)
                    body.append(event)
    except ClientError as exc:
        return tuple(requests), exc.status
    return tuple(requests), None
