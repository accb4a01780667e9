"""The update pipeline; each source succeeds or fails on its own.

    due_sources | fetch | parse | normalize | tag | plan_writes | group_stories | store.apply_poll

Fetches run concurrently (bounded overall and per host, see fetch.py); each result is then
parsed, cleaned, tagged and stored on one worker thread, one transaction per source, while the
event loop goes on fetching. Sources that answered 304 or failed change only their own row;
those rows are written many to a transaction (`StateBatch`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from aggregator.clock import Clock
from aggregator.errors import AggregatorError, FetchError
from aggregator.fetch import Fetcher
from aggregator.models import (
    Entry,
    FetchRequest,
    FetchResult,
    ParsedFeed,
    SourceOutcome,
    SourceState,
    UpdateReport,
)
from aggregator.parse.feeds import parse_feed
from aggregator.parse.pages import parse_page
from aggregator.process.dedupe import (
    Fingerprint,
    StoryItem,
    choose_story,
    counterpart_urls,
    fingerprint,
)
from aggregator.process.normalize import normalize_entry
from aggregator.process.tag import Tagger, compile_rules
from aggregator.schedule import due_sources, next_poll_after_failure, next_poll_after_success
from aggregator.settings import Settings, SourceSettings, StorySettings
from aggregator.store import PollWrite, Store
from aggregator.store.sources import SourceFailure
from aggregator.store.stories import CandidateQuery, StoryKeys

log = logging.getLogger(__name__)

OutcomeCallback = Callable[[SourceOutcome], None]

STATE_BATCH_SIZE = 200  # source rows per transaction for 304s and failures
STATE_BATCH_SECONDS = 1.0  # ... or as old as this, whichever comes first


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
) -> UpdateReport:
    """Poll the due sources (or `only` those, or all with `force`) and store what they hold."""
    now = clock.now()
    store.sync_sources(settings.sources, now)
    states = store.source_states()
    sources = due_sources(settings.sources, states, now, only=only, force=force)
    if not sources:
        return UpdateReport()
    tagger = compile_rules(settings.tags)
    outcomes = asyncio.run(_poll(settings, store, clock, tagger, sources, states, on_outcome))
    return UpdateReport(tuple(outcomes))


async def _poll(
    settings: Settings,
    store: Store,
    clock: Clock,
    tagger: Tagger,
    sources: Sequence[SourceSettings],
    states: dict[str, SourceState],
    on_outcome: OutcomeCallback | None,
) -> list[SourceOutcome]:
    outcomes = []
    agent = settings.fetch.user_agent
    async with Fetcher(settings.fetch, user_agent=agent, clock=clock) as fetcher:

        async def fetch(
            source: SourceSettings,
        ) -> tuple[SourceSettings, float, FetchResult | FetchError]:
            state = states[source.id]
            request = FetchRequest(source.id, state.url, state.etag, state.last_modified)
            started = time.perf_counter()
            try:
                return source, started, await fetcher.fetch(request)
            except FetchError as error:
                return source, started, error

        # Parsing and storing run on one worker thread (so SQLite stays on one thread) while
        # the event loop keeps fetching the other sources.
        loop = asyncio.get_running_loop()
        batch = StateBatch(store)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="aggregator-process") as worker:
            for next_done in asyncio.as_completed([fetch(s) for s in sources]):
                source, started, result = await next_done
                args = (settings, store, clock, tagger, batch, source, states[source.id], result)
                outcome = await loop.run_in_executor(worker, _process, *args)
                outcome = dataclasses.replace(outcome, duration=time.perf_counter() - started)
                outcomes.append(outcome)
                if on_outcome is not None:
                    on_outcome(outcome)
            await loop.run_in_executor(worker, batch.flush)
    order = {s.id: i for i, s in enumerate(sources)}
    return sorted(outcomes, key=lambda o: order[o.source_id])


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
    tagger: Tagger,
    batch: StateBatch,
    source: SourceSettings,
    state: SourceState,
    result: FetchResult | FetchError,
) -> SourceOutcome:
    """parse | normalize | tag | plan_writes | store, for one fetched source."""
    now = clock.now()
    try:
        if isinstance(result, FetchError):
            raise result
        if result.not_modified:
            batch.add(_poll_write(source, result, now))
            _record_redirect(store, state, result)
            return SourceOutcome(source.id, "not-modified")
        feed = _parse(settings, source, result)
        entries = [
            _tagged(
                tagger,
                source,
                normalize_entry(p, source_id=source.id, base_url=result.url, first_seen=now),
            )
            for p in feed.entries
        ]
        plan = plan_writes(entries, store.content_hashes([e.id for e in entries]))
        plan, story_writes = group_stories(store, plan, settings.stories)
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


def _parse(settings: Settings, source: SourceSettings, result: FetchResult) -> ParsedFeed:
    assert result.content is not None
    if source.type == "html" and source.select is not None:
        return parse_page(
            result.content,
            url=result.url,
            select=source.select,
            timezone=settings.timezone,
            content_type=result.content_type,
        )
    return parse_feed(result.content, url=result.url, content_type=result.content_type)


def _tagged(tagger: Tagger, source: SourceSettings, entry: Entry) -> Entry:
    tags = tagger.tags_for(entry, source_name=source.name, source_tags=source.tags)
    return dataclasses.replace(entry, tags=tags)


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
    store: Store, plan: WritePlan, settings: StorySettings
) -> tuple[WritePlan, StoryWrites]:
    """New entries join the story of a stored near-duplicate (or start their own); changed
    ones keep their story. Returns the plan with story ids set, and what else to store.

    The new entries of one poll are looked up together: none is stored yet, so they were
    never each other's candidates anyway."""
    keys: list[StoryKeys] = []
    merges: list[tuple[str, str]] = []
    inserts = []
    assigned = assign_stories(store, [story_item(e) for e in plan.inserts], settings)
    for entry, (story_id, entry_keys, entry_merges) in zip(plan.inserts, assigned, strict=True):
        inserts.append(dataclasses.replace(entry, story_id=story_id))
        keys.append(entry_keys)
        merges += [(absorbed, story_id) for absorbed in entry_merges]
    stored = store.story_ids_of([e.id for e in plan.updates])
    updates = []
    for entry in plan.updates:
        updates.append(dataclasses.replace(entry, story_id=stored.get(entry.id, entry.id)))
        keys.append(story_keys(entry.id, entry.published, story_fingerprint(entry)))
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
    store: Store, items: Sequence[StoryItem], settings: StorySettings
) -> list[tuple[str, StoryKeys, tuple[str, ...]]]:
    """`assign_story` for several entries that cannot be each other's candidates (one poll of
    one source): each fingerprinted once, one batched candidate lookup, then the pure decision.
    """
    window = timedelta(seconds=settings.window)
    fingerprints = [fingerprint(i.title, i.lead, i.canonical_url) for i in items]
    queries = [
        CandidateQuery(
            item.entry_id,
            fp.band_keys,
            (item.canonical_url or "", *counterpart_urls(item.canonical_url, chinese=fp.chinese)),
            item.published,
        )
        for item, fp in zip(items, fingerprints, strict=True)
    ]
    found = store.story_candidates(queries, window)
    assigned: list[tuple[str, StoryKeys, tuple[str, ...]]] = []
    for item, fp, candidates in zip(items, fingerprints, found, strict=True):
        match = choose_story(
            item, candidates, threshold=settings.threshold, window=window, new_fingerprint=fp
        )
        keys = story_keys(item.entry_id, item.published, fp)
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


def story_fingerprint(entry: Entry) -> Fingerprint:
    return fingerprint(entry.title, entry.summary_text, entry.canonical_url)


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
