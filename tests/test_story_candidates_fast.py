"""The fast candidate lookup answers exactly as the plain one it replaced: `BandIndex.ranked` on
random postings, and `story_candidates` on a real store through polls, merges, rollbacks,
deletions and another connection's writes. The reference below is the replaced code."""

from __future__ import annotations

import json
import sqlite3
import struct
import tempfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import replace
from datetime import datetime, timedelta
from itertools import repeat
from operator import lshift, or_, sub
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.process.dedupe import (
    BANDS,
    NUM_HASHES,
    Fingerprint,
    StoryItem,
    fingerprint,
    has_chinese,
    release_of,
)
from aggregator.settings import SourceSettings
from aggregator.store import PollWrite, Store
from aggregator.store.database import transaction
from aggregator.store.stories import (
    DAY,
    MAX_CANDIDATES,
    MIN_EQUAL_VALUES,
    BandIndex,
    CandidateQuery,
    IndexedKeys,
    StoriesStore,
    StoryKeys,
    _as_int,
    _epoch,
    _equal_values,
    merge_stories,
)
from tests.feedmaker import rss
from tests.servers import FeedServer, Response
from tests.test_stories import (
    GOV_EN,
    GOV_ZH,
    NOW,
    RAIN_GOV,
    RAIN_NEWS,
    SCMP,
    config_text,
    entry,
    run_cli,
)

WEEK = timedelta(days=7)
_SIGNATURE = struct.Struct(f"<{NUM_HASHES}I")

# --- the reference: the code before the fast path, unchanged but for its cache -----------------

_RANK_SHIFT = 40
_FP_MASK = (1 << _RANK_SHIFT) - 1


def reference_ranked(
    index: BandIndex, band_keys: Sequence[int], lo: int, hi: int, signature: Sequence[int] = ()
) -> list[int]:
    hits: list[int] = []
    postings = index._postings
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
    shared = Counter(hits)
    missing = map(sub, repeat(BANDS + 1), shared.values())
    ranks = sorted(map(or_, map(lshift, missing, repeat(_RANK_SHIFT)), shared.keys()))
    published = index._published
    chosen: list[int] = []
    for rank in ranks:
        fp_id = rank & _FP_MASK
        if lo <= published[fp_id] <= hi:
            chosen.append(fp_id)
            if len(chosen) == MAX_CANDIDATES:
                break
    if len(signature) != NUM_HASHES:
        return chosen
    mine = _as_int(_SIGNATURE.pack(*signature))
    signatures = index._signatures
    return [
        fp_id
        for fp_id in chosen
        if fp_id in signatures
        and reference_equal_values(mine, signatures[fp_id]) >= MIN_EQUAL_VALUES
    ]


_LANES = tuple(
    sum(((1 << bits) - 1) << (32 * k) for k in range(NUM_HASHES)) for bits in (16, 8, 4, 2, 1)
)


def reference_equal_values(a: int, b: int) -> int:
    diff = a ^ b
    for shift, mask in zip((16, 8, 4, 2, 1), _LANES, strict=True):
        diff = (diff | (diff >> shift)) & mask
    return NUM_HASHES - diff.bit_count()


