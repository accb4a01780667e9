"""Reading bodies in worker processes (prepare.py) stores exactly what reading them inline does,
and a worker process that dies costs nothing but speed."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aggregator.clock import FixedClock
from aggregator.prepare import POOL_MIN_SOURCES, Preparer
from aggregator.settings import FetchSettings, Settings, SourceSettings, TagRule
from aggregator.store import Store
from aggregator.update import update
from tests.feedmaker import Item, rss
from tests.servers import FeedServer, Response

NOW = datetime(2024, 5, 16, 12, 0, tzinfo=UTC)
FETCH = FetchSettings(timeout=5.0, deadline=5.0, concurrency=8, per_host=8, host_spacing=0.0)
SOURCES = POOL_MIN_SOURCES + 2
TAGS = (
    TagRule(name="gba", title="Greater Bay Area", any=("Greater Bay Area", "大灣區")),
    TagRule(name="science", title="Science", all=(("research", "科研"), ("Shenzhen", "深圳"))),
)
EVENT = "Hong Kong and Shenzhen universities sign joint research agreement on {}"
EVENT_ZH = "香港與深圳大學簽署聯合科研協議 推動大灣區{}合作"


def feed(n: int) -> bytes:
    """Source n: its own items, and its telling of two events five sources share."""
    items = [Item(unrelated_title(n, k), f"https://s{n}.example/{k}") for k in range(6)]
    if n < 5:
        wording = ("", " today", " in Shenzhen", " this week", " on Thursday")[n]
        items.append(
            Item(
                EVENT.format("quantum computing") + wording,
                f"https://s{n}.example/event",
                description="<p>The Greater Bay Area research pact covers <b>quantum</b> labs.</p>",
            )
        )
        items.append(Item(EVENT_ZH.format("人工智能"), f"https://s{n}.example/zh-event"))
    return rss(items, title=f"Source {n}")


def unrelated_title(n: int, k: int) -> str:
    """Four made-up words, like no other title here."""
    digest = hashlib.sha256(f"{n}/{k}".encode()).digest()
    return " ".join(
        "".join(chr(ord("a") + b % 26) for b in digest[i : i + 7]) for i in range(0, 28, 7)
    )


def settings_for(server: FeedServer, data_dir: Path) -> Settings:
    for n in range(SOURCES):
        server.routes[f"/s{n}.xml"] = Response(
            200, feed(n), {"Content-Type": "application/rss+xml"}
        )
    sources = tuple(
        SourceSettings(id=f"s{n}", url=server.url(f"/s{n}.xml"), name=f"S{n}")
        for n in range(SOURCES)
    )
    return Settings(
        path=data_dir / "feeds.toml", data_dir=data_dir, fetch=FETCH, sources=sources, tags=TAGS
    )


EntryRow = tuple[str, str, str, str, tuple[str, ...]]


def stored(store: Store) -> tuple[set[EntryRow], set[frozenset[str]], set[bytes]]:
    """Entries (all but the story id), stories as sets of members, fingerprints."""
    entries = {
        (e.entry.id, e.entry.title, e.entry.summary_html, e.entry.content_hash, e.entry.tags)
        for e in store.entries()
    }
    members: dict[str, set[str]] = {}
    for entry_id, story_id in store.story_map().items():
        members.setdefault(story_id, set()).add(entry_id)
    rows = store.conn.execute("SELECT entry_id, signature, shingles, bands FROM entry_signatures")
    fingerprints = {b"|".join([row[0].encode(), row[1], row[2], row[3]]) for row in rows}
    return entries, {frozenset(m) for m in members.values()}, fingerprints


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_worker_processes_store_what_inline_reading_stores(
    http_server: FeedServer, tmp_path: Path, start: str
) -> None:
    results = []
    for processes in (2, 1):
        data_dir = tmp_path / f"p{processes}"
        settings = settings_for(http_server, data_dir)
        store = Store(data_dir / "aggregator.db")
        preparer = Preparer(processes, start=start)
        try:
            report = update(settings, store, FixedClock(NOW), force=True, preparer=preparer)
            assert preparer.pooled == (processes > 1)
            assert preparer.started_by == (start if processes > 1 else None)
            assert report.new == 5 * 8 + (SOURCES - 5) * 6 and not report.failed
            results.append(stored(store))
            # A second poll: the worker processes read the stored hashes, nothing is new.
            again = update(settings, store, FixedClock(NOW), force=True, preparer=preparer)
            assert (again.new, again.updated) == (0, 0)
            assert sum(o.unchanged for o in again.outcomes) == report.new
        finally:
            preparer.close()
            store.close()
    pooled, inline = results
    assert pooled == inline
    entries, stories, _ = pooled
    assert len([s for s in stories if len(s) == 5]) == 2  # each event once, five sources
    tags = {title: tags for _, title, _, _, tags in entries}
    assert tags[EVENT.format("quantum computing")] == ("gba", "science")
    assert tags[EVENT_ZH.format("人工智能")] == ("gba", "science")


POLL_IN_A_FRESH_PROCESS = """
import json, sys
from dataclasses import replace
from pathlib import Path
from aggregator.clock import FixedClock
from aggregator.prepare import Preparer
from aggregator.settings import Settings, SourceSettings
from aggregator.store import Store
from aggregator.update import update
from tests.test_prepare import FETCH, NOW, TAGS

