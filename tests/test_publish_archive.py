"""The weekly archive read from a real store: a republish counts only the recent weeks again
(the older ones keep the count their pages were written with), and reads the same whatever the
length of the history; without a recorded count, every story of the topic is counted."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from aggregator.models import Entry
from aggregator.publish import (
    ARCHIVE_DIR,
    MANIFEST_FILE,
    STORY_SPAN,
    Manifest,
    SiteData,
    iso_week,
    plan_archive,
    publish,
    read_site,
)
from aggregator.settings import Settings, SourceSettings
from aggregator.store import PollWrite, Store
from tests.test_publish import TEMPLATES, TOPIC, make_settings

NOW = datetime(2024, 5, 24, 9, 0, tzinfo=UTC)  # a Friday
ZONE = ZoneInfo("Asia/Hong_Kong")
SOURCES = (
    SourceSettings(id="gov", url="https://gov.example/rss", name="Gov", priority=10),
    SourceSettings(id="news", url="https://news.example/rss", name="News"),
)


def entry(
    entry_id: str, published: datetime, *, tags: tuple[str, ...] = (TOPIC,), story: str = ""
) -> Entry:
    return Entry(
        id=entry_id,
        source_id=entry_id.split(":", 1)[0],
        guid=None,
        link=f"https://example.org/{entry_id}",
        canonical_url=None,
        title=f"Story {entry_id}",
        summary_html="<p>Text.</p>",
        summary_text="Text.",
        author=None,
        published=published,
        updated=None,
        first_seen=published,
        content_hash=entry_id,
        tags=tags,
        story_id=story or entry_id,
    )


def add(store: Store, *entries: Entry) -> None:
    for source in {e.source_id for e in entries}:
        mine = [e for e in entries if e.source_id == source]
        store.apply_poll(PollWrite(source, NOW, 200, None, None, NOW, inserts=mine))


def history(weeks: int, first: datetime = NOW - timedelta(days=400)) -> list[Entry]:
    """One topic story a week, `weeks` weeks from `first`, and one other-tag story with it."""
    return [
        e
        for n in range(weeks)
        for e in (
            entry(f"news:old-{n}", first + timedelta(weeks=n)),
            entry(f"news:other-{n}", first + timedelta(weeks=n, hours=1), tags=("other",)),
        )
    ]


def recent() -> list[Entry]:
    """Stories of the last three weeks; one led by an untagged report of a stronger source."""
    return [
        entry("news:r1", NOW - timedelta(days=1)),
        entry("news:r2", NOW - timedelta(days=9)),
        entry("news:r3", NOW - timedelta(days=16)),
        # Tagged, but led by gov:lead (priority 10), published a week earlier.
        entry("news:r4", NOW - timedelta(days=2), story="gov:lead"),
        entry("gov:lead", NOW - timedelta(days=10), tags=()),
    ]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return replace(make_settings(tmp_path), sources=SOURCES)


@pytest.fixture
def store(tmp_path: Path, settings: Settings) -> Iterator[Store]:
    store = Store(tmp_path / "aggregator.db")
    store.sync_sources(SOURCES, NOW - timedelta(days=500))
    yield store
    store.close()


def publish_from(store: Store, settings: Settings, public: Path, now: datetime = NOW) -> SiteData:
    site = read_site(store, settings, public, now)
    publish(site, settings=settings, public_dir=public, now=now, templates_dir=TEMPLATES)
    return site


def full_count(store: Store) -> dict[str, int]:
    counts, _ = plan_archive(store.story_dates(TOPIC), ZONE, set())
    return counts


def archive_index(public: Path) -> str:
    return (public / ARCHIVE_DIR / "index.html").read_text(encoding="utf-8")


def test_story_dates_since_finds_stories_by_a_recent_tagged_entry_and_dates_their_lead(
    store: Store,
) -> None:
    add(store, *history(3), *recent())
    dates = store.story_dates(TOPIC, since=NOW - timedelta(days=5))
    # r1, and r4's story, whose lead is the untagged gov:lead published ten days ago.
    assert dates == {"news:r1": NOW - timedelta(days=1), "gov:lead": NOW - timedelta(days=10)}
    assert len(store.story_dates(TOPIC)) == 3 + 4


def test_the_first_publish_counts_every_story_of_the_topic(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    add(store, *history(20), *recent())
    site = publish_from(store, settings, tmp_path / "public")
    assert site.week_counts == full_count(store)
    assert sum(site.week_counts.values()) == 20 + 4
    assert set(site.weeks) == set(site.week_counts)  # every page is missing: all are written
    archive = Manifest.read(tmp_path / "public").archive
    assert archive is not None and archive.weeks == site.week_counts
    assert (archive.topic, archive.timezone) == (TOPIC, "Asia/Hong_Kong")


def test_a_republish_counts_the_recent_weeks_again_and_keeps_the_older_counts(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    public = tmp_path / "public"
    add(store, *history(20), *recent())
    first = publish_from(store, settings, public)
    old_week = iso_week((NOW - timedelta(days=400)).astimezone(ZONE).date())
    assert first.week_counts[old_week] == 1
    # An old week changes in the store (a republish does not read it again) and a new story
    # joins this week.
    store.conn.execute("DELETE FROM entries WHERE id = 'news:old-0'")
    add(store, entry("news:new", NOW - timedelta(hours=3)))

    again = publish_from(store, settings, public, NOW + timedelta(hours=4))

    this_week = iso_week(NOW.astimezone(ZONE).date())
    assert again.week_counts[this_week] == first.week_counts[this_week] + 1
    assert again.week_counts[old_week] == 1  # as its page, which is not written again
    assert {w: n for w, n in again.week_counts.items() if w != old_week} == full_count(store)
    assert set(again.weeks) <= {w for w in again.week_counts if w >= "2024-W14"}
    assert "(2 stories)" in archive_index(public)


def test_what_a_republish_reads_does_not_depend_on_the_history(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    public = tmp_path / "public"
    add(store, *history(40), *recent())
    publish_from(store, settings, public)
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    publish_from(store, settings, public, NOW + timedelta(hours=1))
    store.conn.set_trace_callback(None)
    dated = [s for s in statements if "SELECT e.story_id, e.id, e.source_id, e.published" in s]
    assert len(dated) == 1
    since = dated[0].split("t.published >= '")[1][:20]
    oldest = datetime.fromisoformat(since)
    assert oldest >= NOW - timedelta(weeks=8) - STORY_SPAN  # the history is a year older


def test_without_a_recorded_count_or_with_an_old_page_missing_every_story_is_counted(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    public = tmp_path / "public"
    add(store, *history(20), *recent())
    publish_from(store, settings, public)
    store.conn.execute("DELETE FROM entries WHERE id = 'news:old-0'")
    old_week = iso_week((NOW - timedelta(days=400)).astimezone(ZONE).date())
    second_week = iso_week((NOW - timedelta(days=393)).astimezone(ZONE).date())

    (public / ARCHIVE_DIR / f"{second_week}.html").unlink()  # a page to write again
    site = publish_from(store, settings, public)
    assert site.week_counts == full_count(store) and old_week not in site.week_counts
    assert (public / ARCHIVE_DIR / f"{second_week}.html").exists()

    store.conn.execute("DELETE FROM entries WHERE id = 'news:old-1'")
    (public / MANIFEST_FILE).unlink()
    assert publish_from(store, settings, public).week_counts == full_count(store)

    store.conn.execute("DELETE FROM entries WHERE id = 'news:old-2'")
    elsewhere = replace(settings, timezone="Europe/London")  # other week boundaries
    site = read_site(store, elsewhere, public, NOW)
    london = ZoneInfo("Europe/London")
    assert site.week_counts == plan_archive(store.story_dates(TOPIC), london, set())[0]


def test_a_broken_archive_record_only_means_counting_everything(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    public = tmp_path / "public"
    add(store, *history(5), *recent())
    publish_from(store, settings, public)
    text = (public / MANIFEST_FILE).read_text(encoding="utf-8")
    broken = text.replace('"counted_from":"', '"counted_from":"not a week')
    (public / MANIFEST_FILE).write_text(broken, encoding="utf-8")
    assert Manifest.read(public).archive is None
    assert read_site(store, settings, public, NOW).week_counts == full_count(store)


def test_archive_reads_use_indexes(store: Store) -> None:
    add(store, *history(3), *recent())
    traced: list[str] = []
    store.conn.set_trace_callback(traced.append)
    store.story_dates(TOPIC, since=NOW - timedelta(days=30))
    store.conn.set_trace_callback(None)
    plan = "\n".join(str(row[-1]) for row in store.conn.execute("EXPLAIN QUERY PLAN " + traced[-1]))
    assert "entry_tags_by_tag (tag=? AND published>?)" in plan
    assert "entries_by_story" in plan
    assert not any(line.startswith("SCAN") for line in plan.splitlines()), plan
