"""HTML listing pages -> ParsedFeed, by the CSS selectors of a source's `[sources.select]`."""

from __future__ import annotations

import html
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urljoin, urlsplit

import soupsieve
from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning, Tag, XMLParsedAsHTMLWarning
from bs4.dammit import EncodingDetector
from bs4.element import CData, NavigableString
from bs4.exceptions import ParserRejectedMarkup

from aggregator.errors import ParseError
from aggregator.models import ParsedEntry, ParsedFeed
from aggregator.parse.dates import date_from_link, parse_date
from aggregator.parse.encoding import media_type_and_charset, normalize_label, sniff_bom
from aggregator.settings import SelectSettings

__all__ = ["Selector", "check_selectors", "decode_html", "parse_page"]

# "a@href", "time@datetime", "@href": a CSS selector (maybe empty) and the attribute to read.
_ATTRIBUTE_SUFFIX = re.compile(r"(?s)(?P<css>.*?)\s*@(?P<attr>[A-Za-z_:][-\w:.]*)\s*")
_URL_CONTROL = re.compile(r"[\t\r\n]")

# Servers often default to this label for pages that are really UTF-8.
_WEAK_LABEL = "cp1252"
_PRESCAN_BYTES = 8192
# Elements that separate words visually; text on either side must not run together.
_WORD_BREAKS = frozenset(
    {"br", "p", "div", "li", "td", "th", "tr", "dt", "dd", "hr", "h1", "h2", "h3", "h4", "h5", "h6"}
)


@dataclass(frozen=True, slots=True)
class Selector:
    """One compiled `[sources.select]` value: a CSS selector (None = the item) and an attribute."""

    name: str  # the settings key, for messages: "title", "link" ...
    spec: str  # as the user wrote it
    css: soupsieve.SoupSieve | None
    attribute: str | None

    @classmethod
    def compile(cls, name: str, spec: str) -> Selector:
        """Raises ParseError naming the key when the CSS part is not a valid selector."""
        match = _ATTRIBUTE_SUFFIX.fullmatch(spec)
        css_text, attribute = (match["css"], match["attr"]) if match else (spec, None)
        css_text = css_text.strip()
        if not css_text:
            return cls(name, spec, None, attribute)
        try:
            css = soupsieve.compile(css_text)
        except (soupsieve.SelectorSyntaxError, ValueError) as error:
            reason = str(error).splitlines()[0]
            raise ParseError(f"invalid CSS selector for {name!r}: {spec!r}: {reason}") from None
        return cls(name, spec, css, attribute)

    def select(self, root: Tag) -> list[Tag]:
        if self.css is None:
            return [root]
        return list(self.css.select(root))

    def element(self, item: Tag) -> Tag | None:
        """The first match inside `item`, else `item` itself when it matches, else None."""
        if self.css is None:
            return item
        found = self.css.select_one(item)
        if found is None and self.css.match(item):
            return item
        return found


@dataclass(frozen=True, slots=True)
class _Selectors:
    item: Selector
    title: Selector
    link: Selector
    date: Selector | None
    summary: Selector | None
    date_regex: str | None


def check_selectors(select: SelectSettings) -> None:
    """Raise ParseError when a selector or `date_regex` cannot work; config may call this."""
    _compile(select)


def parse_page(
    content: bytes,
    *,
    url: str,
    select: SelectSettings,
    timezone: str,
    content_type: str | None = None,
) -> ParsedFeed:
    """Entries of a listing page, one per `select.item` with a title and an http(s) link.

    Raises ParseError when a selector is invalid, matches nothing, or no item has both a title
    and a link; the message names the selector to fix.
    """
    selectors = _compile(select)
    soup = _soup(decode_html(content, content_type))
    items = [item for item in selectors.item.select(soup) if item is not soup]
    if not items:
        raise ParseError(f"selector 'item' ({select.item!r}) matched nothing on {url}")

    base = _base_url(soup, url)
    entries: list[ParsedEntry] = []
    seen_links: set[str] = set()
    titled = linked = 0
    unusable_link: str | None = None
    for item in items:
        title = _text_of(item, selectors.title)
        raw_link = _raw_link(item, selectors.link)
        link = _resolve(raw_link, base)
        titled += bool(title)
        linked += link is not None
        if raw_link and link is None and unusable_link is None:
            unusable_link = raw_link
        if not title or link is None or link in seen_links:
            continue
        seen_links.add(link)
        entries.append(
            ParsedEntry(
                guid=link,
                link=link,
                title=title,
                summary_html=_summary_html(item, selectors.summary),
                published=_published(item, link, selectors, timezone),
            )
        )
    if not entries:
        raise ParseError(
            _nothing_found(select, url, len(items), titled=titled, linked=linked, bad=unusable_link)
        )
    return ParsedFeed(title=_page_title(soup), link=url, entries=tuple(entries))


def decode_html(content: bytes, content_type: str | None = None) -> str:
    """Text of an HTML page: BOM, then the Content-Type charset, then <meta>, then UTF-8.

    The first of those that decodes the bytes without error wins; when none does, the first
    is used with replacement characters. A declared Latin-1/Windows-1252 yields to UTF-8
    when the bytes are valid UTF-8, since servers label UTF-8 pages that way by default.
    Labels map to the decoders browsers use (big5 -> big5hkscs, gb2312 -> gb18030).
    """
    bom = sniff_bom(content)
    if bom is not None:
        bom_codec, skip = bom
        return content[skip:].decode(bom_codec, errors="replace")
    _, charset = media_type_and_charset(content_type)
    meta = EncodingDetector.find_declared_encoding(
        content[:_PRESCAN_BYTES], is_html=True, search_entire_document=True
    )
    candidates = _unique(
        codec for label in (charset, meta, "utf-8") if (codec := _codec(label)) is not None
    )
    if candidates[0] == _WEAK_LABEL and not content.isascii() and _decodes(content, "utf-8"):
        candidates.insert(0, "utf-8")
    for codec in candidates:
        if _decodes(content, codec):
            return content.decode(codec)
    return content.decode(candidates[0], errors="replace")


