"""Make feed HTML safe to show (allow-list sanitizer) and turn HTML into plain text."""

from __future__ import annotations

import html as html_lib
import re
from functools import lru_cache
from urllib.parse import urlsplit

import nh3

from aggregator.process.text import collapse_whitespace, literal_alternation

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
SANITIZER_VERSION = 1
"""Bump it whenever what `clean_html` keeps changes: the store records which version cleaned each
summary, and publishing cleans again every summary an other version cleaned."""

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

# nh3 (html5ever) serialises every attribute as name="value", escaping '"', '<' and '>' in the
# value and '<' in text, so on its output these match exactly one tag (with attributes) and
# nothing else.
_TAG_WITH_ATTRIBUTES = re.compile(r'<([a-z0-9]+)((?:\s+[^\s="<>/]+="[^"]*")+)\s*/?>')
_ATTRIBUTE = re.compile(r'([^\s="<>/]+)="([^"]*)"')
_TAG_NAME = re.compile(r"<(/?[a-z0-9]+)")
_ANY_TAG = re.compile(r"<[^>]*>")
_BLOCK_TAG = re.compile(rf"</?(?:{literal_alternation(_BLOCK_TAGS)})\b[^>]*>")
_PIXELS = re.compile(r"\s*(\d+)(?:\.\d*)?\s*(?:px)?\s*$", re.IGNORECASE)
_BLANK_LINES = re.compile(r"\n\s*\n")
_SIMPLE_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*>")
_MAX_PASSES = 4

# What the HTML parser restructures when it meets these nested in a parsed tree (allowed tags
# only): a start tag that closes an open <p>, a heading inside a heading, a link inside a link,
# list items inside list items. Tables (foster parenting, implied <tbody>) and <pre> (its first
# newline is dropped) are not checked, just cleaned again.
_CLOSES_P = frozenset(
    {
        "blockquote", "dd", "dl", "dt", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5",
        "h6", "hr", "li", "ol", "p", "pre", "table", "ul",
    }
)  # fmt: skip
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_VOID = frozenset({"br", "hr", "img"})
_RESTRUCTURED = frozenset(
    {"table", "caption", "thead", "tbody", "tfoot", "tr", "td", "th", "pre"}
)  # fmt: skip
_NESTING_CHECKED = _RESTRUCTURED | _CLOSES_P | _HEADINGS | {"a", "li", "dd", "dt"}


def clean_html(html: str, *, base_url: str | None = None) -> str:
    """Sanitize feed HTML with an allow-list; relative URLs become absolute against `base_url`.

    Scripts, event handlers, styles and non-http(s)/mailto URLs go (nh3 checks schemes after
    decoding entities); so do tracking pixels (an <img> at most 1x1) and images left without
    a source. Attributes come out sorted by name, so the result does not depend on the order
    the feed (or the parser that read it) gave them in. Idempotent: cleaning the output again
    returns it unchanged.
    """
    cleaner = _cleaner(base_url)
    cleaned = _clean_once(cleaner, html)
    # Misnested input can leave a tree whose serialisation parses differently
    # ("<h1><form><h1>" -> "<h1><h1></h1></h1>" -> "<h1></h1><h1></h1>"): clean until stable,
    # unless the tree holds nothing a parser would rebuild (the common case: one pass).
    for _ in range(_MAX_PASSES):
        if _reparses_alike(cleaned):
            break
        again = _clean_once(cleaner, cleaned)
        if again == cleaned:
            break
        cleaned = again
    return cleaned


def _clean_once(cleaner: nh3.Cleaner, html: str) -> str:
    cleaned = _TAG_WITH_ATTRIBUTES.sub(_kept_tag, cleaner.clean(html))
    if "<img>" in cleaned:  # an image without a single attribute (so without a source)
        cleaned = cleaned.replace("<img>", "")
    return cleaned.strip()


