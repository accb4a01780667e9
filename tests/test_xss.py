"""Hostile input never becomes executable markup in any output: feeds, pages, JSON Feed.

Payloads from OWASP's XSS filter-evasion cheat sheet, mutation XSS (mXSS) and entity-encoded
URL schemes are put into titles, summaries, outlet names and links; every published file is
then parsed the way a browser or a feed reader would and searched for anything that runs.
"""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree as etree

import pytest

from aggregator.process.sanitize import clean_html
from aggregator.publish import SiteData
from tests.test_publish import make_settings, run_publish, site_data, stored, story

PAYLOADS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=https://xss.example/xss.js></SCRIPT>",
    "<IMG SRC=\"javascript:alert('XSS');\">",
    "<IMG SRC=JaVaScRiPt:alert('XSS')>",
    "<IMG SRC=`javascript:alert(\"RSnake says, 'XSS'\")`>",
    '<a onmouseover="alert(document.cookie)">xxs link</a>',
    "<IMG SRC=# onmouseover=\"alert('xxs')\">",
    '<IMG SRC=/ onerror="alert(String.fromCharCode(88,83,83))"></img>',
    '<img src=x onerror="&#0000106&#0000097&#0000118&#0000097&#0000115&#0000099&#0000114&#0000105&#0000112&#0000116&#0000058&#0000097&#0000108&#0000101&#0000114&#0000116&#0000040&#0000039&#0000088&#0000083&#0000083&#0000039&#0000041">',
    "<IMG SRC=&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;&#97;&#108;&#101;&#114;&#116;&#40;&#39;&#88;&#83;&#83;&#39;&#41;>",
    "<IMG SRC=&#x6A&#x61&#x76&#x61&#x73&#x63&#x72&#x69&#x70&#x74&#x3A&#x61&#x6C&#x65&#x72&#x74&#x28&#x27&#x58&#x53&#x53&#x27&#x29>",
    "<IMG SRC=\"jav\tascript:alert('XSS');\">",
    "<IMG SRC=\"jav&#x09;ascript:alert('XSS');\">",
    "<IMG SRC=\"jav&#x0A;ascript:alert('XSS');\">",
    "<IMG SRC=\" &#14;  javascript:alert('XSS');\">",
    '<SCRIPT/XSS SRC="https://xss.example/xss.js"></SCRIPT>',
    '<BODY onload!#$%&()*~+-_.,:;?@[/|\\]^`=alert("XSS")>',
    '<<SCRIPT>alert("XSS");//\\<</SCRIPT>',
    "<SCRIPT SRC=//xss.example/.j>",
    "<IMG SRC=\"`<javascript:alert>`('XSS')\"",
    '</TITLE><SCRIPT>alert("XSS");</SCRIPT>',
    '<INPUT TYPE="IMAGE" SRC="javascript:alert(\'XSS\');">',
    "<BODY BACKGROUND=\"javascript:alert('XSS')\">",
    '<svg/onload=alert("XSS")>',
    "<BGSOUND SRC=\"javascript:alert('XSS');\">",
    '<LINK REL="stylesheet" HREF="javascript:alert(\'XSS\');">',
    "<STYLE>@import'https://xss.example/xss.css';</STYLE>",
    '<META HTTP-EQUIV="refresh" CONTENT="0;url=javascript:alert(\'XSS\');">',
    '<META HTTP-EQUIV="refresh" CONTENT="0;url=data:text/html base64,PHNjcmlwdD5hbGVydCgnWFNTJyk8L3NjcmlwdD4K">',
    "<IFRAME SRC=\"javascript:alert('XSS');\"></IFRAME>",
    "<TABLE BACKGROUND=\"javascript:alert('XSS')\">",
    "<DIV STYLE=\"background-image: url(javascript:alert('XSS'))\">",
    "<DIV STYLE=\"width: expression(alert('XSS'));\">",
    '<OBJECT TYPE="text/x-scriptlet" DATA="https://xss.example/scriptlet.html"></OBJECT>',
    '<EMBED SRC="data:image/svg+xml;base64,PHN2ZyB4bWxuczpzdmc9Imh0dH A6Ly93d3cudzMub3JnLzIwMDAvc3ZnIiB4bWxucz0iaHR0cDovL3d3dy53My5vcmcv MjAwMC9zdmciIHhtbG5zOnhsaW5rPSJodHRwOi8vd3d3LnczLm9yZy8xOTk5L3hs aW5rIiB2ZXJzaW9uPSIxLjAiIHg9IjAiIHk9IjAiIHdpZHRoPSIxOTQiIGhlaWdodD0iMjAw IiBpZD0ieHNzIj48c2NyaXB0IHR5cGU9InRleHQvZWNtYXNjcmlwdCI+YWxlcnQoIlh TUyIpOzwvc2NyaXB0Pjwvc3ZnPg==" type="image/svg+xml" AllowScriptAccess="always"></EMBED>',
    '<form action="javascript:alert(1)"><input type=submit></form>',
    '<a href="&#106;avascript:alert(1)">entity scheme</a>',
    '<a href="&#x6A;avascript&colon;alert(1)">named colon</a>',
    '<a href="java&NewLine;script:alert(1)">newline entity</a>',
    '<a href="vbscript:msgbox(1)">vb</a>',
    '<a href="data:text/html,<script>alert(1)</script>">data</a>',
    # mutation XSS: markup that changes meaning when serialised and parsed again
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    "<svg><style><img src=x onerror=alert(1)></style></svg>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<form><math><mtext></form><form><mglyph><style></math><img src onerror=alert(1)>",
    '<xmp><p title="</xmp><img src=x onerror=alert(1)>">',
    '<textarea><p title="</textarea><img src=x onerror=alert(1)>">',
    '<!--<img src="--><img src=x onerror=alert(1)//">',
    "<![CDATA[<script>alert(1)</script>]]>",
    "]]><script>alert(1)</script>",
    '"><script>alert(1)</script>',
    "'';!--\"<XSS>=&{()}",
]

