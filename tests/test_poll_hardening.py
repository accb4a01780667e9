"""Hostile and unusual servers, polled through `update()` with a real store and a fixed clock.

Every case polls a healthy control source in the same poll and checks it is unaffected.
"""

from __future__ import annotations

import codecs
import email.utils
import gzip
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator import fetch as fetch_module
from aggregator.clock import FixedClock
from aggregator.errors import AggregatorError
from aggregator.fetch import IPAddress
from aggregator.models import SourceOutcome, SourceState
from aggregator.parse.feeds import parse_feed
from aggregator.process.normalize import normalize_entry
from aggregator.settings import FetchSettings, SelectSettings, Settings, SourceSettings
from aggregator.store import Store
from aggregator.update import update
from tests.feedmaker import Item, rss
from tests.servers import FeedServer, Response

NOW = datetime(2024, 5, 16, 12, 0, tzinfo=UTC)
KiB = 1024
FETCH = FetchSettings(
    timeout=2.0, deadline=2.0, max_bytes=64 * KiB, concurrency=8, per_host=8, host_spacing=0.0
)
CONTROL_FEED = rss([Item("Control item", "https://control.example.org/1")])
EVERY = 1800


class Poll:
    """A config of sources on the test server, a store on a temp file and a fixed clock."""

    def __init__(self, server: FeedServer, tmp_path: Path, fetch: FetchSettings = FETCH) -> None:
        self.server = server
        server.routes["/control.xml"] = Response(
            200, CONTROL_FEED, {"Content-Type": "application/rss+xml"}
        )
        self.sources = [self.source("control", "/control.xml")]
        self.settings = Settings(path=tmp_path / "feeds.toml", data_dir=tmp_path, fetch=fetch)
        self.store = Store(tmp_path / "aggregator.db")
        self.clock = FixedClock(NOW)

    def source(self, source_id: str, path: str, **options: object) -> SourceSettings:
        return SourceSettings(
            id=source_id, url=self.server.url(path), name=source_id, every=EVERY, **options
        )  # type: ignore[arg-type]

    def add(self, source_id: str, path: str, **options: object) -> None:
        self.sources.append(self.source(source_id, path, **options))

    def run(self, *, force: bool = True) -> dict[str, SourceOutcome]:
        settings = replace(self.settings, sources=tuple(self.sources))
        report = update(settings, self.store, self.clock, force=force)
        outcomes = {o.source_id: o for o in report.outcomes}
        self.assert_control_ok(outcomes)
        return outcomes

    def state(self, source_id: str) -> SourceState:
        return self.store.source_states()[source_id]

    def assert_control_ok(self, outcomes: dict[str, SourceOutcome]) -> None:
        control = outcomes["control"]
        assert control.status in ("ok", "not-modified"), control.error
        state = self.state("control")
        assert state.last_success_at == self.clock.now()
        assert state.consecutive_failures == 0
        assert state.last_error is None
        assert state.disabled_reason is None
        titles = [e.entry.title for e in self.store.entries() if e.entry.source_id == "control"]
        assert titles == ["Control item"]

    def seconds_to_next_poll(self, source_id: str) -> float:
        next_poll = self.state(source_id).next_poll_at
        assert next_poll is not None
        return (next_poll - self.clock.now()).total_seconds()

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def poll(http_server: FeedServer, tmp_path: Path) -> Poll:
    return Poll(http_server, tmp_path)


FEED = rss([Item("Case item", "https://case.example.org/1")])


def feed_response(body: bytes = FEED, **headers: str) -> Response:
    return Response(200, body, {"Content-Type": "application/rss+xml", **headers})


# --- politeness -------------------------------------------------------------------------------


def test_304_is_not_modified_and_keeps_entries(poll: Poll) -> None:
    def conditional(handler: BaseHTTPRequestHandler) -> Response:
        if handler.headers.get("If-None-Match") == '"v1"':
            return Response(304, headers={"ETag": '"v1"'})
        return feed_response(ETag='"v1"')

    poll.server.routes["/etag.xml"] = conditional
    poll.add("etag", "/etag.xml")
    assert poll.run()["etag"].new == 1
    poll.clock.advance(EVERY)
    outcome = poll.run()["etag"]
    assert outcome.status == "not-modified"
    assert poll.server.hits_for("/etag.xml")[-1].headers["if-none-match"] == '"v1"'
    assert poll.state("etag").etag == '"v1"'
    assert poll.state("etag").last_success_at == poll.clock.now()


