"""A tree of files for the static tests, with a secret planted just outside the root."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SECRET = b"TOP SECRET: never served\n"
CSS = b"body { color: #333; }\n"
INDEX = b"<!doctype html><title>home</title>\n"


@dataclass
class Tree:
    base: Path  # holds the root and the secrets beside it
    root: Path  # the location's root

    def write(self, relative: str, data: bytes) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path


def make_tree(base: Path) -> Tree:
    """root/ with a few files; secret.txt and root-sibling/secret.txt just outside it."""
    root = base / "root"
    tree = Tree(base, root)
    root.mkdir(parents=True)
    (base / "secret.txt").write_bytes(SECRET)
    (base / "root-sibling").mkdir()
    (base / "root-sibling" / "secret.txt").write_bytes(SECRET)
    tree.write("static/a.css", CSS)
    tree.write("static/app.js", b"console.log(1);\n")
    tree.write("static/logo.png", b"\x89PNG fake")
    tree.write("static/data.unknownext", b"?")
    tree.write("static/site.webmanifest", b"{}")
    tree.write("static/index.html", INDEX)
    tree.write("static/empty.txt", b"")
    tree.write("static/digits.txt", b"0123456789")
    (root / "static" / "noindex").mkdir()
    tree.write("static/noindex/file.txt", b"x")
    tree.write("static/.env", SECRET)
    tree.write("static/.htpasswd", SECRET)
    tree.write("static/.git/config", SECRET)
    tree.write("static/sub/inside.txt", b"inside\n")
    os.symlink("sub/inside.txt", root / "static" / "link-inside.txt")
    os.symlink("../../secret.txt", root / "static" / "link-outside.txt")
    os.symlink(str(base / "secret.txt"), root / "static" / "link-absolute.txt")
    os.symlink("..", root / "static" / "link-up")
    os.symlink("../../root-sibling", root / "static" / "link-dir-outside")
    return tree
