"""Story matching data: each entry's MinHash band keys and signature, the candidate query,
and regrouping entries into stories."""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from aggregator.process.dedupe import LEAD_CHARS, StoryItem
from aggregator.store.database import from_db_time, to_db_time

MAX_CANDIDATES = 20


@dataclass(frozen=True, slots=True)
class StoryKeys:
    """What the store keeps of an entry's fingerprint: band keys (indexed) and signature."""

    entry_id: str
    published: datetime
    band_keys: tuple[int, ...]
    signature: tuple[int, ...]


def write_story_keys(conn: sqlite3.Connection, keys: Iterable[StoryKeys]) -> None:
    """Replace the band keys and signature of these entries (inside the caller's transaction)."""
    for item in keys:
        published = to_db_time(item.published)
        conn.execute("DELETE FROM entry_bands WHERE entry_id = ?", (item.entry_id,))
        conn.executemany(
            "INSERT OR IGNORE INTO entry_bands (band_key, published, entry_id) VALUES (?, ?, ?)",
            [(key, published, item.entry_id) for key in item.band_keys],
        )
        conn.execute(
            "INSERT OR REPLACE INTO entry_signatures (entry_id, signature) VALUES (?, ?)",
            (item.entry_id, _pack(item.signature)),
        )


def merge_stories(conn: sqlite3.Connection, merges: Iterable[tuple[str, str]]) -> None:
    """Fold story `a` into story `b` for each (a, b) (inside the caller's transaction)."""
    for absorbed, into in merges:
        conn.execute("UPDATE entries SET story_id = ? WHERE story_id = ?", (into, absorbed))


class StoriesStore:
    conn: sqlite3.Connection

    def story_candidates(
        self,
        entry_id: str,
        band_keys: Sequence[int],
        urls: Sequence[str],
        published: datetime,
        window: timedelta,
    ) -> list[StoryItem]:
        """Stored entries sharing a band key within the window, or having one of `urls`.

        One statement; each band key is one index range on (band_key, published). Only the
        MAX_CANDIDATES sharing the most bands are returned (the expected number of shared bands
        grows with the square of the similarity, so true matches rank first; frequent words
        make some band keys common to many unrelated items). Only entries with stored keys
        count: they are the ones already given their story.
        """
        keys = list(band_keys)
        url_list = [u for u in urls if u]
        band_marks = ",".join("?" * len(keys)) or "NULL"
        url_marks = ",".join("?" * len(url_list)) or "NULL"
        query = f"""
            WITH hits AS (
                SELECT entry_id FROM (
                    SELECT entry_id, count(*) AS shared FROM entry_bands
                     WHERE band_key IN ({band_marks}) AND published BETWEEN ? AND ?
                     GROUP BY entry_id ORDER BY shared DESC, entry_id LIMIT {MAX_CANDIDATES}
                )
                UNION
                SELECT id FROM entries WHERE canonical_url IN ({url_marks})
            )
            SELECT e.id, e.source_id, e.title, substr(e.summary_text, 1, {LEAD_CHARS}) AS lead,
                   e.published, e.canonical_url, e.story_id, g.signature,
                   (SELECT group_concat(DISTINCT m.source_id) FROM entries m
                     WHERE m.story_id = e.story_id) AS story_sources
              FROM hits h JOIN entries e ON e.id = h.entry_id
              JOIN entry_signatures g ON g.entry_id = e.id  -- grouped already
             WHERE e.id != ?
        """
        params: list[object] = [
            *keys,
            to_db_time(published - window),
            to_db_time(published + window),
            *url_list,
            entry_id,
        ]
        return [_candidate(row) for row in self.conn.execute(query, params)]

    def story_ids_of(self, entry_ids: Sequence[str]) -> dict[str, str]:
        """The stored story id of each of these entries that exists."""
        found: dict[str, str] = {}
        for start in range(0, len(entry_ids), 500):
            chunk = entry_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT id, story_id FROM entries WHERE id IN ({marks})"
            found.update({row[0]: row[1] or row[0] for row in self.conn.execute(query, chunk)})
        return found

    def entries_for_regrouping(self) -> Iterator[StoryItem]:
        """Every entry, in the order it was first seen, as story matching reads it."""
        query = f"""
            SELECT id, source_id, title, substr(summary_text, 1, {LEAD_CHARS}) AS lead,
                   published, canonical_url, story_id
              FROM entries ORDER BY first_seen, id
        """
        for row in self.conn.execute(query).fetchall():
            yield _candidate(row)

    def ungroup_all(self) -> None:
        """Every entry back in a story of its own, with no band keys or signature (inside the
        caller's transaction): the start of regrouping."""
        self.conn.execute("DELETE FROM entry_bands")
        self.conn.execute("DELETE FROM entry_signatures")
        self.conn.execute("UPDATE entries SET story_id = id WHERE story_id IS NOT id")

    def replace_tags(self, entry_id: str, tags: Sequence[str], published: datetime) -> None:
        """Give an entry exactly these tags (inside the caller's transaction)."""
        self.conn.execute("DELETE FROM entry_tags WHERE entry_id = ?", (entry_id,))
        self.conn.executemany(
            "INSERT INTO entry_tags (entry_id, tag, published) VALUES (?, ?, ?)",
            [(entry_id, tag, to_db_time(published)) for tag in tags],
        )

    def set_story(self, entry_id: str, story_id: str) -> None:
        self.conn.execute("UPDATE entries SET story_id = ? WHERE id = ?", (story_id, entry_id))

    def story_map(self) -> dict[str, str]:
        """entry id -> story id, for every entry."""
        rows = self.conn.execute("SELECT id, story_id FROM entries")
        return {row[0]: row[1] or row[0] for row in rows}


def _candidate(row: sqlite3.Row) -> StoryItem:
    published = from_db_time(row["published"])
    assert published is not None
    keys = row.keys()
    signature = row["signature"] if "signature" in keys else None
    sources = row["story_sources"] if "story_sources" in keys else None
    return StoryItem(
        entry_id=row["id"],
        source_id=row["source_id"],
        title=row["title"],
        lead=row["lead"] or "",
        published=published,
        canonical_url=row["canonical_url"],
        story_id=row["story_id"] or row["id"],
        story_sources=frozenset(sources.split(",")) if sources else frozenset(),
        signature=_unpack(signature) if signature else (),
    )


def _pack(signature: Sequence[int]) -> bytes:
    return struct.pack(f"<{len(signature)}I", *signature)


def _unpack(blob: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(blob) // 4}I", blob)
