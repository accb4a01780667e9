"""Real servers on 127.0.0.1 for tests: a scriptable HTTP server for feeds and pages."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Response:
    """A canned answer. `body` may be bytes or a callable that writes to the handler itself."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stream: Callable[[BaseHTTPRequestHandler], None] | None = None


Route = Response | Callable[[BaseHTTPRequestHandler], Response]


@dataclass
class Hit:
    path: str
    headers: dict[str, str]


class FeedServer:
    """An HTTP server on 127.0.0.1:0. Map paths to responses; every request is recorded.

    A route may be a `Response` or a function of the request handler returning one, for
    conditional answers (`If-None-Match`), counters and the like.
    """

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with server._lock:
                    server.hits.append(
                        Hit(self.path, {k.lower(): v for k, v in self.headers.items()})
                    )
                    route = server.routes.get(self.path)
                if route is None:
                    response = Response(404, b"not found")
                elif isinstance(route, Response):
                    response = route
                else:
                    response = route(self)
                self.send_response(response.status)
                headers = {k.lower(): v for k, v in response.headers.items()}
                if response.stream is None and "content-length" not in headers:
                    self.send_header("Content-Length", str(len(response.body)))
                for name, value in response.headers.items():
                    self.send_header(name, value)
                if response.stream is not None:
                    self.send_header("Connection", "close")
                self.end_headers()
                if response.stream is not None:
                    response.stream(self)
                    self.close_connection = True
                else:
                    self.wfile.write(response.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def hits_for(self, path: str) -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if h.path == path]

    def start(self) -> FeedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serving() -> Iterator[FeedServer]:
    """Generator for a pytest fixture: a started server, stopped afterwards."""
    server = FeedServer().start()
    try:
        yield server
    finally:
        server.stop()
