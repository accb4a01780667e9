"""Entries with their tags, and the stories they form."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from aggregator.checkpoints import checkpoint
from aggregator.models import Entry, StoredEntry, Story
from aggregator.process.sanitize import SANITIZER_VERSION
from aggregator.process.stories import build_story
from aggregator.store.database import content_changed, from_db_time, to_db_time, transaction
from aggregator.store.sources import read_priorities, write_success_state
from aggregator.store.stories import BandIndex, StoryKeys, merge_stories, write_story_keys


@dataclass(frozen=True, slots=True)
class PollWrite:
    """Everything one successful poll writes, applied in one transaction."""

    source_id: str
    at: datetime
    status: int
    etag: str | None
    last_modified: str | None
    next_poll_at: datetime
    inserts: Sequence[Entry] = ()
    updates: Sequence[Entry] = ()
    story_keys: Sequence[StoryKeys] = ()  # band keys and signatures of inserts and updates
    story_merges: Sequence[tuple[str, str]] = ()  # (story, into story), after the inserts
    # The sanitizer version (sanitize.SANITIZER_VERSION) that cleaned the entries' summaries when
    # they were read; 0 when unknown, so that publishing cleans them again.
    sanitized_by: int = 0


class EntriesStore:
    conn: sqlite3.Connection
    band_index: BandIndex

    def apply_poll(self, write: PollWrite) -> None:
        """Store new and changed entries and the source's new fetch state, all or nothing."""
        with transaction(self.conn) as conn:
            version = write.sanitized_by
            conn.executemany(
                _INSERT_ENTRY, [_entry_row(e, write.at, version) for e in write.inserts]
            )
            for entry in write.updates:
                conn.execute(_UPDATE_ENTRY, _entry_row(entry, write.at, version))
                conn.execute("DELETE FROM entry_tags WHERE entry_id = ?", (entry.id,))
            _write_tags(conn, [*write.inserts, *write.updates])
            indexed = write_story_keys(conn, write.story_keys)
            merge_stories(conn, write.story_merges)
            if write.inserts or write.updates or write.story_merges:
                content_changed(conn)
            checkpoint("store")  # crash tests: a kill here must roll the whole poll back
            write_success_state(conn, write)
        for keys in indexed:
            self.band_index.add(keys)

    def content_hashes(self, entry_ids: Sequence[str]) -> dict[str, str]:
        """The stored content hash of each of these entries that exists."""
        found: dict[str, str] = {}
        for start in range(0, len(entry_ids), 500):
            chunk = entry_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT id, content_hash FROM entries WHERE id IN ({marks})"
            found.update({row[0]: row[1] for row in self.conn.execute(query, chunk)})
        return found

    def entry(self, entry_id: str) -> StoredEntry | None:
        rows = self._select("WHERE e.id = ?", (entry_id,))
        return rows[0] if rows else None

    def entries(
        self,
        *,
        tag: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[StoredEntry]:
        """Entries newest first, optionally only those with `tag` and published since `since`."""
        params: list[object] = []
        if tag is not None:
            # The (tag, published) index walked newest first: stops at the limit, no sort.
            clause = (
                "JOIN entry_tags t ON t.entry_id = e.id WHERE t.tag = ? AND t.published >= ?"
                " ORDER BY t.published DESC, t.entry_id"
            )
            params += [tag, to_db_time(since) or ""]
        elif since is not None:
            clause = "WHERE e.published >= ? ORDER BY e.published DESC, e.id"
            params.append(to_db_time(since))
        else:
            clause = "ORDER BY e.published DESC, e.id"
        if limit is not None:
            clause += " LIMIT ?"
            params.append(limit)
        return self._select(clause, params)

    def stories(
        self, *, tag: str | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[Story]:
        """Stories newest first: those with an entry tagged `tag` published since `since`.

        Walks entries newest first and stops at `limit` distinct stories, so the cost follows
        the limit, not the size of the history.
        """
        if tag is not None:
            query = (
                "SELECT e.story_id FROM entry_tags t JOIN entries e ON e.id = t.entry_id"
                " WHERE t.tag = ? AND t.published >= ? ORDER BY t.published DESC, e.id"
            )
            params: tuple[object, ...] = (tag, to_db_time(since) or "")
        else:
            query = "SELECT story_id FROM entries WHERE published >= ? ORDER BY published DESC, id"
            params = (to_db_time(since) or "",)
        story_ids: dict[str, None] = {}
        for (story_id,) in self.conn.execute(query, params):
            story_ids.setdefault(story_id)
            if limit is not None and len(story_ids) >= limit:
                break
        return self.stories_by_id(list(story_ids))

    def stories_by_id(self, story_ids: Sequence[str]) -> list[Story]:
        """The stories with these ids, in the order given, each with all its members."""
        members: dict[str, list[StoredEntry]] = {story_id: [] for story_id in story_ids}
        for start in range(0, len(story_ids), 500):
            chunk = story_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for stored in self._select(f"WHERE e.story_id IN ({marks})", chunk):
                members[stored.entry.story_id or stored.entry.id].append(stored)
        priorities = read_priorities(self.conn)
        return [
            build_story(story_id, found, priorities) for story_id, found in members.items() if found
        ]

    def count_entries(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM entries").fetchone()[0])

    def _select(self, clause: str, params: Sequence[object]) -> list[StoredEntry]:
        query = (
            "SELECT e.*, s.name AS source_name, (SELECT group_concat(x.tag, char(31))"
            " FROM entry_tags x WHERE x.entry_id = e.id) AS tag_list"
            " FROM entries e JOIN sources s ON s.id = e.source_id " + clause
        )
        return [
            StoredEntry(
                entry=_entry(row),
                source_name=row["source_name"] or row["source_id"],
                sanitized=row["sanitized_by"] == SANITIZER_VERSION,
            )
            for row in self.conn.execute(query, params)
        ]


_ENTRY_COLUMNS = (
    "id, source_id, guid, link, canonical_url, title, summary_html, summary_text, author,"
    " published, updated, first_seen, last_changed, content_hash, categories, story_id,"
    " sanitized_by"
)
_INSERT_ENTRY = f"INSERT INTO entries ({_ENTRY_COLUMNS}) VALUES ({','.join('?' * 17)})"
# first_seen is kept: an edited entry is still the entry first seen back then.
_UPDATE_ENTRY = (
    "UPDATE entries SET source_id = ?2, guid = ?3, link = ?4, canonical_url = ?5, title = ?6,"
    " summary_html = ?7, summary_text = ?8, author = ?9, published = ?10, updated = ?11,"
    " last_changed = ?13, content_hash = ?14, categories = ?15, story_id = ?16,"
    " sanitized_by = ?17 WHERE id = ?1"
)


def _entry_row(entry: Entry, at: datetime, sanitized_by: int) -> tuple[object, ...]:
    return (
        entry.id,
        entry.source_id,
        entry.guid,
        entry.link,
        entry.canonical_url,
        entry.title,
        entry.summary_html,
        entry.summary_text,
        entry.author,
        to_db_time(entry.published),
        to_db_time(entry.updated),
        to_db_time(entry.first_seen),
        to_db_time(at),
        entry.content_hash,
        json.dumps(list(entry.categories), ensure_ascii=False),
        entry.story_id or entry.id,
        sanitized_by,
    )


def _write_tags(conn: sqlite3.Connection, entries: Sequence[Entry]) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO entry_tags (entry_id, tag, published) VALUES (?, ?, ?)",
        [(e.id, tag, to_db_time(e.published)) for e in entries for tag in e.tags],
    )


def _entry(row: sqlite3.Row) -> Entry:
    published = from_db_time(row["published"])
    first_seen = from_db_time(row["first_seen"])
    assert published is not None and first_seen is not None
    tags = tuple(sorted(row["tag_list"].split("\x1f"))) if row["tag_list"] else ()
    return Entry(
        id=row["id"],
        source_id=row["source_id"],
        guid=row["guid"],
        link=row["link"],
        canonical_url=row["canonical_url"],
        title=row["title"],
        summary_html=row["summary_html"],
        summary_text=row["summary_text"],
        author=row["author"],
        published=published,
        updated=from_db_time(row["updated"]),
        first_seen=first_seen,
        content_hash=row["content_hash"],
        categories=tuple(json.loads(row["categories"])),
        tags=tags,
        story_id=row["story_id"],
    )
