"""Fast path for well-formed RSS 2.0, RSS 1.0 (RDF) and Atom 1.0 feeds: lxml instead of feedparser.

For each entry it builds the plain dict feedparser's strict (SAX) parser would build, element by
element with feedparser's rules (xml:base, guid-as-link, which date key an element fills, which
title wins, the text fixes of feedparser's `pop`), and hands it to the same mapping feedparser's
results go through (`feeds._entry_from_feedparser`): one definition of a ParsedEntry, two readers.

Anything outside the subset modelled exactly raises `Rejected` and the caller falls back to
feedparser: a parse error, an unknown root, markup inside a text element, an element feedparser
maps onto an entry field that this module does not handle (media:title, itunes:summary ...).
Pure: UTF-8, DOCTYPE-free bytes in (see encoding.py), data out; the parser never loads anything.
"""

from __future__ import annotations

import datetime
import re
import threading
import time
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

from feedparser.datetimes import _parse_date as feedparser_parse_date
from feedparser.html import _cp1252
from feedparser.mixin import _FeedParserMixin
from feedparser.urls import _urljoin, make_safe_absolute_uri
from lxml import etree  # type: ignore[import-untyped]  # no stubs in the lock

from aggregator import urls
from aggregator.models import ParsedEntry, ParsedFeed
from aggregator.parse import feeds

ATOM_NS = "http://www.w3.org/2005/Atom"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
RSS10_NS = "http://purl.org/rss/1.0/"
XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"
_RDF_ABOUT = f"{{{RDF_NS}}}about"

# feedparser's namespace URI -> prefix table: its handlers are named `_start_<prefix>_<local>`.
_PREFIXES: dict[str, str] = {
    uri.lower(): prefix for uri, prefix in _FeedParserMixin.namespaces.items()
}
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_TEXT_TYPES = frozenset({"text/plain", "text/html"})

# Elements feedparser has a handler for that never touch the fields a ParsedEntry reads.
_HARMLESS = frozenset(
    {
        "comments", "docs", "rights", "copyright", "dc_rights", "language", "dc_language",
        "created", "dcterms_created", "expirationdate", "dcterms_valid", "generator", "cloud",
        "contributor", "dc_contributor", "webmaster", "dc_publisher", "subtitle", "tagline",
        "width", "height", "newlocation", "media_content", "media_thumbnail", "media_group",
        "media_credit", "media_rating", "media_restriction", "media_license", "media_player",
        "itunes_image", "itunes_link", "itunes_block", "itunes_explicit", "itunes_subtitle",
        "itunes_owner", "itunes_name", "itunes_email", "psc_chapters", "psc_chapter",
        "cc_license", "creativecommons_license", "info", "feedburner_browserfriendly",
    }
)  # fmt: skip
# Inside these harmless elements, feedparser's name/email/url handlers fill only their own data.
_HARMLESS_CHILDREN = frozenset(
    {"name", "email", "url", "uri", "homepage", "itunes_name", "itunes_email"}
)
_MAY_CONTAIN_URIS = re.compile(
    r"(?i)\b(?:href|src|cite|action|background|codebase|data|longdesc|poster|usemap|profile|srcset)\s*="
)
# An attribute value starting with ':' or holding a backslash, tab or newline.
_ODD_URL = re.compile(r"""=\s*["']?\s*:|=\s*["'][^"'>]*[\\\t\n\r]""")
_C1_CONTROL = re.compile("[\x80-\x9f]")
_LINK_ENTITY = re.compile(r"&([A-Za-z0-9_]+);")

_local = threading.local()
# Element and attribute names by lxml's "{namespace}local" key: documents use a few dozen.
_NAMES: dict[str, str] = {}
_ATTRIBUTE_NAMES: dict[str, str] = {}
_CACHED_NAMES = 1024


class Rejected(Exception):
    """The document is outside what the fast path models exactly; use feedparser."""


def parse_well_formed(data: bytes, *, url: str) -> ParsedFeed:
    """Parse UTF-8, DOCTYPE-free feed bytes; raises Rejected for anything unusual."""
    try:
        root = etree.fromstring(data, _parser())
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise Rejected(f"not well-formed: {exc}") from None
    if not isinstance(root.tag, str):
        raise Rejected("no root element")
    if root.tag == f"{{{ATOM_NS}}}feed":
        return _Reader(url, atom=True).atom_feed(root)
    if root.tag == "rss":
        return _Reader(url, atom=False).rss_feed(root)
    if root.tag == f"{{{RDF_NS}}}RDF" and _default_namespace_first(root, RSS10_NS):
        return _Reader(url, atom=False).rdf_feed(root)
    raise Rejected(f"root element {root.tag!r}")


