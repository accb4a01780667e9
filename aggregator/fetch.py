"""Fetching sources over HTTP or from disk: conditional GET, redirects, limits, politeness (I/O shell).

The decisions (header parsing, redirect policy, size formatting) are small pure functions next to
the `Fetcher`, which only does the I/O, through one aiohttp session. Every failure is a
`FetchError` with a short message.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import functools
import http
import ipaddress
import os
import re
import socket
import ssl
import urllib.request
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import NamedTuple
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

import aiohttp
import certifi

from aggregator import PROJECT_URL, __version__
from aggregator.clock import Clock, SystemClock
from aggregator.errors import FetchError
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
READ_SIZE = 65536  # bytes of the raw body handed to BodyDecoder at a time
# A Fetcher lives for one poll; within it, sources on one host share the lookup.
DNS_CACHE_SECONDS = 300

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


def url_host(url: str) -> str:
    """The host of an http(s) URL as a connection sees it: lower case, IDNA, no brackets."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number
    except ValueError as exc:
        raise FetchError(f"invalid URL: {url}") from exc
    host = parts.hostname or ""
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise FetchError(f"invalid URL: {url}")
    if ":" in host:  # an IPv6 address
        return host
    try:  # also refuses what a resolver would: an empty label, one over 63 characters
        return host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise FetchError(f"invalid URL: {url}") from exc


def proxy_for(url: str, proxies: Mapping[str, str]) -> str | None:
    """The proxy for `url` among `proxies` (from `urllib.request.getproxies_environment`).

    `HTTPS_PROXY` or `HTTP_PROXY` by the URL's scheme, else `ALL_PROXY`; none for a host that
    `NO_PROXY` names. Only an http:// or https:// proxy can be used.
    """
    if not proxies:
        return None
    parts = urlsplit(url)
    proxy = proxies.get(parts.scheme.lower()) or proxies.get("all")
    if not proxy:
        return None
    # NO_PROXY as `proxies["no"]`; the function is undocumented and untyped, stable since 2.x.
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if bypass(parts.netloc.rpartition("@")[2], proxies):
        return None
    if urlsplit(proxy).scheme.lower() not in ("http", "https"):
        raise FetchError(f"unsupported proxy (only http:// and https:// work): {proxy}")
    return proxy


