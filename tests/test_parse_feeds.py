"""parse_feed on hand-written fixtures (tests/data/feeds), hostile input and random bytes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.errors import ParseError
from aggregator.models import ParsedFeed
from aggregator.parse.feeds import parse_date, parse_feed
from aggregator.process.sanitize import clean_html
from tests.corpus import corpus_dir

DATA = Path(__file__).parent / "data" / "feeds"
CORPUS = corpus_dir()
BASE = "https://base.example.org/feeds/feed.xml"


def parse_fixture(name: str, content_type: str | None = None) -> ParsedFeed:
    return parse_feed((DATA / name).read_bytes(), url=BASE, content_type=content_type)


def test_rss20() -> None:
    feed = parse_fixture("rss20.xml", "application/rss+xml")
    assert feed.title == "Science Watch"
    assert feed.link == "https://news.example.org/"
    assert feed.warning is None
    first, second = feed.entries
    assert first.guid == "park-2024-05"
    assert first.link == "https://news.example.org/2024/05/park.html"
    assert first.title == "Hong Kong and Shenzhen sign & launch a technology park"
    # content:encoded is longer than the description, so it is the summary. It stays raw
    # (either parser path); its relative link resolves against the base when sanitized.
    assert "a relative link" in first.summary_html
    assert 'href="https://base.example.org/related"' in clean_html(
        first.summary_html, base_url=BASE
    )
    assert first.author == "Chan Tai Man"
    assert first.published == datetime(2024, 5, 9, 23, 40, 27, tzinfo=UTC)
    assert first.updated is None
    assert first.categories == ("Technology", "Shenzhen")
    assert second.guid is None
    assert second.summary_html == "<p>Escaped <i>HTML</i></p>"


def test_relative_links_resolve_against_the_document_url() -> None:
    feed = parse_fixture("rss20.xml")
    assert feed.entries[1].link == "https://base.example.org/2024/05/relative.html"


def test_atom() -> None:
    feed = parse_fixture("atom.xml", "application/atom+xml")
    assert feed.title == "Atom Watch"
    assert feed.link == "https://atom.example.org/"
    quantum, only_updated = feed.entries
    assert quantum.guid == "tag:atom.example.org,2024:quantum"
    assert quantum.link == "https://base.example.org/feeds/entries/quantum"
    assert quantum.title == "A <em>quantum</em> lab opens"
    assert quantum.summary_html == "Plain text: 1 &lt; 2"  # type="text" is escaped to HTML
    assert quantum.author == "Wong Siu Ming"
    assert quantum.published == datetime(2024, 5, 9, 2, 0, tzinfo=UTC)
    assert quantum.updated == datetime(2024, 5, 10, 1, 30, tzinfo=UTC)
    assert quantum.categories == ("physics", "Hong Kong")
    assert only_updated.summary_html == "<p>Full content that is longer than the summary.</p>"
    # With no <published>, <updated> is the best date the source gives.
    assert only_updated.published == only_updated.updated == datetime(2024, 5, 8, tzinfo=UTC)


def test_rdf_rss10() -> None:
    feed = parse_fixture("rdf.xml")
    assert feed.title == "RDF Watch"
    (entry,) = feed.entries
    assert entry.link == "https://rdf.example.org/1"
    assert entry.published == datetime(2024, 5, 1, 4, 0, tzinfo=UTC)
    assert entry.categories == ("research",)


def test_json_feed() -> None:
    feed = parse_fixture("jsonfeed.json", "application/feed+json")
    assert feed.title == "JSON Watch"
    assert feed.link == "https://json.example.org/"
    assert feed.warning is None
    first, second = feed.entries  # the string item is skipped
    assert first.guid == "1"
    assert first.link == "https://json.example.org/posts/1"
    assert first.summary_html == "<p>The hub opens.</p>"
    assert first.author == "Lee Ka Yan"
    assert first.published == datetime(2024, 5, 9, 2, 0, tzinfo=UTC)
    assert first.updated == datetime(2024, 5, 9, 12, 0, tzinfo=UTC)
    assert first.categories == ("innovation", "Hong Kong")
    assert second.guid == "2"
    assert second.link == "https://base.example.org/posts/2"
    assert second.title == ""
    assert second.summary_html == "Plain &lt;text&gt; &amp; more"
    assert second.author == "JSON Feed 1.0 author"
    assert second.published is None


def test_json_feed_detected_by_content_without_content_type() -> None:
    assert parse_fixture("jsonfeed.json").title == "JSON Watch"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"items": ', "invalid JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"title": "not a feed"}', "JSON without"),
        (b"{" * 100_000, "invalid JSON"),
    ],
)
def test_bad_json_is_not_a_feed(content: bytes, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse_feed(content, url=BASE, content_type="application/json")


def test_rthk_item_without_link_keeps_guid_and_no_link() -> None:
    feed = parse_fixture("rthk_no_link.xml")
    (entry,) = feed.entries
    assert entry.link is None
    assert entry.guid == "https://news.rthk.hk/rthk/ch/component/k2/1000001-20240510.htm"
    assert entry.title == "港深創科園首階段落成"
    assert entry.published == datetime(2024, 5, 10, 7, 46, 4, tzinfo=UTC)


def test_ming_pao_hkt_dates_are_utc_plus_8() -> None:
    (entry,) = parse_fixture("mingpao_hkt.xml").entries
    assert entry.published == datetime(2020, 8, 7, 22, 30, tzinfo=UTC)  # 06:30 HKT


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Sat, 08 Aug 2020 16:05:00 HKT", datetime(2020, 8, 8, 8, 5, tzinfo=UTC)),
        ("Sat, 08 Aug 2020 16:05:00 hkt", datetime(2020, 8, 8, 8, 5, tzinfo=UTC)),
        ("2020-08-08 16:05:00 HKT", datetime(2020, 8, 8, 8, 5, tzinfo=UTC)),
        ("Sat, 08 Aug 2020 16:05:00 JST", datetime(2020, 8, 8, 7, 5, tzinfo=UTC)),
    ],
)
def test_parse_date_zone_abbreviations(raw: str, expected: datetime) -> None:
    assert parse_date(raw) == expected


def test_parse_date_without_zone_match_uses_feedparser_struct() -> None:
    import time

    assert parse_date("whatever", time.gmtime(0)) == datetime(1970, 1, 1, tzinfo=UTC)
    assert parse_date("Sat, 08 Aug 2020 16:05:00 XYZ") is None


@pytest.mark.skipif(not CORPUS.is_dir(), reason="shared corpus not available")
def test_ming_pao_corpus_feed() -> None:
    content = (CORPUS / "hk_media_fixtures_2020" / "mingpao.xml").read_bytes()
    feed = parse_feed(content, url="https://news.mingpao.com/rss/pns/s00002.xml")
    assert len(feed.entries) == 82
    assert feed.title == "明報新聞網-每日明報 RSS 港聞"
    assert all(entry.published is not None for entry in feed.entries)


@pytest.mark.parametrize(
    ("codec", "label", "content_type"),
    [
        ("big5hkscs", "big5", None),
        ("big5hkscs", None, "text/xml; charset=big5"),
        ("gb18030", "gb2312", None),
        ("utf-16", "utf-16", None),  # with BOM
        ("utf-16-le", None, None),  # without BOM
        ("utf-8-sig", None, None),
    ],
)
def test_chinese_titles_survive_every_encoding(
    codec: str, label: str | None, content_type: str | None
) -> None:
    title = "香港科技大學與深圳合作 㗎 邨" if "big5" in codec else "粤港澳大湾区 䶮 香港"
    declaration = f'<?xml version="1.0" encoding="{label}"?>' if label else ""
    document = (
        f'{declaration}<rss version="2.0"><channel><title>{title}</title>'
        f"<item><title>{title}</title><link>https://x.example/1</link></item></channel></rss>"
    )
    feed = parse_feed(document.encode(codec), url=BASE, content_type=content_type)
    assert feed.title == title
    assert feed.entries[0].title == title


def test_iso_8859_1_feed_is_read_as_windows_1252() -> None:
    document = (
        '<?xml version="1.0" encoding="ISO-8859-1"?><rss version="2.0"><channel><title>t</title>'
        "<item><title>\u201cQuoted\u201d caf\u00e9 \u20ac</title></item></channel></rss>"
    )
    feed = parse_feed(document.encode("cp1252"), url=BASE)
    assert feed.entries[0].title == "\u201cQuoted\u201d caf\u00e9 \u20ac"


def test_bozo_but_usable_feed_returns_entries_with_a_warning() -> None:
    feed = parse_fixture("bozo.xml")
    assert [entry.link for entry in feed.entries] == [
        "https://sloppy.example.org/1",
        "https://sloppy.example.org/2",
    ]
    assert feed.warning is not None and "entity" in feed.warning


def test_html_page_is_not_a_feed() -> None:
    with pytest.raises(ParseError, match="not a feed: an HTML page"):
        parse_fixture("not_a_feed.html", "text/html; charset=utf-8")


@pytest.mark.parametrize(
    "content", [b"", b"   \n", b"garbage \x00\x01\x02", b"<?xml version='1.0'?><note>hi</note>"]
)
def test_garbage_is_not_a_feed(content: bytes) -> None:
    with pytest.raises(ParseError, match=r"^not a feed: "):
        parse_feed(content, url=BASE)


def test_javascript_links_are_dropped() -> None:
    document = (
        b'<rss version="2.0"><channel><title>t</title><link>javascript:alert(1)</link>'
        b"<item><title>x</title><link>javascript:alert(1)</link></item></channel></rss>"
    )
    feed = parse_feed(document, url=BASE)
    assert feed.link is None
    assert feed.entries[0].link is None


def test_a_path_looking_document_is_parsed_not_opened() -> None:
    # feedparser.parse(bytes) would open a file of that name; we hand it a BytesIO.
    with pytest.raises(ParseError):
        parse_feed(b"/etc/passwd", url=BASE)


# --- XML hazards --------------------------------------------------------------------------------

BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY lol "lol">\n'
    + b"".join(
        b'<!ENTITY lol%d "%s">\n' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b']>\n<rss version="2.0"><channel><title>&lol9;</title>'
    b"<item><title>&lol9;</title><link>https://x.example/1</link></item></channel></rss>"
)

# One ~80 KB entity referenced thousands of times: small on the wire, but feedparser's loose
# parser would happily build a title of hundreds of megabytes.
QUADRATIC_BLOWUP = (
    b'<?xml version="1.0"?>\n<!DOCTYPE rss [<!ENTITY big "'
    + b"x" * 80_000
    + b'">]>\n<rss version="2.0"><channel><title>t</title><item><title>'
    + b"&big;" * 6_000
    + b"</title><link>https://x.example/1</link></item></channel></rss>"
)


@pytest.mark.parametrize("bomb", [BILLION_LAUGHS, QUADRATIC_BLOWUP], ids=["laughs", "quadratic"])
def test_entity_bombs_are_harmless(bomb: bytes) -> None:
    feed = parse_feed(bomb, url=BASE)
    (entry,) = feed.entries
    assert len(entry.title) < 2 * len(bomb)
    assert "lollollol" not in entry.title and "xxxxxxxxxx" not in entry.title
    assert entry.link == "https://x.example/1"


def test_external_entity_is_never_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    document = (
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY x SYSTEM "{secret.as_uri()}">'
        f'<!ENTITY y SYSTEM "file:///etc/passwd">]>'
        '<rss version="2.0"><channel><title>&x;</title>'
        "<item><title>&x; &y;</title><description>&y;</description></item></channel></rss>"
    ).encode()
    feed = parse_feed(document, url=BASE)
    rendered = repr(feed)
    assert "TOP-SECRET-VALUE" not in rendered
    assert "root:" not in rendered


# --- robustness -------------------------------------------------------------------------------

SEED = (DATA / "rss20.xml").read_bytes()


@st.composite
def mutated_feeds(draw: st.DrawFn) -> bytes:
    """The RSS fixture with random byte ranges replaced, deleted or duplicated."""
    content = bytearray(SEED)
    for _ in range(draw(st.integers(1, 8))):
        start = draw(st.integers(0, len(content)))
        end = draw(st.integers(start, min(len(content), start + 64)))
        action = draw(st.sampled_from(["replace", "delete", "duplicate"]))
        if action == "replace":
            content[start:end] = draw(st.binary(max_size=64))
        elif action == "delete":
            del content[start:end]
        else:
            content[start:start] = content[start:end]
    return bytes(content)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated_feeds(), st.binary(max_size=512), st.text(max_size=300).map(str.encode)))
def test_any_bytes_give_a_feed_or_parse_error(content: bytes) -> None:
    try:
        feed = parse_feed(content, url=BASE)
    except ParseError as exc:
        assert str(exc).startswith("not a feed: ")
    else:
        assert isinstance(feed, ParsedFeed)
        for entry in feed.entries:
            assert entry.published is None or entry.published.tzinfo is UTC