def _parser() -> etree.XMLParser:
    """One hardened parser per thread (lxml parsers must not be shared between threads)."""
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
            strip_cdata=True,
            collect_ids=False,
        )
        _local.parser = parser
    return parser


def _declares(element: etree._Element, uri: str) -> bool:
    return uri in element.nsmap.values()


def _default_namespace_first(root: etree._Element, uri: str) -> bool:
    # feedparser takes its version from the first known namespace declared (an Atom namespace
    # declared first makes an RDF document "atom10" to it): accept only the plain case.
    return root.nsmap.get(None) == uri and not _declares(root, ATOM_NS)


def element_name(element: etree._Element) -> str:
    """feedparser's name for an element: `title`, `dc_creator`, `content_encoded` ..."""
    name = _NAMES.get(element.tag)
    if name is not None:
        return name
    qname = etree.QName(element)
    local: str = qname.localname.lower()
    namespace: str | None = qname.namespace
    if namespace is None or "backend.userland.com/rss" in namespace.lower():
        name = local
    elif (prefix := _PREFIXES.get(namespace.lower())) is not None:
        name = f"{prefix.lower()}_{local}" if prefix else local
    else:  # a namespace feedparser does not know: the document's prefix for it
        prefix = element.prefix or ""
        return f"{prefix.lower()}_{local}" if prefix else local
    _remember(_NAMES, element.tag, name)
    return name


def _remember(cache: dict[str, str], key: str, value: str) -> None:
    """Keep `value` in a cache of names; a document of ever new names only empties it."""
    if len(cache) >= _CACHED_NAMES:
        cache.clear()
    cache[key] = value


def _has_handler(name: str) -> bool:
    return hasattr(_FeedParserMixin, "_start_" + name) or hasattr(_FeedParserMixin, "_end_" + name)


def _attributes(element: etree._Element) -> dict[str, str]:
    """Attributes by lowercased name, as feedparser's strict parser sees them."""
    found: dict[str, str] = {}
    for key, value in element.items():
        name = _ATTRIBUTE_NAMES.get(key)
        if name is None:
            name = _attribute_name(key)
            _remember(_ATTRIBUTE_NAMES, key, name)
        found[name] = value.lower() if name in ("rel", "type") else value
    return found


def _attribute_name(key: str) -> str:
    qname = etree.QName(key)
    name: str = qname.localname
    if qname.namespace is not None:
        prefix = _PREFIXES.get(qname.namespace.lower(), "")
        name = f"{prefix}:{name}" if prefix else name
    return name.lower()


