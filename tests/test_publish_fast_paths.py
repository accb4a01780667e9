"""The shortcuts publishing takes for speed give exactly what the plain ways give: each is
checked against the code it replaced, on generated and hostile input."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from aggregator.publish import (
    _MONTHS,
    _RFC822_DAYS,
    ENTRY_URN_PREFIX,
    FeedItem,
    _clean_text,
    _utc,
    _web_url,
    _xml_chars,
    entry_urn,
    excerpt,
    feed_item,
    json_item,
    rfc822,
    rfc3339,
)
from tests.test_publish import BASE_URL, NOW, sample_stories, stored, story
from tests.test_publish_incremental import hostile_items

# --- the code the shortcuts replaced ---------------------------------------------------------

_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_SPACES = re.compile(r"[ \t\n\r\f\v]+")


def clean_text_before(text: str | None) -> str:
    return _SPACES.sub(" ", _NOT_XML_CHAR.sub("", text or "")).strip()


def excerpt_before(text: str, limit: int = 300) -> str:
    text = _SPACES.sub(" ", text).strip()
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    if space > limit * 0.7:
        cut = cut[:space]
    return cut.rstrip(" ,;:.-–—、，。") + "…"


def web_url_before(url: str | None) -> str | None:
    if not url:
        return None
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    web = parts.scheme.lower() in ("http", "https") and bool(parts.netloc)
    if web and url.isprintable() and not any(c in url for c in ' "<>`\\{}|^'):
        return url
    return None


def utc_before(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def rfc822_before(moment: datetime) -> str:
    moment = utc_before(moment)
    return (
        f"{_RFC822_DAYS[moment.weekday()]}, {moment.day:02d} {_MONTHS[moment.month - 1][:3]} "
        f"{moment.year:04d} {moment:%H:%M:%S} +0000"
    )


def json_item_before(item: FeedItem) -> bytes:
    data: dict[str, Any] = {"id": item.id, "url": item.url, "title": item.title}
    data["content_html"] = item.content_html
    data["content_text"] = item.summary_text
    data["date_published"] = rfc3339(item.published)
    if item.updated != item.published:
        data["date_modified"] = rfc3339(item.updated)
    data["authors"] = [{"name": item.source_name}] + [{"name": m.source_name} for m in item.also]
    if item.tags:
        data["tags"] = list(item.tags)
    return json.dumps(data, ensure_ascii=False).encode()


# --- generated input -------------------------------------------------------------------------

AWKWARD = [*" \t\n\r\f\v\x00\x08\x0b\x0e\x1f\x7f\x85\xa0", "\u3000", "\u2028", "\ufffe", "\ud800"]
TEXTS = st.lists(st.sampled_from([*AWKWARD, "a", "中", "é", "  ", "\U0001f600"]), max_size=12).map(
    "".join
)
URL_PARTS = [
    *["http", "https", "HTTPS", "hTtP", "ftp", "javascript", "http ", " https"],
    *["://", ":", "//", ":///", "@", "[", "]", "[::1]", ":80", ":x", "é", "xn--d"],
    *["a", "b.example", "-", ".", "/", "?", "#", "%20", "&", "=", *' "<>`\\{}|^~_;!$'],
    *["\t", "\n", "\x00", "\u3000", "中"],
]
PRINTABLE = "".join(map(chr, range(0x20, 0x7F)))
URLS = st.one_of(
    st.lists(st.sampled_from(URL_PARTS), max_size=10).map("".join),
    st.builds(
        "".join,
        st.tuples(
            st.sampled_from(["http://", "HTTPS://", "https:/", "ftp://", " http://"]),
            st.text(st.sampled_from([*"ab.-0:[]@", "é", "%"]), max_size=6),
            st.sampled_from(["", "/", "?", "#", ":8080/", ":x/"]),
            st.text(st.sampled_from([*PRINTABLE, "\t", "é", "\x7f"]), max_size=8),
        ),
    ),
)
MOMENTS = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.none()
)
ZONES = st.sampled_from(
    [None, UTC, timezone(timedelta(hours=8)), timezone(-timedelta(hours=5, minutes=30)),
     ZoneInfo("Asia/Hong_Kong"), ZoneInfo("Europe/London"), ZoneInfo("America/New_York")]
)  # fmt: skip


@hypothesis_settings(max_examples=500, deadline=None)
@given(TEXTS)
def test_clean_text_and_excerpt_are_what_the_regular_expressions_gave(text: str) -> None:
    assert _xml_chars(text) == _NOT_XML_CHAR.sub("", text)
    assert _clean_text(text) == clean_text_before(text)
    for limit in (3, 8, 300):
        assert excerpt(text, limit) == excerpt_before(text, limit)


@hypothesis_settings(max_examples=1000, deadline=None)
@given(URLS)
def test_web_url_keeps_what_the_full_check_kept(url: str) -> None:
    assert _web_url(url) == web_url_before(url)


def test_web_url_on_plain_and_hostile_links() -> None:
    for url in [
        "https://www.info.gov.hk/gia/general/202405/10/P2024051000123.htm",
        "HTTP://Example.ORG:8080/a?b=c&d=e#f",
        "https://e.example/x?q=\"2\"", "https://[::1/", "https://user@host/", "https:///x",
        "javascript:alert(1)", "https://e.example/a b", "https://例子.测试/", " https://e.org ",
    ]:  # fmt: skip
        assert _web_url(url) == web_url_before(url), url


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from([*"aZ09:._~-/ %?#@", "é", "中", "\x00"]), max_size=12))
def test_entry_urns_are_what_quote_gave(entry_id: str) -> None:
    assert entry_urn(entry_id) == ENTRY_URN_PREFIX + quote(entry_id, safe=":-._~")


@hypothesis_settings(max_examples=500, deadline=None)
@given(MOMENTS, ZONES, st.booleans())
def test_dates_are_what_astimezone_and_strftime_gave(
    moment: datetime, zone: Any, fold: bool
) -> None:
    moment = moment.replace(tzinfo=zone, fold=int(fold))
    assert _utc(moment) == utc_before(moment)
    assert _utc(moment).tzinfo is UTC
    assert rfc822(moment) == rfc822_before(moment)


def test_json_items_are_what_json_dumps_wrote() -> None:
    untagged = story(stored("x:1", title="No tags", published=NOW, tags=()))
    stories = [*sample_stories(), untagged]
    items = [
        *hostile_items(),
        *(feed_item(s, BASE_URL, ZoneInfo("Asia/Hong_Kong")) for s in stories),
    ]
    assert any(i.also for i in items) and any(not i.tags for i in items)
    assert any(i.updated != i.published for i in items)
    for item in items:
        assert json_item(item) == json_item_before(item)
