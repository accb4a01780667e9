"""Story matching data: each entry's stored fingerprint (signature, shingle hashes, title numbers,
dates) and MinHash band keys, the batched candidate query, and regrouping entries into stories."""

from __future__ import annotations

import json
import sqlite3
import struct
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import repeat
from operator import lshift, sub

from aggregator.process.dedupe import (
    BANDS,
    LEAD_CHARS,
    Fingerprint,
    StoryItem,
    fingerprint,
    has_chinese,
    release_of,
)
from aggregator.store.database import from_db_time, to_db_time

MAX_CANDIDATES = 20
CANDIDATE_CACHE = 1024  # candidates kept read between polls (~12 KB each)
# A band hit comes back as one integer: the query number above 46 bits, then bit 45 set, then
# the fp id below 40 bits. Subtracting (shared bands << 40) from it (at most 32 << 40 = 1 << 45)
# gives a rank that sorts by query, then most shared bands first, then fp id: one C-level sort
# ranks every query's candidates, and bisection finds each query's first MAX_CANDIDATES.
_QUERY_SHIFT = 46
_COUNT_SHIFT = 40
_FP_MASK = (1 << _COUNT_SHIFT) - 1
_HIT_BASE = 1 << 45
_MAX_QUERIES = 1 << 16  # per statement, so that query number << 46 stays below 2**62
assert BANDS << _COUNT_SHIFT <= _HIT_BASE  # a pair shares at most BANDS bands
# Every (query, stored entry) band hit, for queries [[query number, from, to, [band keys]], ...],
# as one comma-separated text: json_each drives the join, each (query, band key) probe one range
# of the (band_key, published) primary key. Counting in Python beats SQLite's GROUP BY (a
# temporary B-tree) threefold, and one text beats a row per hit.
BAND_HITS = f"""
    WITH q AS MATERIALIZED (
        SELECT value ->> 0 AS n, value ->> 1 AS lo, value ->> 2 AS hi, value -> 3 AS keys
          FROM json_each(?)
    ), p AS MATERIALIZED (
        SELECT q.n, k.value AS band_key, q.lo, q.hi FROM q, json_each(q.keys) AS k
    )
    SELECT group_concat((p.n << {_QUERY_SHIFT}) + {_HIT_BASE} + b.fp_id)
      FROM p JOIN entry_bands b ON b.band_key = p.band_key AND b.published BETWEEN p.lo AND p.hi
"""


@dataclass(frozen=True, slots=True)
class StoryKeys:
    """What the store keeps of an entry for story matching: its fingerprint, indexed by band."""

    entry_id: str
    published: datetime
    fingerprint: Fingerprint


@dataclass(frozen=True, slots=True)
class CandidateQuery:
    """One new entry asking for its candidates: band keys in the window, or these addresses."""

    entry_id: str
    band_keys: Sequence[int]
    urls: Sequence[str]
    published: datetime


def write_story_keys(conn: sqlite3.Connection, keys: Iterable[StoryKeys]) -> None:
    """Replace the fingerprint and band keys of these entries (inside the caller's transaction).

    Deleting the old fingerprint row deletes its band rows (foreign key cascade).
    """
    bands: list[tuple[int, int, int]] = []
    for item in keys:
        fp = item.fingerprint
        conn.execute("DELETE FROM entry_signatures WHERE entry_id = ?", (item.entry_id,))
        cursor = conn.execute(
            "INSERT INTO entry_signatures (entry_id, signature, shingles, title_numbers, dates)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                item.entry_id,
                _pack(fp.signature),
                _pack(sorted(fp.shingles)),
                " ".join(sorted(fp.title_numbers)),
                " ".join(f"{m}-{d}" for m, d in sorted(fp.dates)),
            ),
        )
        fp_id = cursor.lastrowid
        assert fp_id is not None
        published = _epoch(item.published)
        bands += [(key, published, fp_id) for key in fp.band_keys]
    conn.executemany(
        "INSERT OR IGNORE INTO entry_bands (band_key, published, fp_id) VALUES (?, ?, ?)", bands
    )


def merge_stories(conn: sqlite3.Connection, merges: Iterable[tuple[str, str]]) -> None:
    """Fold story `a` into story `b` for each (a, b) (inside the caller's transaction)."""
    for absorbed, into in merges:
        conn.execute("UPDATE entries SET story_id = ? WHERE story_id = ?", (into, absorbed))


def rebuild_story_keys(conn: sqlite3.Connection) -> int:
    """Fingerprint again every entry that had keys (schema migration 7); returns how many."""
    query = f"""
        SELECT id, title, substr(summary_text, 1, {LEAD_CHARS}) AS lead, canonical_url, published
          FROM entries WHERE id IN (SELECT entry_id FROM old_entry_signatures)
    """
    count = 0
    cursor = conn.execute(query)
    while rows := cursor.fetchmany(1000):
        keys = []
        for entry_id, title, lead, url, published in rows:
            when = from_db_time(published)
            assert when is not None
            keys.append(StoryKeys(entry_id, when, fingerprint(title, lead or "", url)))
        write_story_keys(conn, keys)
        count += len(keys)
    return count