def _fix_text(text: str) -> str:
    """feedparser's `pop` text fixes: UTF-8 read as Latin-1 undone, C1 controls as cp1252."""
    if text.isascii():
        return text
    try:
        fixed = text.encode("iso-8859-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):  # the usual case: nothing to undo
        fixed = text
    text = fixed
    # C1 controls are "\xc2\x80".."\xc2\x9f" in UTF-8: no "\xc2" byte (the usual case in CJK
    # text), no C1 control. Finding a byte is much quicker than a regex scan of the text.
    if b"\xc2" not in text.encode("utf-8", "surrogatepass"):
        return text
    return text.translate(_cp1252) if _C1_CONTROL.search(text) else text


def _content_type(value: str) -> str:
    known = _CONTENT_TYPES.get(value)
    if known is not None:
        return known
    value = value.lower()
    if value in ("text", "plain"):
        return "text/plain"
    if value == "html":
        return "text/html"
    if value == "xhtml":
        return "application/xhtml+xml"
    return value


# The usual spellings, read once (the function above is the definition).
_CONTENT_TYPES: dict[str, str] = {}
_CONTENT_TYPES.update(
    (spelling, _content_type(spelling))
    for spelling in ("text", "html", "xhtml", "text/plain", "text/html", "application/xhtml+xml")
)


class _Reader:
    """One document: the feed-level dict and one feedparser-shaped dict per entry."""

    def __init__(self, url: str, *, atom: bool) -> None:
        self.url = url
        self.atom = atom

    # --- documents ---------------------------------------------------------------------------

    def rss_feed(self, root: etree._Element) -> ParsedFeed:
        channels = [child for child in root if child.tag == "channel"]
        if len(channels) != 1:
            raise Rejected("not exactly one channel")
        (channel,) = channels
        base = self._base(self._base(self.url, root), channel)
        items = [child for child in channel if child.tag == "item"]
        if sum(1 for _ in root.iter("item")) != len(items):
            raise Rejected("items outside the channel")
        return self._feed(channel, base, items, lambda i: self._base(base, i))

    def rdf_feed(self, root: etree._Element) -> ParsedFeed:
        channel_tag, item_tag = f"{{{RSS10_NS}}}channel", f"{{{RSS10_NS}}}item"
        channels = [child for child in root if child.tag == channel_tag]
        if len(channels) != 1:
            raise Rejected("not exactly one channel")
        base = self._base(self.url, root)
        items = [child for child in root if child.tag == item_tag]
        if sum(1 for _ in root.iter(item_tag)) != len(items):
            raise Rejected("items outside the document element")
        return self._feed(channels[0], self._base(base, channels[0]), items,
                          lambda i: self._base(base, i))  # fmt: skip

    def atom_feed(self, root: etree._Element) -> ParsedFeed:
        base = self._base(self.url, root)
        entry_tag = f"{{{ATOM_NS}}}entry"
        items = [child for child in root if child.tag == entry_tag]
        if sum(1 for _ in root.iter(entry_tag)) != len(items):
            raise Rejected("nested entries")
        return self._feed(root, base, items, lambda i: self._base(base, i))

    def _feed(
        self,
        channel: etree._Element,
        base: str,
        items: list[etree._Element],
        item_base: Callable[[etree._Element], str],
    ) -> ParsedFeed:
        feed = self._channel(channel, base)
        entries = tuple(self._entry(item, item_base(item)) for item in items)
        return ParsedFeed(
            title=feeds._text(feed.get("title")),
            link=feeds._absolute_http_url(feed.get("link"), self.url),
            entries=entries,
            warning=None,
        )

    def _base(self, base: str, element: etree._Element) -> str:
        """The base URI inside `element`, as feedparser tracks xml:base (and a bare `base`)."""
        if not element.attrib:  # the common case
            return base
        declared = element.get(XML_BASE)
        if declared is None:
            declared = next((v for k, v in element.items() if k.lower() == "base"), None)
        if not declared:
            return base
        return make_safe_absolute_uri(base, declared) or base

    # --- feed level: only the title and link are read ------------------------------------------

    def _channel(self, channel: etree._Element, base: str) -> dict[str, Any]:
        feed: dict[str, Any] = {}
        titles = 0
        for child in channel:
            if not isinstance(child.tag, str):
                raise Rejected("entity reference")
            name = element_name(child)
            child_base = self._base(base, child)
            if name == "title":
                titles += 1
                title = self._text_construct(child, default_type="text/plain")
                if not self.atom and _looks_html(title["value"]):
                    raise Rejected("feed title looks like HTML")
                feed["title"] = title["value"]
            elif name in ("dc_title", "media_title", "itunes_title"):
                raise Rejected(f"feed title from {name}")
            elif name == "link":
                self._link(feed, child, child_base)
            elif name in ("id", "guid"):
                value, is_link = self._guid(child, child_base)
                if is_link:
                    feed.setdefault("link", value)
        if titles > 1:
            raise Rejected("several feed titles")
        return feed

    # --- entries -------------------------------------------------------------------------------

    def _entry(self, item: etree._Element, base: str) -> ParsedEntry:
        entry: dict[str, Any] = {}
        if any(k.lower() in ("href", "lastmod") for k in item.attrib):
            raise Rejected("CDF item attributes")
        about = item.get(_RDF_ABOUT)
        if about:
            entry["id"] = about
        seen: set[str] = set()
        authors = 0
        for child in item:
            tag = child.tag
            if not isinstance(tag, str):
                raise Rejected("entity reference")
            name = _NAMES.get(tag) or element_name(child)
            handling = _HANDLING.get(name)
            if handling is not None:
                handler, key, is_author = handling
                if key is not None:
                    if key in seen:
                        raise Rejected(f"repeated {name}")
                    seen.add(key)
                if is_author:
                    authors += 1
                    if authors > 1:
                        raise Rejected("several authors")
                handler(self, entry, child, self._base(base, child) if child.attrib else base)
            elif name in _HARMLESS:
                self._check_harmless(child)
            elif _has_handler(name):
                raise Rejected(f"entry element {name}")
            else:
                self._check_unknown(child)
        return feeds._entry_from_feedparser(entry, self.url)

    def _check_harmless(self, element: etree._Element) -> None:
        for inner in _descendants(element):
            name = element_name(inner)
            if name not in _HARMLESS and name not in _HARMLESS_CHILDREN and _has_handler(name):
                raise Rejected(f"{name} inside {element_name(element)}")

    def _check_unknown(self, element: etree._Element) -> None:
        # feedparser still dispatches every descendant of an element it does not know.
        for inner in _descendants(element):
            name = element_name(inner)
            if name not in _HARMLESS and _has_handler(name):
                raise Rejected(f"{name} inside {element_name(element)}")

    def _title(self, entry: dict[str, Any], element: etree._Element, base: str) -> None:
        title = self._text_construct(element, default_type="text/plain")
        self._check_relative(title, base)
        entry["title"] = title["value"]

    def _summary(self, entry: dict[str, Any], element: etree._Element, base: str) -> None:
        if "summary" in entry and not entry.get("_has_content"):
            raise Rejected("summary read as content")  # feedparser's second-summary rule
        default = "text/html" if element_name(element) == "description" else "text/plain"
        detail = self._text_construct(element, default_type=default)
        self._check_relative(detail, base)
        entry["summary"] = detail["value"]
        entry["summary_detail"] = detail

    def _content(self, entry: dict[str, Any], element: etree._Element, base: str) -> None:
        name = element_name(element)
        default = "text/html" if name == "content_encoded" else "text/plain"
        if element.get("src") is not None:
            raise Rejected("out-of-line content")
        detail = self._text_construct(element, default_type=default)
        self._check_relative(detail, base)
        entry["_has_content"] = True
        entry.setdefault("content", []).append(detail)
        if detail["type"] in _TEXT_TYPES or detail["type"] in _HTML_TYPES:
            entry.setdefault("summary", detail["value"])

    def _link_handler(self, entry: dict[str, Any], element: etree._Element, base: str) -> None:
        self._link(entry, element, base, in_entry=True)

    def _enclosure(self, entry: dict[str, Any], element: etree._Element, base: str) -> None:
        attrs = _attributes(element)
        href = attrs.pop("url", attrs.pop("uri", None)) or attrs.get("href")
        if href:
            attrs["href"] = href
        attrs["rel"] = "enclosure"
        entry.setdefault("links", []).append(attrs)

    def _source(self, entry: dict[str, Any], element: etree._Element, base: str) -> None:
        if len(element):
            raise Rejected("source with children")  # Atom's <source> holds a whole feed head

    def _link(
        self, context: dict[str, Any], element: etree._Element, base: str, *, in_entry: bool = False
    ) -> None:
        attrs = _attributes(element)
        attrs.setdefault("rel", "alternate")
        attrs.setdefault("type", "application/atom+xml" if attrs["rel"] == "self" else "text/html")
        href = attrs.get("url", attrs.get("uri", attrs.get("href")))
        links = context.setdefault("links", [])
        if href:
            href = _join(base, href)
            links.append({"rel": attrs["rel"], "type": attrs["type"], "href": href})
            if attrs["rel"] == "alternate" and _content_type(attrs["type"]) in _HTML_TYPES:
                context["link"] = href
            return
        links.append({"rel": attrs["rel"], "type": attrs["type"]})
        text = _stripped_text(element)
        if text:
            text = _fix_text(_join(base, text))
        if in_entry:  # feedparser's fix for `?a=1&b=2` read as entities; the feed's is smaller
            text = text.replace("&amp;", "&")
        if "&" in text:
            text = _LINK_ENTITY.sub(r"&\g<1>", text)
        context["link"] = text
        if text:
            links[-1]["href"] = text

    def _guid_handler(self, entry: dict[str, Any], element: etree._Element, base: str) -> None:
        value, is_link = self._guid(element, base)
        entry["id"] = value
        if is_link:
            entry.setdefault("link", value)

    def _guid(self, element: etree._Element, base: str) -> tuple[str, bool]:
        is_link = _attributes(element).get("ispermalink", "true") == "true"
        text = _stripped_text(element)
        if text and is_link:
            text = _join(base, text)
        return _fix_text(text), is_link

    def _author(self, entry: dict[str, Any], element: etree._Element, base: str) -> None:
        if self.atom or len(element):
            self._atom_author(entry, element)
            return
        text = _fix_text(_stripped_text(element))
        entry["author"] = text
        if not text:
            return
        name, email = _split_author(text)
        if name or email:
            entry["author_detail"] = {"name": name, "email": email}

    def _atom_author(self, entry: dict[str, Any], element: etree._Element) -> None:
        detail: dict[str, str] = {}
        for child in element:
            if not isinstance(child.tag, str):
                raise Rejected("entity reference")
            if len(child):
                raise Rejected("markup inside an author field")
            name = element_name(child)
            if name in ("name", "email"):
                detail[name] = _fix_text(_stripped_text(child))
            elif name in ("uri", "url", "homepage"):
                continue
            elif _has_handler(name):
                raise Rejected(f"{name} inside author")
        if element.text and element.text.strip():
            raise Rejected("text inside an Atom author")
        author_name, email = detail.get("name"), detail.get("email")
        if detail:
            entry["author_detail"] = detail
        if author_name and email:
            entry["author"] = f"{author_name} ({email})"
        elif author_name or email:
            entry["author"] = author_name or email
        else:
            entry["author"] = ""

    def _category(self, entry: dict[str, Any], element: etree._Element, base: str) -> None:
        attrs = _attributes(element)
        tags = entry.setdefault("tags", [])
        term, label = attrs.get("term"), attrs.get("label")
        scheme = attrs.get("scheme", attrs.get("domain"))
        if term or scheme or label:
            _add_tag(tags, {"term": term, "scheme": scheme, "label": label})
        value = _fix_text(_stripped_text(element))
        if not value:
            return
        if tags and not tags[-1]["term"]:
            tags[-1]["term"] = value
        else:
            _add_tag(tags, {"term": value, "scheme": None, "label": None})

    # --- text constructs ---------------------------------------------------------------------

    def _text_construct(self, element: etree._Element, *, default_type: str) -> dict[str, Any]:
        attrs = _attributes(element) if element.attrib else _NO_ATTRIBUTES
        if attrs.get("mode") == "base64":
            raise Rejected("base64 content")
        content_type = _content_type(attrs.get("type", default_type))
        if content_type not in _TEXT_TYPES:
            raise Rejected(f"content of type {content_type}")
        if len(element):
            raise Rejected("markup inside a text element")
        value = _fix_text(_stripped_text(element))
        if not self.atom and content_type == "text/plain" and _looks_html(value):
            content_type = "text/html"
        return {"type": content_type, "value": value}

    def _check_relative(self, detail: dict[str, Any], base: str) -> None:
        # feedparser resolves URLs in markup (with urljoin, against xml:base); the sanitizer later
        # resolves them (by the URL Standard, against the document URL). The two agree only when
        # the bases do and the URLs are ordinary.
        if detail["type"] not in _HTML_TYPES:
            return
        value = detail["value"]
        if base != self.url:
            if _MAY_CONTAIN_URIS.search(value):
                raise Rejected("relative URLs under an xml:base")
        # _ODD_URL first: its scan (for "=") is far quicker, and it rarely matches.
        elif _ODD_URL.search(value) and _MAY_CONTAIN_URIS.search(value):
            raise Rejected("a URL the two resolvers may read differently")


_NO_ATTRIBUTES: dict[str, str] = {}


def _date_handler(key: str) -> Callable[[_Reader, dict[str, Any], etree._Element, str], None]:
    def handle(reader: _Reader, entry: dict[str, Any], element: etree._Element, base: str) -> None:
        if len(element):
            raise Rejected("markup inside a date")
        value = _fix_text(_stripped_text(element))
        entry[key] = value
        entry[key + "_parsed"] = read_date(value)

    return handle


# The two forms nearly every feed uses, exactly as feedparser reads them: its W3C-DTF reader
# (tried first; it declines RFC 822 dates) for RFC 3339, its RFC 822 reader for the other.
_RFC3339 = re.compile(
    r"(?a)(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.\d{1,9})?(?:[Zz]|([+-])(\d\d):(\d\d))?"
)
_RFC822 = re.compile(
    r"(?a)(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d\d?) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"(\d{4}) (\d\d):(\d\d):(\d\d) (?:GMT|UTC?|Z|([+-])(\d\d)(\d\d))"
)
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
        start=1,
    )
}


