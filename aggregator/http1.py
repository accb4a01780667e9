"""A lean HTTP/1.1 GET client on asyncio streams: keep-alive pool, TLS, chunked bodies (I/O).

Only what polling needs: one GET at a time per connection, no redirects (fetch.py follows them
by hand), no decoding of Content-Encoding (fetch.py bounds it). It costs ~0.1 ms of CPU per
request where httpx costs ~1 ms (docs/benchmarks.md). Every failure is a `FetchError`.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import socket
import ssl
from collections.abc import Awaitable
from typing import NamedTuple, TypeVar
from urllib.parse import quote, unquote, urlsplit

import httpx

from aggregator.errors import FetchError

T = TypeVar("T")

NO_BODY_STATUSES = frozenset({204, 304})
READ_SIZE = 65536
HEAD_LIMIT = 65536  # bytes of status line and headers, and of one chunk-size line
# Everything printable in ASCII but '#' stays as written; spaces, controls and non-ASCII
# characters are percent-encoded as UTF-8, as browsers and httpx do.
_URL_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "#")
_STALE = frozenset({"server closed the connection", "connection reset"})


class Target(NamedTuple):
    """Where one GET goes: the connection's key, and what the request line and Host say."""

    scheme: str
    host: str  # for connecting and TLS: lower case, IDNA-encoded, no brackets
    port: int
    host_header: str
    request_target: str  # path and query, percent-encoded
    authorization: str | None  # Basic credentials from the URL's userinfo

    @property
    def origin(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port


def parse_target(url: str) -> Target:
    """Split an absolute http(s) URL into what a request needs; FetchError when it can't."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FetchError(f"invalid URL: {url}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError(f"invalid URL: {url}")
    host = parts.hostname or ""
    if not host:
        raise FetchError(f"invalid URL: {url}")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise FetchError(f"invalid URL: {url}") from exc
    default_port = 443 if scheme == "https" else 80
    port = port or default_port
    shown = f"[{host}]" if ":" in host else host
    host_header = shown if port == default_port else f"{shown}:{port}"
    target = quote(parts.path or "/", safe=_URL_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_URL_SAFE)
    authorization = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
    return Target(scheme, host, port, host_header, target, authorization)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default context (certifi, or $SSL_CERT_FILE / $SSL_CERT_DIR): verification on.

    Built once per process: loading the CA bundle costs ~20 ms of CPU.
    """
    return httpx.create_ssl_context()


class Response:
    """A response whose head has been read; `read_chunk` streams the body (b"" at the end)."""

    def __init__(
        self,
        connection: Connection,
        url: str,
        status: int,
        reason: str,
        headers: dict[str, str],
        keep_alive: bool,
    ) -> None:
        self.url = url
        self.status_code = status
        self.reason_phrase = reason
        self.headers = headers  # lower-case names; repeated fields joined with ", "
        self._connection = connection
        self._keep_alive = keep_alive
        self._remaining: int | None = None  # bytes left of a Content-Length body
        self._chunked = False
        self._chunk_left = 0
        self._done = False
        encoding = headers.get("transfer-encoding", "").lower()
        if status in NO_BODY_STATUSES or 100 <= status < 200:
            self._done = True
        elif encoding.rstrip().endswith("chunked"):
            self._chunked = True
        elif encoding:
            self._keep_alive = False  # a body delimited by the close of the connection
        elif "content-length" in headers:
            lengths = {value.strip() for value in headers["content-length"].split(",")}
            length = lengths.pop() if len(lengths) == 1 else ""
            if not length.isdigit():
                raise FetchError(f"protocol error: bad Content-Length {headers['content-length']}")
            self._remaining = int(length)
            self._done = self._remaining == 0
        else:
            self._keep_alive = False

    @property
    def complete(self) -> bool:
        """The body has been read to its end and the connection can serve another request."""
        return self._done and self._keep_alive

    async def read_chunk(self) -> bytes:
        if self._done:
            return b""
        reader = self._connection.reader
        io = self._connection.io
        if self._remaining is not None:
            data = await io(reader.read(min(self._remaining, READ_SIZE)))
            if not data:
                raise FetchError("server closed the connection")
            self._remaining -= len(data)
            self._done = self._remaining == 0
            return data
        if not self._chunked:
            data = await io(reader.read(READ_SIZE))
            self._done = not data
            return data
        if self._chunk_left == 0:
            line = await io(reader.readuntil(b"\r\n"))
            size_text = line.split(b";", 1)[0].strip()
            try:
                self._chunk_left = int(size_text, 16)
            except ValueError:
                raise FetchError(f"protocol error: bad chunk size {size_text[:20]!r}") from None
            if self._chunk_left == 0:
                while (await io(reader.readuntil(b"\r\n"))) != b"\r\n":
                    pass  # trailer fields: nothing we use
                self._done = True
                return b""
        data = await io(reader.read(min(self._chunk_left, READ_SIZE)))
        if not data:
            raise FetchError("server closed the connection")
        self._chunk_left -= len(data)
        if self._chunk_left == 0:
            await io(reader.readexactly(2))  # the CRLF after the chunk
        return data


class Connection:
    """One open connection; `io` bounds every read and write by the timeout."""

    def __init__(
        self,
        origin: tuple[str, str, int],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        timeout: float,
    ) -> None:
        self.origin = origin
        self.reader = reader
        self.writer = writer
        self.timeout = timeout

    async def io(self, operation: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout):
                return await operation
        except TimeoutError:
            raise FetchError(f"timed out after {self.timeout:g}s") from None
        except asyncio.IncompleteReadError:
            raise FetchError("server closed the connection") from None
        except asyncio.LimitOverrunError:
            raise FetchError("protocol error: header line too long") from None
        except (OSError, ValueError) as exc:  # ValueError: StreamReader's own limit
            raise FetchError(describe_os_error(exc)) from exc

    @property
    def usable(self) -> bool:
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        self.writer.close()


class ConnectionPool:
    """Idle keep-alive connections by origin; at most `max_idle` kept in all."""

    def __init__(self, *, timeout: float, max_idle: int) -> None:
        self._timeout = timeout
        self._max_idle = max_idle
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._idle_count = 0

    async def get(self, url: str, headers: dict[str, str]) -> Response:
        """Send a GET for `url` with `headers` and read the response head."""
        target = parse_target(url)
        head = [f"GET {target.request_target} HTTP/1.1", f"Host: {target.host_header}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        if target.authorization and "Authorization" not in headers:
            head.append(f"Authorization: {target.authorization}")
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        while True:
            connection, reused = await self._connection(target)
            try:
                return await self._exchange(connection, url, request)
            except FetchError as error:
                connection.close()
                if not (reused and str(error) in _STALE):
                    raise
                # A kept-alive connection the server had closed meanwhile: try a fresh one.
            except BaseException:
                connection.close()
                raise

    def release(self, response: Response) -> None:
        """Give the response's connection back for reuse, or close it if it can't be reused."""
        connection = response._connection
        if not response.complete or not connection.usable or self._idle_count >= self._max_idle:
            connection.close()
            return
        self._idle.setdefault(connection.origin, []).append(connection)
        self._idle_count += 1

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        self._idle_count = 0

    async def _connection(self, target: Target) -> tuple[Connection, bool]:
        idle = self._idle.get(target.origin)
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            if connection.usable:
                return connection, True
            connection.close()
        tls = tls_context() if target.scheme == "https" else None
        try:
            async with asyncio.timeout(self._timeout):
                reader, writer = await asyncio.open_connection(
                    target.host,
                    target.port,
                    ssl=tls,
                    server_hostname=target.host if tls else None,
                    limit=HEAD_LIMIT,
                    happy_eyeballs_delay=0.25,
                )
        except TimeoutError:
            raise FetchError(f"connect timed out after {self._timeout:g}s") from None
        except (OSError, ValueError) as exc:
            raise FetchError(describe_os_error(exc, host=target.host)) from exc
        return Connection(target.origin, reader, writer, self._timeout), False

    async def _exchange(self, connection: Connection, url: str, request: bytes) -> Response:
        connection.writer.write(request)
        await connection.io(connection.writer.drain())
        while True:
            raw = await connection.io(connection.reader.readuntil(b"\r\n\r\n"))
            response = _parse_head(connection, url, raw)
            if response.status_code >= 200:
                return response
            # 1xx interim answers (103 Early Hints): the real one follows.


def _parse_head(connection: Connection, url: str, raw: bytes) -> Response:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    lines = text[:-4].split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise FetchError(f"protocol error: bad status line {lines[0][:60]!r}")
    headers: dict[str, str] = {}
    name = ""
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and name:  # obsolete line folding
            headers[name] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not name:
            raise FetchError(f"protocol error: bad header line {line[:60]!r}")
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    keep_alive = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    return Response(connection, url, int(code), reason.strip(), headers, keep_alive)


def describe_os_error(exc: BaseException, *, host: str = "") -> str:
    """A short human message for a socket or TLS failure."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return "connection reset"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {host}" if host else "cannot resolve the host"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
