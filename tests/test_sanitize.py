"""clean_html keeps feed HTML readable and inert; html_to_text makes plain text of it."""

from __future__ import annotations

import html
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.process.sanitize import (
    ALLOWED_ATTRIBUTES,
    ALLOWED_TAGS,
    clean_html,
    html_to_text,
    sanitized_text,
    text_to_html,
)

BASE = "https://news.example.org/section/page.html"

# OWASP filter-evasion style payloads: none may leave executable markup behind.
XSS_PAYLOADS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=http://xss.example/xss.js></SCRIPT>",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    '<img src=x onerror="alert(1)">',
    "<img src=x onerror=alert(1)//",
    "<IMG SRC=javascript:alert('XSS')>",
    '<IMG SRC="jav\tascript:alert(1);">',
    '<IMG SRC="jav&#x09;ascript:alert(1);">',
    '<IMG SRC="jav&#x0A;ascript:alert(1);">',
    '<IMG SRC=" &#14;  javascript:alert(1);">',
    "<IMG SRC=&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)>",
    "<IMG SRC=&#0000106&#0000097&#0000118&#0000097&#0000115&#0000099&#0000114&#0000105&#0000112&#0000116&#0000058alert(1)>",
    "<IMG SRC=&#x6A&#x61&#x76&#x61&#x73&#x63&#x72&#x69&#x70&#x74&#x3A&#x61&#x6C&#x65&#x72&#x74&#x28&#x27&#x58&#x53&#x53&#x27&#x29>",
    '<a href="&#106;avascript:alert(1)">x</a>',
    '<a href="jav&#x09;ascript:alert(1)">x</a>',
    '<a href="jav&#x0D;ascript:alert(1)">x</a>',
    '<a href=" javascript:alert(1)">x</a>',
    '<a href="JaVaScRiPt:alert(1)">x</a>',
    '<a href="javascript&colon;alert(1)">x</a>',
    '<a href="vbscript:msgbox(1)">x</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>',
    '<img src="data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+">',
    "<svg onload=alert(1)>",
    "<svg><script>alert(1)</script></svg>",
    '<svg><a xlink:href="javascript:alert(1)"><text y="20">x</text></a></svg>',
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)></style></mglyph></table></mtext></math>",
    '<math><mi xlink:href="javascript:alert(1)">x</mi></math>',
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    '<p style="background:url(javascript:alert(1))">x</p>',
    '<div style="width: expression(alert(1));">x</div>',
    "<style>@import 'http://xss.example/x.css';</style>",
    '<body onload="alert(1)">x</body>',
    '<iframe src="javascript:alert(1)"></iframe>',
    '<object data="javascript:alert(1)"></object>',
    '<embed src="data:text/html,<script>alert(1)</script>">',
    '<form action="javascript:alert(1)"><input type="submit" onfocus="alert(1)" autofocus></form>',
    '<details open ontoggle="alert(1)">',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    '<base href="javascript:alert(1)//">',
    '<a href="x" onmouseover="alert(1)" style="position:fixed">x</a>',
    '<p onclick="alert(1)">x</p>',
    "<<img src=x onerror=alert(1)//>",
    '<img """><script>alert(1)</script>">',
    "<!--<img src=x onerror=alert(1)>-->",
    "<![CDATA[<script>alert(1)</script>]]>",
    "<xmp><img src=x onerror=alert(1)></xmp>",
    "<textarea><img src=x onerror=alert(1)></textarea>",
    "<template><img src=x onerror=alert(1)></template>",
]

_SCRIPTABLE_URL = re.compile(r"^(?:javascript|vbscript|data):", re.IGNORECASE)
_URL_ATTRIBUTE = re.compile(r'\b(?:href|src)="([^"]*)"')
# nh3 escapes every "<" in text, so each "<" of its output opens a real tag.
_TAG = re.compile(r'<(/?)([a-z0-9]+)((?:\s+[^\s="<>/]+="[^"]*")*)\s*/?>')
_ATTRIBUTE = re.compile(r'([^\s="<>/]+)="([^"]*)"')


