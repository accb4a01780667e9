"""Stories end to end: band keys in a real SQLite file, grouping during polls from a real HTTP
server, `retag` and `entries --json` through the command line."""

from __future__ import annotations

import dataclasses
import json
import random
import sqlite3
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.cli import main
from aggregator.models import Entry
from aggregator.process.dedupe import fingerprint
from aggregator.settings import SourceSettings
from aggregator.store import PollWrite, Store
from aggregator.store.database import transaction
from aggregator.store.stories import (
    CandidateQuery,
    StoryKeys,
    _as_int,
    _equal_values,
    write_story_keys,
)
from tests.feedmaker import Item, rss
from tests.servers import FeedServer, Response

NOW = datetime(2024, 5, 16, 6, 0, tzinfo=UTC)

GOV_EN = Item(
    title="ITIB and MOST sign arrangement on Hong Kong-Shenzhen joint research funding",
    link="https://www.info.gov.hk/gia/general/202405/16/P2024051600123.htm",
    guid="https://www.info.gov.hk/gia/general/202405/16/P2024051600123.htm",
    description="The Innovation, Technology and Industry Bureau (ITIB) and the Ministry of Science"
    " and Technology (MOST) today (May 16) signed in Shenzhen the Arrangement on the Hong"
    " Kong-Shenzhen Joint Research Funding Scheme, under which universities and research"
    " institutions in Hong Kong and Shenzhen may jointly apply for funding of up to RMB 3 million"
    " per project.",
    pub_date="Thu, 16 May 2024 12:30:00 +0800",
)
GOV_ZH = Item(
    title="創新科技及工業局與國家科學技術部簽署港深聯合科研資助安排",
    link="https://www.info.gov.hk/gia/general/202405/16/P2024051600122.htm",
    guid="https://www.info.gov.hk/gia/general/202405/16/P2024051600122.htm",
    description="創新科技及工業局與國家科學技術部今日（五月十六日）在深圳簽署《港深聯合科研資助計劃安排》。",
    pub_date="Thu, 16 May 2024 12:30:00 +0800",
)
SCMP = Item(
    title="Hong Kong & Shenzhen universities to pool research cash in new cross-border scheme",
    link="https://www.scmp.com/news/article/3263012/pool-research-cash?utm_source=rss#comments",
    description="Scientists in Hong Kong and Shenzhen will be able to apply together for up to 3"
    " million yuan (US$415,000) per project, after the city's innovation bureau and Beijing's"
    " Ministry of Science and Technology signed a joint funding deal on Thursday. University heads"
    " welcomed the move, saying grant money had long been stuck at the border.",
    pub_date="Thu, 16 May 2024 20:15:42 +0800",
)
RAIN = (
    "The Hong Kong Observatory issued the Red Rainstorm Warning Signal at 6.05am today ({date})."
    " Heavy rain has fallen or is expected to fall generally over Hong Kong, exceeding 70"
    " millimetres in an hour, and is likely to continue."
)
RAIN_GOV = Item(
    title="Red Rainstorm Warning Signal issued",
    link="https://www.info.gov.hk/gia/general/202405/14/P2024051400100.htm",
    guid="https://www.info.gov.hk/gia/general/202405/14/P2024051400100.htm",
    description=RAIN.format(date="May 14"),
    pub_date="Tue, 14 May 2024 06:10:00 +0800",
)
RAIN_NEWS = Item(  # another day's warning, told by another source: a different event
    title="Red Rainstorm Warning Signal issued",
    link="https://news.example.org/2024/05/16/red-rain",
    description=RAIN.format(date="May 16"),
    pub_date="Thu, 16 May 2024 06:20:00 +0800",
)
# The same SCMP article under three spellings of its address, no guid: one entry.
SCMP_AGAIN = Item(title=SCMP.title + " ", link=SCMP.link.split("?")[0] + "?utm_medium=feed")


