"""Fetching sources over HTTP or from disk: conditional GET, redirects, limits, politeness (I/O shell).

The decisions (header parsing, redirect policy, size formatting) are small pure functions next to
the `Fetcher`, which only does the I/O. Every failure is a `FetchError` with a short message.
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import ipaddress
import re
import socket
import urllib.request
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, Protocol
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

import httpx

from aggregator import PROJECT_URL, __version__
from aggregator.clock import Clock, SystemClock
from aggregator.errors import FetchError
from aggregator.http1 import ConnectionPool, parse_target
from aggregator.models import FetchRequest, FetchResult
from aggregator.settings import FetchSettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str], Awaitable[Sequence[IPAddress]]]

ACCEPT = (
    "application/atom+xml, application/rss+xml, application/feed+json, "
    "application/xml;q=0.9, text/html;q=0.8, */*;q=0.5"
)
# Only what we can decode with a bounded output size (see BodyDecoder).
ACCEPT_ENCODING = "gzip, deflate"
MAX_REDIRECTS = 5
MAX_RETRY_AFTER = 7 * 24 * 3600.0
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
PERMANENT_REDIRECT_STATUSES = frozenset({301, 308})
ADOPT_REDIRECT_AFTER = 3  # polls in a row with the same permanent target before it is adopted
RETRY_AFTER_STATUSES = frozenset({429, 503})

LOCAL_CONTENT_TYPES = {
    ".xml": "application/xml",
    ".rss": "application/rss+xml",
    ".atom": "application/atom+xml",
    ".rdf": "application/rdf+xml",
    ".json": "application/json",
    ".html": "text/html",
    ".htm": "text/html",
}

_MAX_AGE = re.compile(r"""(?:^|[,\s])max-age\s*=\s*"?(\d+)"?""", re.IGNORECASE)


def default_user_agent() -> str:
    return f"aggregator/{__version__} (+{PROJECT_URL})"


# --- pure decisions -------------------------------------------------------------------------


def parse_max_age(cache_control: str | None) -> float | None:
    """Seconds from `Cache-Control: max-age=N`; None when absent or malformed."""
    if not cache_control:
        return None
    match = _MAX_AGE.search(cache_control)
    return float(match.group(1)) if match else None


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from `Retry-After` (delay-seconds or HTTP-date), within 0..7 days."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000" means UTC without saying so
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def is_public_address(ip: IPAddress) -> bool:
    """True for an address on the public internet: not private, loopback, link-local, reserved."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is not None:
            return is_public_address(embedded)
    return ip.is_global and not ip.is_multicast


def redirect_allowed(source_is_private: bool, target_ips: Iterable[IPAddress]) -> bool:
    """May a redirect lead to a host with these addresses?

    A source on the internet may not bounce us into the local network (SSRF). A source that is
    itself local (an intranet feed, a test server) may redirect anywhere.
    """
    if source_is_private:
        return True
    ips = list(target_ips)
    return bool(ips) and all(is_public_address(ip) for ip in ips)


class RedirectTrack(NamedTuple):
    """A source's permanent-redirect record after one successful poll."""

    moved_to: str | None  # the target seen, still on probation
    polls: int  # polls in a row that were permanently redirected to `moved_to`
    adopt: bool  # the target has held long enough: fetch it directly from now on


def track_permanent_redirect(moved_to: str | None, polls: int, target: str | None) -> RedirectTrack:
    """Count polls in a row permanently redirected to the same `target`; adopt it at the third.

    A poll without a permanent redirect (`target` None: none, or a temporary hop) clears it.
    """
    if target is None:
        return RedirectTrack(None, 0, adopt=False)
    polls = polls + 1 if target == moved_to else 1
    if polls >= ADOPT_REDIRECT_AFTER:
        return RedirectTrack(None, 0, adopt=True)
    return RedirectTrack(target, polls, adopt=False)


def spacing_for(host: str, spacing: float) -> float:
    """Seconds between request starts to `host`: `spacing`, but none for this machine.

    Politeness is for other people's servers; a local RSSHub or RSS-Bridge serving many
    sources (localhost, 127.0.0.0/8, ::1) is not slowed down.
    """
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return 0.0
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return spacing
    return 0.0 if ip.is_loopback else spacing


