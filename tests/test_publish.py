"""Publishing: feeds that parse back and pass the W3C validator's rules, stable ids, the website,
change-aware writes."""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree as etree
from zoneinfo import ZoneInfo

import feedparser
import pytest

from aggregator.errors import AggregatorError
from aggregator.models import Entry, SourceHealth, StoredEntry, Story
from aggregator.publish import (
    ATOM_FILE,
    INDEX_FILE,
    JSON_FILE,
    MANIFEST_FILE,
    RSS_FILE,
    SiteData,
    chart_bars,
    entry_anchor,
    entry_urn,
    excerpt,
    iso_week,
    plan_archive,
    publish,
    story_entry_id,
    tag_slug,
    write_if_changed,
)
from aggregator.settings import PublishSettings, Settings, TagRule

BASE_URL = "https://watch.example.org/"
NOW = datetime(2024, 5, 12, 9, 30, tzinfo=UTC)
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
TOPIC = "hk-mainland-science"
ATOM = "{http://www.w3.org/2005/Atom}"
FEED_FILES = ("feed", "all", "tags/hk-mainland-science", "tags/official")

HOSTILE_TITLE = '<script>alert(1)</script> & "quotes"'
CHINESE_TITLE = "香港與內地深化科技合作　共建創科走廊"
LONG_CHINESE = "香港特別行政區政府與深圳市政府今日簽署合作備忘錄，" * 20


def stored(
    entry_id: str,
    *,
    title: str,
    published: datetime,
    link: str | None = None,
    canonical_url: str | None = None,
    summary_html: str = "",
    summary_text: str = "",
    updated: datetime | None = None,
    first_seen: datetime | None = None,
    tags: tuple[str, ...] = (TOPIC,),
    source_name: str = "HKSAR Government press releases",
    author: str | None = None,
) -> StoredEntry:
    entry = Entry(
        id=entry_id,
        source_id=entry_id.split(":", 1)[0],
        guid=None,
        link=link,
        canonical_url=canonical_url,
        title=title,
        summary_html=summary_html,
        summary_text=summary_text,
        author=author,
        published=published,
        updated=updated,
        first_seen=first_seen or published,
        content_hash=f"hash-{entry_id}-{title}",
        tags=tags,
    )
    return StoredEntry(entry=entry, source_name=source_name)


def story(lead: StoredEntry, *others: StoredEntry, story_id: str | None = None) -> Story:
    return Story(id=story_id or lead.entry.id, lead=lead, others=tuple(others))


JOINED_AT = datetime(2024, 5, 11, 2, 0, tzinfo=UTC)


def sample_stories() -> list[Story]:
    """Newest first, as the store returns them; hostile and awkward on purpose."""
    return [
        story(
            stored(
                "hksar-press-en:P2024051000123",
                title=HOSTILE_TITLE,
                link="https://www.info.gov.hk/gia/general/202405/10/P2024051000123.htm",
                summary_html="<p>Innovation &amp; technology: <b>Lok Ma Chau Loop</b> update.</p>",
                summary_text="Innovation & technology: Lok Ma Chau Loop update.",
                published=datetime(2024, 5, 10, 3, 0, tzinfo=UTC),
                updated=datetime(2024, 5, 10, 4, 30, tzinfo=UTC),
                tags=(TOPIC, "official"),
            ),
            stored(
                "scmp:9001",
                title="Loop park gets first tenants",
                link="https://www.scmp.com/news/hong-kong/article/9001",
                published=datetime(2024, 5, 10, 5, 0, tzinfo=UTC),
                first_seen=JOINED_AT,
                source_name="SCMP",
                tags=(),
            ),
            stored(
                "example-html:no-link",
                title="Loop (listed)",
                published=datetime(2024, 5, 10, 6, 0, tzinfo=UTC),
                first_seen=JOINED_AT - timedelta(hours=1),
                source_name="Example <institute>",
                tags=(),
            ),
        ),
        story(
            stored(
                "hksar-press-zh:P2024051000077",
                title=CHINESE_TITLE,
                link="https://www.info.gov.hk/gia/general/202405/10/P2024051000077.htm",
                summary_html=f"<p>{LONG_CHINESE}</p>",
                summary_text=LONG_CHINESE,
                # 04:00 on 10 May in Hong Kong, though still 9 May in UTC
                published=datetime(2024, 5, 9, 20, 0, tzinfo=UTC),
                source_name="香港特區政府新聞公報",
            )
        ),
        story(
            stored(
                "rthk-zh:3f9a1c",
                title="港深創科園首座大樓落成",
                canonical_url="https://news.rthk.hk/rthk/ch/component/k2/1750001-20240508.htm",
                published=datetime(2024, 5, 8, 6, 15, tzinfo=UTC),
                source_name="RTHK 即時新聞",
            )
        ),
        story(
            stored(
                "example-html:8d2e",
                title="Story without any link",
                summary_html="<p>Listed on a page that gives no permalink.</p>",
                summary_text="Listed on a page that gives no permalink.",
                published=datetime(2024, 5, 1, 1, 0, tzinfo=UTC),
                source_name="Example research institute",
            )
        ),
        story(
            stored(
                "example-html:9a41",
                title="Control\x0b characters\x00 and a javascript: link",
                link="javascript:alert(1)",
                summary_text="Nothing to see.",
                summary_html="<p>Nothing to see.</p>",
                published=datetime(2024, 4, 30, 1, 0, tzinfo=UTC),
                source_name="Example research institute",
            )
        ),
    ]