if __name__ == "__main__":
    urls, data_dir = json.loads(sys.argv[1]), Path(sys.argv[2])
    sources = tuple(SourceSettings(id=f"s{n}", url=url, name=f"S{n}") for n, url in enumerate(urls))
    settings = Settings(path=data_dir / "feeds.toml", data_dir=data_dir, fetch=FETCH,
                        sources=sources, tags=TAGS)
    store, preparer = Store(data_dir / "aggregator.db"), Preparer(2)
    report = update(settings, store, FixedClock(NOW), force=True, preparer=preparer)
    print(json.dumps({"new": report.new, "failed": len(report.failed),
                      "started_by": preparer.started_by}))
    preparer.close()
"""


def test_a_process_with_one_thread_forks_its_worker_processes(
    http_server: FeedServer, tmp_path: Path
) -> None:
    """The command line (one thread when the poll starts) forks; this test process, running
    the feed server on a thread of its own, spawns (the test above checks both store alike)."""
    settings = settings_for(http_server, tmp_path)
    script = tmp_path / "poll.py"
    script.write_text(textwrap.dedent(POLL_IN_A_FRESH_PROCESS))
    urls = json.dumps([s.url for s in settings.sources])
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, str(script), urls, str(tmp_path / "data")],
        capture_output=True, text=True, timeout=120, env=env, cwd=root, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    expected = {"new": 5 * 8 + (SOURCES - 5) * 6, "failed": 0, "started_by": "fork"}
    assert result == expected

    preparer, store = Preparer(2), Store(tmp_path / "spawned.db")
    try:
        report = update(settings, store, FixedClock(NOW), force=True, preparer=preparer)
        assert report.new == expected["new"] and preparer.started_by == "spawn"
    finally:
        preparer.close()
        store.close()


def test_a_worker_process_that_dies_costs_nothing_but_speed(
    http_server: FeedServer, tmp_path: Path
) -> None:
    settings = settings_for(http_server, tmp_path)
    store = Store(tmp_path / "aggregator.db")
    preparer = Preparer(2)
    try:
        assert preparer.use_pool(settings, store.path, SOURCES)
        for pid in {started.result() for started in preparer.warm()}:
            os.kill(pid, signal.SIGKILL)
        report = update(settings, store, FixedClock(NOW), force=True, preparer=preparer)
        assert not report.failed and report.new == 5 * 8 + (SOURCES - 5) * 6
        assert not preparer.pooled  # read inline after the pool broke
        # The next poll starts worker processes again.
        more = replace(settings, sources=settings.sources[:SOURCES])
        update(more, store, FixedClock(NOW), force=True, preparer=preparer)
        assert preparer.pooled
    finally:
        preparer.close()
        store.close()


def test_a_small_poll_reads_inline(http_server: FeedServer, tmp_path: Path) -> None:
    settings = settings_for(http_server, tmp_path)
    settings = replace(settings, sources=settings.sources[: POOL_MIN_SOURCES - 1])
    store = Store(tmp_path / "aggregator.db")
    preparer = Preparer(2)
    try:
        report = update(settings, store, FixedClock(NOW), force=True, preparer=preparer)
        assert report.new > 0 and not preparer.pooled
    finally:
        preparer.close()
        store.close()


def test_a_poll_with_nothing_to_read_starts_no_worker_process(
    http_server: FeedServer, tmp_path: Path
) -> None:
    settings = settings_for(http_server, tmp_path)
    for n in range(SOURCES):
        http_server.routes[f"/s{n}.xml"] = Response(404, b"gone")
    store = Store(tmp_path / "aggregator.db")
    preparer = Preparer(2)
    try:
        report = update(settings, store, FixedClock(NOW), force=True, preparer=preparer)
        assert len(report.failed) == SOURCES and not preparer.pooled
    finally:
        preparer.close()
        store.close()


def test_worker_processes_are_forked_early_only_when_bodies_are_likely() -> None:
    """A source that has a validator to send usually answers 304: a poll of such sources does
    not fork (it starts worker processes at its first body, if any)."""
    from aggregator.models import SourceState
    from aggregator.update import _expect_bodies

    sources = [
        SourceSettings(id=f"s{n}", url=f"https://s{n}.example/", name="S") for n in range(12)
    ]
    fresh = {s.id: SourceState(s.id, s.url) for s in sources}
    assert _expect_bodies(sources, fresh)
    validated = {
        s.id: SourceState(s.id, s.url, etag='"1"' if n % 2 else None, last_modified="x")
        for n, s in enumerate(sources)
    }
    assert not _expect_bodies(sources, validated)
    some = {**validated, **{s.id: fresh[s.id] for s in sources[: POOL_MIN_SOURCES - 1]}}
    assert not _expect_bodies(sources, some)
    more = {**validated, **{s.id: fresh[s.id] for s in sources[:POOL_MIN_SOURCES]}}
    assert _expect_bodies(sources, more)


def test_a_poll_collects_cycles_less_often_and_puts_the_thresholds_back(
    http_server: FeedServer, tmp_path: Path
) -> None:
    import gc

    from aggregator.prepare import GC_THRESHOLD, few_collections

    before = gc.get_threshold()
    with few_collections():
        assert gc.get_threshold() == (max(before[0], GC_THRESHOLD), *before[1:])
    assert gc.get_threshold() == before
    settings = settings_for(http_server, tmp_path)
    store = Store(tmp_path / "aggregator.db")
    try:
        report = update(settings, store, FixedClock(NOW), force=True)
        assert report.new > 0 and gc.get_threshold() == before
    finally:
        store.close()


def test_an_entry_crosses_between_processes_unchanged() -> None:
    """Entries are sent by their constructor's arguments: every field arrives, none is mixed up."""
    import pickle

    from aggregator.models import Entry

    entry = Entry(
        id="e1", source_id="s1", guid="g", link="https://a.example/1",
        canonical_url="https://a.example/1?x", title="標題", summary_html="<p>x</p>",
        summary_text="x", author="A", published=NOW, updated=NOW.replace(hour=13),
        first_seen=NOW.replace(hour=14), content_hash="h", categories=("c1", "c2"),
        tags=("gba",), story_id="st",
    )  # fmt: skip
    arrived = pickle.loads(pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL))
    assert arrived == entry and type(arrived) is Entry
    assert replace(entry, story_id=None) != entry  # every field counts in the comparison


