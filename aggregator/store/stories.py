"""Story matching data: each entry's stored fingerprint (signature, shingle hashes, title numbers,
dates, MinHash band keys), the band index read into memory by window, the batched candidate
query, and regrouping entries into stories."""

from __future__ import annotations

import json
import sqlite3
import struct
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property
from itertools import compress, islice
from operator import eq

from aggregator.process.dedupe import (
    BANDS,
    LEAD_CHARS,
    NUM_HASHES,
    Fingerprint,
    StoryItem,
    band_keys,
    fingerprint,
    has_chinese,
    pack_fingerprint,
    pack_values,
    release_of,
    unpack_values,
)
from aggregator.store.database import content_changed, from_db_time, to_db_time

MAX_CANDIDATES = 20
CANDIDATE_CACHE = 1024  # candidates kept read between polls (~12 KB each)
DAY = 86_400
MAX_INDEXED = 50_000  # fingerprints held in the band index (~2.7 KB each) before it starts over
# A band candidate whose signature agrees with the new entry's on fewer values than this is not
# read: its similarity is almost surely far below any useful threshold. At Jaccard 0.3 (the
# default threshold) 64 values agree 19 times on average; fewer than 7, about 1 in 14,000.
MIN_EQUAL_VALUES = 7
_RANK_SHIFT = 40  # ranks: (BANDS + 1 - shared bands) above 40 bits, the fp id below
_FP_MASK = (1 << _RANK_SHIFT) - 1
_SIGNATURE = struct.Struct(f"<{NUM_HASHES}I")


@dataclass(frozen=True, slots=True)
class StoryKeys:
    """What the store keeps of an entry for story matching: its fingerprint, indexed by band."""

    entry_id: str
    published: datetime
    fingerprint: Fingerprint
    band_keys: Sequence[int] | None = None  # the fingerprint's, when already computed


@dataclass(frozen=True, slots=True)
class CandidateQuery:
    """One new entry asking for its candidates: band keys in the window, or these addresses."""

    entry_id: str
    band_keys: Sequence[int]
    urls: Sequence[str]
    published: datetime
    # When given (its values, or packed as _SIGNATURE packs them), hopeless band candidates are
    # dropped unread.
    signature: Sequence[int] | bytes = ()


@dataclass(frozen=True, slots=True)
class IndexedKeys:
    """A stored fingerprint as the band index holds it."""

    fp_id: int
    published: int  # Unix seconds
    band_keys: Sequence[int]
    signature: bytes  # as stored: NUM_HASHES little-endian 4-byte values


