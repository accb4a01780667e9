"""normalize: canonical URLs, ids, and ParsedEntry -> Entry on shapes taken from real feeds."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.models import ParsedEntry
from aggregator.process.normalize import (
    UNTITLED,
    _canonical_url_by_w3lib,
    _plain_canonical_url,
    absolute_link,
    canonical_url,
    content_hash,
    entry_id,
    identity_key,
    normalize_entry,
)

HKT = timezone(timedelta(hours=8))
FIRST_SEEN = datetime(2024, 4, 18, 0, 0, tzinfo=UTC)
RTHK_FEED = "https://rthk.hk/rthk/news/rss/e_expressnews_elocal.xml"
GOVHK_FEED = "https://www.news.gov.hk/tc/categories/admin/html/articlelist.rss.xml"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTP://Example.COM/a/b", "http://example.com/a/b"),
        ("https://example.com", "https://example.com/"),
        ("http://example.com:80/x", "http://example.com/x"),
        ("https://example.com:443/x", "https://example.com/x"),
        ("https://example.com:8443/x", "https://example.com:8443/x"),
        ("http://[::1]:80/x", "http://[::1]/x"),
        ("https://example.com/x#section-2", "https://example.com/x"),
        ("https://example.com/x?b=2&a=1&a=0", "https://example.com/x?a=0&a=1&b=2"),
        (
            "https://example.com/x?utm_source=rss&utm_medium=feed&id=7&fbclid=abc#top",
            "https://example.com/x?id=7",
        ),
        ("https://example.com/x?UTM_Campaign=a&gclid=1&dclid=2&msclkid=3", "https://example.com/x"),
        (
            "https://example.com/x?mc_cid=1&mc_eid=2&igshid=3&_ga=4&yclid=5&spm=6&ref_src=7&cmpid=8&q=ok",
            "https://example.com/x?q=ok",
        ),
        # "ref" and "source" are too often real parameters to drop
        ("https://example.com/x?source=rss&ref=home", "https://example.com/x?ref=home&source=rss"),
        # encoded parameters (news.gov.hk images are proxied like this) are kept as they are
        (
            "https://images.weserv.nl/?url=https%3A%2F%2Fwww.news.gov.hk%2Fa.jpg&n=-1",
            "https://images.weserv.nl/?n=-1&url=https%3A%2F%2Fwww.news.gov.hk%2Fa.jpg",
        ),
        # already canonical real links are untouched
        (
            "https://news.rthk.hk/rthk/en/component/k2/1749331-20240417.htm",
            "https://news.rthk.hk/rthk/en/component/k2/1749331-20240417.htm",
        ),
        # surrounding whitespace, as in the archived RTHK feeds
        (
            "\n    https://www.news.gov.hk/chi/2024/04/20240419/20240419_190851_206.html\n   ",
            "https://www.news.gov.hk/chi/2024/04/20240419/20240419_190851_206.html",
        ),
    ],
)
def test_canonical_url(url: str, expected: str) -> None:
    assert canonical_url(url) == expected


def test_canonical_url_spells_non_ascii_paths_one_way() -> None:
    raw = "https://www.example.hk/新聞/科技?q=香港"
    encoded = "https://www.example.hk/%E6%96%B0%E8%81%9E/%E7%A7%91%E6%8A%80?q=%E9%A6%99%E6%B8%AF"
    lower_hex = encoded.lower().replace("https://www.example.hk/", "https://www.example.hk/")
    assert canonical_url(raw) == encoded
    assert canonical_url(encoded) == encoded
    assert canonical_url(lower_hex) == encoded
    assert (
        canonical_url("https://例子.香港/路徑")
        == "https://xn--fsqu00a.xn--j6w193g/%E8%B7%AF%E5%BE%91"
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("", ""),
        ("   ", ""),
        ("not a url", "not a url"),
        ("/relative/path", "/relative/path"),
        ("javascript:alert(1)", "javascript:alert(1)"),
        ("mailto:desk@example.org", "mailto:desk@example.org"),
        (" http://[::1 ", "http://[::1"),
        ("http://example.com:99999/", "http://example.com:99999/"),
        ("https://", "https://"),
    ],
)
def test_canonical_url_leaves_what_it_cannot_canonicalize(url: str, expected: str) -> None:
    assert canonical_url(url) == expected


@given(st.text())
def test_canonical_url_never_raises(url: str) -> None:
    canonical_url(url)


_URLS = st.builds(
    "{}://{}{}/{}?{}".format,
    st.sampled_from(["http", "https", "HTTPS"]),
    st.sampled_from(["example.com", "EXAMPLE.org", "news.gov.hk", "例子.香港"]),
    st.sampled_from(["", ":80", ":443", ":8080"]),
    st.text(alphabet="abc/._-%20新聞 ", max_size=12),
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "utm_source", "fbclid", "q", "香港"]),
            st.text(alphabet="xyz+%2F新 ", max_size=4),
        ),
        max_size=4,
    ).map(lambda pairs: "&".join(f"{k}={v}" for k, v in pairs)),
)


@given(_URLS)
def test_canonical_url_is_idempotent(url: str) -> None:
    once = canonical_url(url)
    assert canonical_url(once) == once
    assert "utm_" not in once and "fbclid" not in once
    assert once.isascii()


# Each next to a limit of the plain-URL shortcut in canonical_url, on one side or the other.
NEAR_PLAIN_URLS = [
    "https://news.rthk.hk/rthk/en/component/k2/1749331-20240417.htm",
    "https://www.news.gov.hk/chi/2024/04/20240419/20240419_190851_206.html",
    "https://example.com",
    "https://example.com/",
    "https://example.com/a/b/",
    "https://example.com/a//b",
    "https://example.com/./a",
    "https://example.com/a/..",
    "https://example.com/a/.hidden",
    "https://example.com/a..b/c.d",
    "https://example.com/~user/x_y-z",
    "https://example.com/a%2Fb",
    "https://example.com/a%2fb",
    "https://example.com/a b",
    "https://example.com/a;b",
    "https://example.com/a:b@c",
    "https://example.com/香港",
    "https://example.com?b=2&a=1",
    "https://example.com/x?b=2&a=1&a=0",
    "https://example.com/x?a=",
    "https://example.com/x?a",
    "https://example.com/x?=a",
    "https://example.com/x?a=1&",
    "https://example.com/x?a=1&&b=2",
    "https://example.com/x?a=b=c",
    "https://example.com/x?a=%41",
    "https://example.com/x?a=1+2",
    "https://example.com/x?utm_source=rss&id=1",
    "https://example.com/x?UTM_Source=rss",
    "https://example.com/x?id=1#frag",
    "https://example.com/x#frag?not=query",
    "https://example.com/x#",
    "https://example.com/x#a b",
    "https://Example.com/x",
    "HTTPS://example.com/x",
    "https://example.com:443/x",
    "https://example.com:8443/x",
    "https://user@example.com/x",
    "https://example.com./x",
    "https://.example.com/x",
    "https://example..com/x",
    "https://-example.com/x",
    "https://example-.com/x",
    "https://ex--ample.com/x",
    "https://xn--fsqu00a.xn--j6w193g/x",
    "https://xn--abc.com/x",
    "https://1.2.3.4/x",
    "https://0x7f.1/x",
    "https://example.123/x",
    "https://example.c0m/x",
    "https://localhost/x",
    f"https://{'a' * 63}.com/x",
    f"https://{'a' * 64}.com/x",
    f"https://{'a.' * 130}com/x",
    "https://例子.香港/x",
    "https://exa\tmple.com/x",
    "https://example.com/x\\y",
    "ftp://example.com/x",
]


def test_plain_urls_canonicalize_as_w3lib_does() -> None:
    # canonical_url skips w3lib for the plainest URLs; w3lib stays the definition.
    shortcut = [url for url in NEAR_PLAIN_URLS if _plain_canonical_url(url) is not None]
    assert len(shortcut) >= 10
    for url in NEAR_PLAIN_URLS:
        assert canonical_url(url) == _canonical_url_by_w3lib(url.strip()), url


_LABEL = st.text(alphabet="abzAZ09-", min_size=0, max_size=6)
_NEAR_PLAIN = st.builds(
    "{}://{}{}{}{}{}".format,
    st.sampled_from(["http", "https", "HTTPS", "ftp"]),
    st.one_of(
        st.lists(_LABEL, min_size=1, max_size=4).map(".".join),
        st.sampled_from(["example.com", "news.gov.hk", "xn--j6w193g.hk", "1.2.3.4", "例子.香港"]),
    ),
    st.sampled_from(["", "", "", ":443", ":80", ":8080", ":"]),
    st.lists(st.text(alphabet="aZ09._~-%2f;:@+ 港", max_size=5), max_size=4).map(
        lambda segments: "".join("/" + segment for segment in segments)
    ),
    st.one_of(
        st.just(""),
        st.lists(
            st.tuples(
                st.sampled_from(["a", "b", "B", "id", "utm_source", "Fbclid", "", "a.b", "~"]),
                st.sampled_from(["=", "=", ""]),
                st.text(alphabet="az09._~-%+=港", max_size=4),
            ),
            min_size=1,
            max_size=4,
        ).map(lambda pairs: "?" + "&".join(k + eq + v for k, eq, v in pairs)),
    ),
    st.sampled_from(["", "", "#", "#top", "#a?b=c", "#港"]),
)


@settings(max_examples=3000, deadline=None)
@given(_NEAR_PLAIN)
def test_canonical_url_shortcut_is_w3lib_on_random_urls(url: str) -> None:
    assert canonical_url(url) == _canonical_url_by_w3lib(url.strip())


def test_absolute_link_shortcut_is_urljoin() -> None:
    def by_urljoin(link: str, base: str) -> str | None:  # the definition, without shortcut
        try:
            absolute = urljoin(base.strip(), link.strip())
            parts = urlsplit(absolute)
            ok = parts.scheme.lower() in ("http", "https") and parts.hostname
        except ValueError:
            return None
        return absolute if link.strip() and ok else None

    for link in NEAR_PLAIN_URLS:
        for base in (
            "https://news.example.org/feeds/rss.xml",
            " http://a.example/ ",
            "http://[::1",
        ):
            assert absolute_link(link, base) == by_urljoin(link, base), (link, base)


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("  /news/1.html ", "https://news.example.org/news/1.html"),
        ("2.html", "https://news.example.org/feeds/2.html"),
        ("//cdn.example.org/3", "https://cdn.example.org/3"),
        ("http://other.example/4", "http://other.example/4"),
        ("javascript:alert(1)", None),
        ("mailto:desk@example.org", None),
        ("ftp://example.org/file", None),
        ("http://[::1", None),
        ("", None),
        (None, None),
    ],
)
def test_absolute_link(link: str | None, expected: str | None) -> None:
    assert absolute_link(link, "https://news.example.org/feeds/rss.xml") == expected


def test_entry_id_is_short_stable_and_per_source() -> None:
    one = entry_id("rthk-en", "https://news.rthk.hk/x.htm")
    assert re.fullmatch(r"[0-9a-f]{16}", one)
    assert one == entry_id("rthk-en", "https://news.rthk.hk/x.htm")
    assert one != entry_id("rthk-ch", "https://news.rthk.hk/x.htm")
    # the separator keeps ("ab", "c") and ("a", "bc") apart
    assert entry_id("ab", "c") != entry_id("a", "bc")


def _parsed(**fields: Any) -> ParsedEntry:
    return ParsedEntry(**{"guid": None, "link": None, "title": "", "summary_html": "", **fields})


def test_identity_key_prefers_guid_then_link_then_text() -> None:
    with_guid = _parsed(guid="  tag:rthk,2024:1749331 ", link="https://x.example/1")
    assert identity_key(with_guid, "https://x.example/1", "t", "s") == "tag:rthk,2024:1749331"
    with_link = _parsed(guid="  ", link="https://x.example/1")
    assert identity_key(with_link, "https://x.example/1", "t", "s") == "https://x.example/1"
    bare = _parsed()
    key = identity_key(bare, None, "title", "summary")
    assert re.fullmatch(r"hash:[0-9a-f]{64}", key)
    assert key == identity_key(bare, None, "title", "summary")
    assert key != identity_key(bare, None, "titles", "ummary")


def test_content_hash_follows_title_and_summary() -> None:
    base = content_hash("Title", "<p>Body</p>")
    assert base == content_hash("Title", "<p>Body</p>")
    assert base != content_hash("Title!", "<p>Body</p>")
    assert base != content_hash("Title", "<p>Body.</p>")


def test_normalize_rthk_english_item() -> None:
    # As archived: whitespace around every element, a plain-text description with blank lines.
    parsed = _parsed(
        guid="\n    https://news.rthk.hk/rthk/en/component/k2/1749331-20240417.htm\n   ",
        link="\n    https://news.rthk.hk/rthk/en/component/k2/1749331-20240417.htm\n   ",
        title="\n    Customs seize HK$100 million worth of electronics\n   ",
        summary_html=(
            "The Customs and Excise Department on Wednesday said it seized a large batch of "
            "suspected smuggled electronic components.\n\n"
            "Customs officers arrested a 53-year-old female suspect the following day.\n\n"
            " An investigation was ongoing. "
        ),
        published=datetime(2024, 4, 17, 20, 54, 39, tzinfo=HKT),
    )
    entry = normalize_entry(parsed, source_id="rthk-en", base_url=RTHK_FEED, first_seen=FIRST_SEEN)
    link = "https://news.rthk.hk/rthk/en/component/k2/1749331-20240417.htm"
    assert entry.title == "Customs seize HK$100 million worth of electronics"
    assert entry.guid == link
    assert entry.link == link
    assert entry.canonical_url == link
    assert entry.id == entry_id("rthk-en", link)
    assert entry.source_id == "rthk-en"
    assert entry.summary_html == (
        "<p>The Customs and Excise Department on Wednesday said it seized a large batch of "
        "suspected smuggled electronic components.</p>"
        "<p>Customs officers arrested a 53-year-old female suspect the following day.</p>"
        "<p>An investigation was ongoing.</p>"
    )
    assert entry.summary_text.startswith("The Customs and Excise Department on Wednesday")
    assert entry.summary_text.endswith("the following day. An investigation was ongoing.")
    assert entry.published == datetime(2024, 4, 17, 12, 54, 39, tzinfo=UTC)
    assert entry.published.tzinfo is UTC
    assert entry.updated is None
    assert entry.first_seen == FIRST_SEEN
    assert entry.author is None
    assert entry.categories == ()
    assert entry.tags == ()
    assert entry.content_hash == content_hash(entry.title, entry.summary_html)


def test_normalize_news_gov_hk_item() -> None:
    parsed = _parsed(
        guid=" https://www.news.gov.hk/chi/2024/04/20240424/20240424_184226_405.html ",
        link=" https://www.news.gov.hk/chi/2024/04/20240424/20240424_184226_405.html ",
        title="\n    李家超與深圳市委書記會面\n   ",
        summary_html=(
            '<img src="https://images.weserv.nl/?n=-1&url=https%3A%2F%2Fwww.news.gov.hk%2Fa.jpg"/>'
            "<p><p>行政長官李家超今日在禮賓府與深圳市委書記孟凡利會面，就進一步加強港深合作交換意見。</p>"
            "<p>\xa0</p><p>李家超歡迎孟凡利<a>率團訪港</a>。</p></p>"
            '<img src="/stats/pixel.gif" width="1" height="1">'
        ),
        published=datetime(2024, 4, 24, 0, 0, tzinfo=HKT),
        categories=(" 政府 ", "政府", "<b>港深合作</b>", "  "),
    )
    seen = datetime(2024, 4, 25, 0, 0, tzinfo=UTC)
    entry = normalize_entry(parsed, source_id="govhk-tc", base_url=GOVHK_FEED, first_seen=seen)
    assert entry.title == "李家超與深圳市委書記會面"
    assert "pixel.gif" not in entry.summary_html
    assert entry.summary_html.startswith('<img src="https://images.weserv.nl/?n=-1&amp;url=')
    assert entry.summary_text == (
        "行政長官李家超今日在禮賓府與深圳市委書記孟凡利會面，就進一步加強港深合作交換意見。"
        " 李家超歡迎孟凡利率團訪港。"
    )
    assert entry.published == datetime(2024, 4, 23, 16, 0, tzinfo=UTC)
    assert entry.categories == ("政府", "港深合作")


@pytest.mark.parametrize(
    ("title", "summary", "expected"),
    [
        ("AT&amp;T unveils <b>new</b> phone", "", "AT&T unveils new phone"),
        ("Q&A: R&D in 2024", "", "Q&A: R&D in 2024"),
        ("  Two   spaces\tand\na newline ", "", "Two spaces and a newline"),
        ("", "<p>" + "word " * 30 + "</p>", ("word " * 16).strip()),
        ("<i> </i>", "短訊：今日天氣晴朗。", "短訊：今日天氣晴朗。"),
        ("", "", UNTITLED),
        ("  ", "<img src='https://x.example/a.jpg'>", UNTITLED),
    ],
)
def test_normalize_title(title: str, summary: str, expected: str) -> None:
    entry = normalize_entry(
        _parsed(title=title, summary_html=summary, link="https://x.example/1"),
        source_id="s",
        base_url="https://x.example/feed",
        first_seen=FIRST_SEEN,
    )
    assert entry.title == expected
    assert len(entry.title) <= 80


def test_normalize_links_against_the_feed_url_and_keeps_only_web_links() -> None:
    relative = normalize_entry(
        _parsed(link=" /news/2024/a.html?utm_source=rss#more", title="t"),
        source_id="s",
        base_url="https://www.example.org/feeds/all.xml",
        first_seen=FIRST_SEEN,
    )
    assert relative.link == "https://www.example.org/news/2024/a.html?utm_source=rss#more"
    assert relative.canonical_url == "https://www.example.org/news/2024/a.html"
    assert relative.id == entry_id("s", "https://www.example.org/news/2024/a.html")

    scripted = normalize_entry(
        _parsed(link="javascript:alert(1)", title="t", summary_html="s"),
        source_id="s",
        base_url="https://www.example.org/feeds/all.xml",
        first_seen=FIRST_SEEN,
    )
    assert scripted.link is None
    assert scripted.canonical_url is None
    assert scripted.id == entry_id("s", identity_key(_parsed(), None, "t", "s"))


@pytest.mark.parametrize(
    ("published", "updated", "expected_published", "expected_updated"),
    [
        (None, None, FIRST_SEEN, None),
        (
            None,
            datetime(2024, 4, 17, 9, 0, tzinfo=HKT),
            datetime(2024, 4, 17, 1, 0, tzinfo=UTC),
            datetime(2024, 4, 17, 1, 0, tzinfo=UTC),
        ),
        (
            datetime(2024, 4, 17, 9, 0, tzinfo=HKT),
            datetime(2024, 4, 17, 10, 0, tzinfo=HKT),
            datetime(2024, 4, 17, 1, 0, tzinfo=UTC),
            datetime(2024, 4, 17, 2, 0, tzinfo=UTC),
        ),
        # a naive date (the parser should not give one) is read as UTC
        (datetime(2024, 4, 17, 9, 0), None, datetime(2024, 4, 17, 9, 0, tzinfo=UTC), None),
        # within a day ahead: clock skew, kept
        (FIRST_SEEN + timedelta(hours=20), None, FIRST_SEEN + timedelta(hours=20), None),
        # further ahead: a publisher's mistake, clamped to when we first saw it
        (datetime(2030, 1, 1, tzinfo=UTC), None, FIRST_SEEN, None),
        (
            datetime(2024, 4, 17, tzinfo=UTC),
            datetime(2030, 1, 1, tzinfo=UTC),
            datetime(2024, 4, 17, tzinfo=UTC),
            FIRST_SEEN,
        ),
    ],
)
def test_normalize_dates(
    published: datetime | None,
    updated: datetime | None,
    expected_published: datetime,
    expected_updated: datetime | None,
) -> None:
    entry = normalize_entry(
        _parsed(title="t", published=published, updated=updated),
        source_id="s",
        base_url="https://x.example/",
        first_seen=FIRST_SEEN,
    )
    assert entry.published == expected_published
    assert entry.published.utcoffset() == timedelta(0)
    assert entry.updated == expected_updated


def test_normalize_first_seen_is_made_utc() -> None:
    first_seen = datetime(2024, 4, 18, 8, 0, tzinfo=HKT)
    entry = normalize_entry(
        _parsed(title="t"), source_id="s", base_url="https://x.example/", first_seen=first_seen
    )
    assert entry.first_seen == entry.published == datetime(2024, 4, 18, 0, 0, tzinfo=UTC)
    assert entry.first_seen.tzinfo is UTC


def test_normalize_author_and_categories_become_plain_unique_text() -> None:
    entry = normalize_entry(
        _parsed(
            title="t",
            author="  <a href='mailto:x@example.org'>Jane &amp; John</a> ",
            categories=("Science", " science ", "ＳＣＩＥＮＣＥ", "<b>Tech</b>", "Tech & AI", ""),
        ),
        source_id="s",
        base_url="https://x.example/",
        first_seen=FIRST_SEEN,
    )
    assert entry.author == "Jane & John"
    assert entry.categories == ("Science", "Tech", "Tech & AI")
    blank = normalize_entry(
        _parsed(title="t", author=" \n "),
        source_id="s",
        base_url="https://x.example/",
        first_seen=FIRST_SEEN,
    )
    assert blank.author is None


def test_normalize_is_deterministic_and_hash_tracks_edits() -> None:
    parsed = _parsed(guid="g-1", title="Title", summary_html="<p>Body</p>")
    normalize = partial(
        normalize_entry, source_id="s", base_url="https://x.example/", first_seen=FIRST_SEEN
    )
    first = normalize(parsed)
    assert normalize(parsed) == first
    edited = normalize(_parsed(guid="g-1", title="Title", summary_html="<p>Body, corrected</p>"))
    assert edited.id == first.id
    assert edited.content_hash != first.content_hash


def test_normalize_sanitizes_the_summary() -> None:
    entry = normalize_entry(
        _parsed(
            title="t",
            summary_html='<p onclick="x()">Hi <script>alert(1)</script><a href="/more">more</a></p>',
        ),
        source_id="s",
        base_url="https://x.example/feed.xml",
        first_seen=FIRST_SEEN,
    )
    assert entry.summary_html == (
        '<p>Hi <a href="https://x.example/more" rel="noopener noreferrer">more</a></p>'
    )
    assert entry.summary_text == "Hi more"


def test_normalize_hash_does_not_depend_on_attribute_order() -> None:
    # feedparser sorts a summary's attributes, the lxml fast path keeps them as written: the
    # same item must get the same content hash either way, or every poll would "update" it.
    normalize = partial(
        normalize_entry, source_id="s", base_url="https://x.example/", first_seen=FIRST_SEEN
    )
    written = normalize(
        _parsed(
            guid="g",
            title="t",
            summary_html='<img src="/a.jpg" alt="A"><a title="T" href="/">x</a>',
        )
    )
    sorted_ = normalize(
        _parsed(
            guid="g",
            title="t",
            summary_html='<img alt="A" src="/a.jpg"><a href="/" title="T">x</a>',
        )
    )
    assert written == sorted_
