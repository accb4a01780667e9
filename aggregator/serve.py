"""An HTTP server for <data_dir>/public, for users without a web server: conditional GET (ETag,
Last-Modified, 304), gzip, feed content types, `/healthz` and one-click unsubscribe.

The decisions (which file, which type, is it fresh, gzip or not) are plain functions; the
handler only moves bytes.
"""

from __future__ import annotations

import gzip
import importlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from aggregator import __version__
from aggregator.errors import AggregatorError

if TYPE_CHECKING:
    from aggregator.app import App

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
MAX_BODY = 64 * 1024  # a one-click unsubscribe POST is a few bytes

CONTENT_TYPES = {
    ".atom": "application/atom+xml; charset=utf-8",
    ".rss": "application/rss+xml; charset=utf-8",
    ".json": "application/feed+json; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".xsl": "text/xsl; charset=utf-8",
    ".svg": "image/svg+xml",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".xml": "application/xml; charset=utf-8",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
# Browsers show application/atom+xml and application/rss+xml as plain text and apply no XSL;
# asked for HTML by one, a feed is sent as application/xml so feed.xsl renders it.
BROWSER_FEED_TYPE = "application/xml; charset=utf-8"
_FEED_SUFFIXES = (".atom", ".rss")
_COMPRESSIBLE = ("text/", "application/", "image/svg+xml")
# Pages run no script; the inline <style> and the site's own icon are all they load.
HTML_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


# --- decisions ------------------------------------------------------------------------------


def resolve(public_dir: Path, url_path: str) -> Path | None:
    """The file under `public_dir` that `url_path` names, or None.

    No '..', no hidden names (temp files), nothing outside the folder even through a symlink;
    a folder means its index.html.
    """
    decoded = unquote(url_path, errors="strict") if "%" in url_path else url_path
    if "\x00" in decoded or "\\" in decoded:
        return None
    parts = [p for p in decoded.split("/") if p]
    if any(p.startswith(".") for p in parts):
        return None
    root = public_dir.resolve()
    candidate = root.joinpath(*parts)
    try:
        if candidate.is_dir():
            candidate = candidate / "index.html"
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not real.is_relative_to(root) or not real.is_file():
        return None
    return real


def content_type(path: Path, accept: str = "") -> str:
    """The media type for `path`; a feed asked for by a browser is plain XML (see above)."""
    suffix = path.suffix.lower()
    if suffix in _FEED_SUFFIXES and wants_browser_view(accept):
        return BROWSER_FEED_TYPE
    return CONTENT_TYPES.get(suffix, "application/octet-stream")


def wants_browser_view(accept: str) -> bool:
    """A browser navigating (Accept names text/html) rather than a feed reader."""
    accept = accept.lower()
    return "text/html" in accept and "atom+xml" not in accept and "rss+xml" not in accept


def accepts_gzip(accept_encoding: str) -> bool:
    for part in accept_encoding.lower().split(","):
        name, _, params = part.strip().partition(";")
        if name.strip() in ("gzip", "x-gzip", "*"):
            q = params.strip().removeprefix("q=")
            try:
                return not params.strip().startswith("q=") or float(q) > 0
            except ValueError:
                return False
    return False


def compressible(media_type: str) -> bool:
    return media_type.startswith(_COMPRESSIBLE) and not media_type.startswith("image/png")


def entity_tag(size: int, mtime_ns: int, variant: str = "") -> str:
    """A strong ETag from the file's size and modification time; each variant its own."""
    return f'"{size:x}-{mtime_ns:x}{variant}"'


def is_fresh(
    if_none_match: str | None, if_modified_since: str | None, etag: str, mtime: float
) -> bool:
    """Whether the client's copy is current: If-None-Match decides; else If-Modified-Since."""
    if if_none_match is not None:
        tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
        return "*" in tags or etag in tags
    if if_modified_since:
        try:
            return int(mtime) <= parsedate_to_datetime(if_modified_since).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
    return False


# --- health ---------------------------------------------------------------------------------


def health(app: App) -> dict[str, Any]:
    """The /healthz payload: ok, and counts from the store and the public folder.

    One function, so other parts (the worker) can add their facts to it.
    """
    from aggregator.status import health_report  # status imports the worker; load it lazily

    states = app.store.source_states()
    configured = [s.id for s in app.settings.sources if s.enabled]
    failing = [i for i in configured if i in states and states[i].consecutive_failures > 0]
    feed = app.public_dir / "feed.atom"
    return {
        "ok": True,
        "version": __version__,
        "entries": app.store.count_entries(),
        "sources": len(configured),
        "failing_sources": len(failing),
        "published": feed.is_file(),
        # The same report as `aggregator status` (worker, sources, digest, outbox).
        "status": health_report(app),
    }


# --- unsubscribe ----------------------------------------------------------------------------


def _unsubscribe_module() -> ModuleType | None:
    """aggregator.unsubscribe, imported on first use; None while it does not exist."""
    try:
        return importlib.import_module("aggregator.unsubscribe")
    except ModuleNotFoundError as error:
        if error.name == "aggregator.unsubscribe":
            return None
        raise


def unsubscribe_token(query: str, form: Mapping[str, list[str]] | None = None) -> str | None:
    """The token from the query string, else from a posted form."""
    for source in (parse_qs(query), form or {}):
        values = source.get("token")
        if values and values[0]:
            return values[0]
    return None


# --- the server -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str]


class PublicServer(ThreadingHTTPServer):
    """Serves `app.public_dir`; the store is used by one request at a time."""

    daemon_threads = True

    def __init__(self, app: App, address: tuple[str, int]) -> None:
        self.app = app
        self.store_lock = threading.Lock()
        super().__init__(address, PublicHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"


class PublicHandler(BaseHTTPRequestHandler):
    server: PublicServer
    protocol_version = "HTTP/1.1"
    server_version = f"aggregator/{__version__}"

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != "/unsubscribe":
            self._send(
                _text(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed\n", Allow="GET, HEAD")
            )
            return
        length = self.headers.get("Content-Length")
        try:
            size = int(length) if length else 0
        except ValueError:
            size = -1
        if size < 0 or size > MAX_BODY:
            self._send(_text(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large\n"))
            return
        body = self.rfile.read(size).decode("utf-8", "replace") if size else ""
        # RFC 8058: the mail client POSTs "List-Unsubscribe=One-Click" to the URL with the token.
        form = parse_qs(body)
        self._send(self._unsubscribe(parts.query, form, post=True))

    def _dispatch(self, *, head: bool) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/healthz":
            reply = self._health()
        elif parts.path == "/unsubscribe":
            reply = self._unsubscribe(parts.query, None, post=False)
        else:
            reply = self._file(parts.path)
        self._send(reply, head=head)

    def _health(self) -> Reply:
        try:
            with self.server.store_lock:
                payload = health(self.server.app)
        except AggregatorError as error:
            payload = {"ok": False, "error": str(error)}
        body = (json.dumps(payload, sort_keys=True) + "\n").encode()
        status = HTTPStatus.OK if payload.get("ok") else HTTPStatus.SERVICE_UNAVAILABLE
        return Reply(
            status, body, {"Content-Type": "application/json", "Cache-Control": "no-store"}
        )

    def _unsubscribe(
        self, query: str, form: Mapping[str, list[str]] | None, *, post: bool
    ) -> Reply:
        module = _unsubscribe_module()
        if module is None:
            return _text(HTTPStatus.NOT_FOUND, "not found\n")
        token = unsubscribe_token(query, form)
        if token is None:
            return _text(HTTPStatus.BAD_REQUEST, "missing token\n")
        handler = module.handle_post if post else module.handle_get
        with self.server.store_lock:
            status, page = handler(self.server.app, token)
        return Reply(
            int(status),
            str(page).encode("utf-8"),
            {
                "Content-Type": "text/html; charset=utf-8",
                "Cache-Control": "no-store",
                "Content-Security-Policy": HTML_POLICY,
            },
        )

    def _file(self, url_path: str) -> Reply:
        try:
            path = resolve(self.server.app.public_dir, url_path)
        except UnicodeDecodeError:
            path = None
        if path is None:
            return _text(HTTPStatus.NOT_FOUND, "not found\n")
        accept = self.headers.get("Accept", "")
        media_type = content_type(path, accept)
        gzipped = compressible(media_type) and accepts_gzip(self.headers.get("Accept-Encoding", ""))
        variant = ("-x" if media_type == BROWSER_FEED_TYPE else "") + ("-gz" if gzipped else "")
        try:
            stat = path.stat()
            etag = entity_tag(stat.st_size, stat.st_mtime_ns, variant)
            headers = {
                "Content-Type": media_type,
                "ETag": etag,
                "Last-Modified": formatdate(stat.st_mtime, usegmt=True),
                "Cache-Control": "no-cache",  # always revalidate: a 304 costs nothing
                "Vary": "Accept, Accept-Encoding",
                "X-Content-Type-Options": "nosniff",
            }
            if media_type.startswith("text/html"):
                headers["Content-Security-Policy"] = HTML_POLICY
            if is_fresh(
                self.headers.get("If-None-Match"),
                self.headers.get("If-Modified-Since"),
                etag,
                stat.st_mtime,
            ):
                return Reply(HTTPStatus.NOT_MODIFIED, b"", headers)
            body = path.read_bytes()
        except OSError:
            return _text(HTTPStatus.NOT_FOUND, "not found\n")
        if gzipped:
            body = gzip.compress(body, compresslevel=6, mtime=0)
            headers["Content-Encoding"] = "gzip"
        return Reply(HTTPStatus.OK, body, headers)

    def _send(self, reply: Reply, *, head: bool = False) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.status != HTTPStatus.NOT_MODIFIED:
            self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if not head and reply.status != HTTPStatus.NOT_MODIFIED:
            self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the command prints where it serves; errors reach the client


def _text(status: int, text: str, **extra: str) -> Reply:
    return Reply(status, text.encode(), {"Content-Type": "text/plain; charset=utf-8", **extra})


def make_server(app: App, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> PublicServer:
    """A server bound to host:port (0: any free port), not yet serving."""
    try:
        return PublicServer(app, (host, port))
    except OSError as error:
        raise AggregatorError(
            f"cannot listen on {host}:{port}: {error.strerror or error}"
        ) from None
