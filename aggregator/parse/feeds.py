"""Feed documents -> ParsedFeed: RSS 0.9x/2.0, RSS 1.0 (RDF) and Atom via feedparser, JSON Feed here.

Pure: bytes in, data out, no I/O. feedparser only ever sees decoded, DOCTYPE-free bytes in a
BytesIO, never a URL or a path (it would fetch or open it).
"""

from __future__ import annotations

import calendar
import email.utils
import html
import io
import json
import re
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urljoin, urlsplit

import feedparser

from aggregator import urls
from aggregator.errors import ParseError
from aggregator.models import ParsedEntry, ParsedFeed
from aggregator.parse.encoding import decode_text, decode_xml, media_type_and_charset, strip_doctype

JSON_MEDIA_TYPES = frozenset({"application/feed+json", "application/json"})

# Zone abbreviations feedparser does not know (it reads them as UTC). Only unambiguous ones:
# "CST" or "IST" name several zones and are left to feedparser.
ZONE_OFFSETS: Mapping[str, timedelta] = {
    "HKT": timedelta(hours=8),  # Ming Pao: "Sat, 08 Aug 2020 16:05:00 HKT"
    "HKST": timedelta(hours=9),
    "SGT": timedelta(hours=8),
    "MYT": timedelta(hours=8),
    "PHT": timedelta(hours=8),
    "AWST": timedelta(hours=8),
    "JST": timedelta(hours=9),
    "KST": timedelta(hours=9),
}
_ZONE_SUFFIX = re.compile(r"^(?P<rest>.*\S)\s+(?P<zone>[A-Za-z]{3,4})$")
_HTML_ROOT = re.compile(rb"<html\b", re.IGNORECASE)
_MAPPINGS = (dict, Mapping)  # dict first: checking the Mapping ABC costs more


def parse_feed(content: bytes, *, url: str, content_type: str | None = None) -> ParsedFeed:
    """Parse a fetched feed document; `url` is its final URL, the base for relative links.

    Raises ParseError("not a feed: ...") for anything that yields neither a feed nor entries.
    """
    if looks_like_json(content, content_type):
        return parse_json_feed(content, url=url, content_type=content_type)
    data = strip_doctype(decode_xml(content, content_type))
    if not data.strip():
        raise ParseError("not a feed: empty document")
    from aggregator.parse import fast  # here, not on top: fast.py builds on this module

    try:  # well-formed RSS/Atom/RDF: lxml, same result; anything it rejects: feedparser
        return fast.parse_well_formed(data, url=url)
    except fast.Rejected:
        pass
    try:
        parsed = feedparser.parse(
            io.BytesIO(data),
            response_headers={
                "content-location": url,
                # The bytes are UTF-8 now, whatever the server said.
                "content-type": "application/xml; charset=utf-8",
            },
            resolve_relative_uris=True,
            sanitize_html=False,  # summary_html is raw by contract; process/sanitize cleans it
        )
    except Exception as exc:  # feedparser's loose parser can trip over hostile input
        raise ParseError(f"not a feed: {type(exc).__name__}: {exc}") from exc
    result = _plain(parsed)
    entries = tuple(
        _entry_from_feedparser(entry, url)
        for entry in result.get("entries") or ()
        if isinstance(entry, dict)
    )
    warning = _bozo_message(result)
    if not result.get("version") and not entries:
        raise ParseError(f"not a feed: {_not_a_feed_reason(data, warning)}")
    feed = result.get("feed") or {}
    return ParsedFeed(
        title=_text(feed.get("title")),
        link=_absolute_http_url(feed.get("link"), url),
        entries=entries,
        warning=warning,
    )


def looks_like_json(content: bytes, content_type: str | None) -> bool:
    media_type, _ = media_type_and_charset(content_type)
    if media_type in JSON_MEDIA_TYPES:
        return True
    return content.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")


def parse_json_feed(content: bytes, *, url: str, content_type: str | None = None) -> ParsedFeed:
    """JSON Feed 1.0 / 1.1 (https://jsonfeed.org/version/1.1); feedparser does not read it."""
    try:
        document = json.loads(decode_text(content, content_type))
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"not a feed: invalid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise ParseError("not a feed: JSON document is not an object")
    version = document.get("version")
    items = document.get("items")
    is_json_feed = isinstance(version, str) and version.startswith("https://jsonfeed.org/version/")
    if not is_json_feed and not isinstance(items, list):
        raise ParseError("not a feed: JSON without a JSON Feed version or items")
    entries = tuple(
        _entry_from_json(item, url)
        for item in (items if isinstance(items, list) else ())
        if isinstance(item, dict)
    )
    return ParsedFeed(
        title=_text(document.get("title")),
        link=_absolute_http_url(document.get("home_page_url"), url),
        entries=entries,
        warning=None if is_json_feed else "JSON Feed without a version",
    )


