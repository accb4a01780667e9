"""Benchmark (issue 8 point 4): the store at 1,000,000 entries costs at most 2x what it costs at
10,000, for a poll of one feed with 10 new items, publishing, a week's digest and
`entries --tag`; a poll's peak memory stays under 150 MB.

    .venv/bin/python -m bench.scale [--sizes 10000,1000000] [--repeats 5] [--quick]

The stores are generated straight into a database made by `aggregator.store.Store` (so the schema
is the real one; rows through the store's `_entry_row` and `write_story_keys`, many thousands to a
transaction with synchronous=OFF, indexes built at the end): 40 sources, entries at a steady 400 a
day ending at a fixed "now" (the 7-day window always holds ~2,800, whatever the history's length;
1,000,000 entries are ~6.8 years), with their tags, story ids (a fifth join an earlier story of
another source), stored fingerprints and MinHash band keys (`dedupe.band_keys`: real fingerprints
of the text for the last 21 days, random signatures before, which no candidate window reaches).
Generated stores are cached in bench/.cache/, keyed by size, generator version and a digest of the
schema (a million takes ~2.5 minutes to generate, ~2.5 GB). Each repeat works on a fresh
copy of the cached store, in this order:

- first publish, into an empty folder (`app.publish_site`, as `aggregator publish`);
- poll: `update.update(only=[source], force=True)` in a child process (a fresh `aggregator poll`
  process: cold SQLite cache, its own peak RSS read from /proc/self/status VmHWM) against an
  RSS document served by tests/servers.py's FeedServer on 127.0.0.1: 20 items as stored, 10 new
  ones retelling other sources' stories of the last day;
- republish after the poll (the manifest skips what the poll did not change);
- a week's digest, built for one subscriber without sending (`digest_run._Composer`: the
  week's stories, source warnings, select, render, headers);
- `aggregator entries --tag TAG` (`cli.cmd_entries` in process, stdout captured), for the
  topic (3% of entries) and for a tag most entries carry;
- the worker tick's change check, `store.content_stamp()`.

Median (min-max) of wall and CPU time per size and the ratio of the largest size to the
smallest (the verdict on CPU time: the machine is shared). Prints a table, rewrites its section
of docs/benchmarks.md (not with --quick) and, last, one JSON list of figures for bench/run.py.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import platform
import random
import resource
import shutil
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aggregator import config
from aggregator.app import App, publish_site
from aggregator.cli import build_parser, cmd_entries
from aggregator.clock import FixedClock
from aggregator.digest import last_complete_week
from aggregator.digest_run import _Composer
from aggregator.models import Entry
from aggregator.process.dedupe import Fingerprint, fingerprint, numbers_in
from aggregator.process.normalize import content_hash, entry_id
from aggregator.settings import Settings, SourceSettings
from aggregator.store import Store
from aggregator.store.database import to_db_time
from aggregator.store.entries import _INSERT_ENTRY, _entry_row
from aggregator.store.stories import StoryKeys, write_story_keys
from aggregator.update import update
from bench.curation import synthetic
from bench.docs_section import memory_gib, write_section
from tests.feedmaker import Item, rss
from tests.servers import FeedServer, Response

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "bench" / ".cache"
GENERATOR_VERSION = 1  # bump when the generated data changes: cached stores are keyed by it
SECTION_START = "<!-- bench:scale:start -->"
SECTION_END = "<!-- bench:scale:end -->"

PER_DAY = 400
END = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)  # the newest stored entry (a Friday)
NOW = END + timedelta(hours=1)  # the clock of every measured operation
REAL_FINGERPRINT_DAYS = 21  # older entries get random signatures: no window reaches them
TEXT_POOL = 20_000  # older entries reuse these texts (generating each costs ~35 µs)
STORY_SHARE = 0.2  # entries that join an earlier story of another source
BATCH = 20_000  # entries per executemany round
POLLED = "src-00"
STORED_IN_FEED = 20
NEW_IN_FEED = 10
TOPIC = "hk-mainland-science"
KINDS = ("official",) * 8 + ("media",) * 24 + ("institution",) * 8
SOURCES = [f"src-{i:02d}" for i in range(len(KINDS))]
# Tags of the shipped config beyond the source's own, and the share of entries carrying each.
TAG_SHARES = {
    TOPIC: 0.03,
    "gba": 0.08,
    "ai": 0.05,
    "universities": 0.06,
    "biotech": 0.03,
    "funding": 0.03,
    "agreements": 0.03,
    "cas": 0.01,
}
TARGET_RATIO = 2.0
TARGET_PEAK_MB = 150
# Stored signature values are below 2**26: one mask over all 64 packed values at once.
SIGNATURE_MASK = int.from_bytes(struct.pack("<64I", *[(1 << 26) - 1] * 64), "little")


# --- generating a store ------------------------------------------------------------------------


def source_url(source_id: str) -> str:
    return f"https://{source_id}.example.org/feed.xml"


def schema_key() -> str:
    """A digest of the schema a new store gets: a cached store made by other code is stale."""
    store = Store(":memory:")
    try:
        rows = store.conn.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    finally:
        store.close()
    text = "\n".join(row[0] or "" for row in rows)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def cached_store(count: int) -> tuple[Path, Path]:
    """The generated database of `count` entries and its poll feed, generating them once."""
    CACHE.mkdir(parents=True, exist_ok=True)
    stem = CACHE / f"scale-{count}-g{GENERATOR_VERSION}-{schema_key()}"
    db, feed = stem.with_suffix(".db"), stem.with_suffix(".xml")
    if not (db.exists() and feed.exists()):
        for old in CACHE.glob(f"scale-{count}-*"):
            old.unlink()
        partial = stem.with_suffix(".partial")
        started = time.perf_counter()
        document = generate(partial, count)
        partial.rename(db)
        feed.write_bytes(document)
        print(f"generated {count:,} entries in {time.perf_counter() - started:.0f} s: {db.name}")
    return db, feed


def generate(path: Path, count: int) -> bytes:
    """Fill a new store at `path` with `count` entries; return the RSS document to poll.

    Rows go in through the store's own row builder (`_entry_row`) and `write_story_keys`, so
    they are what a poll would have written, but many thousands to a transaction."""
    path.unlink(missing_ok=True)
    store = Store(path)  # the real schema and migrations
    conn = store.conn
    # Bulk load: no journal, no fsync, a big cache; secondary indexes built once at the end.
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("PRAGMA cache_size = -2000000")
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        " AND tbl_name IN (SELECT name FROM sqlite_master WHERE name LIKE 'entr%')"
    ).fetchall()
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    created = END - timedelta(days=count / PER_DAY + 1)
    store.sync_sources(
        [
            SourceSettings(id=s, url=source_url(s), name=f"{kind.title()} source {i}")
            for i, (s, kind) in enumerate(zip(SOURCES, KINDS, strict=True))
        ],
        created,
    )
    rng = random.Random(count)
    pool = [_text(rng, n) for n in range(min(TEXT_POOL, count))]
    step = timedelta(days=1) / PER_DAY
    first = END - step * (count - 1)
    real_from = END - timedelta(days=REAL_FINGERPRINT_DAYS)
    recent: list[tuple[str, str]] = []  # (source, story id) of the last few entries
    polled: list[Entry] = []  # the polled source's newest entries
    retold: list[Entry] = []  # the last day's entries of other sources
    entries: list[Entry] = []
    conn.execute("BEGIN")
    for n in range(count):
        published = (first + step * n).replace(microsecond=0)
        source = SOURCES[rng.randrange(len(SOURCES))]
        real = published >= real_from
        title, lead = _text(rng, n) if real else pool[rng.randrange(len(pool))]
        title = title if real else f"{title} ({n})"
        guid = f"{source}-{n}"
        link = f"https://{source}.example.org/news/{published:%Y/%m}/{n}.html"
        summary_html = f"<p>{lead}</p>"
        new_id = entry_id(source, guid)
        story = new_id
        if recent and rng.random() < STORY_SHARE:
            earlier_source, earlier_story = recent[rng.randrange(len(recent))]
            if earlier_source != source:
                story = earlier_story
        recent = [*recent[-39:], (source, story)]
        kind = KINDS[SOURCES.index(source)]
        entry = Entry(
            id=new_id,
            source_id=source,
            guid=guid,
            link=link,
            canonical_url=link,
            title=title,
            summary_html=summary_html,
            summary_text=lead,
            author=None,
            published=published,
            updated=None,
            first_seen=min(published + timedelta(minutes=rng.randrange(30)), END),
            content_hash=content_hash(title, summary_html),
            categories=("Science",) if rng.random() < 0.3 else (),
            tags=(kind, *(tag for tag, share in TAG_SHARES.items() if rng.random() < share)),
            story_id=story,
        )
        entries.append(entry)
        if source == POLLED:
            polled = [*polled[-(STORED_IN_FEED - 1) :], entry]
        elif published > END - timedelta(days=1):
            retold.append(entry)
        if len(entries) >= BATCH or n == count - 1:
            _write(conn, entries, real_from, rng)
            entries = []
    conn.execute("COMMIT")
    for _, sql in indexes:
        conn.execute(sql)
    conn.execute("PRAGMA journal_mode = WAL")  # as the application leaves it
    store.close()
    return _feed(polled, retold, rng)


def _write(
    conn: sqlite3.Connection, entries: list[Entry], real_from: datetime, rng: random.Random
) -> None:
    """Entries, their tags and their story keys: real fingerprints from `real_from` on."""
    # Sanitizer version 0: these summaries were not made by clean_html, so publishing cleans
    # them again, as it does what an older version stored.
    conn.executemany(_INSERT_ENTRY, [_entry_row(e, e.first_seen, 0) for e in entries])
    conn.executemany(
        "INSERT INTO entry_tags (entry_id, tag, published) VALUES (?, ?, ?)",
        [(e.id, tag, to_db_time(e.published)) for e in entries for tag in e.tags],
    )
    keys = []
    for e in entries:
        if e.published >= real_from:
            fp = fingerprint(e.title, e.summary_text, e.canonical_url)
        else:
            random_bits = int.from_bytes(rng.randbytes(256), "little") & SIGNATURE_MASK
            fp = Fingerprint(
                shingles=frozenset(struct.unpack("<48I", rng.randbytes(192))),
                signature=struct.unpack("<64I", random_bits.to_bytes(256, "little")),
                title_numbers=numbers_in(e.title),
                dates=frozenset(),
                release=None,
                chinese=False,
            )
        keys.append(StoryKeys(e.id, e.published, fp))
    write_story_keys(conn, keys)


def _text(rng: random.Random, n: int) -> tuple[str, str]:
    """A title and a lead: English or Chinese, from bench/curation.py's Zipf vocabulary."""
    made = synthetic(rng, n, END)
    return made.title, made.summary_text