def reference_candidates(conn: sqlite3.Connection, fp_ids: set[int]) -> dict[int, StoryItem]:
    if not fp_ids:
        return {}
    cursor = conn.cursor()
    cursor.row_factory = None
    rows = cursor.execute(
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
    return {row[0]: _reference_item(row, sources.get(row[6], frozenset())) for row in rows}


def _reference_item(row: tuple[object, ...], story_sources: frozenset[str]) -> StoryItem:
    _, entry_id, source_id, title, published, url, story_id, signature, shingles, numbers, dates = (
        row
    )
    assert isinstance(title, str) and isinstance(published, str) and isinstance(numbers, str)
    assert isinstance(signature, bytes) and isinstance(shingles, bytes)
    assert isinstance(dates, str) and (url is None or isinstance(url, str))
    return StoryItem(
        entry_id=str(entry_id),
        source_id=str(source_id),
        title=title,
        lead="",
        published=datetime.fromisoformat(published),
        canonical_url=url,
        story_id=str(story_id),
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


def _unpack(blob: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{len(blob) // 4}I", blob)


def _date(text: str) -> tuple[int, int]:
    month, _, day = text.partition("-")
    return int(month), int(day)


def reference_story_candidates(
    store: StoriesStore, queries: Sequence[CandidateQuery], window: timedelta
) -> list[list[StoryItem]]:
    if not queries:
        return []
    reach = int(window.total_seconds())
    spans = [(_epoch(q.published) - reach, _epoch(q.published) + reach) for q in queries]
    days = {day for lo, hi in spans for day in range(lo // DAY, hi // DAY + 1)}
    store.band_index.refresh(store.conn, days)
    wanted = [
        set(reference_ranked(store.band_index, q.band_keys, lo, hi, _values(q.signature)))
        for q, (lo, hi) in zip(queries, spans, strict=True)
    ]
    by_url: defaultdict[str, set[int]] = defaultdict(set)
    urls = sorted({u for q in queries for u in q.urls if u})
    if urls:
        rows = store.conn.execute(
            """
            SELECT e.canonical_url, g.fp_id FROM entries e
              JOIN entry_signatures g ON g.entry_id = e.id
             WHERE e.canonical_url IN (SELECT value FROM json_each(?))
            """,
            (json.dumps(urls),),
        )
        for url, fp_id in rows:
            by_url[url].add(fp_id)
    for n, q in enumerate(queries):
        for url in q.urls:
            wanted[n] |= by_url.get(url, set())
    loaded = reference_candidates(store.conn, set().union(*wanted))
    return [
        [
            loaded[fp_id]
            for fp_id in sorted(ids)
            if fp_id in loaded and loaded[fp_id].entry_id != q.entry_id
        ]
        for q, ids in zip(queries, wanted, strict=True)
    ]


def _values(signature: Sequence[int] | bytes) -> Sequence[int]:
    """The reference took values only: a packed signature as its values."""
    if isinstance(signature, bytes):
        return _SIGNATURE.unpack(signature) if len(signature) == _SIGNATURE.size else ()
    return signature


# --- ranked on random postings ---------------------------------------------------------------

# Few band keys and values, so fingerprints share many bands and agree on many values; some
# values use the top bits (lanes must not carry into each other).
_KEYS = st.integers(0, 24)
_VALUE = st.one_of(st.integers(0, 3), st.integers(0, 2**32 - 1), st.just(2**32 - 1))
_SIG = st.lists(_VALUE, min_size=NUM_HASHES, max_size=NUM_HASHES)
_STORED = st.tuples(
    st.one_of(st.integers(1, 300), st.integers(1, 2**40 - 1)),  # fp ids fit the old ranks
    st.integers(0, 100),  # published
    st.lists(_KEYS, max_size=12),  # band keys (a repeated key counts twice)
    st.one_of(_SIG, st.just([]), st.lists(_VALUE, max_size=3)),  # stored signature
)


@settings(max_examples=400, deadline=None)
@given(
    stored=st.lists(_STORED, max_size=60, unique_by=lambda s: s[0]),
    band_keys=st.lists(_KEYS, max_size=20),
    bounds=st.tuples(st.integers(-5, 105), st.integers(-5, 105)),
    signature=st.one_of(_SIG, st.just([]), st.lists(_VALUE, max_size=5)),
    packed=st.booleans(),
)
def test_ranked_answers_as_the_reference(
    stored: list[tuple[int, int, list[int], list[int]]],
    band_keys: list[int],
    bounds: tuple[int, int],
    signature: list[int],
    packed: bool,
) -> None:
    index = BandIndex()
    for fp_id, published, keys, values in stored:
        index._add(IndexedKeys(fp_id, published, keys, _pack(values)))
    lo, hi = bounds
    expected = reference_ranked(index, band_keys, lo, hi, signature)
    asked: Sequence[int] | bytes = signature
    if packed and len(signature) == NUM_HASHES:
        asked = _SIGNATURE.pack(*signature)
    assert index.ranked(band_keys, lo, hi, asked) == expected
    assert index.ranked(band_keys, lo, hi) == reference_ranked(index, band_keys, lo, hi)


def test_ranked_takes_the_most_shared_then_the_oldest_in_the_window() -> None:
    index = BandIndex()
    # fp id n shares (n % 4) + 1 of the query's bands; every fifth is outside the window.
    for n in range(1, 41):
        published = 500 if n % 5 == 0 else 50
        index._add(IndexedKeys(n, published, list(range(n % 4 + 1)), b""))
    expected = reference_ranked(index, [0, 1, 2, 3], 0, 100)
    assert expected[:4] == [3, 7, 11, 19]  # four bands shared (15 is outside the window)
    assert len(expected) == MAX_CANDIDATES
    assert index.ranked([0, 1, 2, 3], 0, 100) == expected


def _pack(values: Sequence[int]) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


@settings(max_examples=500, deadline=None)
@given(a=_SIG, b=_SIG, same=st.lists(st.booleans(), min_size=NUM_HASHES, max_size=NUM_HASHES))
def test_equal_values_counts_the_equal_values(a: list[int], b: list[int], same: list[bool]) -> None:
    b = [x if keep else y for x, y, keep in zip(a, b, same, strict=True)]
    count = _equal_values(_as_int(_SIGNATURE.pack(*a)), _as_int(_SIGNATURE.pack(*b)))
    assert count == sum(x == y for x, y in zip(a, b, strict=True))


# --- story_candidates on a real store --------------------------------------------------------

WORDS = "harbour rain signal funding research shenzhen tunnel budget ferry typhoon school court"
WORDS_LIST = WORDS.split()


def title_of(words: Sequence[int]) -> str:
    return " ".join(WORDS_LIST[w % len(WORDS_LIST)] for w in words)


def query_of(entry_id: str, title: str, published: datetime, url: str = "") -> CandidateQuery:
    fp = fingerprint(title, "", url or None)
    return CandidateQuery(entry_id, fp.band_keys, (url,), published, fp.signature)


def check(store: Store, queries: Sequence[CandidateQuery]) -> list[list[StoryItem]]:
    """The store's answer, asserted equal to the reference's (asked after, so each answers from
    the same band index)."""
    found = store.story_candidates(queries, WEEK)
    assert found == reference_story_candidates(store, queries, WEEK)
    return found


def put(
    store: Store, n: int, title: str, *, hours: int = 0, source: str = "s1", lead: str = ""
) -> None:
    """Entry `n` stored with its story keys (inside the caller's transaction, if any)."""
    e = replace(
        entry(n, NOW - timedelta(hours=hours), title=title), source_id=source, summary_text=lead
    )
    keys = StoryKeys(e.id, e.published, fingerprint(e.title, e.summary_text, e.canonical_url))
    store.apply_poll(PollWrite(source, NOW, 200, None, None, NOW, [e], [], [keys]))


SOURCES = [SourceSettings(id=s, url=f"https://{s}.example/", name=s) for s in ("s1", "s2", "s3")]


def new_store(path: Path | str) -> Store:
    store = Store(path)
    store.sync_sources(SOURCES, NOW)
    return store


def test_candidates_stay_exact_through_merges_rollbacks_deletions_and_other_writers(
    tmp_path: Path,
) -> None:
    store = new_store(tmp_path / "aggregator.db")
    base = "harbour tunnel ferry fares rise for the summer"
    for n, source in enumerate(("s1", "s2", "s3", "s1"), start=1):
        put(store, n, base + f" {n}" * (n % 2), hours=n, source=source)
    queries = [query_of("new", base, NOW), query_of("e1", base, NOW)]
    first = check(store, queries)
    assert len(first[0]) == 4 and check(store, queries) == first  # read again: from the cache

    # Stories merge: the same fingerprints, new story ids and sources.
    with transaction(store.conn) as conn:
        merge_stories(conn, [("e2", "e1"), ("e3", "e1")])
    merged = check(store, queries)
    assert {c.story_id for c in merged[0]} == {"e1", "e4"}
    assert {c.story_sources for c in merged[0] if c.story_id == "e1"} == {
        frozenset({"s1", "s2", "s3"})
    }
    store.set_story("e4", "e1")
    assert {c.story_id for c in check(store, queries)[0]} == {"e1"}

    # A rolled-back write leaves its fp id free; the next fingerprint takes it.
    with pytest.raises(RuntimeError), transaction(store.conn):
        put(store, 5, base + " again", source="s2")
        inside = check(store, queries)
        assert "e5" in {c.entry_id for c in inside[0]}
        raise RuntimeError("rolled back")
    put(store, 6, base + " on ferries", source="s3")
    after = check(store, queries)
    assert "e5" not in {c.entry_id for c in after[0]} and "e6" in {c.entry_id for c in after[0]}
    # The same entry again under the freed id, with another lead: another fingerprint.
    with pytest.raises(RuntimeError), transaction(store.conn):
        put(store, 7, base, source="s1")
        check(store, queries)
        raise RuntimeError("rolled back")
    put(store, 7, base, source="s1", lead="Fares rise by ten per cent.")
    check(store, queries)

    # Deleting the newest entry frees its fp id too.
    store.conn.execute("DELETE FROM entries WHERE id = 'e7'")
    check(store, queries)
    put(store, 8, base + " for students", source="s2")
    check(store, queries)

    # An entry changed without new story keys: the stored row changes under the same fp id.
    changed = entry(1, NOW - timedelta(hours=1), title=base + " (updated)")
    store.apply_poll(PollWrite("s1", NOW, 200, None, None, NOW, [], [changed], []))
    assert "harbour tunnel ferry fares rise for the summer (updated)" in {
        c.title for c in check(store, queries)[0]
    }
    # A story id left empty (older rows): the entry is its own story, its sources the others'.
    store.conn.execute("UPDATE entries SET story_id = NULL WHERE id = 'e1'")
    store.conn.execute("UPDATE entries SET story_id = 'e1' WHERE id = 'e6'")
    check(store, queries)

    # Another connection writes and merges: data_version makes the index start over.
    other = new_store(store.path)
    put(other, 9, base + " from the other writer", source="s3")
    with transaction(other.conn) as conn:
        merge_stories(conn, [("e9", "e8")])
    other.close()
    found = check(store, queries)
    assert {c.story_id for c in found[0] if c.entry_id == "e9"} == {"e8"}
    store.close()


# (what, title words, entry, entry): each op uses what it needs.
_OPS = st.lists(
    st.tuples(
        st.sampled_from(["put", "merge", "rollback", "delete", "retitle", "other"]),
        st.lists(st.integers(0, 11), min_size=3, max_size=7),
        st.integers(0, 30),
        st.integers(0, 30),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS, asked=st.lists(st.lists(st.integers(0, 11), min_size=3, max_size=7), max_size=4))
def test_random_writes_never_make_candidates_stale(
    ops: list[tuple[str, list[int], int, int]], asked: list[list[int]]
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "aggregator.db"
        store = new_store(path)
        titles = [title_of(words) for words in asked]
        for count, (kind, words, one, two) in enumerate(ops, start=1):
            source = SOURCES[count % 3].id
            if kind == "put":
                put(store, count, title_of(words), hours=count % 50, source=source)
                titles.append(title_of(words))
            elif kind == "merge":
                with transaction(store.conn) as conn:
                    merge_stories(conn, [(f"e{one}", f"e{two}")])
            elif kind == "rollback":  # its fp id is given again by the next write
                with suppress(RuntimeError), transaction(store.conn):
                    put(store, count, title_of(words), source=source)
                    _check_all(store, titles)
                    raise RuntimeError("rolled back")
            elif kind == "delete":
                store.conn.execute("DELETE FROM entries WHERE id = ?", (f"e{one}",))
            elif kind == "retitle":  # the row changes, not its fingerprint
                store.conn.execute(
                    "UPDATE entries SET title = title || ? WHERE id = ?",
                    (f" {WORDS_LIST[two % len(WORDS_LIST)]}", f"e{one}"),
                )
            else:
                other = Store(path)
                put(other, count, title_of(words), source=source)
                other.close()
            _check_all(store, titles)
        store.close()


def _check_all(store: Store, titles: Sequence[str]) -> None:
    queries = [query_of(f"q{n}", title, NOW) for n, title in enumerate(titles)]
    queries += [query_of(f"e{n}", title, NOW) for n, title in enumerate(titles[:3])]
    check(store, queries)


# --- polls from a real HTTP server -----------------------------------------------------------


def test_polls_answer_as_the_reference(
    http_server: FeedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[int] = []
    fast = StoriesStore.story_candidates

    def checked(
        self: StoriesStore, queries: Sequence[CandidateQuery], window: timedelta
    ) -> list[list[StoryItem]]:
        found = fast(self, queries, window)
        assert found == reference_story_candidates(self, queries, window)
        asked.append(sum(map(len, found)))
        return found

    monkeypatch.setattr(StoriesStore, "story_candidates", checked)
    http_server.routes.update(
        {
            "/gov-en": Response(200, rss([GOV_EN, RAIN_GOV])),
            "/gov-zh": Response(200, rss([GOV_ZH])),
            "/scmp": Response(200, rss([SCMP])),
            "/news": Response(200, rss([RAIN_NEWS])),
        }
    )
    config = tmp_path / "feeds.toml"
    config.write_text(config_text(http_server, tmp_path / "var"), encoding="utf-8")
    for source in ("gov-en", "gov-zh", "scmp", "news", "gov-en"):
        assert run_cli(config, "poll", source) == 0
    assert run_cli(config, "retag") == 0
    assert len(asked) >= 4 and sum(asked) > 0  # candidates were found and compared