def site_data(stories: list[Story] | None = None) -> SiteData:
    stories = sample_stories() if stories is None else stories
    zone = ZoneInfo("Asia/Hong_Kong")
    counts, week_ids = plan_archive({s.id: s.published for s in stories}, zone, set())
    by_id = {s.id: s for s in stories}
    tagged = {tag: [s for s in stories if tag in s.tags] for s in stories for tag in s.tags}
    return SiteData(
        topic=stories,
        everything=stories,
        tags=tagged,
        weeks={w: [by_id[i] for i in ids] for w, ids in week_ids.items()},
        week_counts=counts,
        sources=[
            SourceHealth(
                "hksar-press-en",
                "HKSAR Government press releases",
                "https://www.info.gov.hk/gia/rss/general_en.xml",
                last_success_at=datetime(2024, 5, 12, 9, 0, tzinfo=UTC),
                recent_items=12,
            ),
            SourceHealth(
                "broken",
                "Broken <b>source</b>",
                "javascript:alert(1)",
                last_error="HTTP 500 <script>alert(1)</script>",
                last_error_at=datetime(2024, 5, 12, 8, 0, tzinfo=UTC),
                consecutive_failures=3,
            ),
        ],
    )


def week_of(s: Story) -> str:
    return iso_week(s.published.astimezone(ZoneInfo("Asia/Hong_Kong")).date())


def expected_links(stories: list[Story]) -> list[str]:
    last = [
        f"{BASE_URL}archive/{week_of(s)}.html#{entry_anchor(story_entry_id(s))}"
        for s in stories[3:]
    ]
    return [
        "https://www.info.gov.hk/gia/general/202405/10/P2024051000123.htm",
        "https://www.info.gov.hk/gia/general/202405/10/P2024051000077.htm",
        "https://news.rthk.hk/rthk/ch/component/k2/1750001-20240508.htm",
        *last,
    ]


EXPECTED_TITLES = [
    HOSTILE_TITLE,
    CHINESE_TITLE,
    "港深創科園首座大樓落成",
    "Story without any link",
    "Control characters and a javascript: link",
]