def config_text(
    server: FeedServer, data_dir: Path, *, threshold: float = 0.3, extra: str = ""
) -> str:
    sources = {"gov-en": 10, "gov-zh": 10, "scmp": 5, "news": 1}
    blocks = "\n".join(
        f'[[sources]]\nid = "{sid}"\nname = "{sid} feed"\nurl = "{server.url("/" + sid)}"\n'
        f"priority = {priority}\n"
        for sid, priority in sources.items()
    )
    return f"""
[aggregator]
data_dir = "{data_dir}"

{blocks}

[stories]
window = "7d"
threshold = {threshold}

[tags.hk-mainland-science]
title = "HK-Mainland science"
all = [["Hong Kong", "香港", "港深"], ["Shenzhen", "深圳"], ["research", "科研"]]
{extra}
"""


@pytest.fixture
def setup(http_server: FeedServer, tmp_path: Path) -> tuple[FeedServer, Path, Path]:
    http_server.routes.update(
        {
            "/gov-en": Response(200, rss([GOV_EN, RAIN_GOV])),
            "/gov-zh": Response(200, rss([GOV_ZH])),
            "/scmp": Response(200, rss([SCMP, SCMP_AGAIN])),
            "/news": Response(200, rss([RAIN_NEWS])),
        }
    )
    data_dir = tmp_path / "var"
    config = tmp_path / "feeds.toml"
    config.write_text(config_text(http_server, data_dir), encoding="utf-8")
    return http_server, config, data_dir


