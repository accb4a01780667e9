"""Benchmark: what curating one new item costs (normalize, tag, find its story), and that the cost
does not grow with the number of stored items.

    .venv/bin/python bench/curation.py [--sizes 10000,200000] [--new 500] [--batch 25]
                                       [--repeats 3] [--quick] [--update-docs]

Stored entries are synthetic bilingual items (English and Traditional Chinese titles and leads
drawn from a fixed vocabulary), written straight into a temporary SQLite store with their
fingerprints and band keys, at a steady 300 items a day, so the 7-day window always holds about
2,100 items whatever the history's length. Then `--new` fresh items go through the per-item
steps of a poll: normalize_entry and the compiled tag rules one by one, then story grouping
(`assign_stories`: each fingerprinted once, one batched candidate lookup, the pure decision) in
batches of `--batch`, as one poll of one source does; a batch's cost is shared by its items.
Times are process CPU time (less disturbed by other processes than wall time), µs per item.
The last stdout line is JSON for bench/run.py. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import opencc

from aggregator import config
from aggregator.models import Entry, ParsedEntry
from aggregator.process.dedupe import fingerprint
from aggregator.process.normalize import normalize_entry
from aggregator.process.tag import compile_rules
from aggregator.settings import SourceSettings, StorySettings
from aggregator.store import PollWrite, Store
from aggregator.store.stories import StoryKeys
from aggregator.update import assign_stories, story_item
from bench.docs_section import memory_gib, write_section

PER_DAY = 300
SOURCES = [f"source-{i}" for i in range(12)]
EN_WORDS = [
    "Hong",
    "Kong",
    "Shenzhen",
    "Guangdong",
    "Mainland",
    "government",
    "bureau",
    "minister",
    "research",
    "university",
    "laboratory",
    "funding",
    "scheme",
    "technology",
    "innovation",
    "science",
    "artificial",
    "intelligence",
    "biotech",
    "chip",
    "semiconductor",
    "quantum",
    "talent",
    "startup",
    "park",
    "Hetao",
    "Loop",
    "cooperation",
    "agreement",
    "signed",
    "launched",
    "announced",
    "opens",
    "visit",
    "delegation",
    "council",
    "meeting",
    "policy",
    "budget",
    "housing",
    "transport",
    "railway",
    "airport",
    "port",
    "trade",
    "tourism",
    "visitors",
    "economy",
    "growth",
    "police",
    "court",
    "health",
    "hospital",
    "school",
    "students",
    "teachers",
    "weather",
    "rainstorm",
    "typhoon",
    "heat",
    "culture",
    "festival",
    "museum",
    "sports",
    "data",
    "privacy",
    "security",
    "digital",
    "finance",
    "bank",
    "bond",
    "market",
    "exchange",
    "listing",
    "investment",
    "fund",
    "green",
    "energy",
    "carbon",
    "climate",
]
ZH_TEXT = """香港深圳廣東內地政府局長科研大學實驗室資助計劃科技創新科學人工智能生物醫藥晶片半導體量子
人才初創園區河套合作協議簽署啟動公布開幕訪問代表團會議政策預算房屋運輸鐵路機場港口貿易旅遊旅客經濟
增長警方法院衞生醫院學校學生教師天氣暴雨颱風文化節博物館體育數據私隱安全數碼金融銀行債券市場交易所
上市投資基金綠色能源碳排放氣候大灣區前海南沙橫琴粵港澳發展規劃""".replace("\n", "")
T0 = datetime(2024, 1, 1, tzinfo=UTC)
# News vocabulary is Zipf-distributed: a few words everywhere, most rare. The topic words above
# are the most frequent, then 20,000 made-up words (English) or 3,500 common CJK characters.
_EN_VOCAB = EN_WORDS + [f"w{i}x" for i in range(20_000)]
_ZH_VOCAB = list(dict.fromkeys(ZH_TEXT)) + [chr(0x4E00 + i * 5) for i in range(3_500)]
_EN_WEIGHTS = list(accumulate(1 / (r + 1) for r in range(len(_EN_VOCAB))))
_ZH_WEIGHTS = list(accumulate(1 / (r + 1) for r in range(len(_ZH_VOCAB))))


def synthetic(rng: random.Random, n: int, published: datetime) -> Entry:
    """One item: English or Chinese (half each), title of 8-12 words, lead of ~50 words."""
    if rng.random() < 0.5:
        title = " ".join(_en(rng, rng.randint(8, 12))).capitalize()
        lead = " ".join(_en(rng, 50)) + "."
    else:
        title = "".join(_zh(rng, rng.randint(12, 18)))
        lead = "".join(_zh(rng, 120)) + "。"
    source = rng.choice(SOURCES)
    return Entry(
        id=f"e{n:08d}",
        source_id=source,
        guid=f"g{n}",
        link=f"https://{source}.example/{n}",
        canonical_url=f"https://{source}.example/{n}",
        title=title,
        summary_html=f"<p>{lead}</p>",
        summary_text=lead,
        author=None,
        published=published,
        updated=None,
        first_seen=published,
        content_hash=f"h{n}",
        tags=(),
    )


def _en(rng: random.Random, count: int) -> list[str]:
    return rng.choices(_EN_VOCAB, cum_weights=_EN_WEIGHTS, k=count)


def _zh(rng: random.Random, count: int) -> list[str]:
    return rng.choices(_ZH_VOCAB, cum_weights=_ZH_WEIGHTS, k=count)


def fill(store: Store, count: int, rng: random.Random) -> datetime:
    """`count` stored entries, PER_DAY a day ending now; returns the last published time."""
    step = timedelta(days=1) / PER_DAY
    batch: list[Entry] = []
    keys: list[StoryKeys] = []
    published = T0
    for n in range(count):
        published = T0 + step * n
        entry = synthetic(rng, n, published)
        fp = fingerprint(entry.title, entry.summary_text, entry.canonical_url)
        batch.append(entry)
        keys.append(StoryKeys(entry.id, published, fp))
        if len(batch) == 5000 or n == count - 1:
            write = PollWrite(SOURCES[0], published, 200, None, None, published, batch, (), keys)
            store.apply_poll(write)
            batch, keys = [], []
    return published


def measure(
    store: Store, after: datetime, new: int, batch: int, rng: random.Random
) -> dict[str, list[float]]:
    """CPU µs per item: normalize and tag each item, then group stories a batch at a time."""
    settings = config.load(Path(__file__).resolve().parent.parent / "examples" / "demo.toml")
    tagger = compile_rules(settings.tags)
    stories = StorySettings()
    timings: dict[str, list[float]] = {"normalize": [], "tag": [], "story": [], "total": []}
    clock = time.process_time
    for start in range(0, new, batch):
        entries, before_story = [], []
        for i in range(start, min(new, start + batch)):
            raw = synthetic(rng, 10_000_000 + i, after + timedelta(minutes=i))
            parsed = ParsedEntry(
                guid=raw.guid,
                link=raw.link,
                title=raw.title,
                summary_html=raw.summary_html,
                published=raw.published,
            )
            t0 = clock()
            entry = normalize_entry(
                parsed, source_id=raw.source_id, base_url=raw.link or "", first_seen=raw.published
            )
            t1 = clock()
            tagger.tags_for(entry, source_name=raw.source_id, source_tags=())
            t2 = clock()
            entries.append(entry)
            timings["normalize"].append((t1 - t0) * 1e6)
            timings["tag"].append((t2 - t1) * 1e6)
            before_story.append((t2 - t0) * 1e6)
        t3 = clock()
        assign_stories(store, [story_item(e) for e in entries], stories)
        share = (clock() - t3) * 1e6 / len(entries)
        timings["story"] += [share] * len(entries)
        timings["total"] += [spent + share for spent in before_story]
    return timings


def describe(values: list[float]) -> str:
    q = statistics.quantiles(values, n=20)
    return f"median {statistics.median(values):6.0f} µs  p5 {q[0]:6.0f}  p95 {q[-1]:6.0f}"


def story_bytes(path: Path) -> int:
    """Bytes of the story-matching tables and their indexes (SQLite's dbstat)."""
    conn = sqlite3.connect(path)
    try:
        query = (
            "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name LIKE 'entry_signatures%'"
            " OR name LIKE 'sqlite_autoindex_entry_signatures%'"
        )
        return int(conn.execute(query).fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", help="stored entries to compare (10000,200000; quick 2000,20000)"
    )
    parser.add_argument("--new", type=int, help="new items measured per repeat (500; quick 200)")
    parser.add_argument("--batch", type=int, default=25, help="new items per poll (25)")
    parser.add_argument("--repeats", type=int, help="repeats per size (3; quick 1)")
    parser.add_argument("--quick", action="store_true", help="small sizes: check the harness")
    parser.add_argument("--update-docs", action="store_true", help="rewrite this script's section")
    args = parser.parse_args()
    sizes_text = args.sizes or ("2000,20000" if args.quick else "10000,200000")
    sizes = [int(s) for s in sizes_text.split(",")]
    new = args.new or (200 if args.quick else 500)
    repeats = args.repeats or (1 if args.quick else 3)
    opencc.OpenCC("hk2s")  # warm the converter outside the timings
    lines: list[str] = []
    totals: dict[int, list[float]] = {}
    for size in sizes:
        rng = random.Random(size)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "bench.db"
            store = Store(path)
            store.sync_sources(
                [SourceSettings(id=s, url=f"https://{s}.example/", name=s) for s in SOURCES], T0
            )
            started = time.perf_counter()
            last = fill(store, size, rng)
            filled = time.perf_counter() - started
            measure(store, last, 50, args.batch, rng)  # warm caches
            runs = [measure(store, last, new, args.batch, rng) for _ in range(repeats)]
            store.close()
            db_mb = path.stat().st_size / 1e6
            per_entry = story_bytes(path) / size
        totals[size] = [statistics.median(run["total"]) for run in runs]
        lines.append(
            f"stored {size:>7,} (filled in {filled:.0f} s, db {db_mb:.0f} MB,"
            f" story tables {per_entry:.0f} bytes/entry):"
        )
        for name in runs[0]:
            lines.append(f"  {name:<9} {describe([v for run in runs for v in run[name]])}")
        lines.append(
            "  total, median of each repeat: " + ", ".join(f"{m:.0f}" for m in totals[size]) + " µs"
        )
    print("\n".join(lines))
    if args.update_docs:
        update_docs(lines, args.batch, sizes, new, repeats)
    figures: list[dict[str, object]] = [
        {
            "name": f"curate one new item, {size:,} stored (normalize + tag + story)",
            "unit": "µs CPU",
            "median": round(statistics.median(totals[size]), 1),
            "min": round(min(totals[size]), 1),
            "max": round(max(totals[size]), 1),
            "target": "well under 1,000; flat with the history",
            "better": "lower",
        }
        for size in sizes
    ]
    growth = statistics.median(totals[sizes[-1]]) / statistics.median(totals[sizes[0]])
    figures[-1]["note"] = f"{growth:.2f}x the cost at {sizes[0]:,} stored"
    print(json.dumps(figures, ensure_ascii=False))


SECTION_START = "<!-- bench:curation:start -->"
SECTION_END = "<!-- bench:curation:end -->"


def update_docs(lines: list[str], batch: int, sizes: list[int], new: int, repeats: int) -> None:
    """Rewrite the measured block of this script's section in docs/benchmarks.md."""
    memory = memory_gib()
    command = (
        f"`.venv/bin/python bench/curation.py --sizes {','.join(map(str, sizes))} --new {new}"
        f" --batch {batch} --repeats {repeats} --update-docs`"
    )
    block = [
        SECTION_START,
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: {command}",
        "",
        f"Machine: {os.cpu_count()} CPUs (nproc), {memory:.1f} GiB memory, {platform.platform()};"
        f" Python {platform.python_version()}, SQLite {sqlite3.sqlite_version},"
        f" opencc {getattr(opencc, '__version__', '?')}; load average"
        f" {os.getloadavg()[0]:.1f} at the end.",
        "",
        "```",
        *lines,
        "```",
        SECTION_END,
    ]
    write_section(block, SECTION_START, SECTION_END)


if __name__ == "__main__":
    main()