def test_max_age_longer_than_the_interval_is_honoured(poll: Poll) -> None:
    poll.server.routes["/cached.xml"] = feed_response(**{"Cache-Control": "max-age=7200"})
    poll.add("cached", "/cached.xml")
    poll.run()
    assert 7200 * 0.9 <= poll.seconds_to_next_poll("cached") <= 7200 * 1.1
    assert poll.seconds_to_next_poll("control") <= EVERY * 1.1


def test_retry_after_seconds_on_429(poll: Poll) -> None:
    poll.server.routes["/busy.xml"] = Response(429, b"slow down", {"Retry-After": "10800"})
    poll.add("busy", "/busy.xml")
    outcome = poll.run()["busy"]
    assert outcome.status == "error" and "429" in (outcome.error or "")
    assert poll.seconds_to_next_poll("busy") == 10800  # backoff alone would be ~30 min
    assert poll.seconds_to_next_poll("control") <= EVERY * 1.1


def test_retry_after_http_date_on_503(poll: Poll) -> None:
    later = email.utils.format_datetime(NOW + timedelta(hours=5), usegmt=True)
    poll.server.routes["/down.xml"] = Response(503, b"maintenance", {"Retry-After": later})
    poll.add("down", "/down.xml")
    assert poll.run()["down"].status == "error"
    assert poll.seconds_to_next_poll("down") == 5 * 3600  # measured from the poll's clock
    # Not due before then, even on the next regular poll.
    poll.clock.advance(4 * 3600)
    assert "down" not in poll.run(force=False)


def test_410_disables_the_source_until_re_enabled(poll: Poll) -> None:
    poll.server.routes["/gone.xml"] = Response(410, b"gone")
    poll.add("gone", "/gone.xml")
    outcome = poll.run()["gone"]
    assert outcome.status == "error" and "410" in (outcome.error or "")
    state = poll.state("gone")
    assert state.disabled_reason == "HTTP 410 Gone"
    assert state.disabled_at == NOW

    poll.clock.advance(3 * 24 * 3600)
    assert "gone" not in poll.run()  # not even with --all
    settings = replace(poll.settings, sources=tuple(poll.sources))
    assert update(settings, poll.store, poll.clock, only=["gone"]).outcomes == ()
    assert len(poll.server.hits_for("/gone.xml")) == 1

    assert poll.store.enable_source("gone")
    poll.server.routes["/gone.xml"] = feed_response()
    assert poll.run()["gone"].new == 1
    assert poll.state("gone").disabled_reason is None


def test_410_source_comes_back_when_its_config_url_changes(poll: Poll) -> None:
    poll.server.routes["/gone.xml"] = Response(410, b"gone")
    poll.server.routes["/new-home.xml"] = feed_response()
    poll.add("gone", "/gone.xml")
    poll.run()
    poll.sources[-1] = poll.source("gone", "/new-home.xml")
    assert poll.run()["gone"].new == 1
    assert poll.state("gone").disabled_reason is None


def test_404_backs_off_and_does_not_disable(poll: Poll) -> None:
    poll.add("missing", "/missing.xml")  # no route: 404
    poll.run()
    first = poll.seconds_to_next_poll("missing")
    assert EVERY * 0.9 <= first <= EVERY * 1.1
    poll.run()
    state = poll.state("missing")
    assert state.consecutive_failures == 2
    assert state.disabled_reason is None
    assert 2 * EVERY * 0.9 <= poll.seconds_to_next_poll("missing") <= 2 * EVERY * 1.1


# --- redirects --------------------------------------------------------------------------------


def test_permanent_redirect_chain_is_followed_and_recorded(poll: Poll) -> None:
    poll.server.routes["/a.xml"] = Response(301, headers={"Location": "/b.xml"})
    poll.server.routes["/b.xml"] = Response(308, headers={"Location": "/c.xml"})
    poll.server.routes["/c.xml"] = feed_response()
    poll.add("chain", "/a.xml")
    assert poll.run()["chain"].new == 1
    state = poll.state("chain")
    assert state.moved_to == poll.server.url("/c.xml")
    assert state.moved_polls == 1
    assert state.url == poll.server.url("/a.xml")  # not adopted yet