def run_cli(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def stories_by_title(data_dir: Path) -> dict[str, set[str]]:
    """story id -> titles of its members."""
    db = sqlite3.connect(data_dir / "aggregator.db")
    groups: dict[str, set[str]] = {}
    for story_id, title in db.execute("SELECT story_id, title FROM entries"):
        groups.setdefault(story_id, set()).add(title)
    db.close()
    return groups


ONE_EVENT = {GOV_EN.title, GOV_ZH.title, SCMP.title}


def test_poll_groups_one_event_and_keeps_look_alikes_apart(
    setup: tuple[FeedServer, Path, Path],
) -> None:
    _, config, data_dir = setup
    for source in ("gov-en", "gov-zh", "scmp", "news"):  # one after the other, in this order
        assert run_cli(config, "poll", source) == 0
    groups = sorted(stories_by_title(data_dir).values(), key=len, reverse=True)
    assert groups[0] == ONE_EVENT
    assert {RAIN_GOV.title} in groups and len(groups) == 3  # the two rain warnings stay apart
    db = sqlite3.connect(data_dir / "aggregator.db")
    # Three spellings of one SCMP address are one entry; every entry has its band keys.
    assert db.execute("SELECT count(*) FROM entries WHERE source_id = 'scmp'").fetchone()[0] == 1
    assert (
        db.execute("SELECT count(*) FROM entry_signatures WHERE length(bands) = 128").fetchone()[0]
        == 5
    )  # 32 band keys each
    assert db.execute("SELECT count(*) FROM entry_signatures").fetchone()[0] == 5


def test_same_canonical_url_across_sources_is_one_story(
    setup: tuple[FeedServer, Path, Path],
) -> None:
    server, config, data_dir = setup
    syndicated = Item(
        title="Varsities pool cash", link=SCMP.link.replace("#comments", "") + "&fbclid=x"
    )
    server.routes["/news"] = Response(200, rss([syndicated]))
    assert run_cli(config, "poll", "scmp") == 0
    assert run_cli(config, "poll", "news") == 0
    assert {SCMP.title, syndicated.title} in stories_by_title(data_dir).values()


def test_a_changed_entry_keeps_its_story(setup: tuple[FeedServer, Path, Path]) -> None:
    server, config, data_dir = setup
    assert run_cli(config, "poll", "gov-en") == 0
    assert run_cli(config, "poll", "scmp") == 0
    edited = Item(title=SCMP.title + " (updated)", link=SCMP.link, description=SCMP.description)
    server.routes["/scmp"] = Response(200, rss([edited]))
    assert run_cli(config, "poll", "scmp") == 0
    assert {GOV_EN.title, edited.title} in stories_by_title(data_dir).values()


def test_entries_json_carries_the_story(
    setup: tuple[FeedServer, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, config, _ = setup
    for source in ("gov-en", "gov-zh", "scmp", "news"):
        run_cli(config, "poll", source)
    capsys.readouterr()
    assert run_cli(config, "entries", "--json") == 0
    records = {r["title"]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    lead, zh, scmp = records[GOV_EN.title], records[GOV_ZH.title], records[SCMP.title]
    assert lead["story_id"] == zh["story_id"] == scmp["story_id"]
    # Both government versions have priority 10; the lead is the earliest, then the lowest id.
    leads = [r for r in (lead, zh, scmp) if r["is_lead"]]
    assert len(leads) == 1 and leads[0]["source"] in {"gov-en", "gov-zh"}
    assert sorted(scmp["story_members"]) == sorted([lead["id"], zh["id"]])
    alone = records[RAIN_NEWS.title]
    assert alone["is_lead"] is True and alone["story_members"] == []


def test_retag_applies_new_rules_and_regrouping_and_is_idempotent(
    setup: tuple[FeedServer, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    server, config, data_dir = setup
    # Polled with a threshold nothing reaches: only the language versions are linked.
    config.write_text(config_text(server, data_dir, threshold=0.99), encoding="utf-8")
    for source in ("gov-en", "gov-zh", "scmp", "news"):
        run_cli(config, "poll", source)
    assert {GOV_EN.title, GOV_ZH.title} in stories_by_title(data_dir).values()
    capsys.readouterr()

    rain_rule = '[tags.weather]\ntitle = "Weather"\nany = ["rainstorm", "暴雨"]\n'
    config.write_text(config_text(server, data_dir, extra=rain_rule), encoding="utf-8")
    assert run_cli(config, "retag") == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("2 entries gained weather;")
    assert "1 story merged, 0 split" in out
    assert ONE_EVENT in stories_by_title(data_dir).values()

    assert run_cli(config, "retag") == 0
    assert capsys.readouterr().out.strip() == "nothing changed (5 entries)"

    # Back to the old settings: the tag goes, the story splits again.
    config.write_text(config_text(server, data_dir, threshold=0.99), encoding="utf-8")
    assert run_cli(config, "retag") == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("2 entries lost weather;") and "0 stories merged, 1 split" in out
    db = sqlite3.connect(data_dir / "aggregator.db")
    assert db.execute("SELECT count(*) FROM entry_tags WHERE tag = 'weather'").fetchone()[0] == 0


def test_bad_stories_settings_are_config_errors(
    setup: tuple[FeedServer, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    server, config, data_dir = setup
    config.write_text(config_text(server, data_dir, threshold=1.5), encoding="utf-8")
    assert run_cli(config, "check") == 2
    err = capsys.readouterr().err
    assert "stories.threshold" in err and "feeds.toml:" in err and "Traceback" not in err
    text = config_text(server, data_dir).replace('window = "7d"', 'window = "7x"')
    config.write_text(text, encoding="utf-8")
    assert run_cli(config, "check") == 2
    assert "stories.window" in capsys.readouterr().err


# --- the store on its own -----------------------------------------------------------------


def entry(n: int, published: datetime, *, title: str, url: str | None = None) -> Entry:
    return Entry(
        id=f"e{n}",
        source_id="s1",
        guid=None,
        link=url,
        canonical_url=url,
        title=title,
        summary_html="",
        summary_text="",
        author=None,
        published=published,
        updated=None,
        first_seen=published,
        content_hash=f"h{n}",
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "aggregator.db")
    store.sync_sources([SourceSettings(id="s1", url="https://s1.example/", name="S1")], NOW)
    yield store  # type: ignore[misc]
    store.close()


def keys_of(e: Entry) -> StoryKeys:
    return StoryKeys(e.id, e.published, fingerprint(e.title, e.summary_text, e.canonical_url))


def test_candidates_come_from_band_keys_within_the_window_or_the_url(store: Store) -> None:
    title = "Hong Kong and Shenzhen sign research funding arrangement"
    near = entry(1, NOW - timedelta(days=2), title=title)
    far = entry(2, NOW - timedelta(days=30), title=title)
    other = entry(3, NOW, title="Visitor arrivals in April", url="https://x.example/a")
    write = PollWrite(
        "s1", NOW, 200, None, None, NOW, [near, far, other], [], [keys_of(near), keys_of(far), keys_of(other)]
    )  # fmt: skip
    store.apply_poll(write)
    fp = fingerprint(title, "", None)
    by_bands = CandidateQuery("new", fp.band_keys, [], NOW)
    by_url = CandidateQuery("new", (), ["https://x.example/a"], NOW)
    found, found_by_url = store.story_candidates([by_bands, by_url], timedelta(days=7))
    assert [c.entry_id for c in found] == ["e1"]
    assert found[0].fingerprint == fp and found[0].story_sources == {"s1"}  # stored whole
    assert [c.entry_id for c in found_by_url] == ["e3"]
    # The band keys are read by day of publication, an index range, not a scan of every entry.
    plan = " ".join(
        row[3]
        for row in store.conn.execute(
            "EXPLAIN QUERY PLAN SELECT fp_id, published, bands FROM entry_signatures"
            " WHERE published >= ? AND published < ?",
            (0, 1),
        )
    )
    assert "USING INDEX entry_signatures_by_published" in plan
    # Deleting an entry deletes its fingerprint and keys.
    store.conn.execute("DELETE FROM entries WHERE id = 'e1'")
    assert (
        store.conn.execute(
            "SELECT count(*) FROM entry_signatures WHERE entry_id = 'e1'"
        ).fetchone()[0]
        == 0
    )


def test_the_band_index_follows_the_window_and_other_writers(store: Store) -> None:
    title = "Hong Kong and Shenzhen sign research funding arrangement"
    fp = fingerprint(title, "", None)
    query = CandidateQuery("new", fp.band_keys, [], NOW, fp.signature)
    week = timedelta(days=7)
    old = entry(1, NOW - timedelta(days=60), title=title)
    store.apply_poll(PollWrite("s1", NOW, 200, None, None, NOW, [old], [], [keys_of(old)]))
    assert len(store.band_index) == 0  # written on a day no window has read: not held
    assert store.story_candidates([query], week) == [[]]
    assert len(store.band_index) == 0  # 60 days back is outside this window
    near = entry(2, NOW - timedelta(days=1), title=title)
    store.apply_poll(PollWrite("s1", NOW, 200, None, None, NOW, [near], [], [keys_of(near)]))
    assert len(store.band_index) == 1  # its day was read: held at once
    # Another process writes the same event: the next lookup starts over and sees it.
    other = Store(store.path)
    copy = entry(3, NOW - timedelta(hours=2), title=title)
    other.apply_poll(PollWrite("s1", NOW, 200, None, None, NOW, [copy], [], [keys_of(copy)]))
    other.close()
    [found] = store.story_candidates([query], week)
    assert sorted(c.entry_id for c in found) == ["e2", "e3"]
    # A candidate whose signature agrees on too few values is dropped before it is read.
    unrelated = fingerprint("Visitor arrivals in April rose on the Mainland", "", None)
    far_query = CandidateQuery("new", fp.band_keys, [], NOW, unrelated.signature)
    assert store.story_candidates([far_query], week) == [[]]


def test_a_fingerprint_written_again_replaces_the_old_one_under_the_next_fp_id(
    store: Store,
) -> None:
    """fp ids are given as SQLite gave them to INSERT OR REPLACE: max + 1, max + 2, ..., a
    re-fingerprinted entry too (its old row goes); the band index holds the new id."""
    title = "Hong Kong and Shenzhen sign research funding arrangement"
    first, second = entry(1, NOW, title=title), entry(2, NOW, title="Visitor arrivals in April")
    poll = PollWrite("s1", NOW, 200, None, None, NOW, [first, second], [], [keys_of(first), keys_of(second)])  # fmt: skip
    store.apply_poll(poll)
    query = CandidateQuery("new", fingerprint(title, "", None).band_keys, [], NOW)
    store.story_candidates([query], timedelta(days=7))  # reads today into the band index
    edited = dataclasses.replace(first, title=title + " today", content_hash="h1b")
    store.apply_poll(PollWrite("s1", NOW, 200, None, None, NOW, [], [edited], [keys_of(edited)]))
    rows = store.conn.execute("SELECT entry_id, fp_id FROM entry_signatures ORDER BY fp_id")
    assert [tuple(row) for row in rows] == [("e2", 2), ("e1", 3)]
    [found] = store.story_candidates([query], timedelta(days=7))
    assert [c.entry_id for c in found] == ["e1"]
    assert found[0].fingerprint == keys_of(edited).fingerprint  # the new one, under fp id 3
    assert 3 in store.band_index._published
    # One entry twice in one write: the last wins, as with OR REPLACE.
    again = dataclasses.replace(edited, title="Visitor arrivals in May")
    with transaction(store.conn) as conn:
        written = write_story_keys(conn, [keys_of(edited), keys_of(again)])
    assert [w.fp_id for w in written] == [4, 5]
    rows = store.conn.execute("SELECT entry_id, fp_id, signature FROM entry_signatures")
    assert sorted(tuple(row) for row in rows) == [
        ("e1", 5, keys_of(again).fingerprint.packed_form().signature),
        ("e2", 2, keys_of(second).fingerprint.packed_form().signature),
    ]


def test_signature_values_are_compared_as_one_integer() -> None:
    rng = random.Random(7)
    for _ in range(500):
        a = [rng.getrandbits(32) for _ in range(64)]
        b = [x if rng.random() < 0.3 else rng.getrandbits(32) for x in a]
        k = rng.randrange(64)
        b[k] = a[k] ^ (1 << rng.randrange(32))  # one bit apart: not equal
        packed = struct.Struct("<64I")
        equal = _equal_values(_as_int(packed.pack(*a)), _as_int(packed.pack(*b)))
        assert equal == sum(x == y for x, y in zip(a, b, strict=True))


def test_migration_7_fingerprints_again_the_entries_that_had_keys(tmp_path: Path) -> None:
    from aggregator.store.schema import MIGRATIONS

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for version in range(1, 7):  # the shipped schema before compact story keys
        MIGRATIONS[version](conn)
    conn.execute("PRAGMA user_version = 6")
    conn.execute("INSERT INTO sources (id, url, created_at) VALUES ('s1', 'u', 'x')")
    title, lead = "Hong Kong and Shenzhen sign research funding arrangement", "Today (May 16)."
    for entry_id in ("e1", "e2"):
        conn.execute(
            "INSERT INTO entries (id, source_id, title, summary_html, summary_text, published,"
            " first_seen, last_changed, content_hash, story_id)"
            " VALUES (?, 's1', ?, '', ?, '2024-05-16T04:30:00Z', 'x', 'x', 'h', ?)",
            (entry_id, title, lead, entry_id),
        )
    conn.execute("INSERT INTO entry_signatures (entry_id, signature) VALUES ('e1', x'00')")
    conn.close()
    store = Store(path)
    rows = store.conn.execute("SELECT entry_id FROM entry_signatures").fetchall()
    assert [row[0] for row in rows] == ["e1"]  # e2 had never been grouped
    query = CandidateQuery("new", fingerprint(title, lead, None).band_keys, [], NOW)
    (found,) = store.story_candidates([query], timedelta(days=7))
    assert [c.entry_id for c in found] == ["e1"]
    assert found[0].fingerprint == fingerprint(title, lead, None)
    store.close()