def test_a_feeds_fingerprints_together_are_each_entrys_own() -> None:
    """Fingerprinted together (a feed's new entries at once), each entry gets what it gets alone:
    shingles, signature, band keys, numbers, dates, release number and language, and the first
    entry of a repeated id is the one fingerprinted."""
    from aggregator.models import FetchResult
    from aggregator.prepare import prepare, story_fingerprint
    from aggregator.process.tag import compile_rules

    gov = "https://www.info.gov.hk/gia/general/202405/16/P2024051600{}.htm"
    items = [
        *(
            Item(EVENT.format(f"topic {k} on May 16"), gov.format(f"{321 + k:03d}"))
            for k in range(3)
        ),
        Item(EVENT_ZH.format("人工智能") + " 5月16日", gov.format("320")),
        Item("Same id, first telling", "https://s.example/same", description="<p>Long lead</p>"),
        Item("Same id, second telling", "https://s.example/same"),
        Item("", "https://s.example/empty"),
    ]
    result = FetchResult("s", "https://s.example/feed", 200, rss(items))
    source = SourceSettings(id="s", url=result.url, name="S")
    prepared = prepare(
        source, result, NOW, tagger=compile_rules(TAGS), timezone="UTC",
        stored_hashes=lambda ids: {},
    )  # fmt: skip
    firsts = {e.id: e for e in reversed(prepared.entries)}
    assert len(firsts) == len(items) - 1 == len(prepared.fingerprints)
    for entry_id, got in prepared.fingerprints.items():
        expected = story_fingerprint(firsts[entry_id])
        assert got == expected and got.band_keys == expected.band_keys
        assert (got.release, got.chinese) == (expected.release, expected.chinese)
    assert sum(fp.release is not None for fp in prepared.fingerprints.values()) == 4
    assert sum(fp.chinese for fp in prepared.fingerprints.values()) == 1
