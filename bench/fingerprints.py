"""Microbenchmark: CPU time per entry of story fingerprints, one by one against one feed at once.

    .venv/bin/python bench/fingerprints.py [--feeds 200] [--items 50] [--repeats 5]

Entries come from bench/corpus.py's generator (English, Traditional and Simplified Chinese),
parsed and normalized as a poll does. Each repeat packs every entry's fingerprint twice: one by
one (`pack_fingerprint(fingerprint(...))`), and per feed (`packed_fingerprints`, numpy), in
process CPU time; per-entry figures are a repeat's total / entries. The results are checked
equal first. The last line, JSON for the bench harness, is the batch path.
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

from aggregator.parse.feeds import parse_feed
from aggregator.process.dedupe import fingerprint, pack_fingerprint
from aggregator.process.fingerprints import packed_fingerprints
from aggregator.process.normalize import normalize_entry
from bench.corpus import document

FIRST_SEEN = datetime(2030, 1, 1, tzinfo=UTC)
Item = tuple[str, str, str | None]


def feed_items(feeds: int, items: int) -> list[list[Item]]:
    """(title, lead, canonical URL) of each entry, per generated feed."""
    batches = []
    for index in range(feeds):
        url = f"https://news{index}.example.org/feed.xml"
        parsed = parse_feed(document(index, items, seed=8), url=url)
        entries = [
            normalize_entry(entry, source_id="bench", base_url=url, first_seen=FIRST_SEEN)
            for entry in parsed.entries
        ]
        batches.append([(e.title, e.summary_text, e.canonical_url) for e in entries])
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--items", type=int, default=50, help="items per feed")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    batches = feed_items(args.feeds, args.items)
    count = sum(map(len, batches))
    for batch in batches:  # checks, and warms the caches of both paths
        if packed_fingerprints(batch) != [pack_fingerprint(fingerprint(*i)) for i in batch]:
            raise SystemExit("the batch path differs from the one-entry path")
    one_by_one: list[float] = []
    per_feed: list[float] = []
    for _ in range(args.repeats):
        t0 = time.process_time_ns()
        for batch in batches:
            [pack_fingerprint(fingerprint(*item)) for item in batch]
        t1 = time.process_time_ns()
        for batch in batches:
            packed_fingerprints(batch)
        t2 = time.process_time_ns()
        one_by_one.append((t1 - t0) / 1e3 / count)
        per_feed.append((t2 - t1) / 1e3 / count)
    print(f"{count} entries ({args.feeds} feeds), {args.repeats} repeats, CPU µs per entry:")
    for name, values in (("one by one", one_by_one), ("per feed", per_feed)):
        print(
            f"  {name:<10} median {statistics.median(values):6.1f}"
            f"  min {min(values):6.1f}  max {max(values):6.1f}"
        )
    result = {
        "name": "packed fingerprint per entry (per feed, numpy)",
        "unit": "µs",
        "median": round(statistics.median(per_feed), 1),
        "min": round(min(per_feed), 1),
        "max": round(max(per_feed), 1),
        "target": 75,  # half of the one-by-one path's ~150 µs when this was written
        "better": "lower",
        "note": f"one by one: {statistics.median(one_by_one):.1f} µs",
    }
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
