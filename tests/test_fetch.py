"""Fetcher against a real HTTP server on 127.0.0.1, plus its pure header and policy functions."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import itertools
import socket
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TypeVar

import pytest

from aggregator import PROJECT_URL, __version__
from aggregator.clock import FixedClock
from aggregator.errors import FetchError
from aggregator.fetch import (
    MAX_RETRY_AFTER,
    BodyDecoder,
    Fetcher,
    IPAddress,
    default_user_agent,
    format_size,
    is_public_address,
    local_path,
    parse_max_age,
    parse_retry_after,
    redirect_allowed,
)
from aggregator.models import FetchRequest, FetchResult
from aggregator.settings import FetchSettings
from tests.servers import FeedServer, Response

T = TypeVar("T")
MiB = 1024 * 1024
SETTINGS = FetchSettings(timeout=5.0, deadline=5.0, max_bytes=MiB, concurrency=8, per_host=2)
FEED = b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title></channel></rss>'
NOW = datetime(2024, 5, 10, 12, 0, 0, tzinfo=UTC)


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def fetch(
    url: str,
    settings: FetchSettings = SETTINGS,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    **fetcher_options: object,
) -> FetchResult:
    async def go() -> FetchResult:
        async with Fetcher(settings, **fetcher_options) as fetcher:  # type: ignore[arg-type]
            return await fetcher.fetch(FetchRequest("src", url, etag, last_modified))

    return run(go())


def fetch_error(url: str, settings: FetchSettings = SETTINGS, **options: object) -> FetchError:
    with pytest.raises(FetchError) as info:
        fetch(url, settings, **options)  # type: ignore[arg-type]
    return info.value


# --- pure functions ---------------------------------------------------------------------------


def test_default_user_agent_names_version_and_url() -> None:
    assert default_user_agent() == f"aggregator/{__version__} (+{PROJECT_URL})"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("max-age=300", 300.0),
        ("public, max-age=60, must-revalidate", 60.0),
        ('max-age="120"', 120.0),
        ("s-maxage=10", None),
        ("no-cache", None),
        ("max-age=abc", None),
        (None, None),
    ],
)
def test_parse_max_age(header: str | None, expected: float | None) -> None:
    assert parse_max_age(header) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 0 ", 0.0),
        ("Fri, 10 May 2024 12:05:00 GMT", 300.0),
        ("Fri, 10 May 2024 11:00:00 GMT", 0.0),  # in the past
        ("Fri, 10 May 2030 12:00:00 GMT", MAX_RETRY_AFTER),
        ("99999999", MAX_RETRY_AFTER),
        ("-5", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, NOW) == expected


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("240.0.0.1", False),  # reserved
        ("224.0.0.1", False),  # multicast
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("2002:0a00:0001::1", False),  # 6to4 around 10.0.0.1
    ],
)
def test_is_public_address(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


def test_redirect_allowed() -> None:
    public = [ipaddress.ip_address("93.184.216.34")]
    private = [ipaddress.ip_address("10.0.0.5")]
    mixed = public + private
    assert redirect_allowed(False, public)
    assert not redirect_allowed(False, private)
    assert not redirect_allowed(False, mixed)
    assert not redirect_allowed(False, [])
    assert redirect_allowed(True, private)  # a local source may redirect locally


@pytest.mark.parametrize(
    ("size", "text"),
    [(10 * MiB, "10 MiB"), (MiB, "1 MiB"), (1536, "1.5 KiB"), (100, "100 bytes")],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


def test_local_path() -> None:
    assert local_path("https://example.org/feed") is None
    assert local_path("/srv/feeds/a.xml") == Path("/srv/feeds/a.xml")
    assert local_path("file:///srv/feeds/a%20b.xml") == Path("/srv/feeds/a b.xml")
    with pytest.raises(FetchError, match="unsupported URL scheme: ftp"):
        local_path("ftp://example.org/feed")
    with pytest.raises(FetchError, match="another host"):
        local_path("file://server/share/feed.xml")


def test_body_decoder_output_is_bounded_by_room() -> None:
    bomb = gzip.compress(b"\0" * (20 * MiB))
    decoder = BodyDecoder("gzip")
    out = decoder.decode(bomb, 1000)
    assert 1000 < len(out) <= 1001


def test_body_decoder_handles_zlib_and_raw_deflate() -> None:
    wrapped = zlib.compress(FEED)
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw_deflate = raw.compress(FEED) + raw.flush()
    assert BodyDecoder("deflate").decode(wrapped, MiB) == FEED
    assert BodyDecoder("deflate").decode(raw_deflate, MiB) == FEED
    assert BodyDecoder(None).decode(FEED, 10) == FEED
    with pytest.raises(FetchError, match="unsupported Content-Encoding: br"):
        BodyDecoder("br")
    with pytest.raises(FetchError, match="cannot decompress"):
        BodyDecoder("gzip").decode(b"not gzip at all", MiB)


# --- HTTP against a real server ----------------------------------------------------------------


def test_200_sends_our_headers_and_returns_validators(http_server: FeedServer) -> None:
    http_server.routes["/feed"] = Response(
        200,
        FEED,
        {
            "Content-Type": "application/rss+xml; charset=utf-8",
            "ETag": '"v1"',
            "Last-Modified": "Fri, 10 May 2024 08:00:00 GMT",
            "Cache-Control": "public, max-age=600",
        },
    )
    result = fetch(http_server.url("/feed"))
    assert result.status == 200
    assert result.content == FEED
    assert result.content_type == "application/rss+xml; charset=utf-8"
    assert result.etag == '"v1"'
    assert result.last_modified == "Fri, 10 May 2024 08:00:00 GMT"
    assert result.max_age == 600.0
    assert result.url == http_server.url("/feed")
    assert result.permanent_redirect is None
    (hit,) = http_server.hits_for("/feed")
    assert hit.headers["user-agent"] == default_user_agent()
    assert hit.headers["accept"].startswith("application/atom+xml, application/rss+xml")
    assert hit.headers["accept-encoding"] == "gzip, deflate"
    assert "if-none-match" not in hit.headers


def test_user_agent_from_argument_then_settings(http_server: FeedServer) -> None:
    http_server.routes["/feed"] = Response(200, FEED)
    fetch(http_server.url("/feed"), FetchSettings(user_agent="from-settings"))
    fetch(http_server.url("/feed"), FetchSettings(user_agent="from-settings"), user_agent="arg")
    agents = [hit.headers["user-agent"] for hit in http_server.hits_for("/feed")]
    assert agents == ["from-settings", "arg"]


def test_etag_then_304_via_if_none_match(http_server: FeedServer) -> None:
    def conditional(handler: BaseHTTPRequestHandler) -> Response:
        if handler.headers.get("If-None-Match") == '"v1"':
            return Response(304)  # validators not repeated
        return Response(200, FEED, {"ETag": '"v1"'})

    http_server.routes["/feed"] = conditional
    first = fetch(http_server.url("/feed"))
    assert first.etag == '"v1"' and first.content == FEED
    second = fetch(http_server.url("/feed"), etag=first.etag, last_modified="old-date")
    assert second.not_modified
    assert second.status == 304
    assert second.content is None
    assert second.etag == '"v1"'  # carried over from the request
    assert second.last_modified == "old-date"
    assert http_server.hits_for("/feed")[1].headers["if-none-match"] == '"v1"'


def test_non_ascii_validator_is_not_sent(http_server: FeedServer) -> None:
    http_server.routes["/feed"] = Response(200, FEED)
    assert fetch(http_server.url("/feed"), etag='"caf\u00e9"').content == FEED
    assert "if-none-match" not in http_server.hits_for("/feed")[0].headers


def test_last_modified_then_304_via_if_modified_since(http_server: FeedServer) -> None:
    stamp = "Fri, 10 May 2024 08:00:00 GMT"

    def conditional(handler: BaseHTTPRequestHandler) -> Response:
        if handler.headers.get("If-Modified-Since") == stamp:
            return Response(304, headers={"Last-Modified": stamp, "Cache-Control": "max-age=60"})
        return Response(200, FEED, {"Last-Modified": stamp})

    http_server.routes["/feed"] = conditional
    first = fetch(http_server.url("/feed"))
    second = fetch(http_server.url("/feed"), last_modified=first.last_modified)
    assert second.not_modified and second.last_modified == stamp and second.max_age == 60.0
    assert second.etag is None


@pytest.mark.parametrize(
    ("status", "message"),
    [(500, "HTTP 500 Internal Server Error"), (404, "HTTP 404 Not Found"), (410, "HTTP 410 Gone")],
)
def test_http_errors(http_server: FeedServer, status: int, message: str) -> None:
    http_server.routes["/feed"] = Response(status, b"nope", {"Retry-After": "60"})
    error = fetch_error(http_server.url("/feed"))
    assert str(error) == message
    assert error.status == status
    assert error.retry_after is None  # only 429 and 503 ask us to wait


def test_429_retry_after_seconds(http_server: FeedServer) -> None:
    http_server.routes["/feed"] = Response(429, b"slow down", {"Retry-After": "120"})
    error = fetch_error(http_server.url("/feed"))
    assert error.status == 429 and error.retry_after == 120.0
    assert str(error) == "HTTP 429 Too Many Requests"


def test_503_retry_after_http_date(http_server: FeedServer) -> None:
    http_server.routes["/feed"] = Response(
        503, b"", {"Retry-After": "Fri, 10 May 2024 13:00:00 GMT"}
    )
    error = fetch_error(http_server.url("/feed"), clock=FixedClock(NOW))
    assert error.status == 503 and error.retry_after == 3600.0


def test_permanent_redirect_chain(http_server: FeedServer) -> None:
    http_server.routes["/a"] = Response(301, headers={"Location": "/b"})
    http_server.routes["/b"] = Response(308, headers={"Location": http_server.url("/c")})
    http_server.routes["/c"] = Response(200, FEED)
    result = fetch(http_server.url("/a"))
    assert result.content == FEED
    assert result.url == http_server.url("/c")
    assert result.permanent_redirect == http_server.url("/c")


def test_temporary_hop_means_no_permanent_redirect(http_server: FeedServer) -> None:
    http_server.routes["/a"] = Response(301, headers={"Location": "/b"})
    http_server.routes["/b"] = Response(302, headers={"Location": "/c"})
    http_server.routes["/c"] = Response(200, FEED)
    result = fetch(http_server.url("/a"))
    assert result.url == http_server.url("/c")
    assert result.permanent_redirect is None


def test_302_gives_no_permanent_redirect_and_keeps_validators(http_server: FeedServer) -> None:
    http_server.routes["/a"] = Response(302, headers={"Location": "/c"})
    http_server.routes["/c"] = Response(304)
    result = fetch(http_server.url("/a"), etag='"x"')
    assert result.not_modified and result.permanent_redirect is None
    assert http_server.hits_for("/c")[0].headers["if-none-match"] == '"x"'


def test_redirect_loop(http_server: FeedServer) -> None:
    http_server.routes["/a"] = Response(301, headers={"Location": "/b"})
    http_server.routes["/b"] = Response(301, headers={"Location": "/a"})
    error = fetch_error(http_server.url("/a"))
    assert str(error) == f"redirect loop at {http_server.url('/a')}"


def test_more_than_five_redirects(http_server: FeedServer) -> None:
    for hop in range(7):
        http_server.routes[f"/h{hop}"] = Response(302, headers={"Location": f"/h{hop + 1}"})
    http_server.routes["/h5"] = Response(302, headers={"Location": "/h6"})
    http_server.routes["/h6"] = Response(200, FEED)
    assert str(fetch_error(http_server.url("/h0"))) == "too many redirects (more than 5)"
    assert fetch(http_server.url("/h1")).content == FEED  # exactly five hops is fine


def test_redirect_without_location(http_server: FeedServer) -> None:
    http_server.routes["/a"] = Response(302)
    assert "without a Location" in str(fetch_error(http_server.url("/a")))


def test_redirect_to_a_file_url_is_refused(http_server: FeedServer) -> None:
    http_server.routes["/a"] = Response(302, headers={"Location": "file:///etc/passwd"})
    assert "non-HTTP URL" in str(fetch_error(http_server.url("/a")))


def fake_resolver(table: dict[str, list[str]]) -> Callable[[str], Awaitable[Sequence[IPAddress]]]:
    async def resolve(host: str) -> Sequence[IPAddress]:
        return [ipaddress.ip_address(address) for address in table[host]]

    return resolve


@pytest.mark.parametrize(
    "location", ["http://internal.test/admin", "http://169.254.169.254/latest/meta-data/"]
)
def test_public_source_may_not_redirect_to_a_private_address(
    http_server: FeedServer, location: str
) -> None:
    # The resolver pretends our 127.0.0.1 server is on the internet; the refusal happens before
    # any connection, so nothing is sent anywhere but 127.0.0.1.
    resolver = fake_resolver(
        {
            "127.0.0.1": ["93.184.216.34"],
            "internal.test": ["93.184.216.35", "10.0.0.5"],
            "169.254.169.254": ["169.254.169.254"],
        }
    )
    http_server.routes["/a"] = Response(302, headers={"Location": location})
    error = fetch_error(http_server.url("/a"), resolver=resolver)
    assert str(error) == f"redirect to a private address refused: {location}"


def test_local_source_may_redirect_locally(http_server: FeedServer) -> None:
    http_server.routes["/a"] = Response(302, headers={"Location": "/b"})
    http_server.routes["/b"] = Response(200, FEED)
    resolver = fake_resolver({"127.0.0.1": ["127.0.0.1"]})
    assert fetch(http_server.url("/a"), resolver=resolver).content == FEED


def trickle(handler: BaseHTTPRequestHandler) -> None:
    """One byte every 0.2 s for up to 10 s: never idle long enough for a read timeout."""
    try:
        for _ in range(50):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.2)
    except OSError:
        pass  # the client hung up, as it should


def test_trickling_server_is_cut_off_by_the_deadline(http_server: FeedServer) -> None:
    http_server.routes["/slow"] = Response(200, stream=trickle)
    settings = FetchSettings(timeout=5.0, deadline=1.0, max_bytes=MiB)
    started = time.monotonic()
    error = fetch_error(http_server.url("/slow"), settings)
    assert str(error) == "timed out after 1s"
    assert time.monotonic() - started < 4


def test_silent_server_hits_the_read_timeout(http_server: FeedServer) -> None:
    http_server.routes["/silent"] = Response(200, stream=lambda handler: time.sleep(2))
    settings = FetchSettings(timeout=0.3, deadline=10.0, max_bytes=MiB)
    assert str(fetch_error(http_server.url("/silent"), settings)) == "timed out after 0.3s"


def test_gzip_bomb_stops_at_the_cap(http_server: FeedServer) -> None:
    bomb = gzip.compress(b"\0" * (50 * MiB), compresslevel=9)
    assert len(bomb) < MiB
    http_server.routes["/bomb"] = Response(200, bomb, {"Content-Encoding": "gzip"})
    error = fetch_error(http_server.url("/bomb"))
    assert str(error) == "body larger than 1 MiB"


def test_gzip_body_is_decompressed(http_server: FeedServer) -> None:
    http_server.routes["/feed"] = Response(200, gzip.compress(FEED), {"Content-Encoding": "gzip"})
    assert fetch(http_server.url("/feed")).content == FEED


def test_oversized_plain_body(http_server: FeedServer) -> None:
    http_server.routes["/big"] = Response(200, b"x" * (MiB + 1))
    assert str(fetch_error(http_server.url("/big"))) == "body larger than 1 MiB"


def test_oversized_streamed_body_without_length(http_server: FeedServer) -> None:
    def flood(handler: BaseHTTPRequestHandler) -> None:
        try:
            for _ in range(40):
                handler.wfile.write(b"x" * 65536)
        except OSError:
            pass

    http_server.routes["/flood"] = Response(200, stream=flood)
    assert str(fetch_error(http_server.url("/flood"))) == "body larger than 1 MiB"


def test_body_exactly_at_the_cap_is_fine(http_server: FeedServer) -> None:
    http_server.routes["/edge"] = Response(200, b"x" * MiB)
    assert len(fetch(http_server.url("/edge")).content or b"") == MiB


def test_connection_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert str(fetch_error(f"http://127.0.0.1:{port}/feed")) == "connection refused"


def test_invalid_url() -> None:
    assert "invalid URL" in str(fetch_error("http://[::1/feed"))


def test_many_sources_at_once_respect_the_per_host_bound(http_server: FeedServer) -> None:
    lock = threading.Lock()
    active = 0
    peak = 0

    def slow(handler: BaseHTTPRequestHandler) -> Response:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1
        return Response(200, FEED)

    for n in range(24):
        http_server.routes[f"/f{n}"] = slow

    async def go() -> list[FetchResult]:
        async with Fetcher(SETTINGS) as fetcher:
            return await asyncio.gather(
                *(
                    fetcher.fetch(FetchRequest(f"s{n}", http_server.url(f"/f{n}")))
                    for n in range(24)
                )
            )

    results = run(go())
    assert [r.source_id for r in results] == [f"s{n}" for n in range(24)]
    assert all(r.content == FEED for r in results)
    assert peak <= SETTINGS.per_host


def test_errors_in_one_fetch_do_not_disturb_others(http_server: FeedServer) -> None:
    http_server.routes["/ok"] = Response(200, FEED)
    http_server.routes["/bad"] = Response(500)

    async def go() -> tuple[FetchResult | BaseException, FetchResult | BaseException]:
        async with Fetcher(SETTINGS) as fetcher:
            return await asyncio.gather(
                fetcher.fetch(FetchRequest("ok", http_server.url("/ok"))),
                fetcher.fetch(FetchRequest("bad", http_server.url("/bad"))),
                return_exceptions=True,
            )

    ok, bad = run(go())
    assert isinstance(ok, FetchResult) and ok.content == FEED
    assert isinstance(bad, FetchError) and bad.status == 500


# --- local sources -------------------------------------------------------------------------------


def test_local_file_by_path_and_file_url(tmp_path: Path) -> None:
    path = tmp_path / "feed.rss"
    path.write_bytes(FEED)
    by_path = fetch(str(path))
    assert by_path.status == 200 and by_path.content == FEED
    assert by_path.content_type == "application/rss+xml"
    by_url = fetch(path.as_uri())
    assert by_url.content == FEED and by_url.url == path.as_uri()


def test_local_file_without_known_suffix_has_no_content_type(tmp_path: Path) -> None:
    path = tmp_path / "feed"
    path.write_bytes(FEED)
    assert fetch(str(path)).content_type is None


def test_missing_local_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.xml"
    assert str(fetch_error(str(missing))) == f"no such file: {missing}"


def test_local_directory_and_oversized_file(tmp_path: Path) -> None:
    assert str(fetch_error(str(tmp_path))) == f"not a file: {tmp_path}"
    big = tmp_path / "big.xml"
    big.write_bytes(b"x" * (MiB + 1))
    assert "larger than 1 MiB" in str(fetch_error(str(big)))


# --- spacing between requests to one host ------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("www.info.gov.hk", 1.5),
        ("93.184.216.34", 1.5),
        ("127.0.0.1", 0.0),
        ("127.3.4.5", 0.0),
        ("[::1]", 0.0),
        ("localhost", 0.0),
        ("feeds.localhost", 0.0),
        ("10.0.0.1", 1.5),  # another machine on the LAN is someone's server too
    ],
)
def test_spacing_for(host: str, expected: float) -> None:
    from aggregator.fetch import spacing_for

    assert spacing_for(host, 1.5) == expected


def test_host_pacer_spaces_request_starts_per_host() -> None:
    from aggregator.fetch import HostPacer

    async def go() -> dict[str, list[float]]:
        pacer = HostPacer()
        loop = asyncio.get_running_loop()
        starts: dict[str, list[float]] = {"a": [], "b": [], "free": []}

        async def request(host: str, spacing: float) -> None:
            await pacer.wait(host, spacing)
            starts[host].append(loop.time())

        await asyncio.gather(
            *(request("a", 0.3) for _ in range(3)),
            *(request("b", 0.3) for _ in range(2)),
            *(request("free", 0.0) for _ in range(3)),
        )
        return starts

    starts = run(go())
    for host in ("a", "b"):
        times = sorted(starts[host])
        assert all(later - earlier >= 0.299 for earlier, later in itertools.pairwise(times))
    # Another host does not wait for "a", and no spacing means no waiting.
    second_of_a = sorted(starts["a"])[1]
    assert min(starts["b"]) < second_of_a
    assert max(starts["free"]) < second_of_a


def test_host_spacing_is_read_from_the_config(tmp_path: Path) -> None:
    from aggregator import config
    from aggregator.errors import ConfigError

    path = tmp_path / "feeds.toml"
    path.write_text("[fetch]\nhost_spacing = 0.5\n")
    assert config.load(path).fetch.host_spacing == 0.5
    path.write_text("[fetch]\nhost_spacing = 0\n")
    assert config.load(path).fetch.host_spacing == 0.0
    path.write_text("[fetch]\nconcurrency = 5\n\nhost_spacing = -1\n")
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value) == f"{path}:4: fetch.host_spacing: must be zero or more"
    path.write_text("")
    assert config.load(path).fetch.host_spacing == 1.0


# --- the wire: what aiohttp sends and reads ----------------------------------------------------


def test_url_host() -> None:
    from aggregator.fetch import url_host

    assert url_host("https://User:p%40ss@新聞.Example/路徑") == "xn--efvv70d.example"
    assert url_host("http://[::1]:8080/feed") == "::1"
    bad_urls = ["http://[::1/feed", "http://host:port/", "http:///feed", "ftp://host/"]
    bad_urls += [f"http://{'a' * 64}.example/", "http://a..b/"]  # labels a resolver refuses
    for bad in bad_urls:
        with pytest.raises(FetchError, match="invalid URL"):
            url_host(bad)


def test_a_non_ascii_path_and_query_are_percent_encoded(http_server: FeedServer) -> None:
    path = "/%E8%B7%AF%E5%BE%91/a%20b?q=%E9%A6%99%E6%B8%AF"
    http_server.routes[path] = Response(200, FEED)
    assert fetch(http_server.url("/路徑/a b?q=香港#frag")).content == FEED


def test_cookies_are_not_kept_between_fetches(http_server: FeedServer) -> None:
    http_server.routes["/a"] = Response(200, FEED, {"Set-Cookie": "session=1; Path=/"})
    http_server.routes["/b"] = Response(200, FEED)

    def by_name(path: str) -> str:  # a cookie jar keeps nothing for a bare IP address
        return http_server.url(path).replace("127.0.0.1", "localhost")

    async def go() -> None:
        async with Fetcher(SETTINGS) as fetcher:
            await fetcher.fetch(FetchRequest("a", by_name("/a")))
            await fetcher.fetch(FetchRequest("b", by_name("/b")))

    run(go())
    assert "cookie" not in http_server.hits_for("/b")[0].headers


def test_chunked_gzip_body_and_credentials_from_the_url(http_server: FeedServer) -> None:
    def chunked(handler: BaseHTTPRequestHandler) -> None:
        body = gzip.compress(FEED)
        for start in range(0, len(body), 7):
            piece = body[start : start + 7]
            handler.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
        handler.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")

    http_server.routes["/feed"] = Response(
        200,
        headers={"Transfer-Encoding": "chunked", "Content-Encoding": "gzip"},
        stream=chunked,
    )
    url = http_server.url("/feed").replace("http://", "http://reader:secret@")
    assert fetch(url).content == FEED
    assert http_server.hits_for("/feed")[0].headers["authorization"] == "Basic cmVhZGVyOnNlY3JldA=="


def test_body_delimited_by_the_end_of_the_connection(http_server: FeedServer) -> None:
    http_server.routes["/feed"] = Response(200, stream=lambda handler: handler.wfile.write(FEED))
    assert fetch(http_server.url("/feed")).content == FEED


def test_validator_with_a_line_break_is_not_sent(http_server: FeedServer) -> None:
    http_server.routes["/feed"] = Response(200, FEED)
    fetch(http_server.url("/feed"), etag='"v1"\r\nX-Injected: 1')
    assert "x-injected" not in http_server.hits_for("/feed")[0].headers


class CountingServer:
    """A raw asyncio HTTP/1.1 server: counts connections; may hang up after every answer."""

    def __init__(self, *, hang_up: bool) -> None:
        self.connections = 0
        self.hang_up = hang_up

    async def answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n')
                await writer.drain()
                if self.hang_up:  # without saying "Connection: close": a stale keep-alive
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.mark.parametrize("hang_up", [False, True])
def test_keep_alive_reuses_one_connection_and_survives_a_stale_one(hang_up: bool) -> None:
    counting = CountingServer(hang_up=hang_up)

    async def go() -> list[FetchResult]:
        server = await asyncio.start_server(counting.answer, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/feed"
        results = []
        async with server, Fetcher(SETTINGS) as fetcher:
            for _ in range(3):
                results.append(await fetcher.fetch(FetchRequest("s", url, '"v1"')))
                await asyncio.sleep(0.01)  # lets the hang-up arrive first
        return results

    assert all(result.not_modified for result in run(go()))
    assert counting.connections == (3 if hang_up else 1)


def test_a_proxy_from_the_environment_is_used(
    http_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", http_server.url(""))
    http_server.routes["http://feeds.example.test/rss"] = Response(200, FEED)
    assert fetch("http://feeds.example.test/rss").content == FEED


def test_an_unreachable_proxy_is_named_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{port}")
    error = fetch_error("http://feeds.example.test/rss")
    assert str(error) == "cannot connect to the proxy: connection refused"


def test_proxy_for_follows_the_environment_rules() -> None:
    from aggregator.fetch import proxy_for

    proxies = {"http": "http://proxy:3128", "all": "http://all:8080", "no": "intranet.test,.corp"}
    assert proxy_for("http://feeds.example/rss", proxies) == "http://proxy:3128"
    assert proxy_for("https://feeds.example/rss", proxies) == "http://all:8080"
    assert proxy_for("http://intranet.test:8080/rss", proxies) is None
    assert proxy_for("http://user:pw@news.corp/rss", proxies) is None
    assert proxy_for("http://feeds.example/rss", {}) is None
    with pytest.raises(FetchError, match="unsupported proxy"):
        proxy_for("http://feeds.example/rss", {"http": "socks5://127.0.0.1:1080"})


def test_https_certificate_is_verified(tmp_path: Path) -> None:
    import ssl
    import subprocess

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def go() -> FetchError:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        async with server, Fetcher(SETTINGS) as fetcher:
            with pytest.raises(FetchError) as info:
                await fetcher.fetch(FetchRequest("s", f"https://127.0.0.1:{port}/feed"))
        return info.value

    assert str(run(go())).startswith("TLS certificate verification failed")
