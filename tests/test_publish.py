"""Publishing: feeds that parse back, a JSON Feed that follows 1.1, a safe page, change-aware writes."""

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

import feedparser
import pytest

from aggregator.errors import AggregatorError
from aggregator.models import Entry, StoredEntry
from aggregator.publish import (
    ATOM_FILE,
    INDEX_FILE,
    JSON_FILE,
    RSS_FILE,
    PublishReport,
    entry_anchor,
    entry_urn,
    excerpt,
    publish,
    write_if_changed,
)
from aggregator.settings import PublishSettings, Settings

BASE_URL = "https://watch.example.org/"
NOW = datetime(2024, 5, 12, 9, 30, tzinfo=UTC)
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
ALL_FILES = (ATOM_FILE, RSS_FILE, JSON_FILE, INDEX_FILE)
ATOM_NS = "{http://www.w3.org/2005/Atom}"

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
    guid: str | None = None,
    summary_html: str = "",
    summary_text: str = "",
    updated: datetime | None = None,
    tags: tuple[str, ...] = ("hk-mainland-science",),
    source_name: str = "HKSAR Government press releases",
) -> StoredEntry:
    source_id = entry_id.split(":", 1)[0]
    entry = Entry(
        id=entry_id,
        source_id=source_id,
        guid=guid,
        link=link,
        canonical_url=canonical_url,
        title=title,
        summary_html=summary_html,
        summary_text=summary_text,
        author=None,
        published=published,
        updated=updated,
        first_seen=published,
        content_hash=f"hash-{entry_id}-{title}",
        tags=tags,
    )
    return StoredEntry(entry=entry, source_name=source_name)


def sample_entries() -> list[StoredEntry]:
    """Newest first, as the store returns them; hostile and awkward on purpose."""
    return [
        stored(
            "hksar-press-en:P2024051000123",
            title=HOSTILE_TITLE,
            link="https://www.info.gov.hk/gia/general/202405/10/P2024051000123.htm",
            guid="https://www.info.gov.hk/gia/general/202405/10/P2024051000123.htm",
            summary_html="<p>Innovation &amp; technology: <b>Lok Ma Chau Loop</b> update.</p>",
            summary_text="Innovation & technology: Lok Ma Chau Loop update.",
            published=datetime(2024, 5, 10, 3, 0, tzinfo=UTC),
            updated=datetime(2024, 5, 10, 4, 30, tzinfo=UTC),
            tags=("hk-mainland-science", "official"),
        ),
        stored(
            "hksar-press-zh:P2024051000077",
            title=CHINESE_TITLE,
            link="https://www.info.gov.hk/gia/general/202405/10/P2024051000077.htm",
            summary_html=f"<p>{LONG_CHINESE}</p>",
            summary_text=LONG_CHINESE,
            # 04:00 on 10 May in Hong Kong, though still 9 May in UTC
            published=datetime(2024, 5, 9, 20, 0, tzinfo=UTC),
            source_name="香港特區政府新聞公報",
        ),
        stored(
            "rthk-zh:3f9a1c",
            title="港深創科園首座大樓落成",
            guid="https://news.rthk.hk/rthk/ch/component/k2/1750001-20240508.htm",
            canonical_url="https://news.rthk.hk/rthk/ch/component/k2/1750001-20240508.htm",
            published=datetime(2024, 5, 8, 6, 15, tzinfo=UTC),
            source_name="RTHK 即時新聞",
        ),
        stored(
            "example-html:8d2e",
            title="Entry without any link",
            summary_html="<p>Listed on a page that gives no permalink.</p>",
            summary_text="Listed on a page that gives no permalink.",
            published=datetime(2024, 5, 7, 1, 0, tzinfo=UTC),
            source_name="Example research institute",
        ),
        stored(
            "example-html:9a41",
            title="Control\x0b characters\x00 and a javascript: link",
            link="javascript:alert(1)",
            summary_text="Nothing to see.",
            summary_html="<p>Nothing to see.</p>",
            published=datetime(2024, 5, 6, 1, 0, tzinfo=UTC),
            source_name="Example research institute",
        ),
    ]


def expected_links(entries: list[StoredEntry]) -> list[str]:
    return [
        "https://www.info.gov.hk/gia/general/202405/10/P2024051000123.htm",
        "https://www.info.gov.hk/gia/general/202405/10/P2024051000077.htm",
        "https://news.rthk.hk/rthk/ch/component/k2/1750001-20240508.htm",
        BASE_URL + "#" + entry_anchor(entries[3].entry.id),
        BASE_URL + "#" + entry_anchor(entries[4].entry.id),
    ]