def assert_inert(cleaned: str) -> None:
    """Structurally: only allow-listed tags and attributes, and no scriptable URL."""
    tags = list(_TAG.finditer(cleaned))
    assert len(tags) == cleaned.count("<"), cleaned
    for tag in tags:
        name = tag.group(2)
        assert name in ALLOWED_TAGS, cleaned
        for attribute, value in _ATTRIBUTE.findall(tag.group(3)):
            assert attribute in ALLOWED_ATTRIBUTES.get(name, ()) or (name, attribute) == (
                "a",
                "rel",
            )
            if attribute in ("href", "src"):
                # What a browser would see: entities decoded, control characters and spaces ignored.
                seen = re.sub(r"[\x00-\x20]", "", html.unescape(value))
                assert not _SCRIPTABLE_URL.match(seen), cleaned


def assert_no_executable_markup(cleaned: str) -> None:
    """The plain string checks, for payloads whose text leaves nothing markup-like behind."""
    lowered = cleaned.lower()
    assert "<script" not in lowered
    assert not re.search(r"\son\w+\s*=", lowered), cleaned
    assert "style=" not in lowered
    for url in _URL_ATTRIBUTE.findall(cleaned):
        seen = re.sub(r"[\x00-\x20]", "", html.unescape(url))
        assert not _SCRIPTABLE_URL.match(seen), cleaned


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_xss_payloads_leave_no_executable_markup(payload: str) -> None:
    cleaned = clean_html(payload, base_url=BASE)
    assert_inert(cleaned)
    assert_no_executable_markup(cleaned)
    assert clean_html(cleaned, base_url=BASE) == cleaned


@pytest.mark.parametrize(
    "payload",
    [
        '<a href="&#106;avascript:alert(1)">x</a>',
        '<a href="jav&#x09;ascript:alert(1)">x</a>',
        '<a href="java\nscript:alert(1)">x</a>',
        '<a href="&#x6A;&#x61;&#x76;&#x61;&#x73;&#x63;&#x72;&#x69;&#x70;&#x74;:alert(1)">x</a>',
    ],
)
def test_scheme_is_checked_after_entity_decoding(payload: str) -> None:
    assert clean_html(payload) == '<a rel="noopener noreferrer">x</a>'


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # allowed markup and attributes survive
        (
            '<p>A <b>bold</b> <em>claim</em> &amp; <abbr title="Hong Kong">HK</abbr></p>',
            '<p>A <b>bold</b> <em>claim</em> &amp; <abbr title="Hong Kong">HK</abbr></p>',
        ),
        (
            '<table><tr><th colspan="2">h</th></tr><tr><td rowspan="1">c</td></tr></table>',
            '<table><tbody><tr><th colspan="2">h</th></tr><tr><td rowspan="1">c</td></tr></tbody></table>',
        ),
        # links: absolute against the base, rel added, other attributes dropped
        (
            '<a href="/news/1.html?a=1&b=2" class="x" target="_blank" title="t">one</a>',
            '<a href="https://news.example.org/news/1.html?a=1&amp;b=2" rel="noopener noreferrer" title="t">one</a>',
        ),
        (
            '<a href="../other.html">up</a>',
            '<a href="https://news.example.org/other.html" rel="noopener noreferrer">up</a>',
        ),
        (
            '<a href="//cdn.example.org/x">cdn</a>',
            '<a href="https://cdn.example.org/x" rel="noopener noreferrer">cdn</a>',
        ),
        (
            '<a href="mailto:desk@example.org">mail</a>',
            '<a href="mailto:desk@example.org" rel="noopener noreferrer">mail</a>',
        ),
        (
            '<img src="img/a.jpg" alt="A" width="640" height="480" loading="lazy">',
            '<img alt="A" height="480" src="https://news.example.org/section/img/a.jpg" width="640">',
        ),
        # tracking pixels and source-less images go, real images stay
        ('<p>x</p><img src="https://t.example/p.gif" width="1" height="1">', "<p>x</p>"),
        ('<img src="/p.gif" width="0" height="0"><p>x</p>', "<p>x</p>"),
        ('<img src="/p.gif" width="1px" height="1px">', ""),
        (
            '<img src="/p.gif" width="1" height="200" alt="rule">',
            '<img alt="rule" height="200" src="https://news.example.org/p.gif" width="1">',
        ),
        ('<img src="/p.gif" width="1">', '<img src="https://news.example.org/p.gif" width="1">'),
        ('<img src="javascript:alert(1)" alt="x">', ""),
        # unknown tags unwrapped, dangerous ones dropped with their content, comments gone
        ("<div><section>kept <font>text</font></section></div>", "kept text"),
        ("<p>a<!-- secret -->b</p><script>alert(1)</script>", "<p>ab</p>"),
        ('<noscript><img src="/real.jpg"></noscript>after', "after"),
        # misnesting that only settles on a second parse is cleaned to its fixed point
        ("<h1><form><h1>", "<h1></h1><h1></h1>"),
        # whitespace around the fragment goes
        ("  \n <p>x</p> \n ", "<p>x</p>"),
        ("", ""),
    ],
)
def test_clean_html(raw: str, expected: str) -> None:
    assert clean_html(raw, base_url=BASE) == expected


