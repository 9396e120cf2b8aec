"""autoindex: an HTML listing of a directory, every name escaped."""

from __future__ import annotations

import html
import os
import stat
import time
from urllib.parse import quote

# A listing stops after this many entries, so one huge directory cannot cost unbounded
# memory and time per request (nginx lists everything).
MAX_ENTRIES = 10_000


def listing(dir_fd: int, title: str) -> bytes:
    """The page for the directory open at `dir_fd`; dotfiles are left out, as they are
    never served. Symlinks are listed as they are, not followed."""
    rows: list[tuple[str, str, str]] = []
    truncated = False
    with os.scandir(dir_fd) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if len(rows) >= MAX_ENTRIES:
                truncated = True
                break
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            directory = stat.S_ISDIR(st.st_mode)
            name = entry.name + ("/" if directory else "")
            size = "-" if directory else str(st.st_size)
            when = time.strftime("%d-%b-%Y %H:%M", time.gmtime(st.st_mtime))
            rows.append((name, when, size))
    rows.sort(key=lambda row: (not row[0].endswith("/"), row[0]))
    escaped_title = html.escape(title)
    lines = [
        "<!DOCTYPE html>",
        f'<html><head><meta charset="utf-8"><title>Index of {escaped_title}</title></head>',
        f"<body><h1>Index of {escaped_title}</h1><hr><pre>",
        '<a href="../">../</a>',
    ]
    for name, when, size in rows:
        href = html.escape(quote(name, safe="/"), quote=True)
        lines.append(f'<a href="{href}">{html.escape(name)}</a>  {when}  {size}')
    if truncated:
        lines.append(f"(only the first {MAX_ENTRIES} entries are listed)")
    lines.append("</pre><hr></body></html>")
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")