def test_redirect_loop_is_an_error(poll: Poll) -> None:
    poll.server.routes["/x.xml"] = Response(301, headers={"Location": "/y.xml"})
    poll.server.routes["/y.xml"] = Response(302, headers={"Location": "/x.xml"})
    poll.add("loop", "/x.xml")
    outcome = poll.run()["loop"]
    assert outcome.status == "error" and "redirect loop" in (outcome.error or "")
    assert poll.state("loop").moved_to is None


def test_more_than_five_hops_is_an_error(poll: Poll) -> None:
    for hop in range(7):
        poll.server.routes[f"/hop{hop}"] = Response(301, headers={"Location": f"/hop{hop + 1}"})
    poll.add("hops", "/hop0")
    assert "too many redirects" in (poll.run()["hops"].error or "")


def test_permanent_redirect_is_adopted_after_three_polls(poll: Poll) -> None:
    poll.server.routes["/old.xml"] = Response(301, headers={"Location": "/new.xml"})
    poll.server.routes["/new.xml"] = feed_response()
    poll.add("moving", "/old.xml")
    for expected_polls in (1, 2):
        poll.run()
        assert poll.state("moving").moved_polls == expected_polls
        assert poll.state("moving").url == poll.server.url("/old.xml")
    poll.run()
    state = poll.state("moving")
    assert state.url == poll.server.url("/new.xml")
    assert state.configured_url == poll.server.url("/old.xml")
    assert state.moved_to is None

    poll.run()  # fetches the new address directly; a config sync does not undo the adoption
    assert len(poll.server.hits_for("/old.xml")) == 3
    assert len(poll.server.hits_for("/new.xml")) == 4
    assert poll.state("moving").url == poll.server.url("/new.xml")

    poll.server.routes["/edited.xml"] = feed_response()
    poll.sources[-1] = poll.source("moving", "/edited.xml")
    poll.run()  # a changed config URL starts over
    assert poll.state("moving").url == poll.server.url("/edited.xml")
    assert len(poll.server.hits_for("/edited.xml")) == 1


def test_an_interrupted_or_temporary_redirect_is_not_adopted(poll: Poll) -> None:
    poll.server.routes["/flaky.xml"] = Response(301, headers={"Location": "/target.xml"})
    poll.server.routes["/target.xml"] = feed_response()
    poll.server.routes["/temp.xml"] = Response(302, headers={"Location": "/target.xml"})
    poll.add("flaky", "/flaky.xml")
    poll.add("temp", "/temp.xml")
    poll.run()
    poll.run()
    poll.server.routes["/flaky.xml"] = feed_response()  # one poll without the redirect
    poll.run()
    assert poll.state("flaky").moved_polls == 0
    poll.server.routes["/flaky.xml"] = Response(301, headers={"Location": "/target.xml"})
    poll.run()
    poll.run()
    assert poll.state("flaky").url == poll.server.url("/flaky.xml")
    assert poll.state("flaky").moved_polls == 2
    assert poll.state("temp").url == poll.server.url("/temp.xml")
    assert poll.state("temp").moved_to is None