@lru_cache(maxsize=64)  # an Atom entry's <published> is often its <updated>
def read_date(value: str) -> time.struct_time | None:
    """feedparser's reading of a date (UTC struct_time), quicker for RFC 3339 and RFC 822."""
    if match := _RFC3339.fullmatch(value):
        year, month, day, hour, minute, second = map(int, match.group(1, 2, 3, 4, 5, 6))
    elif match := _RFC822.fullmatch(value):
        year, day, hour, minute, second = map(int, match.group(3, 1, 4, 5, 6))
        month = _MONTHS[match[2]]
    else:
        return feedparser_parse_date(value)  # type: ignore[no-any-return]
    sign, zone_hours, zone_minutes = match.group(7, 8, 9)
    offset_hours = int(zone_hours) if zone_hours else 0
    offset_minutes = int(zone_minutes) if zone_minutes else 0
    if sign == "-":
        offset_hours, offset_minutes = -offset_hours, -offset_minutes
    try:  # feedparser's own steps, so as to give its results and take its errors
        stamp = datetime.datetime(year, month, day, hour, minute, second)
        return (
            stamp - datetime.timedelta(hours=offset_hours, minutes=offset_minutes)
        ).utctimetuple()
    except (ValueError, OverflowError):
        return feedparser_parse_date(value)  # type: ignore[no-any-return]  # its other readers


