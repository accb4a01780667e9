"""parse | normalize | tag | fingerprint: the CPU-bound part of a poll, for one fetched source.

It needs no database writes, so a poll with many bodies to read runs it in worker processes,
one per core, while the main process fetches and stores; a small poll runs it inline, where a
process pool would cost more to start (~0.3 s) than it saves. A worker process reads the
stored content hashes itself (read-only), so it fingerprints only entries that are new or
changed; the store checks them again before writing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import multiprocessing
import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from aggregator.errors import ParseError
from aggregator.models import Entry, FetchResult, ParsedFeed
from aggregator.parse.feeds import parse_feed
from aggregator.parse.pages import parse_page
from aggregator.process.dedupe import (
    Fingerprint,
    fingerprint,
    has_chinese,
    release_of,
    unpack_fingerprint,
)
from aggregator.process.fingerprints import packed_fingerprints
from aggregator.process.normalize import normalize_entry
from aggregator.process.tag import Tagger, compile_rules
from aggregator.settings import Settings, SourceSettings, TagRule

log = logging.getLogger(__name__)

POOL_MIN_SOURCES = 8  # due sources before worker processes pay for their start
StartMethod = str  # "fork" or "spawn" (multiprocessing's names)
StoredHashes = Callable[[Sequence[str]], Mapping[str, str]]
_PoolKey = tuple[tuple[TagRule, ...], str, str]  # what worker processes are started with


@dataclass(frozen=True, slots=True)
class Prepared:
    """A fetched source read into tagged entries, with the fingerprint of each entry that is
    not stored as it is; or, when the body could not be read, why."""

    entries: tuple[Entry, ...] = ()
    fingerprints: Mapping[str, Fingerprint] = dataclasses.field(default_factory=dict)
    error: str | None = None


def prepare(
    source: SourceSettings,
    result: FetchResult,
    now: datetime,
    *,
    tagger: Tagger,
    timezone: str,
    stored_hashes: StoredHashes,
) -> Prepared:
    try:
        feed = parse(source, result, timezone)
    except ParseError as error:
        return Prepared(error=str(error))
    entries = tuple(
        _tagged(
            tagger,
            source,
            normalize_entry(p, source_id=source.id, base_url=result.url, first_seen=now),
        )
        for p in feed.entries
    )
    stored = stored_hashes([e.id for e in entries])
    changed: dict[str, Entry] = {}  # the first entry of each id that is not stored as it is
    for entry in entries:
        if entry.id not in changed and stored.get(entry.id) != entry.content_hash:
            changed[entry.id] = entry
    fingerprints = dict(zip(changed, story_fingerprints(list(changed.values())), strict=True))
    return Prepared(entries, fingerprints)


def parse(source: SourceSettings, result: FetchResult, timezone: str) -> ParsedFeed:
    assert result.content is not None
    if source.type == "html" and source.select is not None:
        return parse_page(
            result.content,
            url=result.url,
            select=source.select,
            timezone=timezone,
            content_type=result.content_type,
        )
    return parse_feed(result.content, url=result.url, content_type=result.content_type)


def story_fingerprint(entry: Entry) -> Fingerprint:
    return fingerprint(entry.title, entry.summary_text, entry.canonical_url)


def story_fingerprints(entries: Sequence[Entry]) -> list[Fingerprint]:
    """`story_fingerprint` of each entry, computed together (one feed's: ~2.3x cheaper)."""
    packed = packed_fingerprints([(e.title, e.summary_text, e.canonical_url) for e in entries])
    return [
        unpack_fingerprint(p, release_of(e.canonical_url), has_chinese(e.title))
        for p, e in zip(packed, entries, strict=True)
    ]


def _tagged(tagger: Tagger, source: SourceSettings, entry: Entry) -> Entry:
    tags = tagger.tags_for(entry, source_name=source.name, source_tags=source.tags)
    return dataclasses.replace(entry, tags=tags)


GC_THRESHOLD = 10_000  # allocations between two young collections while polling (700 by default)


@contextmanager
def few_collections() -> Iterator[None]:
    """Collect cycles less often meanwhile. Reading and storing entries allocates many
    containers that reference counting frees on its own; a young collection each 700 of them
    (CPython's default) cost ~0.4 s of a first poll of 10,000 items in the main process alone,
    ~0.05 s at one each 10,000. The thresholds are the process's: put back after."""
    thresholds = gc.get_threshold()
    gc.set_threshold(max(thresholds[0], GC_THRESHOLD), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


class Preparer:
    """Runs `prepare` for a poll: in worker processes once there is enough work, else on the
    `inline` executor (the thread that stores). Kept between polls by the worker, so the
    processes start once; they are started again when the tag rules change."""

    def __init__(self, processes: int | None = None, *, start: StartMethod | None = None) -> None:
        """`start`: how worker processes begin. By default they are forked when that is safe
        (Linux, and this process runs one thread when the poll starts): they then share the
        interpreter's imports and the compiled rules, ready in ~10 ms where a spawned one
        spends ~0.7 s of CPU (imports, compiling every rule's patterns) before its first body.
        Otherwise they are spawned."""
        self._processes = processes if processes is not None else (os.cpu_count() or 1)
        self._start = start
        self._pool: ProcessPoolExecutor | None = None
        self._pool_key: _PoolKey | None = None
        self._wanted: _PoolKey | None = None  # this poll's key, when it may use a pool
        self.started_by: StartMethod | None = None  # how the running processes began

    def use_pool(self, settings: Settings, db_path: Path | str, sources: int) -> bool:
        """Whether this poll reads in worker processes. They start at the first body to read
        (a poll of 304s never starts them), and again when the rules changed."""
        self._wanted = None
        if self._processes < 2 or sources < POOL_MIN_SOURCES or str(db_path) == ":memory:":
            return False
        key: _PoolKey = (settings.tags, settings.timezone, str(db_path))
        if self._pool is not None and key != self._pool_key:
            self.close()
        self._wanted = key
        return True

    @property
    def parallelism(self) -> int:
        """How many sources are read at once: one per worker process, or one inline."""
        return self._processes if self._wanted is not None else 1

    @property
    def pooled(self) -> bool:
        """Whether worker processes are running (started, and not broken since)."""
        return self._pool is not None

    def warm(self) -> list[Future[int]]:
        """Start the worker processes now (if this poll may use them); each future gives the
        process id of the worker that ran it."""
        pool = self._started()
        if pool is None:
            return []
        return [pool.submit(os.getpid) for _ in range(self._processes)]

    def start_early(self, tagger: Callable[[], Tagger]) -> None:
        """Fork the worker processes now, if this poll may use them and forking is safe: call
        it before the poll starts any thread. They inherit `tagger()`, compiled here once."""
        if self._pool is not None or self._wanted is None or self._start_method() != "fork":
            return
        compiled = tagger()
        # Objects of this process stay where they are: the children's collector leaves them
        # alone (no open database of ours is ever finalized in a child), and their pages shared.
        gc.freeze()
        try:
            pool = self._started("fork", compiled)
            assert pool is not None
            pool.submit(os.getpid)  # a forking pool starts every process at its first task
        finally:
            gc.unfreeze()

    def _start_method(self) -> StartMethod:
        if self._start is not None:
            return self._start
        one_thread = threading.active_count() == 1
        return "fork" if sys.platform == "linux" and one_thread else "spawn"

    def _started(
        self, method: StartMethod = "spawn", tagger: Tagger | None = None
    ) -> ProcessPoolExecutor | None:
        if self._pool is None and self._wanted is not None:
            if self._start is not None:
                method = self._start
            tags, timezone, db_path = self._wanted
            self._pool = ProcessPoolExecutor(
                self._processes,
                mp_context=multiprocessing.get_context(method),
                initializer=_start_worker,
                # Forked processes take these as they are; spawned ones get them pickled (not
                # the compiled tagger: each compiles the rules again).
                initargs=(tags, timezone, db_path, tagger if method == "fork" else None),
            )
            self._pool_key = self._wanted
            self.started_by = method
        return self._pool

    async def prepare(
        self,
        source: SourceSettings,
        result: FetchResult,
        now: datetime,
        *,
        inline: Executor,
        inline_prepare: Callable[[SourceSettings, FetchResult, datetime], Prepared],
    ) -> Prepared:
        loop = asyncio.get_running_loop()
        pool = self._started()
        if pool is not None:
            try:
                return await loop.run_in_executor(pool, _prepare_in_worker, source, result, now)
            except BrokenProcessPool:
                log.warning("a worker process died; reading the rest of this poll inline")
                self.close()
                self._wanted = None
        return await loop.run_in_executor(inline, inline_prepare, source, result, now)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool, self._pool_key, self.started_by = None, None, None


@dataclass(frozen=True, slots=True)
class _Worker:
    """What a worker process keeps between sources: the compiled rules, a read-only store."""

    tagger: Tagger
    timezone: str
    db: sqlite3.Connection


_worker: _Worker | None = None


def _start_worker(
    tags: tuple[TagRule, ...], timezone: str, db_path: str, tagger: Tagger | None
) -> None:
    global _worker
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])  # see few_collections
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, check_same_thread=False)
    _worker = _Worker(tagger or compile_rules(tags), timezone, db)


def _prepare_in_worker(source: SourceSettings, result: FetchResult, now: datetime) -> Prepared:
    assert _worker is not None, "the pool's initializer sets up each worker"
    worker = _worker

    def stored_hashes(entry_ids: Sequence[str]) -> Mapping[str, str]:
        found: dict[str, str] = {}
        for start in range(0, len(entry_ids), 500):
            chunk = list(entry_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            query = f"SELECT id, content_hash FROM entries WHERE id IN ({marks})"
            found.update(worker.db.execute(query, chunk).fetchall())
        return found

    return prepare(
        source,
        result,
        now,
        tagger=worker.tagger,
        timezone=worker.timezone,
        stored_hashes=stored_hashes,
    )
