"""urls.join against urllib.parse.urljoin itself: same result or same ValueError, shortcut or not."""

from __future__ import annotations

import itertools
from urllib.parse import urljoin

from feedparser.urls import _urljoin as feedparser_urljoin
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator import urls
from aggregator.parse import fast

BASES = [
    "https://news.example.org/feeds/rss.xml",
    "http://news.example.org/",
    "https://EXAMPLE.org:8443/a/b?c=d#e",
    "ftp://files.example.org/pub/",
    "tag:example.org,2024:feed",
    "",
    "   https://spaced.example.org/  ",
    "http://[::1]/feed",
    "http://[::1/feed",  # urlparse raises ValueError
    "https://例子.香港/路徑",
    "relative/base",
]

URLS = [
    "https://news.example.org/2024/05/01/story.html",
    "https://news.example.org/2024/05/01/story.html?id=7&ref=rss#top",
    "http://news.example.org",
    "http://news.example.org:8080/x",
    "https://news.example.org/a;params",
    "https://news.example.org/a;",
    "https://news.example.org/a?",
    "https://news.example.org/a#",
    "https://news.example.org/a?#",
    "https://news.example.org/a/../b/./c",
    "https://news.example.org//double",
    "HTTPS://NEWS.example.org/Upper",
    "https://user:pw@news.example.org/",
    "https://[::1]/v6",
    "https://[::1/broken",
    "https:///three-slashes",
    "https:news.example.org/no-slashes",
    " https://news.example.org/leading-space",
    "https://news.example.org/trailing-space ",
    "https://news.exa\tmple.org/tab",
    "https://news.example.org/new\nline",
    "https://news.example.org/中文/路徑?q=香港",
    "https://例子.香港/",
    "tag:news.example.org,2024:item-1",
    "tag://news.example.org/item",
    "tag://[broken/item",  # urlsplit checks an authority even for schemes urljoin keeps
    "tag:\t//[broken/item",  # the tab goes before it looks
    "TAG:news.example.org,2024:upper",
    "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
    "mailto:desk@example.org",
    "javascript:alert(1)",
    "http:relative-with-scheme",
    "ftp:other-scheme",
    "file:///etc/passwd",
    "/absolute/path",
    "relative/path?x=1",
    "?only=query",
    "#only-fragment",
    "//other.example.org/protocol-relative",
    "",
    "1tag:not-a-scheme",
    "ta g:space-in-scheme",
]


def _urljoin_or_error(base: str, url: str) -> str | type[ValueError]:
    try:
        return urljoin(base, url)
    except ValueError:
        return ValueError


def _join_or_error(base: str, url: str) -> str | type[ValueError]:
    try:
        return urls.join(base, url)
    except ValueError:
        return ValueError


def test_join_is_urljoin() -> None:
    for base, url in itertools.product(BASES, URLS):
        assert _join_or_error(base, url) == _urljoin_or_error(base, url), (base, url)


def test_fast_path_join_is_feedparsers() -> None:
    for base, url in itertools.product(BASES, URLS):
        assert fast._join(base, url) == feedparser_urljoin(base, url), (base, url)


def test_the_shortcut_takes_the_usual_links() -> None:
    assert urls.joins_to_itself("https://news.rthk.hk/rthk/en/component/k2/1749331-20240417.htm")
    assert urls.joins_to_itself("https://www.news.gov.hk/chi/2024/04/20240419/x.html?a=1#b")
    assert urls.joins_to_itself("tag:news.example.org,2024:item-1")
    assert urls.plain_absolute("http://news.example.org")
    assert not urls.plain_absolute("tag:news.example.org,2024:item-1")
    assert not urls.joins_to_itself("https://news.example.org/a?")
    assert urls.joins_to_itself("mailto:desk@example.org")  # not a scheme urljoin resolves
    assert not urls.joins_to_itself("http:relative-with-scheme")  # one it does
    assert not urls.base_parses("http://[::1/feed")


# Characters around every boundary the shortcut draws.
_URL_ALPHABET = "aZ09.-_~:/?#;@[]%=&+ \t\n\x00\x7f\\'\"é香"


@settings(max_examples=3000, deadline=None)
@given(
    st.sampled_from(["https://", "http://", "HTTP://", "tag:", "urn:", "ftp://", "mailto:", ""]),
    st.text(alphabet=_URL_ALPHABET, max_size=30),
    st.sampled_from(BASES),
)
def test_join_is_urljoin_on_random_urls(scheme: str, rest: str, base: str) -> None:
    url = scheme + rest
    assert _join_or_error(base, url) == _urljoin_or_error(base, url)
    assert fast._join(base, url) == feedparser_urljoin(base, url)