class BandIndex:
    """Band key -> the stored fingerprints having it, read into memory a day at a time.

    Finding the candidates of a new entry is then 32 dictionary lookups instead of 32 index
    ranges, and storing an entry writes one fingerprint row instead of 32 band rows. Only the
    days some query's window covers are read (one index range on the publication time each), so
    the memory follows the window, not the history: an entry this connection writes is added
    only when its day is in already, and the index starts over before holding more than
    MAX_INDEXED entries, or when another connection has committed (`PRAGMA data_version`).
    A stale or extra entry only ever adds a candidate, which is then compared exactly.
    """

    def __init__(self) -> None:
        self._postings: dict[int, int | list[int]] = {}  # one fp id, or several
        self._published: dict[int, int] = {}  # fp id -> Unix seconds
        self._signatures: dict[int, int] = {}  # fp id -> signature as one integer (_as_int)
        self._days: set[int] = set()  # days whose every stored fingerprint is in
        self._version: int | None = None

    def __len__(self) -> int:
        return len(self._published)

    def clear(self) -> None:
        self._postings, self._published, self._signatures, self._days = {}, {}, {}, set()

    def refresh(self, conn: sqlite3.Connection, days: Iterable[int]) -> None:
        """Start over if another connection wrote; then read the `days` not read yet."""
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        wanted = set(days)
        if version != self._version or (
            len(self._published) > MAX_INDEXED and not wanted <= self._days
        ):
            self.clear()
            self._version = version
        missing = sorted(wanted - self._days)
        for first, last in _runs(missing):
            rows = conn.execute(
                "SELECT fp_id, published, bands, signature FROM entry_signatures"
                " WHERE published >= ? AND published < ?",
                ((first * DAY), (last + 1) * DAY),
            )
            for fp_id, published, bands, signature in rows:
                if fp_id not in self._published:
                    self._add(IndexedKeys(fp_id, published, unpack_values(bands), signature))
            self._days.update(range(first, last + 1))

    def add(self, keys: IndexedKeys) -> None:
        """An entry just written: indexed if its day is read already, else read with its day."""
        if keys.published // DAY in self._days:
            self._add(keys)

    def _add(self, keys: IndexedKeys) -> None:
        self._published[keys.fp_id] = keys.published
        if len(keys.signature) == _SIGNATURE.size:
            self._signatures[keys.fp_id] = _as_int(keys.signature)
        postings, fp_id = self._postings, keys.fp_id
        for key in keys.band_keys:
            found = postings.setdefault(key, fp_id)  # one lookup for a new key, the usual case
            if type(found) is int:
                if found != fp_id:
                    postings[key] = [found, fp_id]
            else:
                found.append(fp_id)  # type: ignore[union-attr]

    def ranked(
        self, band_keys: Sequence[int], lo: int, hi: int, signature: Sequence[int] | bytes = ()
    ) -> list[int]:
        """The fingerprints published in [lo, hi] sharing a band key, most shared first (then
        the oldest fp id), at most MAX_CANDIDATES; of those, with `signature` given (its values,
        or packed as `_SIGNATURE` packs them), only the ones agreeing on at least
        MIN_EQUAL_VALUES of its values."""
        hits: list[int] = []
        postings = self._postings
        for key in band_keys:
            found = postings.get(key)
            if found is None:
                continue
            if isinstance(found, int):
                hits.append(found)
            else:
                hits += found
        if not hits:
            return []
        # Most hits share a single band with the query (a common word): only the few repeated
        # ones are ranked by count, the others taken by fp id while the list is not full. One
        # C-level sort brings each fp id's hits together; the runs are its shared bands.
        hits.sort()
        repeats = Counter(compress(hits, map(eq, hits, islice(hits, 1, None))))  # count - 1
        published = self._published
        chosen: list[int] = []
        if repeats:
            # Fewer missing bands first, then the fp id (see _RANK_SHIFT).
            ranks = sorted(
                [(BANDS - more) << _RANK_SHIFT | fp_id for fp_id, more in repeats.items()]
            )
            for rank in ranks:
                fp_id = rank & _FP_MASK
                if lo <= published[fp_id] <= hi:
                    chosen.append(fp_id)
                    if len(chosen) == MAX_CANDIDATES:
                        return _agreeing(chosen, signature, self._signatures)
        for fp_id in hits:
            if fp_id not in repeats and lo <= published[fp_id] <= hi:
                chosen.append(fp_id)
                if len(chosen) == MAX_CANDIDATES:
                    break
        return _agreeing(chosen, signature, self._signatures)


def _agreeing(
    chosen: list[int], signature: Sequence[int] | bytes, signatures: dict[int, int]
) -> list[int]:
    """The `chosen` fingerprints agreeing with `signature` on at least MIN_EQUAL_VALUES values
    (all of them when no signature is given)."""
    mine = _signature_int(signature)
    if mine is None:
        return chosen
    return [
        fp_id
        for fp_id in chosen
        if fp_id in signatures and _equal_values(mine, signatures[fp_id]) >= MIN_EQUAL_VALUES
    ]


def _signature_int(signature: Sequence[int] | bytes) -> int | None:
    """A query's signature as one integer (`_as_int`), or None when it has not NUM_HASHES values."""
    if isinstance(signature, bytes):
        return _as_int(signature) if len(signature) == _SIGNATURE.size else None
    if len(signature) != NUM_HASHES:
        return None
    return _as_int(_SIGNATURE.pack(*signature))


def _as_int(packed: bytes) -> int:
    """A packed signature as one integer: value k is bits 32k to 32k+31."""
    return int.from_bytes(packed, "little")