def _join(base: str, uri: str) -> str:
    """feedparser's _urljoin, without its two parses for the usual absolute link."""
    # For those, feedparser's fix of "http:///x" changes nothing either.
    if urls.joins_to_itself(uri) and urls.base_parses(base):
        return uri
    return _urljoin(base, uri)  # type: ignore[no-any-return]


def _descendants(element: etree._Element) -> Iterator[etree._Element]:
    for inner in element.iterdescendants():
        if not isinstance(inner.tag, str):
            raise Rejected("entity reference")
        yield inner


def _stripped_text(element: etree._Element) -> str:
    return (element.text or "").strip()


def _looks_html(text: str) -> bool:
    # feedparser looks for a closing tag or an entity: no "<" and no "&", neither.
    return ("<" in text or "&" in text) and bool(_FeedParserMixin.looks_like_html(text))


def _add_tag(tags: list[dict[str, Any]], tag: dict[str, Any]) -> None:
    if tag not in tags:
        tags.append(tag)


_AUTHOR_EMAIL = re.compile(
    r"""(([a-zA-Z0-9\_\-\.\+]+)@((\[[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.)|(([a-zA-Z0-9\-]+\.)+))([a-zA-Z]{2,4}|[0-9]{1,3})(\]?))(\?subject=\S+)?"""
)


