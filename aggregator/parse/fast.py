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

import contextlib
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

from feedparser.datetimes import _parse_date as feedparser_parse_date
from feedparser.html import _cp1252
from feedparser.mixin import _FeedParserMixin
from feedparser.urls import _urljoin, make_safe_absolute_uri
from lxml import etree  # type: ignore[import-untyped]  # no stubs in the lock

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
    qname = etree.QName(element)
    local: str = qname.localname.lower()
    namespace: str | None = qname.namespace
    if namespace is None:
        return local
    lowered = namespace.lower()
    if "backend.userland.com/rss" in lowered:
        return local
    prefix: str = _PREFIXES.get(lowered, element.prefix or "")
    return f"{prefix.lower()}_{local}" if prefix else local


def _has_handler(name: str) -> bool:
    return hasattr(_FeedParserMixin, "_start_" + name) or hasattr(_FeedParserMixin, "_end_" + name)


def _attributes(element: etree._Element) -> dict[str, str]:
    """Attributes by lowercased name, as feedparser's strict parser sees them."""
    found: dict[str, str] = {}
    for key, value in element.attrib.items():
        qname = etree.QName(key)
        name = qname.localname
        if qname.namespace is not None:
            prefix = _PREFIXES.get(qname.namespace.lower(), "")
            name = f"{prefix}:{name}" if prefix else name
        name = name.lower()
        found[name] = value.lower() if name in ("rel", "type") else value
    return found


def _fix_text(text: str) -> str:
    """feedparser's `pop` text fixes: UTF-8 read as Latin-1 undone, C1 controls as cp1252."""
    if text.isascii():
        return text
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        text = text.encode("iso-8859-1").decode("utf-8")
    return text.translate(_cp1252) if _C1_CONTROL.search(text) else text


def _content_type(value: str) -> str:
    value = value.lower()
    if value in ("text", "plain"):
        return "text/plain"
    if value == "html":
        return "text/html"
    if value == "xhtml":
        return "application/xhtml+xml"
    return value


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
        declared = element.get(XML_BASE)
        if declared is None:
            declared = next((v for k, v in element.attrib.items() if k.lower() == "base"), None)
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
            if not isinstance(child.tag, str):
                raise Rejected("entity reference")
            name = element_name(child)
            child_base = self._base(base, child)
            handler = _ENTRY_HANDLERS.get(name)
            if handler is not None:
                key = _ONCE.get(name)
                if key is not None:
                    if key in seen:
                        raise Rejected(f"repeated {name}")
                    seen.add(key)
                if name in _AUTHOR_NAMES:
                    authors += 1
                    if authors > 1:
                        raise Rejected("several authors")
                handler(self, entry, child, child_base)
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
            href = _urljoin(base, href)
            links.append({"rel": attrs["rel"], "type": attrs["type"], "href": href})
            if attrs["rel"] == "alternate" and _content_type(attrs["type"]) in _HTML_TYPES:
                context["link"] = href
            return
        links.append({"rel": attrs["rel"], "type": attrs["type"]})
        text = _stripped_text(element)
        if text:
            text = _fix_text(_urljoin(base, text))
        if in_entry:  # feedparser's fix for `?a=1&b=2` read as entities; the feed's is smaller
            text = text.replace("&amp;", "&")
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
            text = _urljoin(base, text)
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
        attrs = _attributes(element)
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
        if detail["type"] not in _HTML_TYPES or not _MAY_CONTAIN_URIS.search(detail["value"]):
            return
        if base != self.url:
            raise Rejected("relative URLs under an xml:base")
        if _ODD_URL.search(detail["value"]):
            raise Rejected("a URL the two resolvers may read differently")


def _date_handler(key: str) -> Callable[[_Reader, dict[str, Any], etree._Element, str], None]:
    def handle(reader: _Reader, entry: dict[str, Any], element: etree._Element, base: str) -> None:
        if len(element):
            raise Rejected("markup inside a date")
        value = _fix_text(_stripped_text(element))
        entry[key] = value
        entry[key + "_parsed"] = feedparser_parse_date(value)

    return handle


def _descendants(element: etree._Element) -> Iterator[etree._Element]:
    for inner in element.iterdescendants():
        if not isinstance(inner.tag, str):
            raise Rejected("entity reference")
        yield inner


def _stripped_text(element: etree._Element) -> str:
    return (element.text or "").strip()


def _looks_html(text: str) -> bool:
    return bool(_FeedParserMixin.looks_like_html(text))


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