class StoriesStore:
    conn: sqlite3.Connection

    def story_candidates(
        self, queries: Sequence[CandidateQuery], window: timedelta
    ) -> list[list[StoryItem]]:
        """For each query, the stored entries sharing a band key within the window of its
        publication, or having one of its `urls`, with their stored fingerprints.

        A few statements for the whole batch (one poll of one source): the band rows (each key
        one index range on (band_key, published)), the address matches, then the candidates'
        rows and their stories' sources. Per query only the MAX_CANDIDATES sharing the most
        bands are kept (the expected number of shared bands grows with the square of the
        similarity, so true matches rank first; frequent words make some band keys common to
        many unrelated items). Only entries with stored keys count: they are the ones already
        given their story.
        """
        if not queries:
            return []
        if len(queries) > _MAX_QUERIES:
            return [
                found
                for start in range(0, len(queries), _MAX_QUERIES)
                for found in self.story_candidates(queries[start : start + _MAX_QUERIES], window)
            ]
        probes = [
            (n, _epoch(q.published - window), _epoch(q.published + window), tuple(q.band_keys))
            for n, q in enumerate(queries)
        ]
        (hits,) = self.conn.execute(BAND_HITS, (json.dumps(probes),)).fetchone()
        shared = Counter(hits.split(",") if hits else ())  # counted as text: fewer to parse
        # query, most shared bands, fp id: see _QUERY_SHIFT (all in C: no Python per hit)
        counts = map(lshift, shared.values(), repeat(_COUNT_SHIFT))
        ranks = sorted(map(sub, map(int, shared.keys()), counts))
        wanted: list[set[int]] = []
        for n in range(len(queries)):
            start = bisect_left(ranks, n << _QUERY_SHIFT)
            end = bisect_left(
                ranks, (n + 1) << _QUERY_SHIFT, start, min(len(ranks), start + MAX_CANDIDATES)
            )
            wanted.append({rank & _FP_MASK for rank in ranks[start:end]})
        by_url: defaultdict[str, set[int]] = defaultdict(set)
        urls = sorted({u for q in queries for u in q.urls if u})
        if urls:
            rows = self.conn.execute(
                """
                SELECT e.canonical_url, g.fp_id FROM entries e
                  JOIN entry_signatures g ON g.entry_id = e.id  -- grouped already
                 WHERE e.canonical_url IN (SELECT value FROM json_each(?))
                """,
                (json.dumps(urls),),
            )
            for url, fp_id in rows:
                by_url[url].add(fp_id)
        for n, q in enumerate(queries):
            for url in q.urls:
                wanted[n] |= by_url.get(url, set())
        loaded = self._candidates(set().union(*wanted))
        return [
            [loaded[fp_id] for fp_id in ids if loaded[fp_id].entry_id != q.entry_id]
            for q, ids in zip(queries, wanted, strict=True)
        ]

    def _candidates(self, fp_ids: set[int]) -> dict[int, StoryItem]:
        """fp id -> the candidate with its stored fingerprint and its story's sources."""
        if not fp_ids:
            return {}
        cursor = self.conn.cursor()
        cursor.row_factory = None  # plain tuples: a few hundred rows a poll, read by position
        rows: list[_CandidateRow] = cursor.execute(
            """
            SELECT g.fp_id, e.id, e.source_id, e.title, e.published, e.canonical_url,
                   coalesce(e.story_id, e.id), g.signature, g.shingles, g.title_numbers, g.dates
              FROM entry_signatures g JOIN entries e ON e.id = g.entry_id
             WHERE g.fp_id IN (SELECT value FROM json_each(?))
            """,
            (json.dumps(sorted(fp_ids)),),
        ).fetchall()
        story_ids = sorted({row[6] for row in rows})
        sources = {
            story_id: frozenset(members.split(","))
            for story_id, members in cursor.execute(
                """
                SELECT story_id, group_concat(DISTINCT source_id) FROM entries
                 WHERE story_id IN (SELECT value FROM json_each(?)) GROUP BY story_id
                """,
                (json.dumps(story_ids),),
            )
        }
        return {row[0]: _stored_candidate(row, sources.get(row[6], frozenset())) for row in rows}

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
    return StoryItem(
        entry_id=row["id"],
        source_id=row["source_id"],
        title=row["title"],
        lead=row["lead"] or "",
        published=published,
        canonical_url=row["canonical_url"],
        story_id=row["story_id"] or row["id"],
    )


# fp id, entry id, source id, title, published, canonical URL, story id, and the fingerprint:
# signature, shingles, title numbers, dates (as write_story_keys stores them).
_CandidateRow = tuple[int, str, str, str, str, str | None, str, bytes, bytes, str, str]


@lru_cache(maxsize=CANDIDATE_CACHE)
def _stored_candidate(row: _CandidateRow, story_sources: frozenset[str]) -> StoryItem:
    """A candidate as stored: no text, its fingerprint unpacked instead.

    Cached by everything it is made of (the stored row itself, so never stale): the items of
    the window come back as candidates poll after poll, and unpacking the shingle set is most of
    the cost of reading one.
    """
    _, entry_id, source_id, title, published, url, story_id, signature, shingles, numbers, dates = (
        row
    )
    return StoryItem(
        entry_id=entry_id,
        source_id=source_id,
        title=title,
        lead="",
        published=datetime.fromisoformat(published),  # as to_db_time writes: 10x strptime
        canonical_url=url,
        story_id=story_id,
        story_sources=story_sources,
        fingerprint=Fingerprint(
            shingles=frozenset(_unpack(shingles)),
            signature=_unpack(signature),
            title_numbers=frozenset(numbers.split()),
            dates=frozenset(_date(d) for d in dates.split()) if dates else frozenset(),
            release=release_of(url),
            chinese=has_chinese(title),
        ),
    )


def _date(text: str) -> tuple[int, int]:
    """(5, 16) from "5-16"."""
    month, _, day = text.partition("-")
    return int(month), int(day)


def _epoch(when: datetime) -> int:
    """Seconds since 1970 (UTC): a 4-byte integer in the band index, where text took 20."""
    return int(when.astimezone(UTC).timestamp())


def _pack(values: Sequence[int]) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


def _unpack(blob: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(blob) // 4}I", blob)