EXPECTED_TITLES = [
    HOSTILE_TITLE,
    CHINESE_TITLE,
    "港深創科園首座大樓落成",
    "Entry without any link",
    "Control characters and a javascript: link",
]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        path=tmp_path / "feeds.toml",
        data_dir=tmp_path,
        timezone="Asia/Hong_Kong",
        publish=PublishSettings(
            topic="hk-mainland-science",
            title="HK–Mainland Science Watch",
            base_url=BASE_URL,
            description="Hong Kong–Mainland science & technology cooperation",
        ),
    )


def run_publish(
    entries: list[StoredEntry], settings: Settings, public_dir: Path, now: datetime = NOW
) -> PublishReport:
    return publish(
        entries, settings=settings, public_dir=public_dir, now=now, templates_dir=TEMPLATES
    )


@pytest.fixture
def public(tmp_path: Path, settings: Settings) -> Path:
    public_dir = tmp_path / "public"
    run_publish(sample_entries(), settings, public_dir)
    return public_dir


# --- Atom and RSS ---------------------------------------------------------------------------


def test_atom_parses_back_with_the_same_entries_in_order(public: Path) -> None:
    entries = sample_entries()
    parsed = feedparser.parse((public / ATOM_FILE).read_bytes())

    assert parsed.bozo == 0
    assert parsed.version == "atom10"
    assert [e.id for e in parsed.entries] == [entry_urn(s.entry.id) for s in entries]
    assert [e.title for e in parsed.entries] == EXPECTED_TITLES
    assert [e.link for e in parsed.entries] == expected_links(entries)
    assert parsed.entries[0].author == "HKSAR Government press releases"
    assert parsed.entries[0].content[0].type == "text/html"
    assert "Lok Ma Chau Loop" in parsed.entries[0].content[0].value
    assert [t.term for t in parsed.entries[0].tags] == ["hk-mainland-science", "official"]


def test_atom_has_self_and_alternate_links_and_deterministic_dates(public: Path) -> None:
    root = etree.fromstring((public / ATOM_FILE).read_bytes())
    links = {link.get("rel"): link.get("href") for link in root.findall(f"{ATOM_NS}link")}

    assert links == {"self": BASE_URL + "feed.atom", "alternate": BASE_URL}
    assert root.findtext(f"{ATOM_NS}id") == BASE_URL + "feed.atom"
    assert root.findtext(f"{ATOM_NS}title") == "HK–Mainland Science Watch"
    # the newest entry's updated time, not the clock
    assert root.findtext(f"{ATOM_NS}updated") == "2024-05-10T04:30:00+00:00"
    first = root.find(f"{ATOM_NS}entry")
    assert first is not None
    assert first.findtext(f"{ATOM_NS}published") == "2024-05-10T03:00:00+00:00"
    assert first.findtext(f"{ATOM_NS}updated") == "2024-05-10T04:30:00+00:00"


def test_rss_parses_back_with_guids_that_are_not_permalinks(public: Path) -> None:
    entries = sample_entries()
    data = (public / RSS_FILE).read_bytes()
    parsed = feedparser.parse(data)

    assert parsed.bozo == 0
    assert parsed.version == "rss20"
    assert parsed.feed.link == BASE_URL
    assert [e.id for e in parsed.entries] == [entry_urn(s.entry.id) for s in entries]
    assert all(e.guidislink is False for e in parsed.entries)
    assert [e.title for e in parsed.entries] == EXPECTED_TITLES
    assert [e.link for e in parsed.entries] == expected_links(entries)
    assert parsed.entries[1].author == "香港特區政府新聞公報"

    root = etree.fromstring(data)
    self_link = root.find("channel/{http://www.w3.org/2005/Atom}link")
    assert self_link is not None and self_link.get("href") == BASE_URL + "feed.rss"
    assert root.findtext("channel/lastBuildDate") == "Fri, 10 May 2024 04:30:00 +0000"
    rfc822 = re.compile(
        r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \+0000$"
    )
    pub_dates = [item.findtext("pubDate") or "" for item in root.iter("item")]
    assert pub_dates[0] == "Fri, 10 May 2024 03:00:00 +0000"
    assert all(rfc822.match(date) for date in pub_dates)


