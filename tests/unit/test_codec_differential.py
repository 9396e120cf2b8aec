"""Both codecs give one answer: request streams built from valid seeds, then mutated (request
line, header names and values, framing fields, chunk lines, line endings, pipelining, how the
bytes are split into reads), must give the same requests or the same refusal status.

The normal suite runs a bounded, derandomized number of examples. For a long run before a
release set EDGEPROXY_FUZZ_EXAMPLES (`make fuzz`): examples are then drawn at random, and an
input on which the codecs disagree is saved to tests/corpus/differential/ (commit it with
its fix), whose files every run of the suite replays whole, by line and by byte.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edgeproxy.http.codec import CODECS
from tests.unit.codec_helpers import MODES, Outcome, pieces, read_message, read_stream

FOUND = Path(__file__).parent.parent / "corpus" / "differential"
LONG_RUN = int(os.environ.get("EDGEPROXY_FUZZ_EXAMPLES", "0"))
BOUNDED_EXAMPLES = 400
MAX_HEAD = 2048  # small, so that the size limits are within the strategies' reach

pytestmark = pytest.mark.skipif(len(CODECS) < 2, reason="one codec installed: nothing to compare")

# --- the parts of a request, valid first, then the mutations the codecs must agree on ---

# fmt: off
METHODS = st.sampled_from([
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"PURGE", b"PROPFIND",
    b"BREW", b"X-CUSTOM", b"FET", b"DELTE", b"M_SEARCH", b"GETS", b"GE", b"A", b"TRACE",
    b"get", b"Get", b"G(T", b"GE T", b"CONNECT", b"PRI", b"", b"M.SEARCH", b"2GET",
])
PATHS = st.sampled_from([
    b"/", b"/a", b"/a/b?c=d&e", b"/%41%2f", b"/~user/x.html", b"/a;p=1", b"/?", b"/a?b?c",
    b"/a#b", b"/#", b"/?#", b"/a b", b"a", b"*", b"//x", b"/a\x7f", b"/a\x80", b"/\xff",
    b"/\x01", b"/{x}", b"/a|b", b'/"q"', b"/<a>", b"/a\\b", b"/^`", b"/[::]", b"ftp://h/x",
    b"http://h/x", b"HTTP://H:80", b"https://h:443/p?q", b"http://u@h/", b"http:///x",
    b"http://h/x#f", b"example.com:443", b"h:80", b"/" + b"a" * 2100,
])
VERSIONS = st.sampled_from([
    b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.8", b"HTTP/1.9", b"HTTP/9.1", b"HTTP/2.0", b"HTTP/0.9",
    b"HTTP/1.32", b"HTTP/11", b"http/1.1", b"HTTP/1.", b"HTTP/1.1 ", b"HTTP /1.1", b"",
    b"HTTP/3.0", b"HTTP/1.1x", b"HTTPS/1.1", b"HTTP/a.b", b"RTSP/1.0", b"ICE/1.0",
])
SEPARATORS = st.sampled_from([b" "] * 6 + [b"  ", b"\t", b"", b" \t", b"   "])
NAMES = st.sampled_from([
    b"Host", b"User-Agent", b"Accept", b"X-A", b"x-b", b"Connection", b"Expect", b"Cookie",
    b"X_Under", b"X A", b"X-A ", b" X-A", b"", b"X:A", b"X\x01", b"X\x80", b"X@Y", b"!#$%&",
    b"Content-Length", b"Transfer-Encoding", b"content-length", b"TRANSFER-ENCODING",
    b"Upgrade", b"Keep-Alive", b"TE", b"Trailer", b"Content-Length ", b"Transfer_Encoding",
])
VALUES = st.sampled_from([
    b"a", b"value", b"  padded  ", b"", b"a, b", b"\tt", b"x\x80y", b"\xff", b"a\x7fb",
    b"a\x00b", b"a\x01b", b"close", b"keep-alive", b"Keep-Alive", b"upgrade", b"100-continue",
    b"a\rb", b"a\nb", b"a\r\n b", b"x" * 300, b"x" * 2100, b"websocket", b"h2c", b"chunked",
])
HOSTS = st.sampled_from([
    b"a", b"example.com", b"[::1]:8080", b"a:80", b"", b"a/b", b"a b", b"a:99999", b"a:", b"[x]",
    b"\xc3\xa9", b"a_b",
])
CONTENT_LENGTHS = st.sampled_from([
    b"5", b"05", b"0", b"5, 5", b"5,5", b"5, 6", b"+5", b"-5", b" 5", b"5 ", b"0x5", b"5x", b"",
    b"99999999999999999999", b"4", b"6", b"5 5", b"\xd9\xa5", b"\t5", b"5,", b",",
])
CODINGS = st.sampled_from([
    b"chunked", b"Chunked", b"CHUNKED", b"identity", b"xchunked", b"gzip, chunked", b"gzip",
    b"chunked, gzip", b"chunked, chunked", b"chunked,", b", chunked", b"", b"chunked ;q=1",
    b"chunked\x00", b"identity, chunked", b"chunkedx", b",", b"chunked, ,",
])
EXPECTS = st.sampled_from([b"100-continue", b"100-Continue", b"foo", b"100-continue, foo", b""])
CHUNK_SIZES = st.sampled_from([
    b"%x", b"%X", b"0%x", b"0x%x", b"%x ", b" %x", b"%x\t", b"-%x", b"+%x", b"%x;", b"%x;a=b",
    b'%x;a="q"', b"%x;" + b"e" * 3000, b"%x;" + b"e" * 5000, b"%xg", b"", b"f" * 18,
])
EOLS = st.sampled_from([b"\r\n"] * 12 + [b"\n", b"\r", b"\r\r\n", b"\n\r", b" \r\n"])
# fmt: on


@st.composite
def chunked_body(draw: st.DrawFn, body: bytes, odds: int) -> bytes:
    """`body` in chunks; sometimes with odd size lines, extensions, missing CRLFs, trailers."""

    def part(valid: st.SearchStrategy[bytes], mutated: st.SearchStrategy[bytes]) -> bytes:
        return draw(mutated if odds and draw(st.integers(1, odds)) == 1 else valid)

    out = []
    rest = body
    while rest:
        size = draw(st.integers(1, len(rest)))
        chunk, rest = rest[:size], rest[size:]
        line = part(st.sampled_from([b"%x", b"%x;ext=1"]), CHUNK_SIZES)
        if b"%" in line:
            line = line.replace(b"%x", b"%x" % size).replace(b"%X", b"%X" % size)
        after = part(st.just(b"\r\n"), st.sampled_from([b"", b"\n", b"X", b"\r"]))
        out.append(line + part(st.just(b"\r\n"), EOLS) + chunk + after)
    out.append(b"0" + part(st.just(b""), st.sampled_from([b";e=1", b"0", b"x"])) + b"\r\n")
    for _ in range(draw(st.integers(0, 2))):
        out.append(part(st.just(b"T"), NAMES) + b": " + part(st.just(b"1"), VALUES) + b"\r\n")
    out.append(part(st.just(b"\r\n"), st.sampled_from([b"\n", b"", b"\r\n\r\n"])))
    return b"".join(out)


@st.composite
def request(draw: st.DrawFn) -> bytes:
    """One request: each part valid, or mutated at a rate drawn per request (none to often),
    so that valid streams, single faults and several faults are all common."""
    odds = draw(st.sampled_from([0, 40, 15, 5]))  # one part in `odds` is mutated

    def part(valid: st.SearchStrategy[bytes], mutated: st.SearchStrategy[bytes]) -> bytes:
        return draw(mutated if odds and draw(st.integers(1, odds)) == 1 else valid)

    method = part(st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD"]), METHODS)
    target = part(st.sampled_from([b"/", b"/a?b=c", b"/x/y.html"]), PATHS)
    version = part(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]), VERSIONS)
    line = method + part(st.just(b" "), SEPARATORS) + target
    if version:
        line += part(st.just(b" "), SEPARATORS) + version
    fields: list[tuple[bytes, bytes]] = []
    if part(st.just(b"host"), st.sampled_from([b"", b"host", b"hosts"])) == b"host":
        fields.append((b"Host", part(st.just(b"a"), HOSTS)))
    elif part(st.just(b"1"), st.just(b"2")) == b"2":
        fields += [(b"Host", b"a"), (b"Host", part(st.just(b"a"), HOSTS))]
    for _ in range(draw(st.integers(0, 3))):
        fields.append((part(st.just(b"X-A"), NAMES), part(st.just(b"v"), VALUES)))
    body = draw(st.sampled_from([b"", b"hello", b"0123456789abcdef" * 3]))
    framing = part(
        st.sampled_from(["none", "length", "chunked"]), st.sampled_from(["both", "length"])
    )
    if framing in ("length", "both"):
        length = part(st.just(b"%d" % len(body)), CONTENT_LENGTHS)
        fields.append((b"Content-Length", length))
        if part(st.just(b""), st.just(b"again")):
            fields.append((b"Content-Length", part(st.just(length), CONTENT_LENGTHS)))
    if framing in ("chunked", "both"):
        fields.append((b"Transfer-Encoding", part(st.just(b"chunked"), CODINGS)))
        if part(st.just(b""), st.just(b"again")):
            fields.append((b"Transfer-Encoding", draw(CODINGS)))
    if draw(st.integers(0, 5)) == 0:
        fields.append((b"Expect", part(st.just(b"100-continue"), EXPECTS)))
        if part(st.just(b""), st.just(b"again")):
            fields.append((b"Expect", draw(EXPECTS)))
    fields = draw(st.permutations(fields))
    colon = st.sampled_from([b": ", b":", b":  ", b" : ", b":\t"])
    head = line + part(st.just(b"\r\n"), EOLS)
    for name, value in fields:
        head += name + part(st.just(b": "), colon) + value + part(st.just(b"\r\n"), EOLS)
    head += part(st.just(b"\r\n"), EOLS)
    if framing in ("chunked", "both"):
        return head + draw(chunked_body(body, odds))
    return head + body


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """A few byte-level edits anywhere: what the structured mutations do not think of."""
    interesting = st.sampled_from(list(b" \t\r\n:;,#?/\\\x00\x7f\x80\xff0aAzZ-_\"'"))
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["insert", "delete", "replace"]))
        if edit == "insert":
            data = data[:at] + bytes([draw(interesting)]) + data[at:]
        elif data and at < len(data):
            tail = data[at + 1 :]
            data = data[:at] + (bytes([draw(interesting)]) if edit == "replace" else b"") + tail
    return data


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    """Pipelined requests (sometimes with empty lines between), and the reads they come in."""
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        parts.append(draw(st.sampled_from([b""] * 6 + [b"\r\n", b"\r\n\r\n", b"\n", b"\r"])))
        parts.append(draw(request()))
    data = b"".join(parts)
    if draw(st.integers(0, 4)) == 0:
        data = draw(mutated_bytes(data))
    mode = draw(st.sampled_from(["whole", "whole", "cuts", "lines", "bytes"]))
    if mode != "cuts":
        return data, list(pieces(data, mode))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=4)))
    bounds = [0, *cuts, len(data)]
    return data, [data[a:b] for a, b in itertools.pairwise(bounds)]


def outcomes(reads: list[bytes]) -> dict[str, Outcome]:
    return {name: read_stream(CODECS[name](), reads, MAX_HEAD) for name in sorted(CODECS)}


_saved: list[Path] = []  # what this run saved so far


def save_found(data: bytes) -> None:
    """Keep a disagreement as a regression case. Hypothesis shrinks a failure through many
    failing calls and replays the smallest last: each save replaces this run's previous one."""
    while _saved:
        _saved.pop().unlink(missing_ok=True)
    FOUND.mkdir(exist_ok=True)
    path = FOUND / f"found-{hashlib.sha1(data).hexdigest()[:12]}.http"
    if not path.exists():  # never remove a case kept by an earlier run
        path.write_bytes(data)
        _saved.append(path)