def _lane_mask(value: int) -> int:
    """`value` in every 32-bit lane of a signature integer."""
    return sum(value << (32 * k) for k in range(NUM_HASHES))


_LOW_BITS = _lane_mask(0x7FFF_FFFF)
_HIGH_BIT = _lane_mask(0x8000_0000)


def _equal_values(a: int, b: int) -> int:
    """How many of two signatures' values are equal: the 32-bit lanes of a XOR b that are zero.

    A lane's low 31 bits plus 0x7FFFFFFF reach bit 31 unless they are all zero, never the next
    lane; with the lane's own bit 31, bit 31 is then set exactly for the lanes that differ.
    Four whole-integer operations (~0.3 µs; folding each lane in five steps took ~0.7 µs)."""
    diff = a ^ b
    differing = (((diff & _LOW_BITS) + _LOW_BITS) | diff) & _HIGH_BIT
    return NUM_HASHES - differing.bit_count()


def _runs(days: Sequence[int]) -> Iterator[tuple[int, int]]:
    """(first, last) of each run of consecutive days in a sorted list."""
    start = previous = None
    for day in days:
        if previous is not None and day == previous + 1:
            previous = day
            continue
        if start is not None and previous is not None:
            yield start, previous
        start = previous = day
    if start is not None and previous is not None:
        yield start, previous


def write_story_keys(conn: sqlite3.Connection, keys: Iterable[StoryKeys]) -> list[IndexedKeys]:
    """Replace the fingerprint of these entries (inside the caller's transaction); returns what
    the band index should hold of them once the transaction is committed.

    As INSERT OR REPLACE would, but cheaper: with foreign keys on, SQLite checks each row's
    constraints twice for OR REPLACE (~4 µs a row, a quarter of the write), so the replaced
    rows are deleted first and the new ones inserted plainly. The fp ids are the ones SQLite
    would choose, given here so that one statement writes every row: max + 1, max + 2, ...
    (the caller's transaction is the only writer), a replaced fingerprint's entry too."""
    rows: dict[str, tuple[object, ...]] = {}  # by entry id: the last wins, as with OR REPLACE
    written: list[IndexedKeys] = []
    (last,) = conn.execute("SELECT max(fp_id) FROM entry_signatures").fetchone()
    for fp_id, item in enumerate(keys, start=(last or 0) + 1):
        packed = item.fingerprint.packed_form()  # made by the worker process, usually
        bands = item.band_keys if item.band_keys is not None else unpack_values(packed.bands)
        published = _epoch(item.published)
        rows.pop(item.entry_id, None)
        rows[item.entry_id] = (
            fp_id, item.entry_id, packed.signature, packed.shingles, packed.title_numbers,
            packed.dates, published, packed.bands,
        )  # fmt: skip
        written.append(IndexedKeys(fp_id, published, bands, packed.signature))
    if rows:
        conn.execute(
            "DELETE FROM entry_signatures WHERE entry_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(rows)),),
        )
        conn.executemany(
            "INSERT INTO entry_signatures (fp_id, entry_id, signature, shingles, title_numbers,"
            " dates, published, bands) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            list(rows.values()),  # in fp id order: a replaced key went to the end
        )
    return written


def merge_stories(conn: sqlite3.Connection, merges: Iterable[tuple[str, str]]) -> None:
    """Fold story `a` into story `b` for each (a, b) (inside the caller's transaction)."""
    changed = False
    for absorbed, into in merges:
        conn.execute("UPDATE entries SET story_id = ? WHERE story_id = ?", (into, absorbed))
        changed = True
    if changed:
        content_changed(conn)


def rebuild_story_keys(conn: sqlite3.Connection) -> int:
    """Fingerprint again every entry that had keys (schema migration 7); returns how many.

    Writes the fingerprint rows as schema 7 has them; migration 8 adds their band keys."""
    query = f"""
        SELECT id, title, substr(summary_text, 1, {LEAD_CHARS}) AS lead, canonical_url
          FROM entries WHERE id IN (SELECT entry_id FROM old_entry_signatures)
    """
    count = 0
    cursor = conn.execute(query)
    while rows := cursor.fetchmany(1000):
        for entry_id, title, lead, url in rows:
            packed = pack_fingerprint(fingerprint(title, lead or "", url))
            conn.execute(
                "INSERT INTO entry_signatures (entry_id, signature, shingles, title_numbers, dates)"
                " VALUES (?, ?, ?, ?, ?)",
                (entry_id, packed.signature, packed.shingles, packed.title_numbers, packed.dates),
            )
        count += len(rows)
    return count