def test_redirect_to_a_private_address_is_refused(
    poll: Poll, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ipaddress

    async def resolver(host: str) -> list[IPAddress]:
        if host == "127.0.0.1":  # pretend the test server is on the internet
            return [ipaddress.ip_address("93.184.216.34")]
        return [ipaddress.ip_address(host)]

    monkeypatch.setattr(fetch_module, "resolve_host", resolver)
    poll.server.routes["/ssrf.xml"] = Response(
        302, headers={"Location": "http://169.254.169.254/latest/meta-data/"}
    )
    poll.add("ssrf", "/ssrf.xml")
    outcome = poll.run()["ssrf"]
    assert outcome.status == "error"
    assert "redirect to a private address refused" in (outcome.error or "")


# --- limits -----------------------------------------------------------------------------------


def test_trickling_server_is_cut_off_by_the_deadline(
    http_server: FeedServer, tmp_path: Path
) -> None:
    poll = Poll(http_server, tmp_path, replace(FETCH, deadline=1.0))

    def trickle(handler: BaseHTTPRequestHandler) -> None:
        try:
            for byte in FEED[:40]:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass  # the client hung up, as it should

    http_server.routes["/slow.xml"] = Response(
        200, headers={"Content-Length": str(len(FEED))}, stream=trickle
    )
    poll.add("slow", "/slow.xml")
    outcome = poll.run()["slow"]
    assert outcome.status == "error" and outcome.error == "timed out after 1s"


GZIP_BOMB = gzip.compress(b"\0" * (20 * 1024 * 1024), compresslevel=9)


def test_gzip_bomb_stops_at_the_cap(poll: Poll) -> None:
    assert len(GZIP_BOMB) < 64 * KiB  # small on the wire, 20 MiB inflated
    poll.server.routes["/bomb.xml"] = feed_response(GZIP_BOMB, **{"Content-Encoding": "gzip"})
    poll.add("bomb", "/bomb.xml")
    outcome = poll.run()["bomb"]
    assert outcome.status == "error" and outcome.error == "body larger than 64 KiB"


def test_oversized_body(poll: Poll) -> None:
    poll.server.routes["/huge.xml"] = feed_response(FEED + b" " * (100 * KiB))
    poll.add("huge", "/huge.xml")
    outcome = poll.run()["huge"]
    assert outcome.status == "error" and outcome.error == "body larger than 64 KiB"


# --- encodings --------------------------------------------------------------------------------

BIG5_TITLE = "香港科學園與深圳合作 𨋢"  # 𨋢 (lift) exists in Big5-HKSCS only
GB_TITLE = "粤港澳大湾区科技创新合作 䶮"  # 䶮 is in GB18030, not GB2312
CP1252_TITLE = "Hong Kong’s “InnoHK” labs — café"
UTF8_TITLE = "香港創新科技署 – résumé"
UTF16_TITLE = "香港與內地科研合作"


def _encoded_cases() -> dict[str, tuple[bytes, str, str]]:
    def feed(title: str, encoding: str, declare: str) -> bytes:
        return rss(
            [Item(title, f"https://{encoding}.example.org/1")], encoding=encoding, declare=declare
        )

    return {
        # id: (bytes, Content-Type, expected title)
        "big5": (feed(BIG5_TITLE, "big5hkscs", "big5"), "text/xml; charset=big5", BIG5_TITLE),
        "gb2312": (feed(GB_TITLE, "gb18030", "gb2312"), "text/xml; charset=gb2312", GB_TITLE),
        "latin1": (
            feed(CP1252_TITLE, "cp1252", "iso-8859-1"),
            "text/xml; charset=iso-8859-1",
            CP1252_TITLE,
        ),
        "utf8-bom": (
            codecs.BOM_UTF8 + feed(UTF8_TITLE, "utf-8", "utf-8"),
            "application/rss+xml",
            UTF8_TITLE,
        ),
        "utf16": (
            codecs.BOM_UTF16_LE + feed(UTF16_TITLE, "utf-16-le", "utf-8"),  # labelled UTF-8
            "application/rss+xml; charset=utf-8",
            UTF16_TITLE,
        ),
    }


def test_each_encoding_comes_out_right(poll: Poll) -> None:
    cases = _encoded_cases()
    for source_id, (body, content_type, _) in cases.items():
        poll.server.routes[f"/{source_id}.xml"] = Response(
            200, body, {"Content-Type": content_type}
        )
        poll.add(source_id, f"/{source_id}.xml")
    outcomes = poll.run()
    titles = {e.entry.source_id: e.entry.title for e in poll.store.entries()}
    for source_id, (_, _, expected) in cases.items():
        assert outcomes[source_id].status == "ok", outcomes[source_id].error
        assert titles[source_id] == expected


# --- HTML sources -----------------------------------------------------------------------------

LISTING = """<!DOCTYPE html><html><head><meta charset="big5"><title>Newsroom</title></head><body>
<ul class="list_ul">
  <li><a href="./202405/t20240516_1.shtml">香港與中科院簽署合作協議</a><span>2024年5月16日</span></li>
  <li><a href="./202405/t20240514_2.shtml">Quantum lab opens in Shenzhen</a></li>
</ul></body></html>"""
SELECT = SelectSettings(
    item="ul.list_ul > li", title="a", link="a@href", date="span", date_regex=r"t(\d{8})_"
)


def test_html_page_source(poll: Poll) -> None:
    poll.server.routes["/news/"] = Response(
        200, LISTING.encode("big5hkscs"), {"Content-Type": "text/html"}
    )
    poll.add("page", "/news/", type="html", select=SELECT)
    assert poll.run()["page"].new == 2
    entries = {e.entry.title: e.entry for e in poll.store.entries() if e.entry.source_id == "page"}
    signed = entries["香港與中科院簽署合作協議"]
    assert signed.link == poll.server.url("/news/202405/t20240516_1.shtml")
    assert signed.published == datetime(2024, 5, 15, 16, tzinfo=UTC)  # midnight in Hong Kong
    assert entries["Quantum lab opens in Shenzhen"].published == datetime(
        2024, 5, 13, 16, tzinfo=UTC
    )  # from the link's t20240514_


def test_html_selector_that_stopped_matching_is_an_error(poll: Poll) -> None:
    redesigned = LISTING.replace('class="list_ul"', 'class="news-items"')
    poll.server.routes["/news/"] = Response(200, redesigned.encode(), {"Content-Type": "text/html"})
    poll.add("page", "/news/", type="html", select=SELECT)
    outcome = poll.run()["page"]
    assert outcome.status == "error"
    assert outcome.error == (
        f"selector 'item' ('ul.list_ul > li') matched nothing on {poll.server.url('/news/')}"
    )
    assert poll.state("page").consecutive_failures == 1


# --- concurrency ------------------------------------------------------------------------------


def test_a_slow_parse_does_not_hold_up_other_fetches(
    poll: Poll, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one source is being parsed (on the worker thread), the others are fetched."""
    import aggregator.prepare as prepare_module

    fetch_times: dict[str, float] = {}
    real_parse = prepare_module.parse
    real_fetch = fetch_module.Fetcher.fetch
    parse_spans: list[tuple[float, float]] = []

    def slow_parse(source: SourceSettings, result: object, timezone: str) -> object:
        if source.id != "control":
            return real_parse(source, result, timezone)  # type: ignore[arg-type]
        started = time.monotonic()
        time.sleep(1.0)  # a big page: the event loop must keep fetching meanwhile
        parse_spans.append((started, time.monotonic()))
        return real_parse(source, result, timezone)  # type: ignore[arg-type]

    async def timed_fetch(self: fetch_module.Fetcher, request: object) -> object:
        result = await real_fetch(self, request)  # type: ignore[arg-type]
        fetch_times[request.source_id] = time.monotonic()  # type: ignore[attr-defined]
        return result

    monkeypatch.setattr(prepare_module, "parse", slow_parse)
    monkeypatch.setattr(fetch_module.Fetcher, "fetch", timed_fetch)

    def late(handler: BaseHTTPRequestHandler) -> Response:
        time.sleep(0.15)  # answers while "control" is being parsed
        return feed_response()

    poll.server.routes["/late.xml"] = late
    poll.add("late", "/late.xml")
    poll.run()
    [(parse_start, parse_end)] = parse_spans
    # The late source's fetch completed while "control" was being parsed, not after it.
    assert parse_start < fetch_times["late"] < parse_end


# --- fuzzing ----------------------------------------------------------------------------------

SEEDS = [
    FEED,
    rss([Item("香港 & 深圳 <b>科技</b>", "/relative", guid="g1")], encoding="big5hkscs"),
    b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>A</title>'
    b'<entry><title type="html">&lt;i&gt;x&lt;/i&gt;</title><link href="http://a/b"/>'
    b"<id>urn:1</id><updated>2024-05-16T00:00:00Z</updated></entry></feed>",
    b'{"version": "https://jsonfeed.org/version/1.1", "title": "J", "items": '
    b'[{"id": 1, "url": "https://j.example/1", "title": "t", "date_published": "2024-05-16"}]}',
    b'<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><rss version="2.0">'
    b"<channel><item><title>&b;&b;</title></item></channel></rss>",
]


@st.composite
def mutated_feeds(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        chunk = draw(
            st.one_of(
                st.binary(min_size=1, max_size=8),
                st.sampled_from([b"<", b">", b"&", b"]]>", b"<![CDATA[", b"\xff\xfe", b'"', b"{"]),
            )
        )
        if action == "insert":
            data[position:position] = chunk
        elif action == "delete":
            del data[position : position + len(chunk)]
        else:
            data[position : position + len(chunk)] = chunk
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    content=st.one_of(mutated_feeds(), st.binary(max_size=300)),
    content_type=st.sampled_from(
        [
            None,
            "application/rss+xml",
            "application/json",
            "text/html; charset=big5",
            "x/y; charset=zz",
        ]
    ),
)
def test_random_and_mutated_bytes_raise_only_our_errors(
    content: bytes, content_type: str | None
) -> None:
    try:
        feed = parse_feed(content, url="https://example.org/feed", content_type=content_type)
        for parsed in feed.entries:
            normalize_entry(
                parsed, source_id="fuzz", base_url="https://example.org/feed", first_seen=NOW
            )
    except AggregatorError:
        pass