if LONG_RUN:
    SETTINGS = settings(
        max_examples=LONG_RUN,
        deadline=None,
        database=None,  # what a run finds is kept in FOUND instead
        suppress_health_check=list(HealthCheck),
    )
else:
    # Derandomized: the same examples on every run, so the suite is repeatable.
    SETTINGS = settings(
        max_examples=BOUNDED_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@SETTINGS
@given(streams())
@example((b"GET   /1 HTTP/1.1\r\nHost: a\r\n\r\n", [b"GET   /1 HTTP/1.1\r\nHost: a\r\n\r\n"]))
def test_both_codecs_give_the_same_requests_or_the_same_refusal(
    stream: tuple[bytes, list[bytes]],
) -> None:
    data, reads = stream
    results = outcomes(reads)
    first, *others = results.values()
    if LONG_RUN and any(other != first for other in others):
        save_found(data)
    assert all(other == first for other in others), (data, results)


FOUND_FILES = sorted(FOUND.glob("*.http")) if FOUND.is_dir() else []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", FOUND_FILES, ids=lambda p: p.stem)
def test_found_disagreements_stay_fixed(path: Path, mode: str) -> None:
    results = outcomes(list(pieces(path.read_bytes(), mode)))
    first, *others = results.values()
    assert all(other == first for other in others), results


@pytest.mark.parametrize("codec_name", sorted(CODECS))
@pytest.mark.parametrize("mode", MODES)
def test_a_head_keeps_the_field_names_as_the_client_spelled_them(codec_name: str, mode: str):
    head, body = read_message(
        CODECS[codec_name](),
        b"POST / HTTP/1.1\r\nHost: a\r\ncontent-LENGTH: 2\r\nX_Drop: 1\r\nX-Thing: v\r\n\r\nhi",
        mode,
    )
    assert body == b"hi"
    assert head.headers == [(b"host", b"a"), (b"content-length", b"2"), (b"x-thing", b"v")]
    assert head.spelled == [(b"Host", b"a"), (b"content-LENGTH", b"2"), (b"X-Thing", b"v")]
