"""Body framing shared by every codec: Content-Length, chunked, and read-until-close.

Each decoder consumes bytes from the front of a bytearray and returns body bytes; `done`
turns true at the end of the body. Chunked decoding is strict on purpose: it is where
request smuggling lives, so anything unusual is an error rather than a guess.
"""

from __future__ import annotations

from typing import Final

from edgeproxy.http.logtext import printable

_HEX_DIGITS: Final = frozenset(b"0123456789abcdefABCDEF")
# Single bytes are looked for as ints (see edgeproxy.http.rules): no TypeError per search.
_LF: Final = 0x0A
_CR: Final = 0x0D
_COLON: Final = 0x3A
MAX_CHUNK_LINE: Final = 4096  # chunk-size line incl. extensions; nginx refuses far less generous
MAX_CHUNK_SIZE_DIGITS: Final = 16  # 2**64; larger is an overflow attempt


class FramingError(Exception):
    """The body framing is broken (client: 400, upstream: 502)."""


class BodyDecoder:
    done: bool = False

    def decode(self, buf: bytearray) -> bytes:
        raise NotImplementedError

    def eof(self) -> None:
        """The peer closed; raise FramingError unless that ends the body."""
        if not self.done:
            raise FramingError("connection closed before the body was complete")


class LengthDecoder(BodyDecoder):
    __slots__ = ("done", "remaining")

    def __init__(self, length: int) -> None:
        self.remaining = length
        self.done = length == 0

    def decode(self, buf: bytearray) -> bytes:
        take = min(self.remaining, len(buf))
        if take == len(buf):
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:take])
            del buf[:take]
        self.remaining -= take
        self.done = self.remaining == 0
        return data

    def take(self, data: bytes) -> tuple[bytes, bytes]:
        """The body bytes in `data` (no copy when all of it is body) and what follows."""
        remaining = self.remaining
        if len(data) <= remaining:
            self.remaining = remaining = remaining - len(data)
            self.done = remaining == 0
            return data, b""
        self.remaining = 0
        self.done = True
        return data[:remaining], data[remaining:]


class UntilCloseDecoder(BodyDecoder):
    """Responses with neither length nor chunking end when the upstream closes."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False

    def decode(self, buf: bytearray) -> bytes:
        data = bytes(buf)
        buf.clear()
        return data

    def eof(self) -> None:
        self.done = True


class ChunkedDecoder(BodyDecoder):
    """RFC 9112 section 7.1; trailers are read, size-capped and dropped."""

    __slots__ = ("_chunk_left", "_state", "_trailer_bytes", "done", "max_trailer")

    def __init__(self, max_trailer: int) -> None:
        self.done = False
        self.max_trailer = max_trailer
        self._state = "size"  # size | data | data_crlf | trailer
        self._chunk_left = 0
        self._trailer_bytes = 0

    def decode(self, buf: bytearray) -> bytes:
        out: list[bytes] = []
        while buf and not self.done:
            if self._state == "size":
                if not self._read_size_line(buf):
                    break
            elif self._state == "data":
                take = min(self._chunk_left, len(buf))
                out.append(bytes(buf[:take]))
                del buf[:take]
                self._chunk_left -= take
                if self._chunk_left == 0:
                    self._state = "data_crlf"
            elif self._state == "data_crlf":
                if len(buf) < 2:
                    break
                if buf[:2] != b"\r\n":
                    raise FramingError("chunk data not followed by CRLF")
                del buf[:2]
                self._state = "size"
            elif not self._read_trailer_line(buf):
                break
        return b"".join(out)

    def _line(self, buf: bytearray, limit: int) -> bytes | None:
        end = buf.find(b"\r\n", 0, limit + 2)
        if end < 0:
            if len(buf) > limit:
                raise FramingError("chunk line too long")
            if _LF in buf:
                raise FramingError("bare LF in chunked framing")
            return None
        line = bytes(buf[:end])
        del buf[: end + 2]
        if _LF in line or _CR in line:
            raise FramingError("bare CR or LF in chunked framing")
        return line

    def _read_size_line(self, buf: bytearray) -> bool:
        line = self._line(buf, MAX_CHUNK_LINE)
        if line is None:
            return False
        size_part = line.split(b";", 1)[0]
        if (
            not size_part
            or len(size_part) > MAX_CHUNK_SIZE_DIGITS
            or not _HEX_DIGITS.issuperset(size_part)
        ):
            raise FramingError(f'invalid chunk size "{printable(size_part[:20])}"')
        self._chunk_left = int(size_part, 16)
        self._state = "data" if self._chunk_left else "trailer"
        return True

    def _read_trailer_line(self, buf: bytearray) -> bool:
        line = self._line(buf, self.max_trailer)
        if line is None:
            return False
        self._trailer_bytes += len(line) + 2
        if self._trailer_bytes > self.max_trailer:
            raise FramingError("trailer section too large")
        if not line:
            self.done = True
        elif line[:1] in (b" ", b"\t") or _COLON not in line:
            raise FramingError("malformed trailer field")
        return True
