"""A poll, a republish, a week's digest and `entries --tag` cost the same whatever the length of
the stored history (issue 8 point 4): no statement walks a whole big table, and none reads more
as the history grows.

A real store is filled by real polls of feeds served on 127.0.0.1; every SQL statement those
operations run is recorded (`set_trace_callback`) and given to EXPLAIN QUERY PLAN. The plan does
not depend on the store's size (no ANALYZE statistics are kept, so SQLite plans from the schema
alone), so a small store shows what a store of a million entries would do. A SCAN of a big
table fails, with or without an index: walking a whole index is still reading the whole
history. (json_each, CTEs and the small sources table may be scanned.)

A plan can search an index and still read the whole history (a range open at one end, every
story of a tag), so the same operations also run on the same recent items under a history
eight times longer, counting SQLite's virtual machine steps (`set_progress_handler`): a count,
not a time, so the check is exact and unaffected by the machine's load.
"""

from __future__ import annotations

import contextlib
import io
import re
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from aggregator.app import App, publish_site
from aggregator.cli import build_parser, cmd_entries
from aggregator.clock import FixedClock
from aggregator.digest import last_complete_week
from aggregator.digest_run import _Composer
from aggregator.models import Entry
from aggregator.process.dedupe import fingerprint
from aggregator.settings import (
    DigestSettings,
    PublishSettings,
    Settings,
    SourceSettings,
    Subscriber,
    TagRule,
)
from aggregator.store import PollWrite, Store
from aggregator.store.stories import StoryKeys
from aggregator.update import update
from tests.feedmaker import Item, rss
from tests.servers import FeedServer, Response

BIG_TABLES = ("entries", "entry_tags", "entry_bands", "entry_signatures")
# Statements allowed to SCAN a big table, by their start, each with why it stays cheap (an
# index walk in order that stops early). None is needed today.
ALLOWED_SCANS: Mapping[str, str] = {}
NOW = datetime(2024, 5, 24, 9, 0, tzinfo=UTC)  # a Friday: the digest covers 2024-W20
SOURCES = ("s1", "s2", "s3")
WORDS = "Hong Kong Shenzhen technology laboratory university funding agreement research".split()  # noqa: SIM905
_KEYWORDS = frozenset(
    "WHERE JOIN ON GROUP ORDER LIMIT UNION INNER LEFT CROSS NATURAL USING SET VALUES AND OR NOT"  # noqa: SIM905
    " INDEXED WINDOW HAVING EXCEPT INTERSECT RETURNING".split()
)
_NAMED = re.compile(
    r"\b(?:" + "|".join(BIG_TABLES) + r")\s+(?:AS\s+)?([A-Za-z_]\w*)", re.IGNORECASE
)
_NOT_PLANNED = re.compile(r"\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|PRAGMA|--)", re.I)


def big_table_names(sql: str) -> set[str]:
    """The names the plan of `sql` may give a big table: its own, or the alias it has here."""
    names = set(BIG_TABLES)
    names.update(m.group(1) for m in _NAMED.finditer(sql) if m.group(1).upper() not in _KEYWORDS)
    return names


def full_scans(
    conn: sqlite3.Connection,
    statements: Sequence[str],
    allowed: Mapping[str, str] = ALLOWED_SCANS,
) -> list[str]:
    """Each plan step that scans a big table, as "SCAN ... <- statement"."""
    found = []
    for sql in dict.fromkeys(statements):
        if _NOT_PLANNED.match(sql):
            continue
        flat = " ".join(sql.split())
        if any(flat.startswith(start) for start in allowed):
            continue
        names = big_table_names(sql)
        for row in conn.execute("EXPLAIN QUERY PLAN " + sql):
            detail = row[3]
            scanned = re.match(r"SCAN (\w+)", detail)
            if scanned and scanned.group(1) in names:
                found.append(f"{detail}  <-  {flat[:300]}")
    return found


@contextlib.contextmanager
def recording(conn: sqlite3.Connection) -> Iterator[list[str]]:
    """Every statement run on `conn` meanwhile, parameters filled in, from any thread."""
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        yield statements
    finally:
        conn.set_trace_callback(None)


def items(source: str, first: int, count: int, newest: datetime) -> list[Item]:
    """`count` items of `source` numbered from `first`, one every 5 hours back from `newest`."""
    return [
        Item(
            title=f"{WORDS[n % len(WORDS)]} {WORDS[(n * 7) % len(WORDS)]} report {n} of {source}",
            link=f"https://{source}.example.org/news/{n}",
            description=(
                f"<p>{' '.join(WORDS[(n + k) % len(WORDS)] for k in range(12))} story {n}.</p>"
            ),
            pub_date=format_datetime(newest - timedelta(hours=5 * (n - first))),
        )
        for n in range(first, first + count)
    ]


def serve(server: FeedServer, source: str, feed: list[Item]) -> None:
    server.routes[f"/{source}.xml"] = Response(
        200, rss(feed, title=source), {"Content-Type": "application/rss+xml"}
    )