def format_size(size: int) -> str:
    """1048576 -> "1 MiB", 1536 -> "1.5 KiB", 100 -> "100 bytes"."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


def local_path(url: str) -> Path | None:
    """The file a source URL names (a plain path or file:// URL); None for http(s) URLs."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unbalanced IPv6 bracket
        raise FetchError(f"invalid URL: {url}") from exc
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return None
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise FetchError(f"file URL on another host: {url}")
        return Path(url2pathname(parts.path))
    if scheme == "" or len(scheme) == 1:  # a path, or a Windows drive letter
        return Path(url).expanduser()
    raise FetchError(f"unsupported URL scheme: {scheme}")


def local_content_type(path: Path) -> str | None:
    return LOCAL_CONTENT_TYPES.get(path.suffix.lower())


def describe_http_error(exc: Exception, *, timeout: float, host: str) -> str:
    """A short human message for an httpx exception."""
    if isinstance(exc, httpx.ConnectTimeout):
        return f"connect timed out after {timeout:g}s"
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out after {timeout:g}s"
    cause: BaseException | None = exc
    seen = 0
    while cause is not None and seen < 10:  # the OS error sits under httpcore's wrappers
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve {host}"
        cause = cause.__cause__ or cause.__context__
        seen += 1
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"protocol error: {exc}" if str(exc) else "server closed the connection"
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return f"invalid URL: {exc}"
    return str(exc) or type(exc).__name__


# --- bounded decompression ------------------------------------------------------------------


class BodyDecoder:
    """Undo Content-Encoding without ever producing much more than the caller has room for.

    httpx's own decoders inflate a whole network chunk at once: 64 KiB of gzip'd zeros become
    64 MiB. Here each call returns at most `room + 1` bytes, so a bomb stops at the cap.
    """

    def __init__(self, content_encoding: str | None) -> None:
        encoding = (content_encoding or "identity").strip().lower()
        self._deflate_raw_fallback = False
        self._inflater: zlib._Decompress | None
        if encoding in ("identity", ""):
            self._inflater = None
        elif encoding in ("gzip", "x-gzip"):
            self._inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
        elif encoding == "deflate":
            # RFC 9110 deflate is zlib-wrapped, but some servers send raw deflate.
            self._inflater = zlib.decompressobj(zlib.MAX_WBITS)
            self._deflate_raw_fallback = True
        else:
            raise FetchError(f"unsupported Content-Encoding: {encoding}")
        self._encoding = encoding

    def decode(self, data: bytes, room: int) -> bytes:
        if self._inflater is None:
            return data
        out = bytearray()
        pending = data
        try:
            while pending and len(out) <= room:
                out += self._inflate(pending, room + 1 - len(out))
                pending = self._inflater.unconsumed_tail
                if self._inflater.eof:
                    break
        except zlib.error as exc:
            raise FetchError(f"cannot decompress the body ({self._encoding})") from exc
        return bytes(out)

    def _inflate(self, data: bytes, max_length: int) -> bytes:
        assert self._inflater is not None
        try:
            piece = self._inflater.decompress(data, max_length)
        except zlib.error:
            if not self._deflate_raw_fallback:
                raise
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            piece = self._inflater.decompress(data, max_length)
        self._deflate_raw_fallback = False
        return piece


# --- the I/O shell ---------------------------------------------------------------------------


class _Redirect(NamedTuple):
    status: int
    target: str


class _Response(Protocol):
    """What `Fetcher` reads of a response, from either transport."""

    @property
    def url(self) -> str: ...
    @property
    def status_code(self) -> int: ...
    @property
    def reason_phrase(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...  # .get by lower-case name
    async def read_chunk(self) -> bytes: ...  # the raw (still encoded) body; b"" at the end


class _HttpxResponse:
    """An httpx streaming response seen through `_Response` (the proxy path)."""

    def __init__(self, response: httpx.Response) -> None:
        self.url = str(response.url)
        self.status_code = response.status_code
        self.reason_phrase = response.reason_phrase
        self.headers: Mapping[str, str] = response.headers
        self._chunks = response.aiter_raw()

    async def read_chunk(self) -> bytes:
        return await anext(self._chunks, b"")


async def resolve_host(host: str) -> list[IPAddress]:
    """The addresses of a host name (or the literal address itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise FetchError(f"cannot resolve {host}") from exc
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


class HostPacer:
    """Keeps the starts of requests to one host at least some seconds apart (event loop time)."""

    def __init__(self) -> None:
        self._next_start: dict[str, float] = {}

    async def wait(self, host: str, spacing: float) -> None:
        if spacing <= 0:
            return
        now = asyncio.get_running_loop().time()
        # Reserve the next free start time before sleeping: no await in between, so no race.
        start = max(now, self._next_start.get(host, now))
        self._next_start[host] = start + spacing
        if start > now:
            await asyncio.sleep(start - now)


class Fetcher:
    """Fetches sources over a shared keep-alive pool; safe to use from many tasks at once.

    Requests go out through the lean HTTP/1.1 client of http1.py; a URL that the environment
    sends through a proxy (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, less `NO_PROXY`) goes
    through httpx, which speaks to proxies.

    At most `settings.concurrency` fetches run at a time and at most `settings.per_host` per host
    (the host of the requested URL), and requests to one host start at least
    `settings.host_spacing` seconds apart (see `spacing_for`). Each fetch has `settings.deadline` seconds from its start,
    once it has its slots, to the last byte.
    """

    def __init__(
        self,
        settings: FetchSettings,
        *,
        user_agent: str | None = None,
        resolver: Resolver | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._settings = settings
        self._resolve = resolver or resolve_host
        self._clock = clock or SystemClock()
        self._headers = {
            "User-Agent": user_agent or settings.user_agent or default_user_agent(),
            "Accept": ACCEPT,
            "Accept-Encoding": ACCEPT_ENCODING,
        }
        for value in self._headers.values():
            if not _header_safe(value):
                raise ValueError(f"not a valid HTTP header value: {value!r}")
        self._pool = ConnectionPool(
            timeout=settings.timeout, max_idle=max(1, settings.concurrency) * 2
        )
        self._proxies = urllib.request.getproxies_environment()
        self._proxy_client: httpx.AsyncClient | None = None
        self._slots = asyncio.Semaphore(max(1, settings.concurrency))
        self._host_slots: dict[str, asyncio.Semaphore] = {}
        self._pacer = HostPacer()

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        self._pool.close()
        if self._proxy_client is not None:
            await self._proxy_client.aclose()

    async def fetch(self, request: FetchRequest) -> FetchResult:
        """Fetch one source. Raises FetchError, and nothing else, when it cannot."""
        path = local_path(request.url)
        if path is not None:
            return await asyncio.to_thread(
                read_local_source, request, path, self._settings.max_bytes
            )
        host = parse_target(request.url).host
        deadline = self._settings.deadline
        async with self._host_slot(host):
            await self._pace(host)
            async with self._slots:
                try:
                    async with asyncio.timeout(deadline):
                        return await self._fetch_http(request)
                except TimeoutError:
                    raise FetchError(f"timed out after {deadline:g}s") from None

    async def _pace(self, host: str) -> None:
        await self._pacer.wait(host, spacing_for(host, self._settings.host_spacing))

    def _host_slot(self, host: str) -> asyncio.Semaphore:
        slot = self._host_slots.get(host)
        if slot is None:
            slot = self._host_slots[host] = asyncio.Semaphore(max(1, self._settings.per_host))
        return slot

    async def _fetch_http(self, request: FetchRequest) -> FetchResult:
        headers = dict(self._headers)
        # A validator that cannot be sent as a plain ASCII header would break the request.
        if request.etag and _header_safe(request.etag):
            headers["If-None-Match"] = request.etag
        if request.last_modified and _header_safe(request.last_modified):
            headers["If-Modified-Since"] = request.last_modified
        url = request.url
        visited = {url}
        every_hop_permanent = True
        hops = 0
        while True:
            outcome = await self._request(request, url, headers)
            if isinstance(outcome, FetchResult):
                if hops and every_hop_permanent:
                    return replace(outcome, permanent_redirect=outcome.url)
                return outcome
            target = outcome.target
            hops += 1
            every_hop_permanent = (
                every_hop_permanent and outcome.status in PERMANENT_REDIRECT_STATUSES
            )
            if urlsplit(target).scheme.lower() not in ("http", "https"):
                raise FetchError(f"redirect to a non-HTTP URL: {target}")
            if target in visited:
                raise FetchError(f"redirect loop at {target}")
            if hops > MAX_REDIRECTS:
                raise FetchError(f"too many redirects (more than {MAX_REDIRECTS})")
            visited.add(target)
            target_host = parse_target(target).host
            await self._check_redirect(parse_target(request.url).host, target_host, target)
            await self._pace(target_host)
            url = target

    async def _request(
        self, request: FetchRequest, url: str, headers: dict[str, str]
    ) -> FetchResult | _Redirect:
        """One hop: a result, or the status and target of a redirect."""
        async with self._get(url, headers) as response:
            status = response.status_code
            if status in REDIRECT_STATUSES:
                location = response.headers.get("location")
                if not location:
                    raise FetchError(f"HTTP {status} redirect without a Location", status=status)
                return _Redirect(status, urljoin(response.url, location.strip()))
            if status == 304:
                return self._result(request, response, content=None)
            if status >= 400:
                retry_after = None
                if status in RETRY_AFTER_STATUSES:
                    retry_after = parse_retry_after(
                        response.headers.get("retry-after"), self._clock.now()
                    )
                raise FetchError(
                    f"HTTP {status} {_reason(response)}".rstrip(),
                    status=status,
                    retry_after=retry_after,
                )
            if status >= 300:
                raise FetchError(f"HTTP {status} {_reason(response)}".rstrip(), status=status)
            content = await self._read_body(response)
            return self._result(request, response, content=content)

    @asynccontextmanager
    async def _get(self, url: str, headers: dict[str, str]) -> AsyncIterator[_Response]:
        """A GET through the pool, or through httpx when a proxy is configured for `url`."""
        if self._proxied(url):
            async with self._proxy_get(url, headers) as response:
                yield response
            return
        response = await self._pool.get(url, headers)
        try:
            yield response
        finally:
            self._pool.release(response)

    def _proxied(self, url: str) -> bool:
        if not self._proxies:
            return False
        parts = urlsplit(url)
        if parts.scheme not in self._proxies and "all" not in self._proxies:
            return False
        return not urllib.request.proxy_bypass(parts.netloc)

    @asynccontextmanager
    async def _proxy_get(self, url: str, headers: dict[str, str]) -> AsyncIterator[_Response]:
        if self._proxy_client is None:
            self._proxy_client = httpx.AsyncClient(
                follow_redirects=False,
                timeout=httpx.Timeout(self._settings.timeout),
                limits=httpx.Limits(max_connections=max(1, self._settings.concurrency)),
            )
        timeout = self._settings.timeout
        try:
            async with self._proxy_client.stream("GET", url, headers=headers) as response:
                yield _HttpxResponse(response)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            host = urlsplit(url).hostname or ""
            raise FetchError(describe_http_error(exc, timeout=timeout, host=host)) from exc

    async def _read_body(self, response: _Response) -> bytes:
        limit = self._settings.max_bytes
        too_large = FetchError(
            f"body larger than {format_size(limit)}", status=response.status_code
        )
        decoder = BodyDecoder(response.headers.get("content-encoding"))
        declared = response.headers.get("content-length", "")
        if (
            declared.isdigit()
            and int(declared) > limit
            and "content-encoding" not in response.headers
        ):
            raise too_large
        body = bytearray()
        while chunk := await response.read_chunk():
            body += decoder.decode(chunk, limit - len(body))
            if len(body) > limit:
                raise too_large
        return bytes(body)

    def _result(
        self, request: FetchRequest, response: _Response, *, content: bytes | None
    ) -> FetchResult:
        return FetchResult(
            source_id=request.source_id,
            url=response.url,
            status=response.status_code,
            content=content,
            content_type=response.headers.get("content-type"),
            # A 304 need not repeat the validators; the old ones still hold.
            etag=response.headers.get("etag") or request.etag,
            last_modified=response.headers.get("last-modified") or request.last_modified,
            max_age=parse_max_age(response.headers.get("cache-control")),
        )

    async def _check_redirect(self, source_host: str, target_host: str, target: str) -> None:
        source_ips = await self._resolve(source_host)
        source_is_private = not source_ips or not all(is_public_address(ip) for ip in source_ips)
        if not redirect_allowed(source_is_private, await self._resolve(target_host)):
            raise FetchError(f"redirect to a private address refused: {target}")


def read_local_source(request: FetchRequest, path: Path, max_bytes: int) -> FetchResult:
    """A source that is a file on disk, under the same size cap as HTTP bodies."""
    try:
        with path.open("rb") as file:
            content = file.read(max_bytes + 1)
    except FileNotFoundError:
        raise FetchError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise FetchError(f"not a file: {path}") from None
    except PermissionError:
        raise FetchError(f"permission denied: {path}") from None
    except OSError as exc:
        raise FetchError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(content) > max_bytes:
        raise FetchError(f"file larger than {format_size(max_bytes)}: {path}")
    return FetchResult(
        source_id=request.source_id,
        url=request.url,
        status=200,
        content=content,
        content_type=local_content_type(path),
    )


def _header_safe(value: str) -> bool:
    """Printable ASCII only: nothing that could end the header line early."""
    return value.isascii() and value.isprintable()


def _reason(response: _Response) -> str:
    if response.reason_phrase:
        return response.reason_phrase
    try:
        return http.HTTPStatus(response.status_code).phrase
    except ValueError:
        return ""
