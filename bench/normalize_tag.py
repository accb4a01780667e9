"""Microbenchmark: CPU time per item of parse_feed, normalize_entry and the compiled tag rules.

    .venv/bin/python bench/normalize_tag.py [--feeds 6] [--items 50] [--repeats 15]

Items come from bench/corpus.py's generator (RSS and Atom; English, Traditional and Simplified
Chinese; HTML summaries of 1-2 KB); the rules are config/feeds.toml's. Each repeat parses every
document, then normalizes and tags every item, each stage timed in process CPU time (less
disturbed by other processes than wall time); per-item figures are a repeat's total / items.
Parse is reported apart; the last line, JSON for the bench harness, is normalize + tag.
Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aggregator import config
from aggregator.models import Entry, ParsedEntry
from aggregator.parse.feeds import parse_feed
from aggregator.process.normalize import normalize_entry
from aggregator.process.tag import Tagger, compile_rules
from bench.corpus import document

ROOT = Path(__file__).resolve().parent.parent
FIRST_SEEN = datetime(2030, 1, 1, tzinfo=UTC)


def documents(feeds: int, items: int) -> list[tuple[str, bytes]]:
    """(feed URL, document) for `feeds` generated feeds."""
    return [
        (f"https://news{index}.example.org/feed.xml", document(index, items, seed=8))
        for index in range(feeds)
    ]


def parse_all(docs: list[tuple[str, bytes]]) -> list[tuple[str, ParsedEntry]]:
    """(feed URL, parsed entry) for every item of the documents."""
    parsed: list[tuple[str, ParsedEntry]] = []
    for url, content in docs:
        parsed.extend((url, entry) for entry in parse_feed(content, url=url).entries)
    return parsed


def normalize_all(items: list[tuple[str, ParsedEntry]]) -> list[Entry]:
    return [
        normalize_entry(entry, source_id="bench", base_url=url, first_seen=FIRST_SEEN)
        for url, entry in items
    ]


def tag_all(tagger: Tagger, entries: list[Entry]) -> None:
    for entry in entries:
        tagger.tags_for(entry, source_name="Bench News 新聞", source_tags=("media",))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=6, help="feeds (3 languages x RSS/Atom)")
    parser.add_argument("--items", type=int, default=50, help="items per feed")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "feeds.toml")
    args = parser.parse_args()
    docs = documents(args.feeds, args.items)
    items = parse_all(docs)
    tagger = compile_rules(config.load(args.config).tags)
    entries = normalize_all(items)  # warm caches (OpenCC, regexes, nh3 cleaners)
    tag_all(tagger, entries)
    parse: list[float] = []
    normalize: list[float] = []
    tag: list[float] = []
    for _ in range(args.repeats):
        t0 = time.process_time_ns()
        items = parse_all(docs)
        t1 = time.process_time_ns()
        entries = normalize_all(items)
        t2 = time.process_time_ns()
        tag_all(tagger, entries)
        t3 = time.process_time_ns()
        parse.append((t1 - t0) / 1e3 / len(items))
        normalize.append((t2 - t1) / 1e3 / len(items))
        tag.append((t3 - t2) / 1e3 / len(items))
    total = [n + t for n, t in zip(normalize, tag, strict=True)]
    summary_kb = statistics.mean(len(e.summary_html.encode()) for e in entries) / 1024
    print(
        f"{len(items)} items ({args.feeds} feeds), mean sanitized summary {summary_kb:.1f} KB, "
        f"{len(tagger.rules)} rules, {args.repeats} repeats, CPU µs per item:"
    )
    for name, values in (
        ("parse", parse),
        ("normalize", normalize),
        ("tag", tag),
        ("both", total),
        ("all three", [p + t for p, t in zip(parse, total, strict=True)]),
    ):
        print(
            f"  {name:<9} median {statistics.median(values):6.1f}"
            f"  min {min(values):6.1f}  max {max(values):6.1f}"
        )
    result = {
        "name": "normalize+tag per item",
        "unit": "µs",
        "median": round(statistics.median(total), 1),
        "min": round(min(total), 1),
        "max": round(max(total), 1),
        "target": 300,
        "better": "lower",
    }
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
