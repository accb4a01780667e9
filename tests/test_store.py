"""The SQLite store on real database files: migrations, pragmas, entries, tags, source state."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.errors import StoreError
from aggregator.models import Entry
from aggregator.settings import SourceSettings
from aggregator.store import PollWrite, Store
from aggregator.store.database import to_db_time
from aggregator.store.schema import LATEST

NOW = datetime(2024, 5, 16, 6, 0, tzinfo=UTC)


def source(source_id: str, url: str, name: str, priority: int = 0) -> SourceSettings:
    return SourceSettings(id=source_id, url=url, name=name, priority=priority)


def make_entry(n: int, *, tags: tuple[str, ...] = (), source_id: str = "s1") -> Entry:
    return Entry(
        id=f"e{n}",
        source_id=source_id,
        guid=f"guid-{n}",
        link=f"https://example.org/{n}",
        canonical_url=f"https://example.org/{n}",
        title=f"Title {n} 香港",
        summary_html=f"<p>Summary {n}</p>",
        summary_text=f"Summary {n}",
        author=None,
        published=NOW - timedelta(hours=n),
        updated=None,
        first_seen=NOW,
        content_hash=f"hash-{n}",
        categories=("Science",),
        tags=tags,
    )


def poll_write(inserts: list[Entry], updates: list[Entry] = [], at: datetime = NOW) -> PollWrite:  # noqa: B006
    return PollWrite("s1", at, 200, '"v1"', None, at + timedelta(minutes=30), inserts, updates)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "aggregator.db")
    store.sync_sources([source("s1", "https://example.org/feed", "Source One")], NOW)
    yield store  # type: ignore[misc]
    store.close()


def test_pragmas_and_schema_version(store: Store) -> None:
    conn = store.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST


def test_reopening_keeps_data_and_does_not_migrate_twice(tmp_path: Path) -> None:
    first = Store(tmp_path / "db.sqlite")
    first.sync_sources([source("s1", "u", "S")], NOW)
    first.apply_poll(poll_write([make_entry(1)]))
    first.close()
    again = Store(tmp_path / "db.sqlite")
    assert again.count_entries() == 1
    again.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {LATEST + 5}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this aggregator knows"):
        Store(path)


def test_entries_round_trip_with_tags(store: Store) -> None:
    entry = make_entry(1, tags=("hk-mainland-science", "official"))
    store.apply_poll(poll_write([entry]))
    stored = store.entry("e1")
    assert stored is not None
    assert stored.entry == replace(entry, story_id="e1")  # its own story until grouped
    assert stored.source_name == "Source One"


def test_entries_by_tag_newest_first_with_limit_and_since(store: Store) -> None:
    entries = [make_entry(n, tags=("t",) if n % 2 else ()) for n in range(1, 9)]
    store.apply_poll(poll_write(entries))
    tagged = store.entries(tag="t")
    assert [s.entry.id for s in tagged] == ["e1", "e3", "e5", "e7"]
    assert [s.entry.id for s in store.entries(tag="t", limit=2)] == ["e1", "e3"]
    since = NOW - timedelta(hours=4)
    assert [s.entry.id for s in store.entries(tag="t", since=since)] == ["e1", "e3"]
    assert [s.entry.id for s in store.entries(since=since)] == ["e1", "e2", "e3", "e4"]
    assert len(store.entries()) == 8


def test_update_in_place_keeps_first_seen_and_replaces_tags(store: Store) -> None:
    store.apply_poll(poll_write([make_entry(1, tags=("a",))]))
    later = NOW + timedelta(hours=1)
    changed = replace(
        make_entry(1, tags=("b",)), title="New title", content_hash="hash-new", first_seen=later
    )
    store.apply_poll(poll_write([], [changed], at=later))
    stored = store.entry("e1")
    assert stored is not None
    assert stored.entry.title == "New title"
    assert stored.entry.tags == ("b",)
    assert stored.entry.first_seen == NOW
    assert store.content_hashes(["e1", "missing"]) == {"e1": "hash-new"}


def test_source_state_success_and_failure(store: Store) -> None:
    store.record_failure("s1", at=NOW, error="connection refused", status=None, next_poll_at=NOW)
    store.record_failure("s1", at=NOW, error="HTTP 500", status=500, next_poll_at=NOW)
    state = store.source_states()["s1"]
    assert state.consecutive_failures == 2 and state.last_error == "HTTP 500"
    store.apply_poll(poll_write([]))
    state = store.source_states()["s1"]
    assert state.consecutive_failures == 0 and state.last_error is None
    assert state.etag == '"v1"' and state.last_success_at == NOW


def test_changed_url_resets_validators(store: Store) -> None:
    store.apply_poll(poll_write([]))
    store.sync_sources([source("s1", "https://example.org/other", "Source One")], NOW)
    state = store.source_states()["s1"]
    assert state.url == "https://example.org/other" and state.etag is None


def test_a_failed_write_leaves_nothing_behind(store: Store) -> None:
    duplicate = [make_entry(1), make_entry(1)]  # primary key clash inside one transaction
    with pytest.raises(sqlite3.IntegrityError):
        store.apply_poll(poll_write(duplicate))
    assert store.count_entries() == 0
    assert store.source_states()["s1"].etag is None


def test_stories_group_members_and_lead_by_priority_then_earliest(store: Store) -> None:
    store.sync_sources(
        [source("s1", "u1", "Official", priority=10), source("s2", "u2", "Paper")], NOW
    )
    official = replace(make_entry(3, tags=("t",)), story_id="story-a")  # later, but official
    paper = replace(make_entry(5, tags=("t",), source_id="s2"), story_id="story-a")
    alone = make_entry(1, tags=("t",))
    untagged = make_entry(2)
    store.apply_poll(poll_write([official, alone, untagged]))
    store.apply_poll(replace(poll_write([paper]), source_id="s2"))
    stories = store.stories(tag="t")
    assert [s.id for s in stories] == ["e1", "story-a"]
    story = stories[1]
    assert story.lead.entry.id == "e3" and [m.entry.id for m in story.others] == ["e5"]
    assert story.tags == ("t",) and story.first_seen == NOW
    assert [s.id for s in store.stories(tag="t", limit=1)] == ["e1"]
    assert [s.id for s in store.stories()] == ["e1", "e2", "story-a"]


def test_the_content_stamp_changes_with_entries_and_tags_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "aggregator.db")
    store.sync_sources([source("s1", "https://a.example/feed", "A")], NOW)
    stamps = [store.content_stamp()]
    store.apply_poll(poll_write([]))  # a 304's kind of write: the source row only
    stamps.append(store.content_stamp())
    store.apply_poll(poll_write([make_entry(1, tags=("gba",))]))
    stamps.append(store.content_stamp())
    other = Store(tmp_path / "aggregator.db")  # another process: a retag changes a tag
    other.replace_tags("e1", ("gba", "ai"), NOW)
    other.close()
    stamps.append(store.content_stamp())
    store.set_story("e1", "e9")  # regrouping
    stamps.append(store.content_stamp())
    store.ungroup_all()
    stamps.append(store.content_stamp())
    store.prune_entries(older_than=NOW + timedelta(days=400), at=NOW)
    stamps.append(store.content_stamp())
    store.prune_entries(older_than=NOW + timedelta(days=400), at=NOW)  # nothing left to delete
    stamps.append(store.content_stamp())
    assert stamps[0] == stamps[1] and stamps[-1] == stamps[-2]
    assert stamps[1] < stamps[2] < stamps[3] < stamps[4] < stamps[5] < stamps[6]
    store.close()


def test_polls_stored_together_roll_back_one_at_a_time(store: Store) -> None:
    """update.py stores the sources ready together in one transaction: each poll is a savepoint,
    so one that fails leaves the others to commit."""
    from aggregator.store.database import transaction

    stray = replace(make_entry(2), source_id="nowhere")  # no such source: a foreign key error
    with transaction(store.conn):
        store.apply_poll(poll_write([make_entry(1)]))
        with pytest.raises(sqlite3.IntegrityError):
            store.apply_poll(poll_write([stray]))
        store.apply_poll(poll_write([make_entry(3)]))
    assert sorted(e.entry.id for e in store.entries()) == ["e1", "e3"]


@settings(max_examples=500, deadline=None)
@given(
    moment=st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([UTC, UTC, timezone(timedelta(hours=8)), None]),
    )
)
def test_times_are_written_as_strftime_wrote_them(moment: datetime) -> None:
    """to_db_time's fast path gives the very text of the strftime it replaced (stored rows
    compare as text, old and new alike)."""
    assert to_db_time(moment) == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
