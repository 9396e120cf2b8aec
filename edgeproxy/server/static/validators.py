"""Validators (ETag, Last-Modified), conditional requests and Range, as pure functions.

The order of the checks is RFC 9110 section 13.2.2: If-Match, else If-Unmodified-Since
(412); If-None-Match, else If-Modified-Since (304 for GET/HEAD); then Range with If-Range.
"""

from __future__ import annotations

from calendar import timegm
from email.utils import formatdate, parsedate_tz

# More ranges than this in one request: the Range field is ignored and the whole file
# sent (RFC 9110 14.2 allows it; it stops a request of many tiny or overlapping ranges from
# costing far more than the file). nginx's max_ranges is unlimited by default.
MAX_RANGES = 32

PRECONDITION_FAILED = 412
NOT_MODIFIED = 304


def etag(size: int, mtime_ns: int, ino: int) -> bytes:
    """A strong validator: it changes whenever the file's size, time or inode do."""
    return b'"%x-%x-%x"' % (ino, mtime_ns, size)


def http_date(seconds: float) -> bytes:
    return formatdate(int(seconds), usegmt=True).encode()


def parse_http_date(value: bytes) -> int | None:
    """Seconds since the epoch of an HTTP date, None when it is not one."""
    try:
        parsed = parsedate_tz(value.decode("latin-1"))
    except (ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    try:
        return timegm(parsed[:6]) - (parsed[9] or 0)
    except (ValueError, OverflowError):
        return None


def _tags(value: bytes) -> list[bytes]:
    return [tag.strip() for tag in value.split(b",") if tag.strip()]


def _weak_match(tag: bytes, current: bytes) -> bool:
    return (tag[2:] if tag.startswith(b"W/") else tag) == current


def check_conditions(
    fields: dict[bytes, bytes], current_tag: bytes, mtime: int, get_or_head: bool
) -> int:
    """0 to go on, or the status that answers instead (412, or 304 for GET/HEAD)."""
    if_match = fields.get(b"if-match")
    if if_match is not None:
        tags = _tags(if_match)
        if b"*" not in tags and current_tag not in tags:  # strong comparison
            return PRECONDITION_FAILED
    else:
        since = fields.get(b"if-unmodified-since")
        if since is not None:
            date = parse_http_date(since)
            if date is not None and mtime > date:
                return PRECONDITION_FAILED
    if_none = fields.get(b"if-none-match")
    if if_none is not None:
        tags = _tags(if_none)
        if b"*" in tags or any(_weak_match(tag, current_tag) for tag in tags):
            return NOT_MODIFIED if get_or_head else PRECONDITION_FAILED
    elif get_or_head:
        since = fields.get(b"if-modified-since")
        if since is not None:
            date = parse_http_date(since)
            if date is not None and mtime <= date:
                return NOT_MODIFIED
    return 0


def if_range_holds(value: bytes, current_tag: bytes, mtime: int) -> bool:
    """If-Range: the range applies only to the representation the client already has."""
    value = value.strip()
    if value.startswith(b'"'):
        return value == current_tag  # strong comparison
    if value.startswith(b"W/"):
        return False
    date = parse_http_date(value)
    return date is not None and date == mtime


Ranges = list[tuple[int, int]]  # (first byte, length)
UNSATISFIABLE: Ranges = []


def parse_range(value: bytes, size: int) -> Ranges | None:
    """The byte ranges a Range field asks of a file of `size` bytes.

    None: the field is to be ignored (not `bytes=`, malformed, too many ranges): send the
    whole file. An empty list: no range overlaps the file (416).
    """
    value = value.strip()
    if value[:6].lower() != b"bytes=":
        return None
    specs = value[6:].split(b",")
    if len(specs) > MAX_RANGES:
        return None
    ranges: Ranges = []
    seen = False
    for spec in specs:
        spec = spec.strip()
        if not spec:
            continue
        seen = True
        first_text, dash, last_text = spec.partition(b"-")
        if not dash:
            return None
        first_text, last_text = first_text.strip(), last_text.strip()
        if not _digits(first_text):
            if not _digits(last_text) or first_text:
                return None
            suffix = int(last_text)  # `-N`: the last N bytes
            if suffix == 0:
                continue
            start = max(size - suffix, 0)
            end = size - 1
        else:
            start = int(first_text)
            if last_text:
                if not _digits(last_text):
                    return None
                end = int(last_text)
                if end < start:
                    return None
                end = min(end, size - 1)
            else:
                end = size - 1
        if start < size:
            ranges.append((start, end - start + 1))
    return ranges if seen else None


def _digits(text: bytes) -> bool:
    return text.isdigit() and len(text) <= 19