def _feed(polled: list[Entry], retold: list[Entry], rng: random.Random) -> bytes:
    """The polled source's RSS: its newest stored items as stored, and new items that retell
    stories other sources told in the last day (so story grouping finds candidates)."""
    items = [
        Item(
            title=e.title,
            link=f"https://{POLLED}.example.org/news/new/{k}.html",
            guid=f"{POLLED}-new-{k}",
            description=f"<p>{e.summary_text} Hong Kong technology update.</p>",
            pub_date=format_datetime(END + timedelta(minutes=3 * k + 1)),
        )
        for k, e in enumerate(rng.sample(retold, NEW_IN_FEED))
    ]
    items += [
        Item(
            title=e.title,
            link=e.link,
            guid=e.guid,
            description=e.summary_html,
            pub_date=format_datetime(e.published),
        )
        for e in reversed(polled)
    ]
    return rss(items, title="Official source 0")


# --- measuring -------------------------------------------------------------------------------


def bench_settings(data_dir: Path, feed_url: str) -> Settings:
    """The shipped config's rules, publish and digest settings, with the generated sources."""
    shipped = config.load(REPO / "config" / "feeds.toml")
    sources = tuple(
        SourceSettings(
            id=s,
            url=feed_url if s == POLLED else source_url(s),
            name=f"{kind.title()} source {i}",
            tags=(kind,),
        )
        for i, (s, kind) in enumerate(zip(SOURCES, KINDS, strict=True))
    )
    keep = int((NOW - datetime(2000, 1, 1, tzinfo=UTC)).total_seconds())  # nothing pruned
    return dataclasses.replace(shipped, data_dir=data_dir, sources=sources, keep=keep)


