"""The update pipeline; each source succeeds or fails on its own.

    due_sources | fetch | prepare (parse | normalize | tag | fingerprint)
                | plan_writes | group_stories | store.apply_poll

Fetches run concurrently (bounded overall and per host, see fetch.py). A fetched body is read
by `prepare` (prepare.py): in worker processes when the poll is big enough, else inline. Each
prepared source is then grouped into stories and stored on one worker thread, one transaction
per source, while the event loop goes on fetching. Sources that answered 304 or failed change
only their own row; those rows are written many to a transaction (`StateBatch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from aggregator.clock import Clock
from aggregator.errors import AggregatorError, FetchError, ParseError
from aggregator.fetch import Fetcher
from aggregator.models import (
    Entry,
    FetchRequest,
    FetchResult,
    SourceOutcome,
    SourceState,
    UpdateReport,
)
from aggregator.prepare import (
    POOL_MIN_SOURCES,
    Prepared,
    Preparer,
    few_collections,
    prepare,
    story_fingerprint,
)
from aggregator.process.dedupe import (
    Fingerprint,
    StoryItem,
    choose_story,
    counterpart_urls,
    fingerprint,
)
from aggregator.process.sanitize import SANITIZER_VERSION
from aggregator.process.tag import Tagger, compile_rules
from aggregator.schedule import due_sources, next_poll_after_failure, next_poll_after_success
from aggregator.settings import Settings, SourceSettings, StorySettings
from aggregator.store import PollWrite, Store
from aggregator.store.database import Checkpointer, begin, savepoints_in_memory
from aggregator.store.sources import SourceFailure
from aggregator.store.stories import CandidateQuery, StoryKeys

log = logging.getLogger(__name__)

OutcomeCallback = Callable[[SourceOutcome], None]
_T = TypeVar("_T")

STATE_BATCH_SIZE = 200  # source rows per transaction for 304s and failures
STATE_BATCH_SECONDS = 1.0  # ... or as old as this, whichever comes first
MIN_IN_FLIGHT = 64  # sources fetched but not yet stored, at least (see `_poll`)
WRITE_BATCH_SOURCES = 50  # sources stored in one transaction, at most
COMMIT_SECONDS = 0.25  # ... and its age when more sources are yet to come, at most
CHECKPOINT_SECONDS = 0.5  # of storing, between two checkpoints on the checkpoint thread


@dataclass(frozen=True, slots=True)
class WritePlan:
    """Which parsed entries are new, which changed, and how many are as stored."""

    inserts: tuple[Entry, ...]
    updates: tuple[Entry, ...]
    unchanged: int


def update(
    settings: Settings,
    store: Store,
    clock: Clock,
    *,
    only: Sequence[str] = (),
    force: bool = False,
    on_outcome: OutcomeCallback | None = None,
    preparer: Preparer | None = None,
) -> UpdateReport:
    """Poll the due sources (or `only` those, or all with `force`) and store what they hold.

    `preparer` runs the CPU-bound reading of bodies (kept by the worker between polls, so its
    processes start once); without one, a poll makes its own and closes it after."""
    now = clock.now()
    store.sync_sources(settings.sources, now)
    states = store.source_states()
    sources = due_sources(settings.sources, states, now, only=only, force=force)
    if not sources:
        return UpdateReport()
    own = preparer is None
    preparer = preparer or Preparer()
    tagger = functools.cache(lambda: compile_rules(settings.tags))  # worker processes have theirs
    with few_collections(), contextlib.ExitStack() as cleanup:
        if own:
            cleanup.callback(preparer.close)
        cleanup.enter_context(savepoints_in_memory(store.conn))
        if preparer.use_pool(settings, store.path, len(sources)) and _expect_bodies(
            sources, states
        ):
            preparer.start_early(tagger)  # before the poll starts its threads
        checkpointer = Checkpointer(store.conn, store.path)
        try:
            poll = _poll(
                settings, store, clock, preparer, tagger, checkpointer, sources, states, on_outcome
            )
            outcomes = asyncio.run(_with_checkpoints(poll, checkpointer))
        finally:
            checkpointer.close()
    return UpdateReport(tuple(outcomes))


def _expect_bodies(sources: Sequence[SourceSettings], states: Mapping[str, SourceState]) -> bool:
    """Whether enough of these sources will likely send a body for worker processes to pay:
    those with no validator to send (never fetched, or their server gives none) answer 200.
    Forking early costs ~40 ms even when every source then answers 304 (the fork, and the
    main process copying the pages it writes to afterwards), a third of such a poll."""
    unconditional = sum(
        1 for s in sources if states[s.id].etag is None and states[s.id].last_modified is None
    )
    return unconditional >= POOL_MIN_SOURCES


async def _with_checkpoints(poll: Coroutine[Any, Any, _T], checkpointer: Checkpointer) -> _T:
    """Run `poll`, checkpointing on a thread of its own every CHECKPOINT_SECONDS meanwhile."""
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="aggregator-checkpoint") as thread:

        async def checkpoints() -> None:
            while True:
                await asyncio.sleep(CHECKPOINT_SECONDS)
                await loop.run_in_executor(thread, checkpointer.checkpoint)

        task = asyncio.create_task(checkpoints())
        try:
            return await poll
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _poll(
    settings: Settings,
    store: Store,
    clock: Clock,
    preparer: Preparer,
    tagger: Callable[[], Tagger],
    checkpointer: Checkpointer,
    sources: Sequence[SourceSettings],
    states: dict[str, SourceState],
    on_outcome: OutcomeCallback | None,
) -> list[SourceOutcome]:
    outcomes = []
    agent = settings.fetch.user_agent
    # Memory stays flat however many sources there are: sources fetched and not yet stored
    # hold their bodies (bytes: bounded loosely), and read ones their entries (objects many
    # times the size of the bytes: only a few at a time, as many as keep every core busy).
    in_flight = asyncio.Semaphore(max(settings.fetch.concurrency, MIN_IN_FLIGHT))
    reading = asyncio.Semaphore(2 * preparer.parallelism + 2)
    loop = asyncio.get_running_loop()

    def prepare_inline(source: SourceSettings, result: FetchResult, now: datetime) -> Prepared:
        return prepare(
            source,
            result,
            now,
            tagger=tagger(),
            timezone=settings.timezone,
            stored_hashes=store.content_hashes,
        )

    async with Fetcher(settings.fetch, user_agent=agent, clock=clock) as fetcher:
        # Storing runs on one worker thread (so SQLite stays on one thread) while the event
        # loop keeps fetching; bodies are read in the preparer's processes, or on that thread too.
        batch = StateBatch(store)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="aggregator-store") as worker:
            group = _GroupTransaction(store, checkpointer)
            writer = _Writer(worker, group, len(sources))

            async def read(source: SourceSettings, result: FetchResult) -> Prepared:
                try:
                    return await preparer.prepare(
                        source, result, clock.now(), inline=worker, inline_prepare=prepare_inline
                    )
                except Exception as error:  # a bug must cost one source, not the whole poll
                    log.exception("unexpected error while reading %s", source.id)
                    return Prepared(error=f"internal error: {error!r}")

            async def poll_one(source: SourceSettings) -> None:
                async with in_flight:
                    state = states[source.id]
                    request = FetchRequest(source.id, state.url, state.etag, state.last_modified)
                    started = time.perf_counter()
                    result: FetchResult | FetchError
                    try:
                        result = await fetcher.fetch(request)
                    except FetchError as error:
                        result = error
                    args: ProcessArgs
                    if isinstance(result, FetchError) or result.not_modified:
                        args = (settings, store, clock, batch, source, state, result, None)
                        committed = await writer.write(args)
                    else:
                        async with reading:
                            prepared = await read(source, result)
                            args = (settings, store, clock, batch, source, state, result, prepared)
                            committed = await writer.write(args)
                outcome = await committed
                outcome = dataclasses.replace(outcome, duration=time.perf_counter() - started)
                outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)

            try:
                await asyncio.gather(*(poll_one(s) for s in sources))
                await loop.run_in_executor(worker, batch.flush)
            finally:
                worker.submit(group.abandon)  # after what is queued; nothing to do normally
    order = {s.id: i for i, s in enumerate(sources)}
    return sorted(outcomes, key=lambda o: order[o.source_id])


ProcessArgs = tuple[
    Settings,
    Store,
    Clock,
    "StateBatch",
    SourceSettings,
    SourceState,
    FetchResult | FetchError,
    Prepared | None,
]


_Committed = asyncio.Future[SourceOutcome]  # a source's outcome, told at the commit


class _Writer:
    """Prepared sources waiting for the store thread, stored many to a transaction, each in its
    own savepoint (all or nothing, alone).

    A commit costs more than the rows of a source or two: it writes each page the transaction
    changed to the log, and a first poll's rows land all over the indexes (random ids). So
    while the poll goes on, the transaction stays open for the next sources until it holds
    WRITE_BATCH_SOURCES, is COMMIT_SECONDS old, or the poll has handed in its last source.
    `write` returns once the source is written, its outcome to come with the commit: the
    poll goes on reading meanwhile."""

    def __init__(self, thread: ThreadPoolExecutor, group: _GroupTransaction, sources: int) -> None:
        self._thread = thread
        self._group = group
        self._expected = sources  # the sources the poll will hand in
        self._handed = 0
        self._waiting: list[tuple[ProcessArgs, asyncio.Future[_Committed]]] = []
        self._written: list[tuple[_Committed, SourceOutcome]] = []  # in the open transaction
        self._opened_at = 0.0
        self._arrived = asyncio.Event()
        self._draining: asyncio.Task[None] | None = None

    async def write(self, args: ProcessArgs) -> _Committed:
        future: asyncio.Future[_Committed] = asyncio.get_running_loop().create_future()
        self._waiting.append((args, future))
        self._handed += 1
        self._arrived.set()
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting or self._written:
                room = WRITE_BATCH_SOURCES - len(self._written)
                if self._waiting and room > 0:
                    taken = self._waiting[:room]
                    del self._waiting[:room]
                    if not self._written:
                        self._opened_at = loop.time()
                    items = [args for args, _ in taken]
                    outcomes = await loop.run_in_executor(self._thread, self._group.write, items)
                    for (_, future), outcome in zip(taken, outcomes, strict=True):
                        committed: _Committed = loop.create_future()
                        self._written.append((committed, outcome))
                        future.set_result(committed)
                    continue
                wait = self._opened_at + COMMIT_SECONDS - loop.time()
                if room > 0 and self._handed < self._expected and wait > 0:
                    self._arrived.clear()  # nothing waiting: until the next source, or the time
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._arrived.wait(), wait)
                    continue
                written, self._written = self._written, []
                failure = await loop.run_in_executor(self._thread, self._group.commit)
                for committed, outcome in written:
                    if failure is not None:
                        outcome = SourceOutcome(outcome.source_id, "error", error=failure)
                    committed.set_result(outcome)
        finally:
            self._draining = None


class _GroupTransaction:
    """The store thread's side of `_Writer`: one transaction open across several hand-ins.
    When it cannot commit (a full disk, say), each of its sources is reported failed and
    polled again next time."""

    def __init__(self, store: Store, checkpointer: Checkpointer | None = None) -> None:
        self._store = store
        self._checkpointer = checkpointer
        self._open = False
        self._broken: Exception | None = None  # a bug met mid-transaction: roll it all back

    def write(self, items: Sequence[ProcessArgs]) -> list[SourceOutcome]:
        """`_process` each source in the transaction, opened first if none is."""
        try:
            if not self._open:
                begin(self._store.conn)
                self._open = True
            return [_process(*args) for args in items]
        except Exception as error:  # each source's own errors are outcomes already
            if self._open:
                self._broken = self._broken or error
                message = f"cannot store this poll: {error}"  # as the commit will say
            else:
                message = self._failed(error)
            return [SourceOutcome(args[4].id, "error", error=message) for args in items]

    def commit(self) -> str | None:
        """Commit the open transaction; returns why it failed, if it did (then rolled back)."""
        if not self._open:
            return None
        broken, self._open, self._broken = self._broken, False, None
        try:
            if broken is not None:
                raise broken
            self._store.conn.execute("COMMIT")
        except Exception as error:
            self._roll_back()  # a failed COMMIT can leave the transaction open
            return self._failed(error)
        if self._checkpointer is not None:
            self._checkpointer.after_commit()
        return None

    def abandon(self) -> None:
        """Roll back a transaction left open by a poll cut short (its outcomes never told)."""
        if self._open:
            self._open, self._broken = False, None
            self._roll_back()
            self._store.band_index.clear()

    def _roll_back(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            if self._store.conn.in_transaction:
                self._store.conn.execute("ROLLBACK")

    def _failed(self, error: Exception) -> str:
        self._store.band_index.clear()  # it may hold entries the rollback undid
        message = f"cannot store this poll: {error}"
        log.error(message)
        return message


class StateBatch:
    """Source rows of 304s and failures, written many to a transaction instead of one each.

    Such a poll changes only its source's row (validators, next poll, error count), so losing
    an unwritten batch to a crash is harmless: those sources are simply polled again. Entries
    are never batched; they go in one transaction with their source's row (`apply_poll`).
    Used from the worker thread only, like the store.
    """

    def __init__(
        self,
        store: Store,
        *,
        size: int = STATE_BATCH_SIZE,
        seconds: float = STATE_BATCH_SECONDS,
    ) -> None:
        self._store = store
        self._size = size
        self._seconds = seconds
        self._polls: list[PollWrite] = []
        self._failures: list[SourceFailure] = []
        self._oldest: float | None = None

    def add(self, write: PollWrite | SourceFailure) -> None:
        if isinstance(write, PollWrite):
            self._polls.append(write)
        else:
            self._failures.append(write)
        now = time.monotonic()
        if self._oldest is None:
            self._oldest = now
        pending = len(self._polls) + len(self._failures)
        if pending >= self._size or now - self._oldest >= self._seconds:
            self.flush()

    def flush(self) -> None:
        if self._polls or self._failures:
            self._store.record_states(self._polls, self._failures)
        self._polls, self._failures, self._oldest = [], [], None


def _process(
    settings: Settings,
    store: Store,
    clock: Clock,
    batch: StateBatch,
    source: SourceSettings,
    state: SourceState,
    result: FetchResult | FetchError,
    prepared: Prepared | None,
) -> SourceOutcome:
    """plan_writes | group_stories | store, for one fetched and prepared source."""
    now = clock.now()
    try:
        if isinstance(result, FetchError):
            raise result
        if result.not_modified:
            batch.add(_poll_write(source, result, now))
            _record_redirect(store, state, result)
            return SourceOutcome(source.id, "not-modified")
        assert prepared is not None
        if prepared.error is not None:
            raise ParseError(prepared.error)
        entries = prepared.entries
        plan = plan_writes(entries, store.content_hashes([e.id for e in entries]))
        plan, story_writes = group_stories(store, plan, settings.stories, prepared.fingerprints)
        store.apply_poll(_poll_write(source, result, now, plan, story_writes))
        _record_redirect(store, state, result)
        return SourceOutcome(
            source.id,
            "ok",
            new=len(plan.inserts),
            updated=len(plan.updates),
            unchanged=plan.unchanged,
        )
    except AggregatorError as error:
        return _failed(batch, source, state, now, error)
    except Exception as error:  # a bug must cost one source, not the whole poll
        log.exception("unexpected error while polling %s", source.id)
        return _failed(batch, source, state, now, error)


def _record_redirect(store: Store, state: SourceState, result: FetchResult) -> None:
    """Track a permanent redirect; nothing to read or write when there is none, now or before."""
    if result.permanent_redirect is not None or state.moved_to is not None:
        store.record_redirect(state.source_id, result.permanent_redirect)


def plan_writes(entries: Sequence[Entry], stored_hashes: dict[str, str]) -> WritePlan:
    """Split parsed entries into new, changed and unchanged; the first of duplicate ids wins."""
    inserts: list[Entry] = []
    updates: list[Entry] = []
    unchanged = 0
    seen: set[str] = set()
    for entry in entries:
        if entry.id in seen:
            continue
        seen.add(entry.id)
        stored = stored_hashes.get(entry.id)
        if stored is None:
            inserts.append(entry)
        elif stored != entry.content_hash:
            updates.append(entry)
        else:
            unchanged += 1
    return WritePlan(tuple(inserts), tuple(updates), unchanged)


def group_stories(
    store: Store,
    plan: WritePlan,
    settings: StorySettings,
    fingerprints: Mapping[str, Fingerprint] | None = None,
) -> tuple[WritePlan, StoryWrites]:
    """New entries join the story of a stored near-duplicate (or start their own); changed
    ones keep their story. Returns the plan with story ids set, and what else to store.
    `fingerprints` holds those already computed (by entry id); the others are computed here.

    The new entries of one poll are looked up together: none is stored yet, so they were
    never each other's candidates anyway."""
    known = fingerprints or {}
    keys: list[StoryKeys] = []
    merges: list[tuple[str, str]] = []
    inserts = []
    items = [story_item(e) for e in plan.inserts]
    assigned = assign_stories(
        store, items, settings, [known.get(e.id) or story_fingerprint(e) for e in plan.inserts]
    )
    for entry, (story_id, entry_keys, entry_merges) in zip(plan.inserts, assigned, strict=True):
        inserts.append(dataclasses.replace(entry, story_id=story_id))
        keys.append(entry_keys)
        merges += [(absorbed, story_id) for absorbed in entry_merges]
    stored = store.story_ids_of([e.id for e in plan.updates])
    updates = []
    for entry in plan.updates:
        updates.append(dataclasses.replace(entry, story_id=stored.get(entry.id, entry.id)))
        fp = known.get(entry.id) or story_fingerprint(entry)
        keys.append(story_keys(entry.id, entry.published, fp))
    grouped = dataclasses.replace(plan, inserts=tuple(inserts), updates=tuple(updates))
    return grouped, StoryWrites(tuple(keys), tuple(merges))