def test_relative_urls_stay_relative_without_a_usable_base() -> None:
    raw = '<a href="/x">x</a>'
    expected = '<a href="/x" rel="noopener noreferrer">x</a>'
    assert clean_html(raw) == expected
    assert clean_html(raw, base_url="not a url") == expected
    assert clean_html(raw, base_url="ftp://example.org/") == expected
    assert clean_html(raw, base_url="http://exa mple.org/") == expected  # no valid host
    assert clean_html(raw, base_url="http://example.org:99999/") == expected


def test_real_news_gov_hk_summary() -> None:
    # Shaped like news.gov.hk: a proxied image, then doubly nested paragraphs with nbsp spacers.
    raw = (
        '<img src="https://images.weserv.nl/?n=-1&url=https%3A%2F%2Fwww.news.gov.hk%2Fa.jpg"/>'
        "<p><p>行政長官李家超今日在禮賓府與深圳市委書記孟凡利會面。</p><p>\xa0</p><p>雙方交換意見。</p></p>"
    )
    cleaned = clean_html(raw, base_url="https://www.news.gov.hk/tc/rss.xml")
    assert cleaned.startswith(
        '<img src="https://images.weserv.nl/?n=-1&amp;url=https%3A%2F%2Fwww.news.gov.hk%2Fa.jpg">'
    )
    assert "<p>行政長官李家超今日在禮賓府與深圳市委書記孟凡利會面。</p>" in cleaned
    assert clean_html(cleaned) == cleaned


_FRAGMENTS = st.sampled_from(
    [
        "<p>", "</p>", "<b>", "</b>", "<i>", "<a href='/x'>", "<a href=\"javascript:x\">", "</a>",
        "<table>", "<tr>", "<td>", "</td>", "</table>", "<ul><li>", "<pre>", "</pre>", "\n",
        "<img src=x onerror=alert(1)>", '<img src="/p.gif" width="1" height="1">', "<br>",
        "<script>", "</script>", "<style>", "<svg>", "<math>", "<noscript>", "<!--", "-->",
        "<![CDATA[", "]]>", "&amp;", "&lt;", "&#106;", "&nbsp;", "<", ">", '"', "'", "=",
        "<h1>", "<blockquote>", "<q>", "<select>", "<option>", "<textarea>", "<title>",
        "<table><caption>", "<form>", "<frameset>", "<plaintext>", "<xmp>", " ", "香港", "AT&T",
    ]
)  # fmt: skip
_HTMLISH = st.lists(st.one_of(_FRAGMENTS, st.text(max_size=8)), max_size=30).map("".join)


@settings(max_examples=400)
@given(_HTMLISH)
def test_clean_html_is_idempotent_and_inert(raw: str) -> None:
    cleaned = clean_html(raw, base_url=BASE)
    assert clean_html(cleaned, base_url=BASE) == cleaned
    assert_inert(cleaned)