def describe_client_error(exc: aiohttp.ClientError, *, timeout: float, host: str) -> str:
    """A short human message for an aiohttp exception."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return f"connect timed out after {timeout:g}s"
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return f"timed out after {timeout:g}s"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cause = exc.certificate_error
        detail = getattr(cause, "verify_message", None) or str(cause)
        return f"TLS certificate verification failed: {detail}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS error: {getattr(exc.os_error, 'reason', None) or exc.os_error}"
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return f"cannot connect to the proxy: {describe_os_error(exc.os_error)}"
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return f"the proxy answered HTTP {exc.status} {exc.message}".rstrip()
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve {host}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return describe_os_error(exc.os_error)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server closed the connection"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "server closed the connection before the end of the body"
    if isinstance(exc, aiohttp.InvalidURL):
        return f"invalid URL: {exc.url}"
    if isinstance(exc, aiohttp.ClientResponseError):  # a malformed status line or header
        return f"protocol error: {exc.message}" if exc.message else "protocol error"
    if isinstance(exc, OSError):  # ClientOSError: the connection failed while in use
        return describe_os_error(exc)
    return str(exc) or type(exc).__name__


def describe_os_error(exc: OSError) -> str:
    if exc.errno == errno.ECONNREFUSED:
        return "connection refused"
    if exc.errno in (errno.ECONNRESET, errno.EPIPE):
        return "connection reset"
    return exc.strerror or str(exc) or type(exc).__name__


@functools.cache
def tls_context() -> ssl.SSLContext:
    """Verification against $SSL_CERT_FILE / $SSL_CERT_DIR when set, else certifi's bundle.

    Built once per process: loading a CA bundle costs ~20 ms of CPU.
    """
    if os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context()  # OpenSSL reads both variables itself
    return ssl.create_default_context(cafile=certifi.where())


# --- bounded decompression ------------------------------------------------------------------


class BodyDecoder:
    """Undo Content-Encoding without ever producing much more than the caller has room for.

    An HTTP client's own decoder may inflate a whole network chunk at once (64 KiB of gzip'd
    zeros become 64 MiB). Here each call returns at most `room + 1` bytes, so a bomb stops at
    the cap.
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
    """Fetches sources over one shared aiohttp session; safe to use from many tasks at once.

    The session keeps connections alive across fetches, verifies TLS certificates (see
    `tls_context`), keeps no cookies, and neither follows redirects nor decodes bodies:
    `_fetch_http` follows redirects by its own policy and `BodyDecoder` bounds what a compressed
    body may grow to. A proxy named by the environment is used (see `proxy_for`).

    At most `settings.concurrency` fetches run at a time and at most `settings.per_host` per host
    (the host of the requested URL), and requests to one host start at least
    `settings.host_spacing` seconds apart (see `spacing_for`). Each fetch has `settings.deadline`
    seconds from its start, once it has its slots, to the last byte.
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
        # Read once: aiohttp's trust_env reads the proxies and ~/.netrc again on a worker thread
        # for every request, which quadruples the CPU cost of a 304.
        self._proxies = urllib.request.getproxies_environment()
        self._session: aiohttp.ClientSession | None = None
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
        if self._session is not None:
            await self._session.close()  # and its connector, with every connection
            self._session = None

    async def fetch(self, request: FetchRequest) -> FetchResult:
        """Fetch one source. Raises FetchError, and nothing else, when it cannot."""
        path = local_path(request.url)
        if path is not None:
            return await asyncio.to_thread(
                read_local_source, request, path, self._settings.max_bytes
            )
        host = url_host(request.url)
        deadline = self._settings.deadline
        async with self._host_slot(host):
            await self._pace(host)
            async with self._slots:
                try:
                    async with asyncio.timeout(deadline):
                        return await self._fetch_http(request, host)
                except TimeoutError:
                    raise FetchError(f"timed out after {deadline:g}s") from None

    async def _pace(self, host: str) -> None:
        await self._pacer.wait(host, spacing_for(host, self._settings.host_spacing))

    def _host_slot(self, host: str) -> asyncio.Semaphore:
        slot = self._host_slots.get(host)
        if slot is None:
            slot = self._host_slots[host] = asyncio.Semaphore(max(1, self._settings.per_host))
        return slot

    def _client(self) -> aiohttp.ClientSession:
        """The session, made on first use: it belongs to the running event loop."""
        if self._session is None:
            timeout = self._settings.timeout
            connector = aiohttp.TCPConnector(
                limit=max(1, self._settings.concurrency),
                limit_per_host=0,  # the Fetcher's own per-host slots bound each server
                ttl_dns_cache=DNS_CACHE_SECONDS,
                ssl=tls_context(),
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout),
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),  # no state from one source to the next
            )
        return self._session

    async def _fetch_http(self, request: FetchRequest, host: str) -> FetchResult:
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
            target_host = url_host(target)
            await self._check_redirect(host, target_host, target)
            await self._pace(target_host)
            url = target

    async def _request(
        self, request: FetchRequest, url: str, headers: dict[str, str]
    ) -> FetchResult | _Redirect:
        """One hop: a result, or the status and target of a redirect."""
        proxy = proxy_for(url, self._proxies)
        try:
            async with self._client().get(
                url, headers=headers, allow_redirects=False, proxy=proxy
            ) as response:
                return await self._outcome(request, url, response)
        except aiohttp.ClientError as exc:
            message = describe_client_error(
                exc, timeout=self._settings.timeout, host=urlsplit(url).hostname or ""
            )
            raise FetchError(message) from exc

    async def _outcome(
        self, request: FetchRequest, url: str, response: aiohttp.ClientResponse
    ) -> FetchResult | _Redirect:
        status = response.status
        if status in REDIRECT_STATUSES:
            location = response.headers.get("location")
            if not location:
                raise FetchError(f"HTTP {status} redirect without a Location", status=status)
            return _Redirect(status, urljoin(url, location.strip()))
        if status == 304:
            return self._result(request, url, response, content=None)
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
        return self._result(request, url, response, content=content)

    async def _read_body(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self._settings.max_bytes
        too_large = FetchError(f"body larger than {format_size(limit)}", status=response.status)
        decoder = BodyDecoder(response.headers.get("content-encoding"))
        declared = response.headers.get("content-length", "")
        if (
            declared.isdigit()
            and int(declared) > limit
            and "content-encoding" not in response.headers
        ):
            raise too_large
        body = bytearray()
        async for chunk in response.content.iter_chunked(READ_SIZE):
            body += decoder.decode(chunk, limit - len(body))
            if len(body) > limit:
                raise too_large
        return bytes(body)

    def _result(
        self,
        request: FetchRequest,
        url: str,
        response: aiohttp.ClientResponse,
        *,
        content: bytes | None,
    ) -> FetchResult:
        return FetchResult(
            source_id=request.source_id,
            url=url,
            status=response.status,
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


def _reason(response: aiohttp.ClientResponse) -> str:
    if response.reason:
        return response.reason
    try:
        return http.HTTPStatus(response.status).phrase
    except ValueError:
        return ""
