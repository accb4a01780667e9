"""Precision and recall of the curated topic's tag rule on the labelled set in eval/labels.csv.

    .venv/bin/python eval/measure.py [--config config/feeds.toml] [--corpus DIR] [--tag NAME]

Each labelled item is read from the shared corpus with aggregator's own parse_feed and
normalize_entry and tagged by the Tagger built from the config, exactly as `poll` would.
The texts are not in the repository: without the corpus this prints why and exits 0.

Rules also search the source's name, so each item is tagged with the name of the shipped
source it would arrive through (SOURCE_FOR_FILE, the name read from the config); items from
feeds the config does not watch get the feed's own title, as `sources add` would name them.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make `aggregator` importable from the clone
    sys.path.insert(0, str(REPO))

from aggregator import config  # noqa: E402
from aggregator.errors import AggregatorError  # noqa: E402
from aggregator.parse.feeds import parse_feed  # noqa: E402
from aggregator.process.normalize import normalize_entry  # noqa: E402
from aggregator.process.tag import Tagger, compile_rules  # noqa: E402
from aggregator.settings import Settings  # noqa: E402

LABELS = REPO / "eval" / "labels.csv"
FIRST_SEEN = datetime(2024, 5, 10, tzinfo=UTC)  # the corpus's last snapshot; dates don't matter

# (regex over the corpus-relative path, id of the shipped source the feed corresponds to)
SOURCE_FOR_FILE: tuple[tuple[str, str], ...] = (
    (r"^newsgovhk_tc_rss/.*hk_newsGovHK_", "newsgov-top-zh"),
    (r"^rthk_rss/.*hk_rthk_local_ch\.", "rthk-local-zh"),
    (r"^rthk_rss/.*hk_rthk_local_en\.", "rthk-local-en"),
    (r"^rthk_rss/.*hk_rthk_greaterChina_ch\.", "rthk-greaterchina-zh"),
    (r"^rthk_rss/.*hk_rthk_greaterChina_en\.", "rthk-greaterchina-en"),
    (r"^hk_media_fixtures_\d+/rthk\.xml$", "rthk-local-zh"),
    (r"^hk_media_fixtures_\d+/scmp\.xml$", "scmp-hong-kong"),
)


def corpus_dir() -> Path:
    """$AGGREGATOR_CORPUS, else ../shared/corpus beside the repository, else /work/shared/corpus."""
    override = os.environ.get("AGGREGATOR_CORPUS")
    if override:
        return Path(override)
    beside = REPO.parent / "shared" / "corpus"
    return beside if beside.is_dir() else Path("/work/shared/corpus")


@dataclass(frozen=True, slots=True)
class Label:
    key: str
    positive: bool
    corpus_file: str
    title_hint: str


@dataclass(frozen=True, slots=True)
class Miss:
    """A wrongly tagged (or untagged) item."""

    key: str
    title: str
    corpus_file: str


@dataclass
class Measurement:
    tag: str
    true_positives: int = 0
    false_positives: list[Miss] = field(default_factory=list)
    false_negatives: list[Miss] = field(default_factory=list)
    true_negatives: int = 0
    not_found: list[Label] = field(default_factory=list)  # labelled keys the corpus lacks

    @property
    def precision(self) -> float:
        found = self.true_positives + len(self.false_positives)
        return self.true_positives / found if found else 0.0

    @property
    def recall(self) -> float:
        relevant = self.true_positives + len(self.false_negatives)
        return self.true_positives / relevant if relevant else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def read_labels(path: Path = LABELS) -> list[Label]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [
            Label(row["key"], row["label"].strip() == "1", row["corpus_file"], row["title_hint"])
            for row in csv.DictReader(handle)
        ]


def source_name_for(corpus_file: str, feed_title: str, settings: Settings) -> str:
    for pattern, source_id in SOURCE_FOR_FILE:
        source = settings.source(source_id)
        if re.search(pattern, corpus_file) and source is not None:
            return source.name
    return feed_title


def measure(
    settings: Settings, corpus: Path, labels: Sequence[Label], tag: str | None = None
) -> Measurement:
    """Tag every labelled item found in `corpus` and count agreements with the labels."""
    topic = tag or settings.publish.topic
    if topic is None:
        raise AggregatorError("the config has no publish.topic; name a tag with --tag")
    tagger = compile_rules(settings.tags)
    result = Measurement(topic)
    by_file: dict[str, list[Label]] = {}
    for label in labels:
        by_file.setdefault(label.corpus_file, []).append(label)
    for corpus_file, file_labels in sorted(by_file.items()):
        tagged = _tag_file(corpus / corpus_file, corpus_file, settings, tagger)
        for label in file_labels:
            if label.key not in tagged:
                result.not_found.append(label)
                continue
            title, tags = tagged[label.key]
            predicted = topic in tags
            miss = Miss(label.key, title, corpus_file)
            if predicted and label.positive:
                result.true_positives += 1
            elif predicted:
                result.false_positives.append(miss)
            elif label.positive:
                result.false_negatives.append(miss)
            else:
                result.true_negatives += 1
    return result


def _tag_file(
    path: Path, corpus_file: str, settings: Settings, tagger: Tagger
) -> dict[str, tuple[str, tuple[str, ...]]]:
    """key -> (title, tags) for every entry of one corpus feed; the first of a key wins."""
    feed = parse_feed(path.read_bytes(), url=path.resolve().as_uri())
    source_name = source_name_for(corpus_file, feed.title, settings)
    tagged: dict[str, tuple[str, tuple[str, ...]]] = {}
    for parsed in feed.entries:
        key = (parsed.guid or parsed.link or "").strip()
        if not key or key in tagged:
            continue
        entry = normalize_entry(
            parsed, source_id="eval", base_url=path.as_uri(), first_seen=FIRST_SEEN
        )
        tagged[key] = (entry.title, tagger.tags_for(entry, source_name=source_name))
    return tagged


def report(result: Measurement) -> str:
    tp, fp, fn = result.true_positives, len(result.false_positives), len(result.false_negatives)
    lines = [
        f"tag {result.tag}: {tp + fp + fn + result.true_negatives} labelled items measured",
        f"precision {result.precision:.3f}  recall {result.recall:.3f}  F1 {result.f1:.3f}",
        f"true positives {tp}, false positives {fp}, false negatives {fn},"
        f" true negatives {result.true_negatives}",
    ]
    for heading, misses in (("false positives", result.false_positives),
                            ("false negatives", result.false_negatives)):  # fmt: skip
        if misses:
            lines.append(f"\n{heading}:")
            lines.extend(f"  {m.title[:60]}  ({m.corpus_file})" for m in misses)
    if result.not_found:
        lines.append(f"\n{len(result.not_found)} labelled item(s) not found in the corpus:")
        lines.extend(f"  {label.key}  ({label.corpus_file})" for label in result.not_found)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--config", default=str(REPO / "config" / "feeds.toml"))
    parser.add_argument("--corpus", type=Path, help="default: $AGGREGATOR_CORPUS or ../shared")
    parser.add_argument("--tag", help="the tag to measure (default: the config's publish.topic)")
    args = parser.parse_args(argv)
    corpus = args.corpus or corpus_dir()
    if not corpus.is_dir():
        print(f"skipped: no corpus at {corpus} (set AGGREGATOR_CORPUS to measure)")
        return 0
    try:
        settings = config.load(args.config)
        result = measure(settings, corpus, read_labels(), args.tag)
    except AggregatorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