def make_settings(tmp_path: Path) -> Settings:
    return Settings(
        path=tmp_path / "feeds.toml",
        data_dir=tmp_path,
        timezone="Asia/Hong_Kong",
        tags=(TagRule(name=TOPIC, title="HK–Mainland science"),),
        publish=PublishSettings(
            topic=TOPIC,
            title="HK–Mainland Science Watch",
            base_url=BASE_URL,
            description="Hong Kong–Mainland science & technology cooperation",
        ),
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


def run_publish(site: SiteData, settings: Settings, public_dir: Path, now: datetime = NOW) -> Any:
    return publish(site, settings=settings, public_dir=public_dir, now=now, templates_dir=TEMPLATES)


@pytest.fixture
def public(tmp_path: Path, settings: Settings) -> Path:
    public_dir = tmp_path / "public"
    run_publish(site_data(), settings, public_dir)
    return public_dir


def all_files(public_dir: Path) -> dict[str, bytes]:
    return {
        p.relative_to(public_dir).as_posix(): p.read_bytes()
        for p in sorted(public_dir.rglob("*"))
        if p.is_file()
    }


# --- which files --------------------------------------------------------------------------


def test_publish_writes_the_feeds_and_the_site(public: Path) -> None:
    names = set(all_files(public))
    for stem in FEED_FILES:
        assert {f"{stem}.atom", f"{stem}.rss", f"{stem}.json"} <= names
    assert {
        "index.html",
        "sources.html",
        "feed.xsl",
        "favicon.svg",
        "archive/index.html",
        "archive/2024-W19.html",
        "archive/2024-W18.html",
        "tags/hk-mainland-science.html",
        "tags/official.html",
    } <= names
    hidden = [n for n in names if "/." in n or n.startswith(".")]
    assert hidden == [MANIFEST_FILE]  # and no temp files left


# --- Atom and RSS ---------------------------------------------------------------------------


def test_atom_parses_back_with_each_story_once(public: Path) -> None:
    stories = sample_stories()
    parsed = feedparser.parse((public / ATOM_FILE).read_bytes())

    assert parsed.bozo == 0
    assert parsed.version == "atom10"
    assert [e.id for e in parsed.entries] == [entry_urn(story_entry_id(s)) for s in stories]
    assert [e.title for e in parsed.entries] == EXPECTED_TITLES
    assert [e.link for e in parsed.entries] == expected_links(stories)
    first = parsed.entries[0]
    assert first.author == "HKSAR Government press releases"
    assert first.content[0].type == "text/html"
    content = first.content[0].value
    assert "Lok Ma Chau Loop" in content
    assert "Reported by <a" in content and "HKSAR Government press releases</a>" in content
    assert "Also reported by:" in content
    assert 'href="https://www.scmp.com/news/hong-kong/article/9001"' in content
    assert "SCMP</a>" in content and "Example &lt;institute&gt;" in content
    assert [t.term for t in first.tags] == [TOPIC, "official"]


def test_a_story_is_dated_by_its_lead_and_updated_when_a_report_joins(public: Path) -> None:
    root = etree.fromstring((public / ATOM_FILE).read_bytes())
    first = root.find(f"{ATOM}entry")
    assert first is not None
    assert first.findtext(f"{ATOM}published") == "2024-05-10T03:00:00+00:00"
    assert first.findtext(f"{ATOM}updated") == "2024-05-11T02:00:00+00:00"  # SCMP joined then
    # the feed's updated is the newest story change, not the clock
    assert root.findtext(f"{ATOM}updated") == "2024-05-11T02:00:00+00:00"


def test_the_story_id_is_its_first_seen_member_and_survives_a_new_lead() -> None:
    lead, scmp, listed = sample_stories()[0].members
    original = story(lead, scmp, listed)
    # the store later picks another lead (say a higher-priority source); the story's id stays
    relead = story(scmp, lead, listed, story_id="scmp:9001")
    later = stored("late:1", title="Late", published=lead.entry.published, first_seen=NOW)
    grown = story(lead, scmp, listed, later)

    assert story_entry_id(original) == "hksar-press-en:P2024051000123"
    assert story_entry_id(relead) == story_entry_id(original) == story_entry_id(grown)


def test_rss_parses_back_with_rfc822_dates_and_guids_that_are_not_permalinks(
    public: Path,
) -> None:
    stories = sample_stories()
    data = (public / RSS_FILE).read_bytes()
    parsed = feedparser.parse(data)

    assert parsed.bozo == 0
    assert parsed.version == "rss20"
    assert parsed.feed.link == BASE_URL
    assert [e.id for e in parsed.entries] == [entry_urn(story_entry_id(s)) for s in stories]
    assert all(e.guidislink is False for e in parsed.entries)
    assert [e.title for e in parsed.entries] == EXPECTED_TITLES
    assert [e.link for e in parsed.entries] == expected_links(stories)
    assert parsed.entries[1].author == "香港特區政府新聞公報"

    root = etree.fromstring(data)
    assert root.findtext("channel/lastBuildDate") == "Sat, 11 May 2024 02:00:00 +0000"
    rfc822 = re.compile(
        r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
        r" \d{4} \d\d:\d\d:\d\d \+0000$"
    )
    pub_dates = [item.findtext("pubDate") or "" for item in root.iter("item")]
    assert pub_dates[0] == "Fri, 10 May 2024 03:00:00 +0000"
    assert all(rfc822.match(date) for date in pub_dates)


def feed_validator_problems(atom: bytes, rss: bytes, self_base: str) -> list[str]:
    """The W3C Feed Validation Service's rules that apply to our output, point by point.

    https://validator.w3.org/feed/docs/: errors and the warnings a reader would notice.
    """
    problems: list[str] = []

    def absolute(url: str | None) -> bool:
        parts = urlsplit(url or "")
        return parts.scheme in ("http", "https") and bool(parts.netloc)

    rfc3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
    # XML: version 1.0, UTF-8, the stylesheet instruction before the root element.
    for name, data in (("atom", atom), ("rss", rss)):
        if not data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>"):
            problems.append(f"{name}: must start with an XML 1.0 UTF-8 declaration")
        if (
            b'<?xml-stylesheet type="text/xsl" href="'
            not in data.split(b"<feed")[0].split(b"<rss")[0]
        ):
            problems.append(f"{name}: no xml-stylesheet instruction before the root")
        data.decode("utf-8")  # NotUTF8
    root = etree.fromstring(atom)
    # RFC 4287 4.1.1: atom:feed has exactly one id, title, updated; an author unless every
    # entry has one; MissingSelf; DuplicateAtomLink (alternate with the same type).
    for element in ("id", "title", "updated"):
        if len(root.findall(f"{ATOM}{element}")) != 1:
            problems.append(f"atom: feed needs exactly one {element}")
    if not rfc3339.match(root.findtext(f"{ATOM}updated") or ""):
        problems.append("atom: feed updated is not RFC 3339")
    links = root.findall(f"{ATOM}link")
    rels = [link.get("rel", "alternate") for link in links]
    if rels.count("self") != 1:
        problems.append("atom: MissingSelf")
    if rels.count("alternate") != 1:
        problems.append("atom: needs one alternate link")
    for link in links:
        if not absolute(link.get("href")):
            problems.append(f"atom: relative link {link.get('href')}")
        if link.get("rel") == "self" and link.get("href") != self_base + "atom":
            problems.append("atom: SelfDoesntMatchLocation")
    feed_has_author = root.find(f"{ATOM}author/{ATOM}name") is not None
    ids: list[str] = []
    for n, entry in enumerate(root.findall(f"{ATOM}entry")):
        where = f"atom: entry {n}"
        for element in ("id", "title", "updated"):
            if len(entry.findall(f"{ATOM}{element}")) != 1:
                problems.append(f"{where} needs exactly one {element}")
        ids.append(entry.findtext(f"{ATOM}id") or "")
        if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", ids[-1]):
            problems.append(f"{where}: id is not an IRI")
        for element in ("updated", "published"):
            if not rfc3339.match(entry.findtext(f"{ATOM}{element}") or ""):
                problems.append(f"{where}: {element} is not RFC 3339")
        if (entry.findtext(f"{ATOM}published") or "") > (entry.findtext(f"{ATOM}updated") or ""):
            problems.append(f"{where}: published after updated")
        alternates = [
            link
            for link in entry.findall(f"{ATOM}link")
            if link.get("rel", "alternate") == "alternate"
        ]
        content = entry.find(f"{ATOM}content")
        if not alternates and content is None:  # 4.1.2
            problems.append(f"{where}: needs an alternate link or content")
        if len(alternates) > 1:
            problems.append(f"{where}: DuplicateAtomLink")
        if any(not absolute(link.get("href")) for link in alternates):
            problems.append(f"{where}: relative link")
        if content is not None and content.get("type") not in ("text", "html", "xhtml"):
            problems.append(f"{where}: content type {content.get('type')}")
        if not feed_has_author and entry.find(f"{ATOM}author/{ATOM}name") is None:
            problems.append(f"{where}: MissingAuthor")
        for category in entry.findall(f"{ATOM}category"):
            if not category.get("term"):
                problems.append(f"{where}: category without term")
        title = entry.find(f"{ATOM}title")
        if title is not None and title.get("type") not in (None, "text"):
            problems.append(f"{where}: title is not plain text")
    if len(set(ids)) != len(ids):
        problems.append("atom: DuplicateEntryIds")
    # RSS 2.0: channel title, link, description; item title or description; RFC 822 dates;
    # atom:link rel=self with a type (MissingAtomSelfLink); author must be an email, so none.
    channel = etree.fromstring(rss).find("channel")
    assert channel is not None
    for element in ("title", "link", "description"):
        if not channel.findtext(element):
            problems.append(f"rss: MissingChannelElement {element}")
    self_links = channel.findall(f"{ATOM}link[@rel='self']")
    if len(self_links) != 1 or self_links[0].get("type") != "application/rss+xml":
        problems.append("rss: MissingAtomSelfLink")
    elif self_links[0].get("href") != self_base + "rss":
        problems.append("rss: SelfDoesntMatchLocation")
    rfc822 = re.compile(
        r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
        r" \d{4} \d\d:\d\d:\d\d [+-]\d{4}$"
    )
    for element in ("lastBuildDate", "pubDate"):
        value = channel.findtext(element)
        if value is not None and not rfc822.match(value):
            problems.append(f"rss: {element} is not RFC 822")
    guids: list[str] = []
    for n, item in enumerate(channel.findall("item")):
        where = f"rss: item {n}"
        if not (item.findtext("title") or item.findtext("description")):
            problems.append(f"{where}: ItemMustContainTitleOrDescription")
        if not rfc822.match(item.findtext("pubDate") or ""):
            problems.append(f"{where}: InvalidRFC2822Date")
        if not absolute(item.findtext("link")):
            problems.append(f"{where}: relative link")
        guid = item.find("guid")
        if guid is None or not guid.text:
            problems.append(f"{where}: no guid")
        else:
            guids.append(guid.text)
            if guid.get("isPermaLink") != "false":
                problems.append(f"{where}: a urn guid must say isPermaLink=false")
        if item.find("author") is not None:
            problems.append(f"{where}: author must be an email address")
    if len(set(guids)) != len(guids):
        problems.append("rss: DuplicateItem guids")
    return problems


@pytest.mark.parametrize("stem", FEED_FILES)
def test_every_feed_passes_the_feed_validator_rules(public: Path, stem: str) -> None:
    atom = (public / f"{stem}.atom").read_bytes()
    rss = (public / f"{stem}.rss").read_bytes()
    assert feed_validator_problems(atom, rss, f"{BASE_URL}{stem}.") == []
    for data in (atom, rss):
        assert feedparser.parse(data).bozo == 0


def test_the_validator_rules_catch_broken_feeds() -> None:
    atom = (
        b"<?xml version='1.0' encoding='UTF-8'?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">"
        b"<title>t</title><updated>2024-05-10</updated><link href='/x'/>"
        b"<entry><id>a</id><title>x</title><updated>2024-05-10T00:00:00Z</updated></entry>"
        b"<entry><id>a</id><title>y</title><updated>2024-05-10T00:00:00Z</updated></entry></feed>"
    )
    rss = (
        b"<?xml version='1.0' encoding='UTF-8'?>\n<rss version=\"2.0\"><channel><title>t</title>"
        b"<item><title>x</title><pubDate>2024-05-10</pubDate><author>a</author></item>"
        b"</channel></rss>"
    )
    problems = feed_validator_problems(atom, rss, "https://x/feed.")
    for expected in (
        "atom: no xml-stylesheet",
        "atom: feed needs exactly one id",
        "atom: feed updated is not RFC 3339",
        "atom: MissingSelf",
        "atom: relative link /x",
        "atom: entry 0: id is not an IRI",
        "atom: entry 0: needs an alternate link or content",
        "atom: entry 0: MissingAuthor",
        "atom: DuplicateEntryIds",
        "rss: MissingChannelElement link",
        "rss: MissingAtomSelfLink",
        "rss: item 0: InvalidRFC2822Date",
        "rss: item 0: no guid",
        "rss: item 0: author must be an email address",
    ):
        assert any(p.startswith(expected) for p in problems), expected


def test_feeds_carry_the_stylesheet_instruction_relative_to_themselves(public: Path) -> None:
    assert (
        b'<?xml-stylesheet type="text/xsl" href="feed.xsl"?>' in (public / ATOM_FILE).read_bytes()
    )
    assert b'<?xml-stylesheet type="text/xsl" href="feed.xsl"?>' in (public / RSS_FILE).read_bytes()
    tag_feed = (public / "tags/official.atom").read_bytes()
    assert b'<?xml-stylesheet type="text/xsl" href="../feed.xsl"?>' in tag_feed
    assert (public / "feed.xsl").read_bytes() == (TEMPLATES / "feed.xsl").read_bytes()


def test_tag_feeds_hold_their_tag_and_link_their_page(public: Path) -> None:
    parsed = feedparser.parse((public / "tags/official.atom").read_bytes())
    assert [e.title for e in parsed.entries] == [HOSTILE_TITLE]
    assert parsed.feed.title == "HK–Mainland Science Watch: official"
    links = {link.rel: link.href for link in parsed.feed.links}
    assert links == {
        "self": BASE_URL + "tags/official.atom",
        "alternate": BASE_URL + "tags/official.html",
    }
    topic = feedparser.parse((public / "tags/hk-mainland-science.rss").read_bytes())
    assert topic.feed.title == "HK–Mainland Science Watch: HK–Mainland science"  # the rule's title


def test_entry_ids_and_slugs_depend_only_on_their_input() -> None:
    assert entry_urn("hksar-press-en:P1") == "urn:aggregator:entry:hksar-press-en:P1"
    assert entry_urn("a b/é") == "urn:aggregator:entry:a%20b%2F%C3%A9"
    assert entry_anchor("x") == entry_anchor("x") != entry_anchor("y")
    assert tag_slug("official") == "official"
    assert tag_slug("../etc") == tag_slug("../etc") != "../etc"
    assert re.fullmatch(r"t-[0-9a-f]{12}", tag_slug("大灣區"))


# --- JSON Feed ------------------------------------------------------------------------------

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def _absolute_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def json_feed_problems(feed: Any) -> list[str]:
    """What breaks the JSON Feed 1.1 rules (https://jsonfeed.org/version/1.1); [] if none."""
    if not isinstance(feed, dict):
        return ["the feed is not an object"]
    problems: list[str] = []
    if feed.get("version") != "https://jsonfeed.org/version/1.1":
        problems.append(f"version is {feed.get('version')!r}")
    if not isinstance(feed.get("title"), str) or not feed["title"]:
        problems.append("title must be a non-empty string")
    for key in ("home_page_url", "feed_url"):
        if key in feed and not _absolute_url(feed[key]):
            problems.append(f"{key} is not an absolute URL")
    items = feed.get("items")
    if not isinstance(items, list):
        return [*problems, "items must be a list"]
    ids: list[str] = []
    for n, item in enumerate(items):
        where = f"items[{n}]"
        if not isinstance(item, dict):
            problems.append(f"{where} is not an object")
            continue
        if not isinstance(item.get("id"), str) or not item["id"]:
            problems.append(f"{where}.id must be a non-empty string")
        else:
            ids.append(item["id"])
        contents = [k for k in ("content_html", "content_text") if k in item]
        if not contents or not all(isinstance(item[k], str) for k in contents):
            problems.append(f"{where} needs a string content_html or content_text")
        for key in ("url", "external_url"):
            if key in item and not _absolute_url(item[key]):
                problems.append(f"{where}.{key} is not an absolute URL")
        for key in ("date_published", "date_modified"):
            if key in item:
                value = item[key]
                if not (isinstance(value, str) and RFC3339.match(value)):
                    problems.append(f"{where}.{key} is not RFC 3339: {value!r}")
        authors = item.get("authors", [])
        if not isinstance(authors, list) or not all(
            isinstance(a, dict) and isinstance(a.get("name"), str) for a in authors
        ):
            problems.append(f"{where}.authors must be a list of objects with a name")
        tags = item.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            problems.append(f"{where}.tags must be a list of strings")
    if len(set(ids)) != len(ids):
        problems.append("item ids repeat")
    return problems


def test_json_feed_follows_version_1_1(public: Path) -> None:
    stories = sample_stories()
    feed = json.loads((public / JSON_FILE).read_text(encoding="utf-8"))

    assert json_feed_problems(feed) == []
    assert feed["home_page_url"] == BASE_URL
    assert feed["feed_url"] == BASE_URL + "feed.json"
    assert [i["id"] for i in feed["items"]] == [entry_urn(story_entry_id(s)) for s in stories]
    assert [i["title"] for i in feed["items"]] == EXPECTED_TITLES
    assert [i["url"] for i in feed["items"]] == expected_links(stories)
    first = feed["items"][0]
    assert first["date_published"] == "2024-05-10T03:00:00Z"
    assert first["date_modified"] == "2024-05-11T02:00:00Z"
    assert first["authors"][0] == {"name": "HKSAR Government press releases"}
    assert {"name": "SCMP"} in first["authors"]
    assert first["tags"] == [TOPIC, "official"]
    assert "Also reported by" in first["content_html"]
    assert "date_modified" not in feed["items"][1]
    for stem in FEED_FILES:
        assert json_feed_problems(json.loads((public / f"{stem}.json").read_bytes())) == []


def test_the_json_validator_catches_broken_feeds() -> None:
    broken = {
        "version": "https://jsonfeed.org/version/1",
        "title": "",
        "feed_url": "feed.json",
        "items": [{"id": 1, "url": "/relative", "date_published": "10 May 2024"}],
    }
    assert len(json_feed_problems(broken)) == 7


# --- the website ----------------------------------------------------------------------------


def test_every_page_links_the_feeds_and_has_landmarks(public: Path) -> None:
    pages = [p for p in public.rglob("*.html")]
    assert len(pages) >= 7
    for page in pages:
        html = page.read_text(encoding="utf-8")
        assert '<link rel="alternate" type="application/atom+xml"' in html, page
        assert 'type="application/rss+xml"' in html and 'type="application/feed+json"' in html
        for landmark in ("<header>", '<main id="content">', "<footer>", "<nav", "<h1>"):
            assert landmark in html, (page, landmark)
        assert '<html lang="en">' in html
        assert "<script" not in html.lower()
    tag_page = (public / "tags/official.html").read_text(encoding="utf-8")
    assert 'href="../tags/official.atom"' in tag_page and 'href="../feed.atom"' in tag_page


def test_index_groups_stories_by_iso_week_in_the_configured_zone(public: Path) -> None:
    html = (public / INDEX_FILE).read_text(encoding="utf-8")
    headings = re.findall(r'<h2 id="w-([\dW-]+)"><a href="([^"]+)">([^<]+)</a>', html)

    assert headings == [
        ("2024-W19", "archive/2024-W19.html", "Week 19, 2024: 6–12 May 2024"),
        ("2024-W18", "archive/2024-W18.html", "Week 18, 2024: 29 April–5 May 2024"),
    ]
    # 20:00 UTC on 9 May is 04:00 on 10 May in Hong Kong
    assert '<time datetime="2024-05-09T20:00:00Z">Friday, 10 May 2024, 04:00</time>' in html


def test_index_shows_sources_tags_as_links_and_a_plain_excerpt(public: Path) -> None:
    html = (public / INDEX_FILE).read_text(encoding="utf-8")

    assert '<li><a href="tags/official.html">official</a></li>' in html
    assert 'href="tags/hk-mainland-science.html"' not in html.split("<main")[1]  # the topic
    assert (
        'Also reported by: <a href="https://www.scmp.com/news/hong-kong/article/9001">SCMP</a>, Example &lt;institute&gt;'
        in html
    )
    assert "Innovation &amp; technology: Lok Ma Chau Loop update." in html
    assert LONG_CHINESE not in html and LONG_CHINESE[:100] in html
    assert 'lang="zh"' in html
    linkless = story_entry_id(sample_stories()[3])
    assert f'href="archive/2024-W18.html#{entry_anchor(linkless)}"' in html


def test_the_chart_has_a_bar_per_week_and_a_text_alternative(public: Path) -> None:
    html = (public / INDEX_FILE).read_text(encoding="utf-8")
    svg = html.split("<svg", 1)[1].split("</svg>", 1)[0]

    assert 'role="img" aria-labelledby="chart-title chart-desc"' in svg
    assert svg.count("<rect") == 12
    assert "Week of 6 May: 3" in svg and "Week of 29 Apr: 2" in svg and "Week of 22 Apr: 0" in svg
    bars = chart_bars({"2024-W19": 3, "2024-W18": 2})
    assert [b.count for b in bars][-2:] == [2, 3] and bars[-1].height == 80
    assert chart_bars({}) == ()


def test_the_weekly_archive_lists_that_weeks_stories(public: Path) -> None:
    html = (public / "archive/2024-W19.html").read_text(encoding="utf-8")
    assert "Week 19, 2024: 6–12 May 2024" in html
    assert "3 stories this week." in html
    assert CHINESE_TITLE in html and "Story without any link" not in html
    assert 'href="2024-W18.html" rel="prev"' in html and 'href="2024-W20.html" rel="next"' in html
    archive = (public / "archive/index.html").read_text(encoding="utf-8")
    assert '<a href="2024-W19.html">Week 19, 2024: 6–12 May 2024</a> (3 stories)' in archive


def test_plan_archive_rewrites_recent_weeks_and_missing_ones_only() -> None:
    zone = ZoneInfo("Asia/Hong_Kong")
    start = datetime(2024, 1, 3, tzinfo=UTC)
    dates = {f"s{n}": start + timedelta(weeks=n) for n in range(20)}

    counts, wanted = plan_archive(dates, zone, existing={"2024-W01", "2024-W02", "2024-W20"})

    assert len(counts) == 20 and set(counts.values()) == {1}
    assert sorted(wanted) == [f"2024-W{n:02d}" for n in range(3, 21)]  # W01/W02 exist and are old


def test_the_sources_page_shows_health_and_escapes_errors(public: Path) -> None:
    html = (public / "sources.html").read_text(encoding="utf-8")
    assert (
        '<a href="https://www.info.gov.hk/gia/rss/general_en.xml">HKSAR Government press releases</a>'
        in html
    )
    assert "2024-05-12 17:00" in html  # last success, in Hong Kong time
    assert "failing (3 in a row)" in html and "1 failing" in html
    assert "2024-05-12 16:00: HTTP 500 &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Broken &lt;b&gt;source&lt;/b&gt;" in html and "javascript:" not in html
    assert '<td class="num">12</td>' in html


# --- stability ------------------------------------------------------------------------------


def test_publishing_the_same_stories_again_writes_nothing(
    tmp_path: Path, settings: Settings
) -> None:
    public_dir = tmp_path / "public"
    first = run_publish(site_data(), settings, public_dir)
    assert first.unchanged == () and first.entries == 5
    before = all_files(public_dir)
    old = 1_600_000_000_000_000_000
    for path in public_dir.rglob("*"):
        if path.is_file():
            os.utime(path, ns=(old, old))

    again = run_publish(site_data(), settings, public_dir, now=NOW + timedelta(hours=3))

    assert again.written == ()
    assert len(again.unchanged) == len(first.written)
    assert all_files(public_dir) == before
    assert all(p.stat().st_mtime_ns == old for p in public_dir.rglob("*") if p.is_file())


def test_ids_are_stable_across_publishes_and_a_new_report_only_updates(
    tmp_path: Path, settings: Settings
) -> None:
    public_dir = tmp_path / "public"
    run_publish(site_data(), settings, public_dir)
    before = feedparser.parse((public_dir / ATOM_FILE).read_bytes())
    stories = sample_stories()
    late = stored(
        "xinhua:77", title="Xinhua on the Loop", link="https://xinhua.example/77",
        published=NOW, first_seen=NOW, source_name="Xinhua", tags=(),
    )  # fmt: skip
    stories[0] = story(stories[0].lead, *stories[0].others, late)

    report = run_publish(site_data(stories), settings, public_dir, now=NOW + timedelta(hours=1))

    after = feedparser.parse((public_dir / ATOM_FILE).read_bytes())
    assert [e.id for e in after.entries] == [e.id for e in before.entries]
    assert after.entries[0].updated == "2024-05-12T09:30:00+00:00"
    assert "xinhua.example/77" in after.entries[0].content[0].value
    assert public_dir / ATOM_FILE in report.written
    assert public_dir / "archive/2024-W18.html" in report.unchanged


def test_a_repeated_story_is_published_once(tmp_path: Path, settings: Settings) -> None:
    stories = sample_stories()
    report = run_publish(site_data([*stories, stories[0]]), settings, tmp_path / "public")
    assert report.entries == 5
    parsed = feedparser.parse((tmp_path / "public" / ATOM_FILE).read_bytes())
    assert len({e.id for e in parsed.entries}) == len(parsed.entries) == 5


def test_an_empty_site_still_gives_valid_feeds(tmp_path: Path, settings: Settings) -> None:
    public_dir = tmp_path / "public"
    run_publish(SiteData(), settings, public_dir)

    atom = feedparser.parse((public_dir / ATOM_FILE).read_bytes())
    assert (
        atom.bozo == 0 and atom.entries == [] and atom.feed.updated == "2024-05-12T09:30:00+00:00"
    )
    assert feedparser.parse((public_dir / RSS_FILE).read_bytes()).bozo == 0
    feed = json.loads((public_dir / JSON_FILE).read_text(encoding="utf-8"))
    assert json_feed_problems(feed) == [] and feed["items"] == []
    assert "No stories yet." in (public_dir / INDEX_FILE).read_text(encoding="utf-8")


def test_write_if_changed_replaces_atomically_and_only_on_change(tmp_path: Path) -> None:
    path = tmp_path / "feed.atom"

    assert write_if_changed(path, b"one") is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by a web server
    inode = path.stat().st_ino
    assert write_if_changed(path, b"one") is False
    assert path.stat().st_ino == inode
    assert write_if_changed(path, b"two") is True
    assert path.read_bytes() == b"two"
    assert path.stat().st_ino != inode  # a new file renamed over the old, never rewritten in place
    assert [p.name for p in tmp_path.iterdir()] == ["feed.atom"]


def test_write_errors_name_the_path(tmp_path: Path, settings: Settings) -> None:
    blocker = tmp_path / "public"
    blocker.write_text("a file where the directory should be")
    with pytest.raises(AggregatorError, match="cannot write"):
        run_publish(site_data(), settings, blocker)


def test_a_missing_template_is_reported(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(AggregatorError, match=r"template .* not found"):
        publish(
            SiteData(), settings=settings, public_dir=tmp_path / "p", now=NOW,
            templates_dir=tmp_path / "no-templates",
        )  # fmt: skip


def test_excerpt_cuts_at_a_word_when_it_can() -> None:
    cut = excerpt("science " * 100, 300)
    assert cut.endswith("science…") and len(cut) <= 301
    chinese = excerpt(LONG_CHINESE, 300)
    assert 290 <= len(chinese) <= 301 and chinese.endswith("…")
    assert excerpt("  short \n text ") == "short text"


def test_publish_site_reads_the_store(tmp_path: Path) -> None:
    """Through the app: stories, tags and health come from a real SQLite store."""
    from aggregator.app import App, publish_site
    from aggregator.clock import FixedClock
    from aggregator.settings import SourceSettings
    from aggregator.store import PollWrite

    base = make_settings(tmp_path)
    source = SourceSettings(id="hksar-press-en", url="https://x.example/rss", name="HKSAR")
    settings = replace(base, sources=(source,))
    app = App(settings=settings, clock=FixedClock(NOW))
    try:
        app.store.sync_sources(settings.sources, NOW)
        entry = sample_stories()[0].lead.entry
        app.store.apply_poll(
            PollWrite(
                source_id="hksar-press-en",
                at=NOW,
                status=200,
                etag=None,
                last_modified=None,
                next_poll_at=NOW,
                inserts=[replace(entry, first_seen=NOW)],
            )
        )
        report = publish_site(app)
    finally:
        app.close()
    public_dir = tmp_path / "public"
    assert report.entries == 1
    assert public_dir / "tags/official.atom" in report.written
    assert feedparser.parse((public_dir / ATOM_FILE).read_bytes()).entries[0].title == HOSTILE_TITLE
    assert (public_dir / "archive/2024-W19.html").exists()
    sources = (public_dir / "sources.html").read_text(encoding="utf-8")
    assert "HKSAR" in sources and '<td class="num">1</td>' in sources
