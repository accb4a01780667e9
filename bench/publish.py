"""Benchmark: publishing the topic feed, 50 tag feeds and the website, 100 stories each.

    .venv/bin/python bench/publish.py

Prints the time of a first publish (every file written) and of a repeat publish of the same
stories (everything rendered, nothing written), the common case for the worker.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aggregator.models import Entry, StoredEntry, Story
from aggregator.publish import SiteData, plan_archive, publish
from aggregator.settings import PublishSettings, Settings

STORIES = 100
TAGS = 50
NOW = datetime(2024, 5, 24, 9, 0, tzinfo=UTC)
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


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
            summary_html=f"<p>{summary}</p><p><a href='https://x.example/{n}'>More</a></p>",
            summary_text=summary,
            author=None,
            published=published,
            updated=None,
            first_seen=published,
            content_hash=str(n),
            tags=("hk-mainland-science", tag),
        )
        return StoredEntry(entry=entry, source_name=f"Outlet {source}")

    lead = member("", "hksar", 0)
    others = (member("b", "scmp", -1), member("c", "rthk", -2)) if n % 3 == 0 else ()
    return Story(id=lead.entry.id, lead=lead, others=others)


def site() -> SiteData:
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


def main() -> None:
    data = site()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            path=Path(tmp) / "feeds.toml",
            data_dir=Path(tmp),
            publish=PublishSettings(
                topic="hk-mainland-science", title="Bench", base_url="https://b.example/"
            ),
        )
        public = Path(tmp) / "public"

        def run() -> tuple[float, int]:
            start = time.perf_counter()
            report = publish(
                data, settings=settings, public_dir=public, now=NOW, templates_dir=TEMPLATES
            )
            return time.perf_counter() - start, len(report.written) + len(report.unchanged)

        first, files = run()
        repeats = [run()[0] for _ in range(5)]
    print(f"{files} files; {TAGS} tag feeds + topic + all, {STORIES} stories each")
    print(f"first publish (writes every file): {first:.3f} s")
    print(f"repeat publish (nothing changed), median of 5: {statistics.median(repeats):.3f} s")


if __name__ == "__main__":
    main()