@pytest.mark.parametrize(
    "raw",
    [
        '<img width="640" alt="A" height="480" src="/a.jpg"><a title="t" href="/x">x</a>',
        '<img src="/a.jpg" height="480" alt="A" width="640"><a href="/x" title="t">x</a>',
        '<img alt="A" height="480" src="/a.jpg" width="640"><a href="/x" rel="x" title="t">x</a>',
    ],
)
def test_clean_html_sorts_attributes_whatever_order_they_came_in(raw: str) -> None:
    # feedparser hands summaries on with sorted attributes, the lxml fast path as written:
    # both must clean to the same HTML (and content hash).
    assert clean_html(raw, base_url=BASE) == (
        '<img alt="A" height="480" src="https://news.example.org/a.jpg" width="640">'
        '<a href="https://news.example.org/x" rel="noopener noreferrer" title="t">x</a>'
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # the parser rebuilds these on a second pass, so they are cleaned again
        ("<p><div><p>x</p></div></p>", "<p></p><p>x</p><p></p>"),
        ("<li><div><li>x</li></div></li>", "<li></li><li>x</li>"),
        ("<a href='/1'><div><a href='/2'>x</a></div></a>", None),
        ("<pre>\n\n\nx</pre>", "<pre>x</pre>"),
        # well-nested trees need one pass
        ("<ul><li>a<ul><li>b</li></ul></li></ul>", "<ul><li>a<ul><li>b</li></ul></li></ul>"),
        ("<blockquote><p>a</p><p>b</p></blockquote>", "<blockquote><p>a</p><p>b</p></blockquote>"),
    ],
)
def test_clean_html_reaches_its_fixed_point(raw: str, expected: str | None) -> None:
    cleaned = clean_html(raw, base_url=BASE)
    if expected is not None:
        assert cleaned == expected
    assert clean_html(cleaned, base_url=BASE) == cleaned


@given(st.text())
def test_clean_html_is_idempotent_on_any_text(raw: str) -> None:
    cleaned = clean_html(raw)
    assert clean_html(cleaned) == cleaned


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("AT&amp;T", "AT&T"),
        ("AT&T", "AT&T"),
        ("R&D <b>spending</b>", "R&D spending"),
        ("<b>x</b>", "x"),
        (
            "  \n   Customs seize HK$100 million worth of electronics\n  ",
            "Customs seize HK$100 million worth of electronics",
        ),
        (
            "智方便至今有逾260萬人登記\u3000料年內採用的新服務約40項",
            "智方便至今有逾260萬人登記 料年內採用的新服務約40項",
        ),
        ("<p>One</p><p>Two</p>", "One Two"),
        ("line<br>break", "line break"),
        ("in<b>line</b>", "inline"),
        ("&lt;b&gt;escaped&lt;/b&gt;", "<b>escaped</b>"),
        ("a&nbsp;b &copy; 2024 &#x4e2d;&#25991;", "a b © 2024 中文"),
        ("<script>var x = 1;</script>text<style>p {}</style><!-- note -->", "text"),
        ("https://example.org/a?b=1&c=2", "https://example.org/a?b=1&c=2"),
        ("https://example.org/<b>x</b>", "https://example.org/x"),
        ("a < b", "a < b"),
        ("", ""),
    ],
)
def test_html_to_text(raw: str, expected: str) -> None:
    assert html_to_text(raw) == expected


@settings(max_examples=300)
@given(_HTMLISH)
def test_sanitized_text_of_clean_html_is_its_html_to_text(raw: str) -> None:
    cleaned = clean_html(raw, base_url=BASE)
    assert sanitized_text(cleaned) == html_to_text(cleaned)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('<p title="a>b">one</p><p>two<img alt="x" src="/y.jpg">three</p>', "one two three"),
        ("<blockquote>quote</blockquote>by <b>me</b>", "quote by me"),
        ("<table><tr><td>a</td><td>b</td></tr></table>", "a b"),
        ("<ul><li>a</li><li>b</li></ul><br>c", "a b c"),
        ("x<noscript><p>y</p></noscript>z", "xz"),  # dropped with its content, as clean_html does
    ],
)
def test_html_to_text_blocks_separate_words(raw: str, expected: str) -> None:
    assert html_to_text(raw) == expected
    assert sanitized_text(clean_html(raw)) == expected


@given(st.text())
def test_html_to_text_never_fails_and_is_collapsed(raw: str) -> None:
    text = html_to_text(raw)
    assert text == text.strip()
    assert "  " not in text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            "The Customs said it seized goods.\n\nAn investigation was ongoing. \n\n",
            "<p>The Customs said it seized goods.</p><p>An investigation was ongoing.</p>",
        ),
        ("one\ntwo", "<p>one<br>two</p>"),
        ("single line & more", "single line & more"),
        ("<p>already</p>\n\n<p>html</p>", "<p>already</p>\n\n<p>html</p>"),
        ("  ", ""),
    ],
)
def test_text_to_html(raw: str, expected: str) -> None:
    assert text_to_html(raw) == expected