def fill_band_keys(conn: sqlite3.Connection) -> None:
    """Each stored fingerprint's band keys and publication time (schema migration 8)."""
    rows = conn.execute(
        "SELECT g.fp_id, g.signature, e.published FROM entry_signatures g"
        " JOIN entries e ON e.id = g.entry_id"
    ).fetchall()
    conn.executemany(
        "UPDATE entry_signatures SET bands = ?, published = ? WHERE fp_id = ?",
        [
            (pack_values(band_keys(unpack_values(signature))), _epoch(_db_time(published)), fp_id)
            for fp_id, signature, published in rows
        ],
    )


class StoriesStore:
    conn: sqlite3.Connection
    band_index: BandIndex

    def story_candidates(
        self, queries: Sequence[CandidateQuery], window: timedelta
    ) -> list[list[StoryItem]]:
        """For each query, the stored entries sharing a band key within the window of its
        publication, or having one of its `urls`, with their stored fingerprints.

        The band keys of the days the windows cover are read into memory once (`BandIndex`);
        then one statement finds the address matches and one reads the candidates' rows and
        their stories' sources, for the whole batch (one poll of one source). Per query only the
        MAX_CANDIDATES sharing the most bands are kept (the expected number of shared bands
        grows with the square of the similarity, so true matches rank first; frequent words
        make some band keys common to many unrelated items). Only entries with stored keys
        count: they are the ones already given their story.
        """
        if not queries:
            return []
        reach = int(window.total_seconds())
        spans = [(_epoch(q.published) - reach, _epoch(q.published) + reach) for q in queries]
        days = {day for lo, hi in spans for day in range(lo // DAY, hi // DAY + 1)}
        self.band_index.refresh(self.conn, days)
        wanted = [
            set(self.band_index.ranked(q.band_keys, lo, hi, q.signature))
            for q, (lo, hi) in zip(queries, spans, strict=True)
        ]
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
            [
                loaded[fp_id]
                for fp_id in sorted(ids)
                if fp_id in loaded and loaded[fp_id].entry_id != q.entry_id
            ]
            for q, ids in zip(queries, wanted, strict=True)
        ]

    def write_story_keys(self, keys: Iterable[StoryKeys]) -> None:
        """`write_story_keys` inside the caller's transaction, indexed at once (regrouping reads
        what it has just written); a rolled-back transaction leaves only extra candidates."""
        for written in write_story_keys(self.conn, keys):
            self.band_index.add(written)

    def _candidates(self, fp_ids: set[int]) -> dict[int, StoryItem]:
        """fp id -> the candidate with its stored fingerprint and its story's sources."""
        if not fp_ids:
            return {}
        cursor = self.conn.cursor()
        cursor.row_factory = None  # plain tuples: a few hundred rows a poll, read by position
        rows: list[_CandidateRow] = cursor.execute(
            _CANDIDATES_QUERY, (json.dumps(sorted(fp_ids)),)
        ).fetchall()
        read = self._read_candidates
        loaded: dict[int, StoryItem] = {}
        for row in rows:
            fp_id = row[0]
            known = read.pop(fp_id, None)
            if known is not None and known[0] == row:
                item = known[1]  # the common case: nothing made, nothing kept anew
            else:
                if known is not None and known[0][3:] == row[3:]:  # only its story changed
                    item = replace(known[1], story_id=row[1], story_sources=_sources(row[2]))
                else:
                    item = _stored_candidate(row)
                known = (row, item)
            read[fp_id] = known  # last: the most recently read
            loaded[fp_id] = item
        # Evicted after the loop, in one walk: finding the oldest key walks past every slot
        # that pop() has emptied, once per eviction if done one by one.
        for fp_id in list(islice(read, max(0, len(read) - CANDIDATE_CACHE))):
            del read[fp_id]
        return loaded

    @cached_property
    def _read_candidates(self) -> dict[int, tuple[_CandidateRow, StoryItem]]:
        """fp id -> the row last read for it and the candidate made of it, least recently read
        first, at most CANDIDATE_CACHE.

        The items of the window come back as candidates poll after poll, and unpacking the
        shingle set is most of the cost of reading one. The row is read every time and compared
        (an fp id alone is not trusted: after a rollback or a deletion it can name another
        fingerprint); when only its story differs, the fingerprint is kept.
        """
        return {}

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
        self.conn.execute("DELETE FROM entry_signatures")
        self.band_index.clear()
        self.conn.execute("UPDATE entries SET story_id = id WHERE story_id IS NOT id")
        content_changed(self.conn)

    def replace_tags(self, entry_id: str, tags: Sequence[str], published: datetime) -> None:
        """Give an entry exactly these tags (inside the caller's transaction)."""
        self.conn.execute("DELETE FROM entry_tags WHERE entry_id = ?", (entry_id,))
        content_changed(self.conn)
        self.conn.executemany(
            "INSERT INTO entry_tags (entry_id, tag, published) VALUES (?, ?, ?)",
            [(entry_id, tag, to_db_time(published)) for tag in tags],
        )

    def set_story(self, entry_id: str, story_id: str) -> None:
        self.conn.execute("UPDATE entries SET story_id = ? WHERE id = ?", (story_id, entry_id))
        content_changed(self.conn)

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


# Each candidate with its story's sources, in one statement. Most stories are one entry: when the
# story index holds one entry under the candidate's story id, it is the candidate, whose source
# is read already (counting reads only the index; listing the sources reads every member's row).
# A candidate without a story id is its own story, made of the entries naming it.
_CANDIDATES_QUERY = """
    SELECT g.fp_id, coalesce(e.story_id, e.id),
           CASE WHEN (SELECT count(*) FROM entries s WHERE s.story_id = e.story_id) = 1
                THEN e.source_id
                ELSE (SELECT group_concat(DISTINCT s.source_id) FROM entries s
                       WHERE s.story_id = coalesce(e.story_id, e.id)) END,
           e.id, e.source_id, e.title, e.published, e.canonical_url,
           g.signature, g.shingles, g.title_numbers, g.dates
      FROM entry_signatures g JOIN entries e ON e.id = g.entry_id
     WHERE g.fp_id IN (SELECT value FROM json_each(?))
"""

# fp id, story id, the story's sources (comma-separated; None for none), then what the candidate
# is made of, as stored: entry id, source id, title, published, canonical URL, and the
# fingerprint: signature, shingles, title numbers, dates (as write_story_keys stores them).
_CandidateRow = tuple[int, str, str | None, str, str, str, str, str | None, bytes, bytes, str, str]


def _stored_candidate(row: _CandidateRow) -> StoryItem:
    """A candidate as stored: no text, its fingerprint unpacked instead."""
    (_, story_id, members, entry_id, source_id, title, published, url, signature, shingles,
     numbers, dates) = row  # fmt: skip
    return StoryItem(
        entry_id=entry_id,
        source_id=source_id,
        title=title,
        lead="",
        published=datetime.fromisoformat(published),  # as to_db_time writes: 10x strptime
        canonical_url=url,
        story_id=story_id,
        story_sources=_sources(members),
        fingerprint=Fingerprint.unpacked_later(
            signature=signature,
            shingles=shingles,
            title_numbers=numbers,
            dates=dates,
            release=release_of(url),
            chinese=has_chinese(title),
        ),
    )


def _sources(members: str | None) -> frozenset[str]:
    """The sources of a story from their list as read."""
    return frozenset() if members is None else frozenset(members.split(","))


def _db_time(text: str) -> datetime:
    when = from_db_time(text)
    assert when is not None
    return when


def _epoch(when: datetime) -> int:
    """Seconds since 1970 (UTC): a 4-byte integer in the band index, where text took 20."""
    return int(when.astimezone(UTC).timestamp())