def test_entry_ids_depend_only_on_the_entry_id() -> None:
    assert entry_urn("hksar-press-en:P1") == "urn:aggregator:entry:hksar-press-en:P1"
    assert entry_urn("a b/é") == "urn:aggregator:entry:a%20b%2F%C3%A9"
    assert entry_anchor("x") == entry_anchor("x") != entry_anchor("y")


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
                else:
                    datetime.fromisoformat(value.replace("Z", "+00:00"))
        if "title" in item and not isinstance(item["title"], str):
            problems.append(f"{where}.title must be a string")
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
    entries = sample_entries()
    feed = json.loads((public / JSON_FILE).read_text(encoding="utf-8"))

    assert json_feed_problems(feed) == []
    assert feed["home_page_url"] == BASE_URL
    assert feed["feed_url"] == BASE_URL + "feed.json"
    assert [i["id"] for i in feed["items"]] == [entry_urn(s.entry.id) for s in entries]
    assert [i["title"] for i in feed["items"]] == EXPECTED_TITLES
    assert [i["url"] for i in feed["items"]] == expected_links(entries)
    first = feed["items"][0]
    assert first["date_published"] == "2024-05-10T03:00:00Z"
    assert first["date_modified"] == "2024-05-10T04:30:00Z"
    assert first["authors"] == [{"name": "HKSAR Government press releases"}]
    assert first["tags"] == ["hk-mainland-science", "official"]
    assert "date_modified" not in feed["items"][1]  # never updated
    assert "content_html" not in feed["items"][2]  # no summary: content_text carries the item
    assert feed["items"][2]["content_text"] == ""


def test_the_validator_catches_broken_feeds() -> None:
    broken = {
        "version": "https://jsonfeed.org/version/1",
        "title": "",
        "feed_url": "feed.json",
        "items": [{"id": 1, "url": "/relative", "date_published": "10 May 2024"}],
    }
    assert len(json_feed_problems(broken)) == 7


# --- the HTML page --------------------------------------------------------------------------


def test_index_escapes_feed_text_and_runs_no_script(public: Path) -> None:
    html = (public / INDEX_FILE).read_text(encoding="utf-8")

    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;quotes&#34;" in html
    assert "<script" not in html.lower()
    assert "javascript:" not in html.replace("a javascript: link", "")
    assert CHINESE_TITLE in html
    assert '<html lang="en">' in html
    assert '<h3 id="' in html and 'lang="zh"' in html


def test_index_links_the_feeds_and_every_entry(public: Path) -> None:
    entries = sample_entries()
    html = (public / INDEX_FILE).read_text(encoding="utf-8")

    assert '<link rel="alternate" type="application/atom+xml"' in html
    assert 'type="application/rss+xml"' in html and 'href="feed.rss"' in html
    assert 'type="application/feed+json"' in html and 'href="feed.json"' in html
    for landmark in ("<header>", '<main id="entries">', "<footer>"):
        assert landmark in html
    for url in expected_links(entries)[:3]:
        assert f'href="{url}"' in html
    for s in entries[3:]:  # a linkless entry links to itself, relative to wherever the page is
        anchor = entry_anchor(s.entry.id)
        assert f'id="{anchor}"' in html and f'href="#{anchor}"' in html
    assert "Generated by" in html


def test_index_groups_by_day_in_the_configured_time_zone(public: Path) -> None:
    html = (public / INDEX_FILE).read_text(encoding="utf-8")
    headings = re.findall(r'<h2 id="d-([\d-]+)"><time datetime="[\d-]+">([^<]+)</time>', html)

    # 20:00 UTC on 9 May is 04:00 on 10 May in Hong Kong: one day, not two
    assert headings == [
        ("2024-05-10", "Friday, 10 May 2024"),
        ("2024-05-08", "Wednesday, 8 May 2024"),
        ("2024-05-07", "Tuesday, 7 May 2024"),
        ("2024-05-06", "Monday, 6 May 2024"),
    ]
    assert '<time datetime="2024-05-09T20:00:00Z">04:00</time>' in html


def test_index_labels_tags_but_not_the_topic_every_entry_has(public: Path) -> None:
    html = (public / INDEX_FILE).read_text(encoding="utf-8")

    assert re.findall(r"<li>([^<]+)</li>", html) == ["official"]
    feed = json.loads((public / JSON_FILE).read_text(encoding="utf-8"))
    assert feed["items"][2]["tags"] == ["hk-mainland-science"]  # the feeds keep every tag


def test_index_shows_a_plain_text_excerpt(public: Path) -> None:
    html = (public / INDEX_FILE).read_text(encoding="utf-8")

    assert "Innovation &amp; technology: Lok Ma Chau Loop update." in html
    assert "<b>Lok Ma Chau Loop</b>" not in html
    assert LONG_CHINESE not in html
    assert LONG_CHINESE[:100] in html


