"""Content-Type from a file's extension: a built-in table, `http.types` on top of it."""

from __future__ import annotations

from collections.abc import Iterable

DEFAULT_TYPE = b"application/octet-stream"  # nginx default_type for unknown extensions

# The web's usual types (the core of nginx's mime.types, plus today's fonts and images).
BUILTIN: dict[str, str] = {
    "html": "text/html",
    "htm": "text/html",
    "shtml": "text/html",
    "css": "text/css",
    "xml": "text/xml",
    "txt": "text/plain",
    "csv": "text/csv",
    "md": "text/markdown",
    "ics": "text/calendar",
    "vtt": "text/vtt",
    "js": "application/javascript",
    "mjs": "application/javascript",
    "json": "application/json",
    "map": "application/json",
    "jsonld": "application/ld+json",
    "webmanifest": "application/manifest+json",
    "wasm": "application/wasm",
    "pdf": "application/pdf",
    "zip": "application/zip",
    "gz": "application/gzip",
    "tar": "application/x-tar",
    "rss": "application/rss+xml",
    "atom": "application/atom+xml",
    "xhtml": "application/xhtml+xml",
    "gif": "image/gif",
    "jpeg": "image/jpeg",
    "jpg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "avif": "image/avif",
    "svg": "image/svg+xml",
    "svgz": "image/svg+xml",
    "ico": "image/x-icon",
    "bmp": "image/bmp",
    "tif": "image/tiff",
    "tiff": "image/tiff",
    "woff": "font/woff",
    "woff2": "font/woff2",
    "ttf": "font/ttf",
    "otf": "font/otf",
    "eot": "application/vnd.ms-fontobject",
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "m4a": "audio/x-m4a",
    "wav": "audio/wav",
    "mp4": "video/mp4",
    "webm": "video/webm",
    "mpeg": "video/mpeg",
    "mov": "video/quicktime",
    "m3u8": "application/vnd.apple.mpegurl",
    "ts": "video/mp2t",
}

# Types that get `; charset=...` when `http.charset` is set: text, and the text formats
# that browsers decode as text (nginx charset_types: text/html, text/xml, text/plain,
# text/vnd.wap.wml, application/javascript, application/rss+xml; we add JSON and CSS).
_CHARSET_APPLICATION = frozenset(
    {
        "application/javascript",
        "application/json",
        "application/ld+json",
        "application/manifest+json",
        "application/rss+xml",
        "application/atom+xml",
        "application/xhtml+xml",
        "image/svg+xml",
    }
)


class TypeTable:
    """Extension (lowercase, without the dot) -> the Content-Type value, built once."""

    __slots__ = ("table",)

    def __init__(self, extra: Iterable[tuple[str, str]], charset: str | None) -> None:
        merged = dict(BUILTIN)
        merged.update((ext.lower(), value) for ext, value in extra)
        self.table = {ext: _with_charset(value, charset).encode() for ext, value in merged.items()}

    def content_type(self, name: str) -> bytes:
        dot = name.rfind(".")
        if dot < 0:
            return DEFAULT_TYPE
        return self.table.get(name[dot + 1 :].lower(), DEFAULT_TYPE)


def _with_charset(value: str, charset: str | None) -> str:
    if charset is None or "charset=" in value:
        return value
    if value.startswith("text/") or value in _CHARSET_APPLICATION:
        return f"{value}; charset={charset}"
    return value