def parse_date(raw: object, parsed: object = None) -> datetime | None:
    """A timezone-aware UTC datetime from a feed date.

    `raw` is the string as written, `parsed` feedparser's UTC struct_time for it (if any). Zone
    abbreviations feedparser reads as UTC (HKT) are applied here.
    """
    if isinstance(raw, str):
        match = _ZONE_SUFFIX.match(raw.strip())
        if match and (offset := ZONE_OFFSETS.get(match["zone"].upper())) is not None:
            local = _parse_naive(match["rest"])
            if local is not None:
                return local.replace(tzinfo=timezone(offset)).astimezone(UTC)
    if isinstance(parsed, time.struct_time):
        try:
            return datetime.fromtimestamp(calendar.timegm(parsed), UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def parse_iso_date(raw: object) -> datetime | None:
    """An RFC 3339 date (JSON Feed) as UTC; a date without zone is taken as UTC."""
    if not isinstance(raw, str):
        return None
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        return parse_date(raw, feedparser_date(raw))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def feedparser_date(raw: str) -> time.struct_time | None:
    """feedparser's lenient date reader, for dates outside feedparser-parsed documents."""
    try:
        result = feedparser.datetimes._parse_date(raw)
    except Exception:  # its many date handlers are not all careful
        return None
    return result if isinstance(result, time.struct_time) else None


def _plain(value: Any) -> Any:
    """feedparser's result as plain dicts and lists.

    FeedParserDict's lookups alias keys (`updated` falls back to `published`, with a
    DeprecationWarning); plain dicts give only what the document said.
    """
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in dict.items(value)}
    if isinstance(value, list | tuple) and not isinstance(value, time.struct_time):
        return [_plain(item) for item in value]
    return value


def _parse_naive(text: str) -> datetime | None:
    try:
        return email.utils.parsedate_to_datetime(f"{text} +0000").replace(tzinfo=None)
    except (TypeError, ValueError, IndexError):
        pass
    try:
        return datetime.fromisoformat(text).replace(tzinfo=None)
    except ValueError:
        return None


def _entry_from_feedparser(entry: Mapping[str, Any], base_url: str) -> ParsedEntry:
    # feedparser copies an RSS <guid> into `link` when there is no <link>; the contract is to
    # report only a link the source gave, so that later stages know to fall back to the guid.
    link = entry.get("link") if entry.get("links") else None
    content = entry.get("content") or ()
    updated_raw = entry.get("updated"), entry.get("updated_parsed")
    published_raw = entry.get("published"), entry.get("published_parsed")
    updated = parse_date(*updated_raw)
    # Atom entries with only <updated> and RDF's dc:date still tell when the item appeared.
    published = updated if published_raw == updated_raw else parse_date(*published_raw)
    return ParsedEntry(
        guid=_text(entry.get("id")) or None,
        link=_absolute_http_url(link, base_url),
        title=_text(entry.get("title")),
        summary_html=_richer(
            _detail_html(entry.get("summary_detail"), entry.get("summary")),
            _detail_html(content[0], None) if content else "",
        ),
        author=_author(entry),
        published=published or updated,
        updated=updated,
        categories=_unique(
            _text(tag.get("term") or tag.get("label"))
            for tag in entry.get("tags") or ()
            if isinstance(tag, _MAPPINGS)
        ),
    )


def _entry_from_json(item: Mapping[str, Any], base_url: str) -> ParsedEntry:
    guid = item.get("id")
    if isinstance(guid, int | float) and not isinstance(guid, bool):
        guid = str(guid)
    content_html = item.get("content_html")
    if not isinstance(content_html, str):
        content_text = item.get("content_text")
        content_html = _text_to_html(content_text) if isinstance(content_text, str) else ""
    summary = item.get("summary")
    tags = item.get("tags")
    return ParsedEntry(
        guid=_text(guid) or None,
        link=_absolute_http_url(item.get("url") or item.get("external_url"), base_url),
        title=_text(item.get("title")),
        summary_html=_richer(
            _text_to_html(summary) if isinstance(summary, str) else "", content_html
        ),
        author=_json_author(item),
        published=parse_iso_date(item.get("date_published"))
        or parse_iso_date(item.get("date_modified")),
        updated=parse_iso_date(item.get("date_modified")),
        categories=_unique(_text(tag) for tag in tags) if isinstance(tags, list) else (),
    )


def _json_author(item: Mapping[str, Any]) -> str | None:
    authors = item.get("authors")
    candidates = list(authors) if isinstance(authors, list) else []
    candidates.append(item.get("author"))  # JSON Feed 1.0
    for author in candidates:
        if isinstance(author, dict) and (name := _text(author.get("name"))):
            return name
    return None


def _author(entry: Mapping[str, Any]) -> str | None:
    detail = entry.get("author_detail")
    if isinstance(detail, _MAPPINGS) and (name := _text(detail.get("name"))):
        return name
    return _text(entry.get("author")) or None


def _detail_html(detail: object, fallback: object) -> str:
    """HTML for a feedparser text construct; plain-text constructs are escaped."""
    if isinstance(detail, _MAPPINGS):
        value = detail.get("value")
        if isinstance(value, str):
            return _text_to_html(value) if detail.get("type") == "text/plain" else value.strip()
    return fallback.strip() if isinstance(fallback, str) else ""


def _richer(summary: str, content: str) -> str:
    """The full content when it says more than the summary, else the summary."""
    return content if len(content) > len(summary) else summary


def _text_to_html(text: str) -> str:
    return html.escape(text.strip(), quote=False)


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


def _absolute_http_url(value: object, base_url: str) -> str | None:
    """`value` resolved against the document URL; None unless it is an http(s) URL."""
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    if urls.plain_absolute(value) and urls.base_parses(base_url):
        return value  # urljoin would return it as it is
    try:
        absolute = urljoin(base_url, value)
        scheme = urlsplit(absolute).scheme
    except ValueError:  # e.g. an invalid IPv6 literal
        return None
    return absolute if scheme in ("http", "https") else None


def _bozo_message(parsed: Mapping[str, Any]) -> str | None:
    if not parsed.get("bozo"):
        return None
    exc = parsed.get("bozo_exception")
    message = str(exc).strip() if exc is not None else ""
    return message or (type(exc).__name__ if exc is not None else "malformed document")


def _not_a_feed_reason(data: bytes, warning: str | None) -> str:
    if _HTML_ROOT.search(data, 0, 65536):
        return "an HTML page"
    return warning or "no RSS, Atom or RDF root element"
