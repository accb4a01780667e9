"""Benchmark: publishing the topic feed, 50 tag feeds and the website, 100 stories each.

    .venv/bin/python bench/publish.py [--repeats 7] [--quick]

Issue 8 point 5: at most 0.5 s. Measured, each as the median (min-max) of `--repeats` runs, in
wall time and CPU time (time.process_time) since the machine is shared:

- first publish: an empty public folder, every file rendered and written (fsync included),
  the templates compiled already (by the warm-up publish, as in a running worker);
- unchanged republish: the same stories again, the common case for the worker (the manifest
  says every output's inputs are unchanged, so nothing is rendered);
- one story added to one tag: that tag's three feeds and its page rendered again;
- re-render: the manifest removed, so every file is rendered and compared, none written (what
  an upgrade of aggregator or its templates costs once).

Prints a table, rewrites its section of docs/benchmarks.md (not with --quick) and, last, one
JSON line for bench/run.py: the first publish against the target, the others in "note".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aggregator.models import Entry, StoredEntry, Story
from aggregator.process.sanitize import clean_html
from aggregator.publish import MANIFEST_FILE, PublishReport, SiteData, plan_archive, publish
from aggregator.settings import PublishSettings, Settings
from bench.docs_section import memory_gib, write_section

STORIES = 100
TAGS = 50
TARGET_SECONDS = 0.5
NOW = datetime(2024, 5, 24, 9, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "templates"
SECTION_START = "<!-- bench:publish:start -->"
SECTION_END = "<!-- bench:publish:end -->"


def make_story(n: int, tag: str) -> Story:
    def member(suffix: str, source: str, hours: int) -> StoredEntry:
        published = NOW - timedelta(hours=n * 5 + hours)
        summary = f"Hong Kong and Shenzhen partners report progress on project {n}. " * 6
        entry = Entry(
            id=f"{source}:{tag}:{n}{suffix}",
            source_id=source,
            guid=None,
            link=f"https://news.example.org/{source}/{tag}/{n}{suffix}",
            canonical_url=None,
            title=f"香港與深圳科技合作 {tag} story {n}{suffix}: joint laboratory opens",
            # As the store gives summaries back: cleaned when they were stored.
            summary_html=clean_html(
                f'<p>{summary}</p><p><a href="https://x.example/{n}">More</a></p>'
            ),
            summary_text=summary,
            author=None,
            published=published,
            updated=None,
            first_seen=published,
            content_hash=f"{tag}:{n}{suffix}",
            tags=("hk-mainland-science", tag),
        )
        return StoredEntry(entry=entry, source_name=f"Outlet {source}", sanitized=True)

    lead = member("", "hksar", 0)
    others = (member("b", "scmp", -1), member("c", "rthk", -2)) if n % 3 == 0 else ()
    return Story(id=lead.entry.id, lead=lead, others=others)


def site() -> SiteData:
    """50 tags of 100 distinct stories (5,000 in all), the first tag being the topic."""
    tags = {
        f"tag-{t:02d}": [make_story(n, f"tag-{t:02d}") for n in range(STORIES)] for t in range(TAGS)
    }
    topic = tags["tag-00"]
    zone = ZoneInfo("Asia/Hong_Kong")
    counts, weeks = plan_archive({s.id: s.published for s in topic}, zone, set())
    by_id = {s.id: s for s in topic}
    return SiteData(
        topic=topic,
        everything=topic,
        tags=tags,
        weeks={w: [by_id[i] for i in ids] for w, ids in weeks.items()},
        week_counts=counts,
    )


def with_new_story(data: SiteData, tag: str, n: int) -> SiteData:
    tags = dict(data.tags)
    tags[tag] = [make_story(STORIES + n, tag), *tags[tag][:-1]]
    return replace(data, tags=tags)


Timing = tuple[float, float, PublishReport]  # wall s, CPU s, report


def timed(data: SiteData, settings: Settings, public: Path) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    report = publish(data, settings=settings, public_dir=public, now=NOW, templates_dir=TEMPLATES)
    return time.perf_counter() - wall, time.process_time() - cpu, report


def measure(
    repeats: int, prepare: Callable[[int], tuple[SiteData, Path]], run: Settings
) -> list[Timing]:
    results = []
    for n in range(repeats):
        data, public = prepare(n)
        results.append(timed(data, run, public))
    return results


def summary(label: str, timings: list[Timing]) -> tuple[str, float, float, float]:
    walls = [t[0] for t in timings]
    cpus = [t[1] for t in timings]
    report = timings[-1][2]
    line = (
        f"| {label} | {statistics.median(walls):.3f} ({min(walls):.3f}–{max(walls):.3f}) |"
        f" {statistics.median(cpus):.3f} | {len(report.written)} written,"
        f" {len(report.unchanged)} unchanged |"
    )
    return line, statistics.median(walls), min(walls), max(walls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs per case (7; quick 2)")
    parser.add_argument("--quick", action="store_true", help="2 repeats, docs left alone")
    args = parser.parse_args()
    repeats = 2 if args.quick else args.repeats
    data = site()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(
            path=root / "feeds.toml",
            data_dir=root,
            publish=PublishSettings(
                topic="hk-mainland-science", title="Bench", base_url="https://b.example/"
            ),
        )
        timed(data, settings, root / "warm-up")  # imports, template compilation

        def fresh(n: int) -> tuple[SiteData, Path]:
            return data, root / f"first-{n}"

        first = measure(repeats, fresh, settings)
        public = root / "first-0"
        unchanged = measure(repeats, lambda n: (data, public), settings)

        def one_new(n: int) -> tuple[SiteData, Path]:
            return with_new_story(data, "tag-07", n), public

        one_story = measure(repeats, one_new, settings)
        timed(data, settings, public)  # back to the base data

        def no_manifest(n: int) -> tuple[SiteData, Path]:
            (public / MANIFEST_FILE).unlink(missing_ok=True)
            return data, public

        rerender = measure(repeats, no_manifest, settings)
        for n in range(repeats):
            shutil.rmtree(root / f"first-{n}", ignore_errors=True)
    files = len(first[0][2].written)
    rows = [
        summary("first publish (empty folder: render and write every file)", first),
        summary("unchanged republish (manifest: nothing rendered)", unchanged),
        summary("one new story in one tag", one_story),
        summary("re-render, manifest removed (render all, write none)", rerender),
    ]
    table = [
        "| case | wall s, median (min–max) | CPU s, median | files |",
        "|---|---|---|---|",
        *(row[0] for row in rows),
    ]
    print(f"{files} files: topic + all + {TAGS} tag feeds × 3 formats, {STORIES} stories each,")
    print(f"pages; {repeats} repeats")
    print("\n".join(table))
    if not args.quick:
        update_docs(table, repeats, files)
    _, median, low, high = rows[0]
    note = (
        f"{files} files; unchanged republish {rows[1][1]:.3f} s, one new story"
        f" {rows[2][1]:.3f} s, full re-render {rows[3][1]:.3f} s"
    )
    figure = {
        "name": "publish (topic + 50 tags, 100 stories each)",
        "unit": "s",
        "median": round(median, 4),
        "min": round(low, 4),
        "max": round(high, 4),
        "target": f"<= {TARGET_SECONDS} s",
        "better": "lower",
        "note": note,
    }
    print(json.dumps(figure, ensure_ascii=False))


def update_docs(table: list[str], repeats: int, files: int) -> None:
    """Rewrite the measured block of this script's section in docs/benchmarks.md."""
    memory = memory_gib()
    block = [
        SECTION_START,
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `.venv/bin/python bench/publish.py"
        f" --repeats {repeats}`; {files} files.",
        "",
        f"Machine: {os.cpu_count()} CPUs, {memory:.1f} GiB memory, {platform.platform()};"
        f" Python {platform.python_version()}; load average {os.getloadavg()[0]:.1f} at the end"
        "; other jobs may share the machine.",
        "",
        *table,
        SECTION_END,
    ]
    write_section(block, SECTION_START, SECTION_END)


if __name__ == "__main__":
    main()
