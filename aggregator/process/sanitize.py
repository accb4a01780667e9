"""Make feed HTML safe to show (allow-list sanitizer) and turn HTML into plain text."""

from __future__ import annotations

import html as html_lib
import re
from urllib.parse import urlsplit

import nh3
from bs4 import BeautifulSoup, Tag

from aggregator.process.text import collapse_whitespace

ALLOWED_TAGS = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "caption", "cite", "code", "dd", "del", "dl",
        "dt", "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i",
        "img", "ins", "li", "ol", "p", "pre", "q", "s", "small", "span", "strong", "sub",
        "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul",
    }
)  # fmt: skip

ALLOWED_ATTRIBUTES: dict[str, frozenset[str]] = {
    "a": frozenset({"href", "title"}),
    "img": frozenset({"src", "alt", "title", "width", "height"}),
    "td": frozenset({"colspan", "rowspan"}),
    "th": frozenset({"colspan", "rowspan"}),
    "abbr": frozenset({"title"}),
}

URL_SCHEMES = frozenset({"http", "https", "mailto"})

# Dropped with their content: code, embedded documents and raw-text elements whose text
# would otherwise surface as literal markup ("<img src=...>" from a <noscript>).
DROPPED_WITH_CONTENT = frozenset(
    {
        "script", "style", "template", "iframe", "frame", "frameset", "object", "embed",
        "applet", "noscript", "noembed", "noframes", "svg", "math", "textarea", "select",
        "title", "xmp",
    }
)  # fmt: skip

# Elements after which text continues on a new line, so html_to_text puts a space there.
_BLOCK_TAGS = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "caption", "dd", "div", "dl", "dt",
        "figcaption", "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr",
        "img", "li", "main", "nav", "ol", "p", "pre", "section", "table", "tbody", "td",
        "tfoot", "th", "thead", "tr", "ul",
    }
)  # fmt: skip

# nh3 (html5ever) serialises every attribute as name="value" with '"' escaped, so on its
# output this matches exactly one <img> element and nothing else.
_IMG_TAG = re.compile(r'<img((?:\s+[^\s="<>/]+="[^"]*")*)\s*/?>')
_ATTRIBUTE = re.compile(r'([^\s="<>/]+)="([^"]*)"')
_PIXELS = re.compile(r"\s*(\d+)(?:\.\d*)?\s*(?:px)?\s*$", re.IGNORECASE)
_BLANK_LINES = re.compile(r"\n\s*\n")
_MAX_PASSES = 4


def clean_html(html: str, *, base_url: str | None = None) -> str:
    """Sanitize feed HTML with an allow-list; relative URLs become absolute against `base_url`.

    Scripts, event handlers, styles and non-http(s)/mailto URLs go (nh3 checks schemes after
    decoding entities); so do tracking pixels (an <img> at most 1x1) and images left without
    a source. Idempotent: cleaning the output again returns it unchanged.
    """
    cleaner = _cleaner(base_url)
    cleaned = _clean_once(cleaner, html)
    # Misnested input can leave a tree whose serialisation parses differently
    # ("<h1><form><h1>" -> "<h1><h1></h1></h1>" -> "<h1></h1><h1></h1>"): clean until stable.
    for _ in range(_MAX_PASSES):
        again = _clean_once(cleaner, cleaned)
        if again == cleaned:
            break
        cleaned = again
    return cleaned


def _clean_once(cleaner: nh3.Cleaner, html: str) -> str:
    return _IMG_TAG.sub(_keep_image, cleaner.clean(html)).strip()


def _cleaner(base_url: str | None) -> nh3.Cleaner:
    base = (base_url or "").strip()
    if _is_web_url(base):
        try:
            return _allow_list_cleaner(("rewrite_with_base", base))
        except ValueError:  # a base Python accepts but the URL Standard does not (bad IDN)
            pass
    return _allow_list_cleaner("pass_through")


def _allow_list_cleaner(url_relative: nh3.UrlRelative) -> nh3.Cleaner:
    return nh3.Cleaner(
        tags=ALLOWED_TAGS,
        clean_content_tags=DROPPED_WITH_CONTENT,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer",
        strip_comments=True,
        url_relative=url_relative,
    )


def _is_web_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


def _keep_image(match: re.Match[str]) -> str:
    attributes = dict(_ATTRIBUTE.findall(match.group(1)))
    if not attributes.get("src"):
        return ""
    width, height = _pixels(attributes.get("width")), _pixels(attributes.get("height"))
    if width is not None and height is not None and width <= 1 and height <= 1:
        return ""  # a tracking pixel
    return match.group(0)


def _pixels(value: str | None) -> int | None:
    if value is None:
        return None
    match = _PIXELS.match(value)
    return int(match.group(1)) if match else None


def text_to_html(text: str) -> str:
    """Give markup-free text its paragraphs: blank lines -> <p>, single newlines -> <br>.

    Text that already holds markup is returned as is. Entities are left for the sanitizer,
    since feed summaries are HTML even when they hold no tags.
    """
    text = text.strip()
    if not text or "\n" not in text or nh3.is_html(text):
        return text
    paragraphs = (p.strip() for p in _BLANK_LINES.split(text))
    return "".join(
        "<p>" + "<br>".join(line.strip() for line in p.splitlines()) + "</p>"
        for p in paragraphs
        if p
    )


def html_to_text(html: str) -> str:
    """Plain text of an HTML fragment: tags dropped, entities decoded, whitespace collapsed.

    Block elements separate words ("<p>a</p><p>b</p>" -> "a b"); inline ones do not.
    """
    if "<" not in html:
        # The common case (titles, names): no parser needed, and html.unescape keeps a bare
        # "&" ("AT&T") where Python 3.11's HTMLParser drops an unterminated "&T" at the end.
        return collapse_whitespace(html_lib.unescape(html))
    # The padding keeps bs4 from mistaking a leading "http:..." for a URL to fetch (it warns)
    # and gives a trailing "&name" a terminator.
    soup = BeautifulSoup(f" {html} ", "html.parser")
    for element in soup.find_all(_BLOCK_TAGS):
        if isinstance(element, Tag):
            element.insert_before(" ")
            element.insert_after(" ")
    return collapse_whitespace(soup.get_text())