def make_app(directory: Path, server: FeedServer, history: int = 0) -> App:
    """A store holding `history` entries of the year before, written through the store, then
    three sources' items of the last three weeks, polled for real; s1's feed then has 10 new
    items. The recent part is the same whatever `history` is."""
    tags = (
        TagRule(name="science", title="Science", all=(("technology", "research"),)),
        TagRule(name="gba", title="Greater Bay Area", any=("Shenzhen",)),
    )
    settings = Settings(
        path=directory / "feeds.toml",
        data_dir=directory,
        sources=tuple(
            SourceSettings(id=s, url=server.url(f"/{s}.xml"), name=s.upper(), tags=("media",))
            for s in SOURCES
        ),
        tags=tags,
        publish=PublishSettings(topic="science", base_url="https://watch.example.org/"),
        digest=DigestSettings(subscribers=(Subscriber("reader@example.org", tags=("science",)),)),
    )
    app = App(settings=settings, clock=FixedClock(NOW - timedelta(days=10)))
    app.store.sync_sources(settings.sources, NOW - timedelta(days=400))
    write_history(app.store, history)
    for source in SOURCES:
        serve(server, source, items(source, 0, 40, NOW - timedelta(days=10)))
    update(app.settings, app.store, app.clock, force=True)
    for source in SOURCES:
        serve(server, source, items(source, 100, 40, NOW - timedelta(hours=2)))
    app.clock = FixedClock(NOW - timedelta(hours=1))
    update(app.settings, app.store, app.clock, force=True)
    app.clock = FixedClock(NOW)
    serve(server, "s1", items("s1", 200, 10, NOW) + items("s1", 100, 20, NOW))
    assert app.store.count_entries() == history + 3 * 80
    return app


def write_history(store: Store, count: int) -> None:
    """`count` tagged entries of the year before the polled ones, with their story keys."""
    start = NOW - timedelta(days=400)
    for source in SOURCES:
        entries, keys = [], []
        for n in range(count // len(SOURCES)):
            published = start + timedelta(hours=9 * n + SOURCES.index(source))
            title = f"{WORDS[n % len(WORDS)]} technology archive {n} of {source}"
            entry = Entry(
                id=f"old-{source}-{n}",
                source_id=source,
                guid=f"old-{n}",
                link=f"https://{source}.example.org/old/{n}",
                canonical_url=f"https://{source}.example.org/old/{n}",
                title=title,
                summary_html=f"<p>{title}: research and technology.</p>",
                summary_text=f"{title}: research and technology.",
                author=None,
                published=published,
                updated=None,
                first_seen=published,
                content_hash=f"old-{source}-{n}",
                tags=("media", "science"),
            )
            entries.append(entry)
            keys.append(StoryKeys(entry.id, published, fingerprint(title, "", entry.link)))
        at = start + timedelta(days=365)
        store.apply_poll(
            PollWrite(source, at, 200, None, None, at, inserts=entries, story_keys=keys)
        )


@pytest.fixture
def app(tmp_path: Path, http_server: FeedServer) -> Iterator[App]:
    app = make_app(tmp_path, http_server)
    yield app
    app.close()


def poll(app: App) -> None:
    report = update(app.settings, app.store, app.clock, only=["s1"], force=True)
    assert (report.new, report.outcomes[0].unchanged) == (10, 20)


def publish(app: App) -> None:
    assert publish_site(app).written


def digest(app: App) -> None:
    period = last_complete_week(app.clock.now(), app.settings.timezone)
    composer = _Composer.load(app, period, {})
    subscriber = app.settings.digest.subscribers[0]
    assert composer.content(subscriber).story_count
    composer.message(subscriber, "<plans@example.org>")


def entries_tagged(app: App) -> None:
    args = build_parser().parse_args(["entries", "--tag", "science"])
    with contextlib.redirect_stdout(io.StringIO()) as out:
        cmd_entries(app, args)
    assert out.getvalue().count("\n") == args.limit


def change_check(app: App) -> None:
    """What the worker asks every tick to decide whether to publish."""
    app.store.content_stamp()


OPERATIONS: dict[str, Callable[[App], None]] = {
    "poll": poll,
    "publish": publish,
    "digest": digest,
    "entries --tag": entries_tagged,
    "worker change check": change_check,
}
# Known, reported, not fixed yet (in files of other owners): the test of each fails until the
# fix lands, then passes, and then strict xfail fails: remove the entry with the fix.
SCANS_TODAY: dict[str, str] = {}
GROWS_TODAY: dict[str, str] = {}


def known(failing: Mapping[str, str]) -> list[object]:
    """The operations, those in `failing` marked as expected to fail for that reason."""
    return [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=failing[name]))
        if name in failing
        else name
        for name in OPERATIONS
    ]


@pytest.mark.parametrize("operation", known(SCANS_TODAY))
def test_no_full_scan_of_a_big_table(app: App, operation: str) -> None:
    if operation != "poll":
        poll(app)  # the others read a store a poll has just written to
    with recording(app.store.conn) as statements:
        OPERATIONS[operation](app)
    assert statements
    assert full_scans(app.store.conn, statements) == []


