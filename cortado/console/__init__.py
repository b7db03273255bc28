"""The web console's static files (HTML, JavaScript, CSS), shipped in the package and served by the scheduler.

The console is a page that calls the Scheduler's RPCs through Envoy's console listener (docs/console.md); these
files hold no data, and nothing in them is loaded from elsewhere.
"""

from __future__ import annotations

import mimetypes
from importlib import resources

INDEX = "index.html"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def console_file(path: str) -> tuple[bytes, str] | None:
    """The bytes and media type of the console's file at `path` (relative to its folder; empty: the index page);
    None when there is no such file. Only plain names below the folder are served: no `..`, no hidden files."""
    parts = [part for part in path.split("/") if part]
    if not parts:
        parts = [INDEX]
    if any(part.startswith(".") or "\\" in part for part in parts):
        return None
    target = resources.files(__package__).joinpath("static", *parts)
    if not target.is_file():
        return None
    suffix = "." + parts[-1].rsplit(".", 1)[-1] if "." in parts[-1] else ""
    content_type = _TYPES.get(suffix) or mimetypes.guess_type(parts[-1])[0] or "application/octet-stream"
    return target.read_bytes(), content_type