LINKS = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    " javascript:alert(1)",
    "jav\tascript:alert(1)",
    "&#106;avascript:alert(1)",
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "vbscript:msgbox(1)",
    'https://ok.example/"><script>alert(1)</script>',
    "https://ok.example/a?b=<script>",
    "//evil.example/x",
]

SAFE_SCHEMES = ("http", "https", "mailto")
URL_ATTRIBUTES = {
    "href",
    "src",
    "action",
    "formaction",
    "background",
    "data",
    "poster",
    "xlink:href",
    "srcset",
}
ACTIVE_TAGS = {
    "script", "iframe", "frame", "object", "embed", "applet", "form", "input", "button",
    "textarea", "select", "base", "meta", "link", "svg", "math", "bgsound", "frameset",
}  # fmt: skip


class ActiveMarkupFinder(HTMLParser):
    """Parses HTML as a browser tokenizes it and reports anything that could run script.

    `head`: the page's own head, where <meta name|charset>, <link rel=icon|alternate> and one
    <style> (the template's) are expected.
    """

    def __init__(self, *, head: bool = False) -> None:
        super().__init__(convert_charrefs=True)
        self.head = head
        self.found: list[str] = []
        self.styles = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name for name, _ in attrs}
        rel = dict(attrs).get("rel")
        if self.head and tag == "meta" and names <= {"charset", "name", "content"}:
            return
        if (
            self.head
            and tag == "link"
            and rel in ("icon", "alternate")
            and names <= {"rel", "type", "title", "href"}
        ):
            pass
        elif tag in ACTIVE_TAGS:
            self.found.append(f"<{tag}>")
        if tag == "style":
            self.styles += 1
        for name, value in attrs:
            if name.startswith("on") or name in ("style", "srcdoc", "http-equiv"):
                self.found.append(f"<{tag} {name}>")
            if name in URL_ATTRIBUTES and value is not None and not safe_url(value):
                self.found.append(f"<{tag} {name}={value!r}>")

    handle_startendtag = handle_starttag


def safe_url(value: str) -> bool:
    # Browsers strip leading C0 controls/space and remove tabs and newlines before the scheme.
    cleaned = re.sub(r"[\t\n\r]", "", value).lstrip("".join(map(chr, range(33))))
    scheme = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*):", cleaned)
    if scheme:
        return scheme.group(1).lower() in SAFE_SCHEMES
    return not cleaned.startswith("//")  # relative: same site


def active_markup(fragment: str, *, head: bool = False) -> list[str]:
    finder = ActiveMarkupFinder(head=head)
    finder.feed(fragment)
    finder.close()
    if finder.styles > (1 if head else 0):
        finder.found.append(f"{finder.styles} <style>")
    return finder.found