def _split_author(author: str) -> tuple[str, str | None]:
    """feedparser's reading of an RSS author: "jo@example.org (Jo Lee)" -> ("Jo Lee", email)."""
    match = _AUTHOR_EMAIL.search(author)
    if not match:
        return author, None
    email = match.group(0)
    author = author.replace(email, "").replace("()", "").replace("<>", "")
    author = author.replace("&lt;&gt;", "").strip()
    if author and author[0] == "(":
        author = author[1:]
    if author and author[-1] == ")":
        author = author[:-1]
    return author.strip(), email


_Handler = Callable[[_Reader, dict[str, Any], etree._Element, str], None]

_ENTRY_HANDLERS: dict[str, _Handler] = {
    "title": _Reader._title,
    "description": _Reader._summary,
    "summary": _Reader._summary,
    "content": _Reader._content,
    "content_encoded": _Reader._content,
    "link": _Reader._link_handler,
    "guid": _Reader._guid_handler,
    "id": _Reader._guid_handler,
    "author": _Reader._author,
    "dc_creator": _Reader._author,
    "dc_author": _Reader._author,
    "category": _Reader._category,
    "enclosure": _Reader._enclosure,
    "source": _Reader._source,
    "dc_subject": _Reader._category,
    "pubdate": _date_handler("published"),
    "published": _date_handler("published"),
    "issued": _date_handler("published"),
    "dcterms_issued": _date_handler("published"),
    "updated": _date_handler("updated"),
    "modified": _date_handler("updated"),
    "dc_date": _date_handler("updated"),
    "dcterms_modified": _date_handler("updated"),
}
_AUTHOR_NAMES = frozenset({"author", "dc_creator", "dc_author"})
# Fields whose repetition feedparser resolves by rules not modelled here: reject instead.
_ONCE: dict[str, str] = {
    "title": "title",
    "description": "summary",
    "summary": "summary",
    "content": "content",
    "content_encoded": "content",
    "guid": "id",
    "id": "id",
}
# name -> (handler, the field it may fill once, whether it names the author), in one lookup.
_HANDLING: dict[str, tuple[_Handler, str | None, bool]] = {
    name: (handler, _ONCE.get(name), name in _AUTHOR_NAMES)
    for name, handler in _ENTRY_HANDLERS.items()
}