def _reparses_alike(html: str) -> bool:
    """Whether parsing `html` (nh3's output) again surely gives the same tree.

    Conservative: False for any nesting the parser might rebuild, which costs one more pass.
    """
    open_tags: list[str] = []
    for name in _TAG_NAME.findall(html):
        if name[0] == "/":
            if not open_tags or open_tags.pop() != name[1:]:
                return False
            continue
        if name in _NESTING_CHECKED and (  # inline elements (strong, em, span ...): no rule
            name in _RESTRUCTURED
            or (
                open_tags
                and (
                    (name in _CLOSES_P and "p" in open_tags)
                    or (name in _HEADINGS and not _HEADINGS.isdisjoint(open_tags))
                    or (name == "a" and "a" in open_tags)
                    or (name == "li" and _inside(open_tags, "li", ("ul", "ol")))
                    or (name in ("dd", "dt") and _inside(open_tags, ("dd", "dt"), ("dl",)))
                )
            )
        ):
            return False
        if name not in _VOID:
            open_tags.append(name)
    return not open_tags


def _inside(open_tags: list[str], items: str | tuple[str, ...], lists: tuple[str, ...]) -> bool:
    """Whether the innermost of `items` and `lists` among the open tags is one of `items`."""
    for name in reversed(open_tags):
        if name in lists:
            return False
        if name in items:
            return True
    return False


@lru_cache(maxsize=1024)  # one per feed URL
def _cleaner(base_url: str | None) -> nh3.Cleaner:
    base = (base_url or "").strip()
    if _is_web_url(base):
        try:
            return _allow_list_cleaner(("rewrite_with_base", base))
        except ValueError:  # a base Python accepts but the URL Standard does not (bad IDN)
            pass
    return _allow_list_cleaner("pass_through")


@lru_cache(maxsize=1024)  # one per feed URL; building a Cleaner costs as much as a clean
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


def _kept_tag(match: re.Match[str]) -> str:
    """The tag with its attributes sorted by name; "" for a tracking pixel or a source-less image."""
    attributes = sorted(_ATTRIBUTE.findall(match.group(2)))
    name = match.group(1)
    if name == "img":
        values = dict(attributes)
        if not values.get("src"):
            return ""
        width, height = _pixels(values.get("width")), _pixels(values.get("height"))
        if width is not None and height is not None and width <= 1 and height <= 1:
            return ""  # a tracking pixel
    return f"<{name}" + "".join(f' {key}="{value}"' for key, value in attributes) + ">"


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
    if not text or "\n" not in text or _holds_markup(text):
        return text
    paragraphs = (p.strip() for p in _BLANK_LINES.split(text))
    return "".join(
        "<p>" + "<br>".join(line.strip() for line in p.splitlines()) + "</p>"
        for p in paragraphs
        if p
    )


def _holds_markup(text: str) -> bool:
    """nh3.is_html(text), answered without tokenizing the whole text in the common cases."""
    first = text.find("<")
    if first < 0:
        return False  # every tag, comment or doctype starts with "<"
    # Up to its first "<" the tokenizer is in its data state, so a whole tag there is one.
    return _SIMPLE_TAG.match(text, first) is not None or nh3.is_html(text)


def html_to_text(html: str) -> str:
    """Plain text of an HTML fragment: tags dropped, entities decoded, whitespace collapsed.

    Block elements separate words ("<p>a</p><p>b</p>" -> "a b"); inline ones do not. What
    clean_html drops with its content (scripts, styles, ...) is dropped here too.
    """
    if "<" not in html:
        # The common case (titles, names): no parser needed, and html.unescape keeps a bare
        # "&" ("AT&T").
        return collapse_whitespace(html_lib.unescape(html))
    return sanitized_text(_text_cleaner().clean(html))


def sanitized_text(cleaned_html: str) -> str:
    """html_to_text for HTML that nh3 wrote (clean_html's output), without parsing it again.

    In nh3's output every "<" opens a tag and no tag holds a ">", so tags are found by pattern.
    """
    if "<" in cleaned_html:
        cleaned_html = _ANY_TAG.sub("", _BLOCK_TAG.sub(" ", cleaned_html))
    return collapse_whitespace(html_lib.unescape(cleaned_html))


@lru_cache(maxsize=1)
def _text_cleaner() -> nh3.Cleaner:
    """Keeps only block tags (without attributes), for their word boundaries."""
    return nh3.Cleaner(
        tags=_BLOCK_TAGS,
        clean_content_tags=DROPPED_WITH_CONTENT,
        attributes={},
        link_rel=None,
        strip_comments=True,
    )