@dataclass(frozen=True, slots=True)
class StoryWrites:
    """Band keys and signatures to store, and stories to fold into others."""

    keys: tuple[StoryKeys, ...] = ()
    merges: tuple[tuple[str, str], ...] = ()  # (story, into story)


def assign_story(
    store: Store, item: StoryItem, settings: StorySettings
) -> tuple[str, StoryKeys, tuple[str, ...]]:
    """The story an entry belongs to, its keys, and the stories it links to that one."""
    return assign_stories(store, [item], settings)[0]


def assign_stories(
    store: Store,
    items: Sequence[StoryItem],
    settings: StorySettings,
    fingerprints: Sequence[Fingerprint] | None = None,
) -> list[tuple[str, StoryKeys, tuple[str, ...]]]:
    """`assign_story` for several entries that cannot be each other's candidates (one poll of
    one source): each fingerprinted once (unless given), one batched candidate lookup, then the
    pure decision.
    """
    window = timedelta(seconds=settings.window)
    if fingerprints is None:
        fingerprints = [fingerprint(i.title, i.lead, i.canonical_url) for i in items]
    bands = [fp.band_keys for fp in fingerprints]
    queries = [
        CandidateQuery(
            item.entry_id,
            item_bands,
            (item.canonical_url or "", *counterpart_urls(item.canonical_url, chinese=fp.chinese)),
            item.published,
            fp.signature if fp.packed is None else fp.packed.signature,  # packed: not packed again
        )
        for item, fp, item_bands in zip(items, fingerprints, bands, strict=True)
    ]
    found = store.story_candidates(queries, window)
    assigned: list[tuple[str, StoryKeys, tuple[str, ...]]] = []
    for item, fp, item_bands, candidates in zip(items, fingerprints, bands, found, strict=True):
        match = choose_story(
            item, candidates, threshold=settings.threshold, window=window, new_fingerprint=fp
        )
        keys = StoryKeys(item.entry_id, item.published, fp, item_bands)
        if match is None:
            assigned.append((item.entry_id, keys, ()))
        else:
            assigned.append((match.story_id, keys, match.merges))
    return assigned