@dataclasses.dataclass
class Timing:
    wall: float
    cpu: float


@contextlib.contextmanager
def timing(into: list[Timing]) -> Iterator[None]:
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    into.append(Timing(time.perf_counter() - wall, time.process_time() - cpu))


COMMON_TAG = "media"  # three sources in five carry it: most entries
OPERATIONS = {
    "poll": f"poll 1 feed: {NEW_IN_FEED} new + {STORED_IN_FEED} stored items",
    "first-publish": "first publish (empty folder)",
    "republish": "republish after the poll",
    "digest": "digest of one week, built (1 subscriber)",
    "entries": f"`entries --tag {TOPIC}` (50 listed)",
    "entries-common": f"`entries --tag {COMMON_TAG}` (50 listed)",
    "stamp": "worker tick: `store.content_stamp()`",
}
# Output that grows with the history by design: one archive page per week ever published.
NO_TARGET = {"first-publish": "grows with the weeks archived"}


@dataclasses.dataclass
class SizeResult:
    """The measurements on the store of `count` entries, repeat after repeat."""

    count: int
    db: Path
    feed: bytes
    timings: dict[str, list[Timing]] = dataclasses.field(
        default_factory=lambda: {name: [] for name in OPERATIONS}
    )
    peak_kib: list[int] = dataclasses.field(default_factory=list)
    base_kib: list[int] = dataclasses.field(default_factory=list)
    details: dict[str, str] = dataclasses.field(default_factory=dict)