def _compile(select: SelectSettings) -> _Selectors:
    if select.date_regex is not None:
        try:
            re.compile(select.date_regex)
        except re.error as error:
            raise ParseError(
                f"invalid regular expression for 'date_regex': {select.date_regex!r}: {error}"
            ) from None
    return _Selectors(
        item=Selector.compile("item", select.item),
        title=Selector.compile("title", select.title),
        link=Selector.compile("link", select.link),
        date=Selector.compile("date", select.date) if select.date is not None else None,
        summary=Selector.compile("summary", select.summary) if select.summary is not None else None,
        date_regex=select.date_regex,
    )


def _soup(text: str) -> BeautifulSoup:
    with warnings.catch_warnings():
        # Short text that looks like a URL or file name, or an XML document served as HTML, makes
        # bs4 warn; here such input simply yields no items, reported as a ParseError.
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        try:
            return BeautifulSoup(text, "html.parser")
        except ParserRejectedMarkup as error:
            raise ParseError(f"HTML parser rejected the page: {error}") from None


def _value(element: Tag, attribute: str | None) -> str | None:
    if attribute is None:
        return _text(element)
    value = element.get(attribute)
    if value is None:
        return None
    return value if isinstance(value, str) else " ".join(value)


def _text(element: Tag) -> str:
    """Visible text: like get_text(), but "a<br>b" reads "a b", not "ab"."""
    parts: list[str] = []
    for node in element.descendants:
        if isinstance(node, Tag):
            if node.name in _WORD_BREAKS:
                parts.append(" ")
        elif type(node) in (NavigableString, CData):  # not comments, scripts or styles
            parts.append(str(node))
    return "".join(parts)


def _collapse(text: str | None) -> str:
    return " ".join(text.split()) if text else ""


def _text_of(item: Tag, selector: Selector) -> str:
    element = selector.element(item)
    return "" if element is None else _collapse(_value(element, selector.attribute))


def _raw_link(item: Tag, selector: Selector) -> str | None:
    element = selector.element(item)
    if element is None:
        return None
    if selector.attribute is None and element.has_attr("href"):
        return _value(element, "href")  # link = "a" means its href, not its text
    return _value(element, selector.attribute)


def _resolve(raw_link: str | None, base: str) -> str | None:
    if raw_link is None:
        return None
    value = _URL_CONTROL.sub("", raw_link).strip()
    if not value or value == "#":
        return None
    try:
        resolved = urljoin(base, value)
        scheme = urlsplit(resolved).scheme
    except ValueError:  # e.g. a malformed IPv6 host
        return None
    return resolved if scheme in ("http", "https") else None


def _base_url(soup: BeautifulSoup, url: str) -> str:
    """The page URL, or its <base href> as browsers resolve links against it."""
    base = soup.find("base", href=True)
    if isinstance(base, Tag):
        resolved = _resolve(_value(base, "href"), url)
        if resolved is not None:
            return resolved
    return url


def _published(item: Tag, link: str, selectors: _Selectors, timezone: str) -> datetime | None:
    if selectors.date is not None:
        element = selectors.date.element(item)
        if element is not None:
            for text in _date_texts(element, selectors.date.attribute):
                parsed = parse_date(text, timezone=timezone)
                if parsed is not None:
                    return parsed
    if selectors.date_regex is not None:
        return date_from_link(link, selectors.date_regex, timezone=timezone)
    return None


def _date_texts(element: Tag, attribute: str | None) -> Iterator[str]:
    if attribute is None and element.name == "time" and element.has_attr("datetime"):
        yield _value(element, "datetime") or ""
    yield _value(element, attribute) or ""


def _summary_html(item: Tag, selector: Selector | None) -> str:
    if selector is None:
        return ""
    element = selector.element(item)
    if element is None:
        return ""
    if selector.attribute is not None:
        return html.escape(_value(element, selector.attribute) or "", quote=False)
    return element.decode_contents().strip()


def _page_title(soup: BeautifulSoup) -> str:
    title = soup.find("title")
    return _collapse(title.get_text()) if isinstance(title, Tag) else ""


def _nothing_found(
    select: SelectSettings, url: str, items: int, *, titled: int, linked: int, bad: str | None
) -> str:
    of_items = f"any of {items} item{'s' if items != 1 else ''} on {url}"
    if linked == 0:
        message = f"selector 'link' ({select.link!r}) found no link in {of_items}"
        if bad is not None:
            message += f" (found {bad!r}, which is not an http(s) link)"
        return message
    if titled == 0:
        return f"selector 'title' ({select.title!r}) found no title in {of_items}"
    return (
        f"no item has both a title ({select.title!r}, found in {titled}) and a link "
        f"({select.link!r}, found in {linked}) in {of_items}"
    )


def _codec(label: str | None) -> str | None:
    """The decoder for a declared label; None when unknown or when it cannot be right."""
    try:
        codec = normalize_label(label)
    except UnicodeError:  # normalize_label probes codecs; "undefined" fails with UnicodeError
        return None
    # Without a BOM (sniffed above) the bytes were readable as ASCII, so they are not UTF-16/32.
    if codec is None or codec.startswith(("utf-16", "utf-32")):
        return None
    return codec


def _decodes(content: bytes, codec: str) -> bool:
    try:
        content.decode(codec)
    except UnicodeError:
        return False
    return True


def _unique(values: Iterator[str]) -> list[str]:
    return list(dict.fromkeys(values))