def hostile_site() -> SiteData:
    start = datetime(2024, 5, 10, tzinfo=UTC)
    stories = []
    for n, payload in enumerate(PAYLOADS):
        when = start - timedelta(hours=n)
        lead = stored(
            f"evil:{n}",
            title=payload,
            link=LINKS[n % len(LINKS)],
            summary_html=payload + f"<p>{payload}</p>",  # raw, as if ingestion had missed it
            summary_text=payload,
            published=when,
            source_name=payload,
            author=payload,
            tags=("hk-mainland-science", payload[:40]),
        )
        other = stored(
            f"evil-2:{n}",
            title=payload,
            link=LINKS[(n + 1) % len(LINKS)],
            published=when,
            source_name=f"Outlet {payload}",
            tags=(),
        )
        stories.append(story(lead, other))
    return site_data(stories)


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("xss")
    run_publish(hostile_site(), make_settings(tmp_path), tmp_path / "public")
    return tmp_path / "public"


def test_no_page_has_executable_markup(public: Path) -> None:
    pages = sorted(public.rglob("*.html"))
    assert len(pages) > 10  # tags named after payloads got pages too
    for page in pages:
        head, body = page.read_text(encoding="utf-8").split("</head>", 1)
        assert active_markup(head, head=True) == [], page
        if "<svg" in body:  # the chart: ours, built from numbers and week labels only
            before, chart = body.split("<svg", 1)
            chart, after = chart.split("</svg>", 1)
            assert set(re.findall(r"<(\w+)", chart)) <= {"title", "desc", "rect", "text"}
            assert not re.search(r"\son\w+=|javascript:|<script", chart, re.IGNORECASE)
            body = before + after
        assert active_markup(body) == [], page


def test_payloads_show_as_text_on_the_index(public: Path) -> None:
    text = (public / "index.html").read_text(encoding="utf-8")
    assert (
        html.escape(PAYLOADS[0], quote=False) in text
        or "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    )


def xml_text_fields(data: bytes) -> tuple[list[str], list[str], list[str]]:
    """(html fields, plain text fields, links) of an Atom or RSS document."""
    root = etree.fromstring(data)
    html_fields, text_fields, links = [], [], []
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag in ("title", "name", "creator", "subtitle"):
            text_fields.append(element.text or "")
        if tag == "link":
            links.append(element.get("href") or element.text or "")
        if tag == "category":
            text_fields.append(element.get("term") or element.text or "")
        if tag in ("entry", "item"):  # entry-level text constructs hold HTML
            for child in element:
                if child.tag.rsplit("}", 1)[-1] in ("content", "description", "summary", "encoded"):
                    html_fields.append(child.text or "")
    return html_fields, text_fields, links


def test_no_feed_has_executable_markup(public: Path) -> None:
    feeds = sorted([*public.rglob("*.atom"), *public.rglob("*.rss")])
    assert len(feeds) > 10
    for feed in feeds:
        data = feed.read_bytes()
        assert data.count(b"<?xml-stylesheet") == 1
        html_fields, text_fields, links = xml_text_fields(data)  # parses: no XML was injected
        for fragment in html_fields:
            assert active_markup(fragment) == [], (feed, fragment)
            assert clean_html(fragment) == fragment  # sanitized, to a fixed point
        for link in links:
            assert safe_url(link) and link.startswith(("http://", "https://")), (feed, link)
        assert all(text for text in text_fields)


def test_no_json_feed_has_executable_markup(public: Path) -> None:
    for path in sorted(public.rglob("*.json")):
        feed = json.loads(path.read_bytes())
        for item in feed["items"]:
            assert active_markup(item["content_html"]) == [], (path, item["id"])
            assert clean_html(item["content_html"]) == item["content_html"]
            assert item["url"].startswith(("http://", "https://")) and safe_url(item["url"])
            assert "<" not in item["url"] and '"' not in item["url"]


def test_the_feed_stylesheet_renders_no_markup_from_feeds() -> None:
    xsl = (Path(__file__).resolve().parent.parent / "templates" / "feed.xsl").read_text()
    assert "disable-output-escaping=" not in xsl
    assert "<script" not in xsl.lower()


# Those a current browser would run as written (backtick-quoted ones only fooled old IE).
RUNNABLE = [
    p
    for p in PAYLOADS
    if "`" not in p
    and p.lower().startswith(
        (
            "<script",
            "<img",
            "<a ",
            "<svg",
            "<iframe",
            "<form",
            "<object",
            "<embed",
            "<body",
            "<meta",
        )
    )
]


@pytest.mark.parametrize("payload", RUNNABLE)
def test_the_finder_catches_each_payload_before_sanitizing(payload: str) -> None:
    assert active_markup(payload) != []