def test_excerpt_cuts_at_a_word_when_it_can() -> None:
    words = "science " * 100
    cut = excerpt(words, 300)
    assert cut.endswith("science…") and len(cut) <= 301
    chinese = excerpt(LONG_CHINESE, 300)  # no spaces: cut mid-run, not at the first comma
    assert 290 <= len(chinese) <= 301 and chinese.endswith("…")
    assert excerpt("  short \n text ") == "short text"


# --- change-aware writes --------------------------------------------------------------------


def _set_old_mtimes(public_dir: Path) -> dict[str, int]:
    old = 1_600_000_000_000_000_000
    for name in ALL_FILES:
        os.utime(public_dir / name, ns=(old, old))
    return {name: (public_dir / name).stat().st_mtime_ns for name in ALL_FILES}


def test_publishing_the_same_entries_again_writes_nothing(
    tmp_path: Path, settings: Settings
) -> None:
    public_dir = tmp_path / "public"
    first = run_publish(sample_entries(), settings, public_dir)
    assert first.written == tuple(public_dir / name for name in ALL_FILES)
    assert first.unchanged == ()
    assert first.entries == 5
    before = {name: (public_dir / name).read_bytes() for name in ALL_FILES}
    mtimes = _set_old_mtimes(public_dir)

    # a later clock changes nothing when the entries are the same
    again = run_publish(sample_entries(), settings, public_dir, now=NOW + timedelta(hours=3))

    assert again.written == ()
    assert again.unchanged == tuple(public_dir / name for name in ALL_FILES)
    assert {name: (public_dir / name).read_bytes() for name in ALL_FILES} == before
    assert {name: (public_dir / name).stat().st_mtime_ns for name in ALL_FILES} == mtimes
    assert sorted(p.name for p in public_dir.iterdir()) == sorted(ALL_FILES)  # no temp files


def test_changing_one_entry_rewrites_the_files(tmp_path: Path, settings: Settings) -> None:
    public_dir = tmp_path / "public"
    entries = sample_entries()
    run_publish(entries, settings, public_dir)
    changed = entries[:]
    retitled = replace(changed[2].entry, title="港深創科園首座大樓正式啟用")
    changed[2] = replace(changed[2], entry=retitled)

    report = run_publish(changed, settings, public_dir)

    assert report.written == tuple(public_dir / name for name in ALL_FILES)
    parsed = feedparser.parse((public_dir / ATOM_FILE).read_bytes())
    assert parsed.entries[2].title == "港深創科園首座大樓正式啟用"
    assert parsed.entries[2].id == entry_urn("rthk-zh:3f9a1c")  # same entry, same id


def test_an_empty_topic_still_gives_valid_feeds(tmp_path: Path, settings: Settings) -> None:
    public_dir = tmp_path / "public"
    report = run_publish([], settings, public_dir)

    assert report.written == tuple(public_dir / name for name in ALL_FILES)
    assert report.entries == 0
    atom = feedparser.parse((public_dir / ATOM_FILE).read_bytes())
    rss = feedparser.parse((public_dir / RSS_FILE).read_bytes())
    assert atom.bozo == 0 and atom.entries == [] and atom.feed.title == "HK–Mainland Science Watch"
    assert rss.bozo == 0 and rss.entries == []
    assert atom.feed.updated == "2024-05-12T09:30:00+00:00"  # nothing newer to go by: the clock
    feed = json.loads((public_dir / JSON_FILE).read_text(encoding="utf-8"))
    assert json_feed_problems(feed) == [] and feed["items"] == []
    assert "No entries yet." in (public_dir / INDEX_FILE).read_text(encoding="utf-8")


def test_a_repeated_entry_is_published_once(tmp_path: Path, settings: Settings) -> None:
    entries = sample_entries()
    public_dir = tmp_path / "public"
    report = run_publish([*entries, entries[0]], settings, public_dir)

    assert report.entries == 5
    parsed = feedparser.parse((public_dir / ATOM_FILE).read_bytes())
    assert len({e.id for e in parsed.entries}) == len(parsed.entries) == 5


def test_write_if_changed_replaces_atomically_and_only_on_change(tmp_path: Path) -> None:
    path = tmp_path / "feed.atom"

    assert write_if_changed(path, b"one") is True
    assert path.read_bytes() == b"one"
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
        run_publish(sample_entries(), settings, blocker)


def test_a_missing_template_is_reported(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(AggregatorError, match=r"page\.html"):
        publish(
            [],
            settings=settings,
            public_dir=tmp_path / "public",
            now=NOW,
            templates_dir=tmp_path / "no-templates",
        )