def story_item(entry: Entry) -> StoryItem:
    return StoryItem(
        entry.id, entry.source_id, entry.title, entry.summary_text, entry.published,
        entry.canonical_url,
    )  # fmt: skip


def story_keys(entry_id: str, published: datetime, fp: Fingerprint) -> StoryKeys:
    return StoryKeys(entry_id, published, fp)


def _poll_write(
    source: SourceSettings,
    result: FetchResult,
    now: datetime,
    plan: WritePlan | None = None,
    stories: StoryWrites | None = None,
) -> PollWrite:
    return PollWrite(
        source_id=source.id,
        at=now,
        status=result.status,
        etag=result.etag,
        last_modified=result.last_modified,
        next_poll_at=next_poll_after_success(now, source.every, max_age=result.max_age),
        inserts=plan.inserts if plan else (),
        updates=plan.updates if plan else (),
        story_keys=stories.keys if stories else (),
        story_merges=stories.merges if stories else (),
        sanitized_by=SANITIZER_VERSION,  # normalize_entry cleaned every summary
    )


def _failed(
    batch: StateBatch, source: SourceSettings, state: SourceState, now: datetime, error: Exception
) -> SourceOutcome:
    message = str(error) if isinstance(error, AggregatorError) else f"internal error: {error!r}"
    status = error.status if isinstance(error, FetchError) else None
    retry_after = error.retry_after if isinstance(error, FetchError) else None
    failures = state.consecutive_failures + 1
    next_poll = next_poll_after_failure(now, source.every, failures, retry_after=retry_after)
    # 410 Gone: the publisher says it will not come back.
    batch.add(SourceFailure(source.id, now, message, status, next_poll, disable=status == 410))
    return SourceOutcome(source.id, "error", error=message)