def test_a_full_scan_is_caught(tmp_path: Path) -> None:
    """The check itself: scans of big tables are reported, aliased or through a whole index;
    lookups and scans of small tables are not; the allow-list is honoured."""
    store = Store(tmp_path / "aggregator.db")
    scanning = [
        "SELECT source_id, max(first_seen) FROM entries GROUP BY 1",  # a whole index
        "SELECT count(*) FROM entries AS e WHERE e.summary_text LIKE '%lab%'",
        "SELECT t.entry_id FROM entry_tags t WHERE t.published > '2024-05-01'",
        "DELETE FROM entry_signatures WHERE signature = x'00'",
    ]
    fine = [
        "SELECT * FROM entries e WHERE e.id = 'abc'",
        "SELECT * FROM entry_tags WHERE tag = 'science' ORDER BY published DESC LIMIT 10",
        "SELECT * FROM sources",
        "BEGIN IMMEDIATE",
    ]
    found = full_scans(store.conn, scanning + fine)
    assert [line.split("  <-  ")[1] for line in found] == scanning
    assert found[1].startswith("SCAN e")
    allowed = {scanning[0].split(" GROUP")[0]: "for this test"}
    assert len(full_scans(store.conn, scanning, allowed)) == len(scanning) - 1
    store.close()


def test_the_fixture_store_is_tagged_and_grouped(app: App) -> None:
    """The operations above read real data: tagged entries in several weeks and stories."""
    story_sizes = {len(s.members) for s in app.store.stories(limit=500)}
    assert max(story_sizes) > 1
    assert len(app.store.entries(tag="science")) > 50


# --- the same work under a longer history --------------------------------------------------------

STEP = 50  # virtual machine instructions between two counts
SHORT, LONG = 300, 2400  # older entries in the two stores compared: eight times the history
MAX_GROWTH = 1.2  # a statement that reads the history grows ~5x here; lookups do not grow
_LITERAL = re.compile(r"'(?:[^']|'')*'|x'[0-9a-fA-F]*'|\b\d+\b")
_LIST = re.compile(r"\?(?:\s*,\s*\?)+")


class StepCounter:
    """SQLite virtual machine steps on one connection: in all, and per statement (credited to
    the statement started last; a cursor read on after another statement started is credited
    to that one, the same way in both stores)."""

    def __init__(self) -> None:
        self.total = 0
        self.by_statement: Counter[str] = Counter()
        self._current = ""

    def started(self, sql: str) -> None:
        self._current = _LIST.sub("?, ...", _LITERAL.sub("?", " ".join(sql.split())))

    def tick(self) -> int:
        self.total += STEP
        self.by_statement[self._current] += STEP
        return 0  # go on


@contextlib.contextmanager
def counting(conn: sqlite3.Connection) -> Iterator[StepCounter]:
    counter = StepCounter()
    conn.set_trace_callback(counter.started)
    conn.set_progress_handler(counter.tick, STEP)
    try:
        yield counter
    finally:
        conn.set_progress_handler(None, 0)
        conn.set_trace_callback(None)


def steps(directory: Path, server: FeedServer, history: int, operation: str) -> StepCounter:
    """The steps of `operation` on a store with `history` older entries; publishing is measured
    as the republish after a poll, what every worker tick with new items does."""
    directory.mkdir()
    app = make_app(directory, server, history)
    try:
        if operation == "publish":
            publish(app)
        if operation != "poll":
            poll(app)
        with counting(app.store.conn) as counter:
            OPERATIONS[operation](app)
    finally:
        app.close()
    return counter


@pytest.mark.parametrize("operation", known(GROWS_TODAY))
def test_cost_does_not_grow_with_the_history(
    tmp_path: Path, http_server: FeedServer, operation: str
) -> None:
    short = steps(tmp_path / "short", http_server, SHORT, operation)
    long = steps(tmp_path / "long", http_server, LONG, operation)
    growth = {
        sql: long.by_statement[sql] - short.by_statement.get(sql, 0) for sql in long.by_statement
    }
    worst = sorted(growth.items(), key=lambda kv: -kv[1])[:3]
    detail = "; ".join(f"+{more} steps: {sql[:200]}" for sql, more in worst)
    assert long.total <= MAX_GROWTH * short.total, (
        f"{short.total} -> {long.total} steps with 8x the history; {detail}"
    )


def test_latest_first_seen_by_source_is_each_sources_newest(app: App) -> None:
    """The per-source seek (store/outbox.py) answers what grouping every entry answered."""
    app.store.sync_sources(
        [*app.settings.sources, SourceSettings(id="quiet", url="https://q.example/", name="Q")],
        NOW,
    )
    poll(app)
    expected: dict[str, datetime] = {}
    for stored in app.store.entries():
        seen = stored.entry.first_seen
        expected[stored.entry.source_id] = max(seen, expected.get(stored.entry.source_id, seen))
    assert app.store.latest_first_seen_by_source() == expected
    assert set(expected) == set(SOURCES)