def measure(result: SizeResult, repeat: int, work: Path, server: FeedServer) -> None:
    """Every operation once, on a fresh copy of the generated store. Each operation opens the
    store anew, as a command does (SQLite's page cache starts cold; the file, just copied, is
    in the operating system's cache)."""
    server.routes["/feed.xml"] = Response(
        200, result.feed, {"Content-Type": "application/rss+xml; charset=utf-8"}
    )
    feed_url = server.url("/feed.xml")
    data_dir = work / f"{result.count}-{repeat}"
    data_dir.mkdir()
    copy_store(result.db, data_dir / "aggregator.db")
    settings = bench_settings(data_dir, feed_url)

    with opened(settings) as app, timing(result.timings["first-publish"]):
        report = publish_site(app)
    result.details["first-publish"] = f"{len(report.written)} files"

    polled = poll_in_child(data_dir, feed_url)
    result.timings["poll"].append(Timing(polled["wall"], polled["cpu"]))
    check(polled["workers_kib"] == 0, "the poll used worker processes: count them too")
    result.peak_kib.append(polled["peak_kib"])
    result.base_kib.append(polled["base_kib"])
    check(polled["new"] == NEW_IN_FEED, f"the poll stored {polled['new']} new items")
    check(polled["unchanged"] == STORED_IN_FEED, f"{polled['unchanged']} unchanged")

    with opened(settings) as app, timing(result.timings["republish"]):
        report = publish_site(app)
    result.details["republish"] = (
        f"{len(report.written)} written, {len(report.unchanged)} unchanged"
    )

    with opened(settings) as app, timing(result.timings["digest"]):
        stories = build_digest(app)
    result.details["digest"] = f"{stories} stories"

    for name, tag in (("entries", TOPIC), ("entries-common", COMMON_TAG)):
        args = build_parser().parse_args(["entries", "--tag", tag])
        with (
            opened(settings) as app,
            contextlib.redirect_stdout(io.StringIO()) as out,
            timing(result.timings[name]),
        ):
            cmd_entries(app, args)
        listed = out.getvalue().count("\n")
        check(listed == args.limit, f"entries --tag {tag} listed {listed}")

    with opened(settings) as app:
        store = app.store  # opened outside the timing: the worker keeps its store open
        with timing(result.timings["stamp"]):
            store.content_stamp()

    shutil.rmtree(data_dir)


def copy_store(source: Path, target: Path) -> None:
    """Copy and flush to disk: otherwise the write-back of gigabytes just copied runs during
    the next measurements and every fsync they do waits for it."""
    shutil.copyfile(source, target)
    with target.open("rb+") as copied:
        os.fsync(copied.fileno())


@contextlib.contextmanager
def opened(settings: Settings) -> Iterator[App]:
    """A new App on the store, as each command makes one; closed afterwards."""
    app = App(settings=settings, clock=FixedClock(NOW))
    try:
        yield app
    finally:
        app.close()


def build_digest(app: App) -> int:
    """The last complete week's digest for the first subscriber, built, not sent; its stories."""
    period = last_complete_week(app.clock.now(), app.settings.timezone)
    composer = _Composer.load(app, period, {"AGGREGATOR_DIGEST_SECRET": "bench"})
    subscriber = app.settings.digest.subscribers[0]
    content = composer.content(subscriber)
    composer.message(subscriber, "<bench@example.org>", content)
    return content.story_count


