"""Benchmark: what curating one new item costs (normalize, tag, find its story), and that the cost
does not grow with the number of stored items.

    .venv/bin/python bench/curation.py [--sizes 10000,200000] [--new 500] [--append docs/benchmarks.md]

Stored entries are synthetic bilingual items (English and Traditional Chinese titles and leads
drawn from a fixed vocabulary), written straight into a temporary SQLite store with their band
keys, at a steady 300 items a day, so the 7-day window always holds about 2,100 items whatever
the history's length. Then `--new` fresh items go through the per-item steps of a poll:
normalize_entry, the compiled tag rules, and assign_story (one indexed candidate query plus the
pure decision). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
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
from aggregator.update import assign_story, story_item

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
        keys.append(StoryKeys(entry.id, published, fp.band_keys, fp.signature))
        if len(batch) == 5000 or n == count - 1:
            write = PollWrite(SOURCES[0], published, 200, None, None, published, batch, (), keys)
            store.apply_poll(write)
            batch, keys = [], []
    return published


def measure(store: Store, after: datetime, new: int, rng: random.Random) -> dict[str, list[float]]:
    settings = config.load(Path(__file__).resolve().parent.parent / "examples" / "demo.toml")
    tagger = compile_rules(settings.tags)
    stories = StorySettings()
    timings: dict[str, list[float]] = {"normalize": [], "tag": [], "story": [], "total": []}
    for i in range(new):
        raw = synthetic(rng, 10_000_000 + i, after + timedelta(minutes=i))
        parsed = ParsedEntry(
            guid=raw.guid,
            link=raw.link,
            title=raw.title,
            summary_html=raw.summary_html,
            published=raw.published,
        )
        t0 = time.perf_counter()
        entry = normalize_entry(
            parsed, source_id=raw.source_id, base_url=raw.link or "", first_seen=raw.published
        )
        t1 = time.perf_counter()
        tagger.tags_for(entry, source_name=raw.source_id, source_tags=())
        t2 = time.perf_counter()
        assign_story(store, story_item(entry), stories)
        t3 = time.perf_counter()
        for name, value in zip(timings, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
            timings[name].append(value * 1e6)
    return timings


def describe(values: list[float]) -> str:
    q = statistics.quantiles(values, n=20)
    return f"median {statistics.median(values):6.0f} µs  p5 {q[0]:6.0f}  p95 {q[-1]:6.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,200000")
    parser.add_argument("--new", type=int, default=500)
    parser.add_argument("--append", metavar="FILE", help="append the results to this Markdown file")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    opencc.OpenCC("hk2s")  # warm the converter outside the timings
    lines: list[str] = []
    for size in sizes:
        rng = random.Random(size)
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(Path(tmp) / "bench.db")
            store.sync_sources(
                [SourceSettings(id=s, url=f"https://{s}.example/", name=s) for s in SOURCES], T0
            )
            started = time.perf_counter()
            last = fill(store, size, rng)
            filled = time.perf_counter() - started
            measure(store, last, 50, rng)  # warm caches
            timings = measure(store, last, args.new, rng)
            db_mb = (Path(tmp) / "bench.db").stat().st_size / 1e6
            store.close()
        lines.append(f"stored {size:>7,} (filled in {filled:.0f} s, db {db_mb:.0f} MB):")
        for name, values in timings.items():
            lines.append(f"  {name:<9} {describe(values)}")
    print("\n".join(lines))
    if args.append:
        _append(Path(args.append), lines, args)


def _append(path: Path, lines: list[str], args: argparse.Namespace) -> None:
    import sqlite3

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    header = [
        "",
        f"## Curation cost per new item ({datetime.now(UTC):%Y-%m-%d})",
        "",
        f"`.venv/bin/python bench/curation.py --sizes {args.sizes} --new {args.new}`",
        "",
        f"Machine: {os.cpu_count()} CPUs (nproc), {memory:.1f} GiB memory, {platform.platform()};"
        f" Python {platform.python_version()}, SQLite {sqlite3.sqlite_version},"
        f" opencc {getattr(opencc, '__version__', '?')}.",
        f"Synthetic bilingual items at {PER_DAY} a day (the 7-day window holds ~{PER_DAY * 7}).",
        "normalize = normalize_entry; tag = compiled rules of examples/demo.toml; story = the",
        "candidate query (one indexed statement) plus the pure decision.",
        "",
        "```",
        *lines,
        "```",
    ]
    with path.open("a", encoding="utf-8") as out:
        out.write("\n".join(header) + "\n")


if __name__ == "__main__":
    main()
