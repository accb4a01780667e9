"""parse_page: hand-written listing pages in tests/data/pages beside the entries they must yield."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.errors import ParseError
from aggregator.models import ParsedFeed
from aggregator.parse.pages import check_selectors, decode_html, parse_page
from aggregator.settings import SelectSettings
from tests.corpus import corpus_dir

PAGES = Path(__file__).parent / "data" / "pages"
CORPUS = corpus_dir() / "hk_media_html_listing_2018_2019"
HK = "Asia/Hong_Kong"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@dataclass(frozen=True)
class Expected:
    title: str
    link: str
    published: datetime | None
    summary_html: str = ""


@dataclass(frozen=True)
class PageCase:
    fixture: str
    url: str
    select: SelectSettings
    feed_title: str
    entries: tuple[Expected, ...]
    encoding: str = "utf-8"  # fixtures are stored as UTF-8; the test encodes them to this
    content_type: str | None = "text/html"


CAS = PageCase(
    fixture="cas.html",
    url="https://english.cas.cn/newsroom/",
    select=SelectSettings(
        item="ul.list_ul > li", title="a", link="a@href", date="span", date_regex=r"t(\d{8})_"
    ),
    feed_title="Newsroom---Chinese Academy of Sciences",
    entries=(
        Expected(
            "Hong Kong and CAS Institutes Sign Innovation Cooperation Agreement",
            "https://english.cas.cn/newsroom/202405/t20240516_123456.shtml",
            utc(2024, 5, 15, 16),
        ),
        Expected(
            "Greater Bay Area Quantum Lab Opens in Shenzhen",
            "https://english.cas.cn/newsroom/202405/t20240515_123401.shtml",
            utc(2024, 5, 15, 1, 30),
        ),
        Expected(  # no date on the page: from the link
            "CAS Scientists Map Pearl River Delta Wetlands",
            "https://english.cas.cn/newsroom/202405/t20240514_123300.shtml",
            utc(2024, 5, 13, 16),
        ),
        Expected(  # "coming soon" is no date: from the link
            "Joint Laboratory on Marine Science Reviewed",
            "https://english.cas.cn/newsroom/202405/t20240513_123250.shtml",
            utc(2024, 5, 12, 16),
        ),
        Expected(
            "CAS Annual Report (Chinese)",
            "https://www.cas.cn/yw/202405/t20240510_5012345.shtml",
            utc(2024, 5, 9, 16),
        ),
    ),
)

CUHK = PageCase(
    fixture="cuhk.html",
    url="https://www.cpr.cuhk.edu.hk/en/press/",
    select=SelectSettings(
        item="div.news-list > a.card",
        title=".card__title",
        link="@href",  # the item is the <a> itself
        date="time@datetime",
        summary=".card__summary",
    ),
    feed_title="Press Releases | CUHK Communications and Public Relations Office",
    entries=(
        Expected(
            "CUHK and Shenzhen Research Institute launch joint biomedical centre",
            "https://www.cpr.cuhk.edu.hk/en/press-release/cuhk-and-shenzhen-research-institute-launch-joint-biomedical-centre",
            utc(2024, 5, 16, 2, 30),
            "The centre links <strong>Hong Kong</strong> and Shenzhen laboratories.",
        ),
        Expected(
            "CUHK scholars elected to the Chinese Academy of Engineering",
            "https://www.cpr.cuhk.edu.hk/en/press-release/cuhk-scholars-elected-to-chinese-academy-of-engineering",
            utc(2024, 5, 13, 16),
            "Two professors were elected.",
        ),
        Expected(  # <time> without datetime and no date_regex: no date
            "Innovation Week 2024",
            "https://www.cuhk.edu.hk/english/features/innovation-week.html",
            None,
        ),
    ),
)

XINHUA = PageCase(
    fixture="xinhua.html",
    url="https://english.news.cn/china/index.htm",
    select=SelectSettings(
        item="#list .item",
        title=".tit a",
        link=".tit a@href",
        date=".time",
        summary=".des",
        date_regex=r"/(\d{8})/",
    ),
    feed_title="China - Xinhua",
    entries=(
        Expected(
            "Chinese mainland, Hong Kong deepen sci-tech cooperation",
            "https://english.news.cn/20240516/5a1b2c3d4e5f4a6b8c9d0e1f2a3b4c5d/c.html",
            utc(2024, 5, 16, 6, 38),
            'BEIJING, May 16 (Xinhua) -- The mainland and the Hong Kong SAR <a href="/x">signed</a>'
            " an agreement...",
        ),
        Expected(  # a protocol-relative link
            "Shenzhen-Hong Kong innovation zone welcomes new labs",
            "https://english.news.cn/20240515/0f1e2d3c4b5a4f6e8d7c6b5a4f3e2d1c/c.html",
            utc(2024, 5, 14, 16),
            "SHENZHEN, May 15 (Xinhua) -- New laboratories opened.",
        ),
        Expected(  # no .time: from the link
            "China launches new satellite for ocean observation",
            "https://english.news.cn/20240514/aaaabbbbccccddddeeeeffff00001111/c.html",
            utc(2024, 5, 13, 16),
            "JIUQUAN, May 14 (Xinhua) -- China launched a satellite.",
        ),
    ),
)

BIG5_ENTRIES = (
    Expected(  # 嘅 exists only in Big5-HKSCS
        "港深科技合作新里程 河套合作區嘅首批實驗室啓用",
        "https://www.itib.gov.hk/tc/press/20240516a.htm",
        utc(2024, 5, 15, 16),
    ),
    Expected(  # the ideographic space collapses like any other whitespace
        "創科局局長率團訪問深圳 推動大灣區科研協作",
        "https://www.itib.gov.hk/tc/press/20240515b.htm",
        utc(2024, 5, 15, 6, 38),
    ),
    Expected(  # a relative link resolved against <base href="/tc/">
        "兩地科研資助計劃接受申請",
        "https://www.itib.gov.hk/tc/press/20240514c.htm",
        utc(2024, 5, 14, 6, 0),
    ),
    Expected(  # 日期待定 ("date to be announced"): from the link
        "香港與內地簽署科技合作協議",
        "https://www.itib.gov.hk/tc/press/20240513d.htm",
        utc(2024, 5, 12, 16),
    ),
)
BIG5_SELECT = SelectSettings(
    item="tr.row",
    title="td.headline a",
    link="td.headline a@href",
    date="td.date",
    date_regex=r"(\d{8})[a-z]\.htm",
)


def big5_case(content_type: str | None) -> PageCase:
    return PageCase(
        fixture="hk_big5.html",
        url="https://www.itib.gov.hk/tc/press/index.html",
        select=BIG5_SELECT,
        feed_title="新聞公報 - 創新科技及工業局",
        entries=BIG5_ENTRIES,
        encoding="big5hkscs",
        content_type=content_type,
    )


CASES = {
    "cas": CAS,
    "cuhk": CUHK,
    "xinhua": XINHUA,
    "big5-header": big5_case("text/html; charset=big5"),
    "big5-meta-only": big5_case(None),
    "big5-header-lies-utf8": big5_case("text/html; charset=UTF-8"),
}


def fixture_bytes(name: str, encoding: str = "utf-8") -> bytes:
    return (PAGES / name).read_text(encoding="utf-8").encode(encoding)


def parse_case(case: PageCase) -> ParsedFeed:
    return parse_page(
        fixture_bytes(case.fixture, case.encoding),
        url=case.url,
        select=case.select,
        timezone=HK,
        content_type=case.content_type,
    )


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_page_yields_expected_entries(case: PageCase) -> None:
    feed = parse_case(case)

    assert feed.title == case.feed_title
    assert feed.link == case.url
    got = [Expected(e.title, e.link or "", e.published, e.summary_html) for e in feed.entries]
    assert got == list(case.entries)
    for entry in feed.entries:
        assert entry.guid == entry.link  # the stable id is the resolved link
        assert entry.published is None or entry.published.tzinfo is UTC


def test_duplicate_links_are_kept_once_in_page_order() -> None:
    links = [e.link for e in parse_case(CAS).entries]
    assert len(links) == len(set(links))
    assert links[0] == "https://english.cas.cn/newsroom/202405/t20240516_123456.shtml"


def test_date_selector_wins_over_date_regex() -> None:
    html = b'<ul><li><a href="/t20240101_1.html">A</a><span>2024-05-16</span></li></ul>'
    select = SelectSettings(
        item="li", title="a", link="a@href", date="span", date_regex=r"t(\d{8})"
    )
    feed = parse_page(html, url="https://example.org/", select=select, timezone=HK)
    assert feed.entries[0].published == utc(2024, 5, 15, 16)


def test_time_element_datetime_attribute_is_read_without_at() -> None:
    html = (
        b'<ul><li><a href="/a">A</a><time datetime="2024-05-16T14:38+08:00">Today</time></li></ul>'
    )
    select = SelectSettings(item="li", title="a", link="a@href", date="time")
    feed = parse_page(html, url="https://example.org/", select=select, timezone=HK)
    assert feed.entries[0].published == utc(2024, 5, 16, 6, 38)


def test_link_without_attribute_reads_href_and_selectors_may_match_the_item() -> None:
    html = b'<div class="l"><a class="n" href="/a">A</a><a class="n" href="/b">B</a></div>'
    select = SelectSettings(item="div.l > a.n", title="a", link="a")
    feed = parse_page(html, url="https://example.org/x/", select=select, timezone=HK)
    assert [(e.title, e.link) for e in feed.entries] == [
        ("A", "https://example.org/a"),
        ("B", "https://example.org/b"),
    ]


def test_attribute_selectors_for_title_and_date_and_empty_summary_means_the_item() -> None:
    html = (
        b'<section><article data-date="16/05/2024"><a title="  Full\n title " href="a.html">Short'
        b"</a> <em>teaser</em></article></section>"
    )
    select = SelectSettings(
        item="article", title="a@title", link="a@href", date="@data-date", summary=""
    )
    entry = parse_page(html, url="https://example.org/n/", select=select, timezone=HK).entries[0]
    assert entry.title == "Full title"
    assert entry.link == "https://example.org/n/a.html"
    assert entry.published == utc(2024, 5, 15, 16)
    assert (
        entry.summary_html == '<a href="a.html" title="  Full\n title ">Short</a> <em>teaser</em>'
    )


def test_summary_from_an_attribute_is_escaped_as_html() -> None:
    html = b'<ul><li data-note="R&amp;D &lt;2024&gt;"><a href="/a">A</a></li></ul>'
    select = SelectSettings(item="li", title="a", link="a@href", summary="@data-note")
    entry = parse_page(html, url="https://example.org/", select=select, timezone=HK).entries[0]
    assert entry.summary_html == "R&amp;D &lt;2024&gt;"


def test_only_http_links_are_kept() -> None:
    html = (
        b"<ul><li><a href='mailto:a@example.org'>Mail</a></li><li><a href='#'>Top</a></li>"
        b"<li><a href='ftp://example.org/f'>FTP</a></li><li><a href='  /ok\n.html '>OK</a></li></ul>"
    )
    select = SelectSettings(item="li", title="a", link="a@href")
    feed = parse_page(html, url="http://example.org/", select=select, timezone=HK)
    assert [(e.title, e.link) for e in feed.entries] == [("OK", "http://example.org/ok.html")]


def test_page_without_title_element_has_empty_title() -> None:
    html = b'<ul><li><a href="/a">A</a></li></ul>'
    feed = parse_page(
        html,
        url="https://example.org/",
        select=SelectSettings(item="li", title="a", link="a@href"),
        timezone=HK,
    )
    assert feed.title == ""
    assert feed.entries[0].summary_html == ""
    assert feed.entries[0].published is None


# --- errors a user has to act on: the message names the selector to fix ---


def test_item_selector_matching_nothing() -> None:
    select = SelectSettings(item="ul.news > li", title="a", link="a@href")
    with pytest.raises(ParseError) as caught:
        parse_page(fixture_bytes("cas.html"), url=CAS.url, select=select, timezone=HK)
    assert str(caught.value) == (
        "selector 'item' ('ul.news > li') matched nothing on https://english.cas.cn/newsroom/"
    )


def test_link_selector_finding_no_link() -> None:
    select = SelectSettings(item="ul.list_ul > li", title="a", link="a@data-url")
    with pytest.raises(ParseError) as caught:
        parse_page(fixture_bytes("cas.html"), url=CAS.url, select=select, timezone=HK)
    assert str(caught.value) == (
        "selector 'link' ('a@data-url') found no link in any of 8 items on "
        "https://english.cas.cn/newsroom/"
    )


def test_link_selector_finding_only_non_http_links_says_what_it_found() -> None:
    html = b"<ul><li><a href='javascript:open(1)'>A</a></li></ul>"
    select = SelectSettings(item="li", title="a", link="a@href")
    with pytest.raises(ParseError) as caught:
        parse_page(html, url="https://example.org/", select=select, timezone=HK)
    assert str(caught.value) == (
        "selector 'link' ('a@href') found no link in any of 1 item on https://example.org/"
        " (found 'javascript:open(1)', which is not an http(s) link)"
    )


def test_title_selector_finding_no_title() -> None:
    select = SelectSettings(item="ul.list_ul > li", title="h3", link="a@href")
    with pytest.raises(ParseError) as caught:
        parse_page(fixture_bytes("cas.html"), url=CAS.url, select=select, timezone=HK)
    assert str(caught.value) == (
        "selector 'title' ('h3') found no title in any of 8 items on "
        "https://english.cas.cn/newsroom/"
    )


def test_titles_and_links_never_in_the_same_item() -> None:
    html = b"<ul><li><b>Title only</b></li><li><a href='/a'></a></li></ul>"
    select = SelectSettings(item="li", title="b", link="a@href")
    with pytest.raises(ParseError) as caught:
        parse_page(html, url="https://example.org/", select=select, timezone=HK)
    assert str(caught.value) == (
        "no item has both a title ('b', found in 1) and a link ('a@href', found in 1) in any of"
        " 2 items on https://example.org/"
    )


INVALID = {
    "item": SelectSettings(item="li[", title="a", link="a@href"),
    "title": SelectSettings(item="li", title="a ~", link="a@href"),
    "link": SelectSettings(item="li", title="a", link="a[href=@href"),
    "date": SelectSettings(item="li", title="a", link="a@href", date=">>"),
    "summary": SelectSettings(item="li", title="a", link="a@href", summary="p..x"),
}


@pytest.mark.parametrize(("key", "select"), INVALID.items(), ids=INVALID.keys())
def test_invalid_css_selector_names_the_key(key: str, select: SelectSettings) -> None:
    with pytest.raises(ParseError, match=rf"^invalid CSS selector for '{key}': "):
        parse_page(fixture_bytes("cas.html"), url=CAS.url, select=select, timezone=HK)
    with pytest.raises(ParseError, match=rf"^invalid CSS selector for '{key}': "):
        check_selectors(select)


def test_invalid_date_regex() -> None:
    select = SelectSettings(item="li", title="a", link="a@href", date_regex=r"t(\d{8}")
    with pytest.raises(ParseError, match=r"^invalid regular expression for 'date_regex': "):
        parse_page(b"<li><a href='/a'>A</a></li>", url=CAS.url, select=select, timezone=HK)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"https://example.org/news/",  # bs4 would warn that this looks like a URL
        b"index.html",  # ... or a file name
        b'<?xml version="1.0"?><rss><channel><title>x</title></channel></rss>',  # XML as HTML
        b"\x00\xff\xfe garbage \x80\x81",
    ],
)
def test_unusable_content_is_a_parse_error_not_a_warning(content: bytes) -> None:
    select = SelectSettings(item="li", title="a", link="a@href")
    with pytest.raises(ParseError, match="matched nothing"):
        parse_page(content, url="https://example.org/", select=select, timezone=HK)


# --- decoding ---


@pytest.mark.parametrize(
    ("content", "content_type", "expected"),
    [
        ("<p>香港</p>".encode(), None, "<p>香港</p>"),
        ("<p>香港</p>".encode("big5hkscs"), "text/html; charset=big5", "<p>香港</p>"),
        ("<p>嘅</p>".encode("big5hkscs"), 'text/html; charset="BIG5"', "<p>嘅</p>"),
        (
            '<meta charset="gb2312"><p>喆</p>'.encode("gb18030"),
            None,
            '<meta charset="gb2312"><p>喆</p>',
        ),
        ("<p>café</p>".encode("cp1252"), "text/html; charset=iso-8859-1", "<p>café</p>"),
        # servers label UTF-8 pages Latin-1 by default; valid UTF-8 is UTF-8
        ("<p>科技</p>".encode(), "text/html; charset=ISO-8859-1", "<p>科技</p>"),
        ("\ufeff<p>科技</p>".encode(), "text/html; charset=big5", "<p>科技</p>"),  # BOM wins
        ("<p>科技</p>".encode("utf-16"), None, "<p>科技</p>"),
        ("<p>科技</p>".encode(), "text/html; charset=x-no-such-codec", "<p>科技</p>"),
        ("<p>科技</p>".encode(), "text/html; charset=base64", "<p>科技</p>"),  # not a text codec
        (b"<p>\xff</p>", None, "<p>\ufffd</p>"),  # nothing fits: UTF-8 with replacement
        ("<p>科技</p>".encode(), "text/html; charset=undefined", "<p>科技</p>"),
        (b"<p>+AGw-</p>", "text/html; charset=utf-7", "<p>+AGw-</p>"),  # UTF-7 is refused
        (b"<p>ok</p>", "text/html; charset=utf-16", "<p>ok</p>"),  # ASCII bytes are not UTF-16
    ],
)
def test_decode_html(content: bytes, content_type: str | None, expected: str) -> None:
    assert decode_html(content, content_type) == expected


# --- robustness ---

SELECT = SelectSettings(
    item="li", title="a", link="a@href", date="span", summary="p", date_regex=r"(\d{8})"
)
FRAGMENTS = st.sampled_from(
    [
        "<li>",
        "</li>",
        "<a href='",
        "'>",
        "<a href=/x>",
        "</a>",
        "<span>",
        "2024-05-16",
        "2024年5月16日",
        "</span>",
        "<p>",
        "<!--",
        "-->",
        "<![CDATA[",
        "<!DOCTYPE",
        "<?xml ",
        "<base href='",
        "<meta charset='big5'>",
        "&amp;",
        "&#x",
        "http://[::1",
        "javascript:",
        "<",
        ">",
        '"',
    ]
)
HTMLISH = st.lists(st.one_of(FRAGMENTS, st.text(max_size=8)), max_size=40).map("".join)
CONTENT_TYPES = st.sampled_from(
    [
        None,
        "text/html",
        "text/html; charset=big5",
        "text/html; charset=utf-16",
        "text/html; charset=undefined",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    content=st.one_of(st.binary(max_size=400), HTMLISH.map(str.encode)), content_type=CONTENT_TYPES
)
def test_any_bytes_raise_nothing_but_parse_error(content: bytes, content_type: str | None) -> None:
    try:
        feed = parse_page(
            content,
            url="https://example.org/",
            select=SELECT,
            timezone=HK,
            content_type=content_type,
        )
    except ParseError:
        return
    for entry in feed.entries:
        assert entry.title
        assert entry.link is not None and entry.link.startswith(("http://", "https://"))


# --- real pages from the corpus, when it is present ---


def corpus_page(name: str) -> bytes:
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"corpus page {path} not available")
    return path.read_bytes()


def test_corpus_the_standard_listing() -> None:
    select = SelectSettings(
        item="li.caption", title="h1 a", link="h1 a@href", date="span", summary="p"
    )
    feed = parse_page(
        corpus_page("thestandard_list.html"),
        url="https://www.thestandard.com.hk/breaking-news.php",
        select=select,
        timezone=HK,
    )
    assert len(feed.entries) == 20
    first = feed.entries[0]
    assert first.title == "Thunderstorm warning extended"
    assert first.link == (
        "https://www.thestandard.com.hk/breaking-news.php?id=111406&story_id=111406&d_str=20180801&sid=4"
    )
    assert first.published == utc(2018, 8, 1, 3, 33)  # "1 Aug 2018 11:33 am" in Hong Kong
    assert first.summary_html.startswith("The Hong Kong Observatory has extended")


def test_corpus_sing_tao_listing_reads_the_items_own_href() -> None:
    select = SelectSettings(
        item="div.list-wrapper a[href^='news-content.php']",
        title=".title",
        link="@href",
        date=".time",
    )
    feed = parse_page(
        corpus_page("singtao_list.html"),
        url="http://std.stheadline.com/daily/section-list.php?cat=12",
        select=select,
        timezone=HK,
    )
    assert feed.title == "港聞 -- 星島日報"
    first = feed.entries[0]
    assert first.title == "美擬加碼徵25%關稅 中方：必然反制"
    assert first.link == "http://std.stheadline.com/daily/news-content.php?id=1848076&target=2"
    assert first.published == utc(2018, 8, 1, 16)
    assert len({e.link for e in feed.entries}) == len(feed.entries)


def test_title_text_keeps_words_apart_across_line_breaks_but_not_inline_markup() -> None:
    html = (
        "<ul><li><a href='/a'>港深<em>科技</em>合作<br>新里程<script>track()</script>"
        "<!-- note --></a></li></ul>"
    ).encode()
    select = SelectSettings(item="li", title="a", link="a@href")
    entry = parse_page(html, url="https://example.org/", select=select, timezone=HK).entries[0]
    assert entry.title == "港深科技合作 新里程"