def poll_in_child(data_dir: Path, feed_url: str) -> dict[str, Any]:
    """Run `poll_child` in a fresh interpreter (as `aggregator poll` runs): its JSON report."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--poll-child", str(data_dir), feed_url],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    check(done.returncode == 0, f"poll child failed: {done.stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def poll_child(data_dir: Path, feed_url: str) -> None:
    """The child's side: poll the feed once into the store in `data_dir`; print timings and
    peak memory (VmHWM: the most resident memory this process has had) as one JSON line."""
    settings = bench_settings(data_dir, feed_url)
    store = Store(data_dir / "aggregator.db")
    base = vm_hwm_kib()
    wall, cpu = time.perf_counter(), time.process_time()
    report = update(settings, store, FixedClock(NOW), only=[POLLED], force=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    store.close()
    outcome = report.outcomes[0]
    result = {
        "wall": wall,
        "cpu": cpu,
        "peak_kib": vm_hwm_kib(),
        "base_kib": base,
        # update.py reads the bodies of many sources in worker processes: their peak, if any
        "workers_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        "new": outcome.new,
        "unchanged": outcome.unchanged,
        "error": outcome.error,
    }
    print(json.dumps(result))


def vm_hwm_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"bench/scale.py: {message}")


# --- report ----------------------------------------------------------------------------------


def spread(timings: list[Timing]) -> tuple[float, float, float, float]:
    """Wall median, min, max and CPU median."""
    walls = [t.wall for t in timings]
    return (
        statistics.median(walls),
        min(walls),
        max(walls),
        statistics.median(t.cpu for t in timings),
    )


def ratios(small: SizeResult, large: SizeResult, name: str) -> tuple[float, float]:
    """Large over small: of the wall medians, and of the CPU medians."""
    s_wall, _, _, s_cpu = spread(small.timings[name])
    l_wall, _, _, l_cpu = spread(large.timings[name])
    return l_wall / s_wall, l_cpu / s_cpu


def table(results: list[SizeResult]) -> list[str]:
    small, large = results[0], results[-1]
    head = " | ".join(f"{r.count:,}: wall s median (min–max), CPU s" for r in results)
    lines = [
        f"| operation | {head} | {large.count:,} / {small.count:,}: wall, CPU | target | |",
        "|---|" + "---|" * len(results) + "---|---|---|",
    ]
    for name, label in OPERATIONS.items():
        cells = []
        for r in results:
            median, low, high, cpu = spread(r.timings[name])
            cells.append(f"{median:.3f} ({low:.3f}–{high:.3f}), {cpu:.3f}")
        wall_ratio, cpu_ratio = ratios(small, large, name)
        target = NO_TARGET.get(name, f"≤ {TARGET_RATIO:g}×")
        verdict = "" if name in NO_TARGET else ("ok" if cpu_ratio <= TARGET_RATIO else "OVER")
        lines.append(
            f"| {label} | {' | '.join(cells)} | {wall_ratio:.2f}×, {cpu_ratio:.2f}× | {target}"
            f" | {verdict} |"
        )
    peaks = " | ".join(
        f"{max(r.peak_kib) / 1024:.0f} MB ({max(r.base_kib) / 1024:.0f} MB before it)"
        for r in results
    )
    over = max(large.peak_kib) / 1024 >= TARGET_PEAK_MB
    lines.append(
        f"| poll: peak RSS of its process (VmHWM), max | {peaks} | | < {TARGET_PEAK_MB} MB"
        f" | {'OVER' if over else 'ok'} |"
    )
    return lines


def figures(results: list[SizeResult]) -> list[dict[str, object]]:
    """bench/run.py's figures: each operation's CPU time ratio, largest size over smallest
    (CPU time: the machine is shared, and wall time follows the other processes' load)."""
    small, large = results[0], results[-1]
    found: list[dict[str, object]] = []
    for name, label in OPERATIONS.items():
        wall_ratio, cpu_ratio = ratios(small, large, name)
        s_cpus = [t.cpu for t in small.timings[name]]
        l_cpus = [t.cpu for t in large.timings[name]]
        s_wall, _, _, _ = spread(small.timings[name])
        l_wall, _, _, _ = spread(large.timings[name])
        found.append(
            {
                "name": f"scale: {label}, {large.count:,} vs {small.count:,} entries",
                "unit": "× CPU",
                "median": round(cpu_ratio, 2),
                "min": round(min(l_cpus) / max(s_cpus), 2),
                "max": round(max(l_cpus) / min(s_cpus), 2),
                "target": "" if name in NO_TARGET else f"<= {TARGET_RATIO:g}",
                "better": "lower",
                "note": f"wall {s_wall:.3f} s -> {l_wall:.3f} s ({wall_ratio:.2f}×)",
            }
        )
    found.append(
        {
            "name": f"scale: poll peak RSS at {large.count:,} entries",
            "unit": "MB",
            "median": round(statistics.median(large.peak_kib) / 1024, 1),
            "min": round(min(large.peak_kib) / 1024, 1),
            "max": round(max(large.peak_kib) / 1024, 1),
            "target": f"< {TARGET_PEAK_MB}",
            "better": "lower",
            "note": f"whole process; {max(large.base_kib) / 1024:.0f} MB before the poll",
        }
    )
    return found


DOCS_TITLE = "## Scale: a million stored entries (bench/scale.py)"
DOCS_INTRO = f"""
Issue 8 point 4: with 1,000,000 entries stored, a poll of one feed with 10 new items,
publishing, building a week's digest and `entries --tag` each take at most twice their time at
10,000 entries, and a poll's peak memory stays under 150 MB. `.venv/bin/python -m bench.scale`
(`--quick`: 10,000 vs 100,000, docs left alone) generates each store once into `bench/.cache/`
(a store made by `aggregator.store.Store`, rows written through the store's own row builder
and `write_story_keys`: {len(SOURCES)} sources, {PER_DAY} entries a day ending at a fixed
"now", so the 7-day window holds ~{PER_DAY * 7:,} entries whatever the history's length;
tags, story ids, fingerprints; ~2.5 minutes for a million), then measures each operation on a
fresh copy per repeat, opening the store anew each time as a command does. The poll runs in
its own process (`update.update` for one source, against an RSS document served on 127.0.0.1:
20 items as stored, 10 new ones retelling other sources' stories of the last day), which
reports its time and its peak resident memory (VmHWM, the whole process: interpreter, imports
and all). The worker's tick also asks `store.content_stamp()` whether anything changed, so
that is measured too. Ratios and the verdict are on CPU time (wall time follows the load of
the other processes on this shared machine); both are shown. `tests/test_query_plans.py`
checks the same operations for full scans (EXPLAIN QUERY PLAN) and for work that grows with
the history (SQLite virtual machine steps under 8x the history).
"""


def update_docs(lines: list[str], command: str, results: list[SizeResult]) -> None:
    memory = memory_gib()
    sizes = "; ".join(
        f"{r.count:,} entries: {r.db.stat().st_size / 1e6:,.0f} MB, {r.details['first-publish']} in a"
        f" first publish, {r.details['republish']} in the republish, {r.details['digest']}"
        " in the digest"
        for r in results
    )
    block = [
        SECTION_START,
        DOCS_TITLE,
        "",
        textwrap.fill(" ".join(DOCS_INTRO.split()), width=99),
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `{command}`.",
        "",
        f"Machine: {os.cpu_count()} CPUs, {memory:.1f} GiB memory, {platform.platform()};"
        f" Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}; load average"
        f" {os.getloadavg()[0]:.1f} at the end; other jobs may share the machine.",
        "",
        f"Stores: {sizes}.",
        "",
        *lines,
        SECTION_END,
    ]
    write_section(block, SECTION_START, SECTION_END)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", help="entries in the stores compared (10000,1000000)")
    parser.add_argument("--repeats", type=int, help="repeats per size (5; quick 3)")
    parser.add_argument("--quick", action="store_true", help="10,000 vs 100,000; docs left alone")
    parser.add_argument(
        "--poll-child", nargs=2, metavar=("DATA_DIR", "URL"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.poll_child:
        poll_child(Path(args.poll_child[0]), args.poll_child[1])
        return
    sizes_text = args.sizes or ("10000,100000" if args.quick else "10000,1000000")
    sizes = sorted(int(s) for s in sizes_text.split(","))
    repeats = args.repeats or (3 if args.quick else 5)
    results = []
    for count in sizes:
        db, feed = cached_store(count)
        results.append(SizeResult(count, db, feed.read_bytes()))
    server = FeedServer().start()
    try:
        with tempfile.TemporaryDirectory(prefix="scale-", dir=CACHE) as tmp:
            warm_up = SizeResult(results[0].count, results[0].db, results[0].feed)
            measure(warm_up, -1, Path(tmp), server)  # imports, templates
            # The sizes take turns, so that both see the same load from other processes.
            for repeat in range(repeats):
                for result in results:
                    measure(result, repeat, Path(tmp), server)
    finally:
        server.stop()
    lines = table(results)
    print(f"{repeats} repeats per size, each on a fresh copy of the generated store")
    print("\n".join(lines))
    if not args.quick:
        command = f".venv/bin/python -m bench.scale --sizes {sizes_text} --repeats {repeats}"
        update_docs(lines, command, results)
    print(json.dumps(figures(results), ensure_ascii=False))


if __name__ == "__main__":
    main()
