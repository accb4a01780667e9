"""The benchmark corpus: N feeds x M items of realistic RSS 2.0 and Atom, deterministic by seed.

Even feeds are RSS 2.0 (with content:encoded and dc:creator on some), odd ones Atom 1.0. Items
carry guids, links, dates, categories and HTML summaries of 1-2 KB in English, Traditional and
Simplified Chinese. `python3 bench/corpus.py DIR` writes the files; the runner calls `generate`.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import itertools
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

# Sentences are drawn from templates x fillers, so items differ as real news does (a corpus of a
# few repeated sentences would make every item a near-duplicate of every other).
ENGLISH_SUBJECTS = [
    "Researchers in Hong Kong",
    "A Shenzhen start-up",
    "The Innovation and Technology Commission",
    "Engineers at a Guangzhou university",
    "The Chief Executive",
    "A consortium of banks",
    "Doctors at a public hospital",
    "The observatory",
    "Officials from the Mainland",
    "A team of marine biologists",
    "The Legislative Council panel",
    "Students from five schools",
]
ENGLISH_VERBS = [
    "announced",
    "opened",
    "tested",
    "published",
    "signed",
    "proposed",
    "funded",
    "reviewed",
    "launched",
    "delayed",
    "expanded",
    "evaluated",
]
ENGLISH_OBJECTS = [
    "a joint laboratory for quantum materials",
    "a cross-border data pilot",
    "a biomedical incubator in the Loop",
    "new rules for drone deliveries",
    "a shared supercomputing centre",
    "a study of coral reef recovery",
    "a rail signalling upgrade",
    "a digital yuan payment trial",
    "an AI safety standard",
    "a flood warning system",
    "a battery recycling plant",
    "a satellite ground station",
]
CHINESE_SUBJECTS = [
    "香港研究人員",
    "深圳初創企業",
    "創新科技署",
    "廣州大學工程師",
    "行政長官",
    "多家銀行",
    "公立醫院醫生",
    "天文台",
    "內地官員",
    "海洋生物學家團隊",
    "立法會小組",
    "五所學校學生",
]
CHINESE_VERBS = ["宣布", "啟動", "測試", "發表", "簽署", "建議", "資助", "檢討", "推出", "擴展"]
CHINESE_OBJECTS = [
    "量子材料聯合實驗室",
    "跨境數據試點計劃",
    "河套區生物醫藥孵化器",
    "無人機送貨新規",
    "共享超級電腦中心",
    "珊瑚礁復原研究",
    "鐵路信號系統升級",
    "數字人民幣支付試驗",
    "人工智能安全標準",
    "水浸預警系統",
    "電池回收廠",
    "衛星地面站",
]
CATEGORIES = ["Technology", "Science", "香港", "內地", "科技", "Economy", "Health", "深圳"]
AUTHORS = ["Chan Tai Man", "Wong Siu Ming", "李嘉欣", "Lee Ka Yan", "陈小明"]
START = datetime(2024, 5, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Item:
    guid: str
    link: str
    title: str
    summary_html: str
    author: str
    published: datetime
    categories: tuple[str, ...]


# A news vocabulary is large and Zipf-distributed: two unrelated real items share almost no
# word pairs (median Jaccard of their shingles ~0.01 on the shared corpus). Template phrases
# alone would make every item look like a near-duplicate of every other, and the story
# matcher would pay for that in candidates no real feed produces.
_SYLLABLES = [c + v for c in "bdfghklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]
_HAN_START, _HAN_COUNT = 0x4E00, 3500  # a common-character-sized slice of the CJK block


@functools.cache
def _english_words() -> list[str]:
    rng = random.Random(20240516)
    words: set[str] = set()
    while len(words) < 20000:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


@functools.cache
def _zipf_weights(size: int) -> list[float]:
    # Exponent 0.7, flatter than text's ~1: the story matcher drops stopwords, so what it sees
    # of real news is flatter too. Calibrated so random pairs match the shared corpus
    # (median Jaccard 0.009 here vs 0.007 there; p99 0.08 vs 0.09).
    return list(itertools.accumulate(1.0 / (rank + 1) ** 0.7 for rank in range(size)))


def _zipf_choice(rng: random.Random, size: int) -> int:
    weights = _zipf_weights(size)
    return bisect.bisect_left(weights, rng.random() * weights[-1])


def _sentence(rng: random.Random, language: str) -> str:
    """A templated news clause (so rules find their terms) and words from a Zipf vocabulary."""
    number = rng.randint(2, 9999)
    templated = rng.random() < 0.25  # a quarter of clauses carry the topic's vocabulary
    if language == "en":
        words = _english_words()
        filler = " ".join(words[_zipf_choice(rng, len(words))] for _ in range(rng.randint(8, 14)))
        if not templated:
            return f"{filler.capitalize()} worth {number} million dollars."
        return (
            f"{rng.choice(ENGLISH_SUBJECTS)} {rng.choice(ENGLISH_VERBS)} "
            f"{rng.choice(ENGLISH_OBJECTS)} {filler} worth {number} million dollars."
        )
    filler = "".join(
        chr(_HAN_START + _zipf_choice(rng, _HAN_COUNT)) for _ in range(rng.randint(14, 24))
    )
    if not templated:
        text = f"{filler}，涉及資金{number}萬元。"
    else:
        text = (
            f"{rng.choice(CHINESE_SUBJECTS)}{rng.choice(CHINESE_VERBS)}"
            f"{rng.choice(CHINESE_OBJECTS)}，{filler}，涉及資金{number}萬元。"
        )
    return _to_simplified(text) if language == "zh-hans" else text


@functools.cache
def _converter() -> Any:
    import opencc  # aggregator's own dependency, so present wherever the bench runs

    return opencc.OpenCC("t2s")


def _to_simplified(text: str) -> str:
    return str(_converter().convert(text))


def _summary(rng: random.Random, language: str, link: str) -> str:
    """HTML of 1-2 KB (UTF-8): paragraphs, a link, sometimes an image and emphasis."""
    target = rng.randint(1024, 2048)
    parts: list[str] = []
    size = 0
    while size < target:
        sentence = escape(_sentence(rng, language))
        if rng.random() < 0.3:
            sentence = f"<strong>{sentence}</strong>"
        if rng.random() < 0.2:
            sentence += f' <a href="{link}?ref={rng.randint(1, 999)}">More</a>'
        if rng.random() < 0.1:
            sentence = f'<img src="/images/{rng.randint(1, 9999)}.jpg" alt="photo"> {sentence}'
        paragraph = f"<p>{sentence} {escape(_sentence(rng, language))}</p>"
        parts.append(paragraph)
        size += len(paragraph.encode("utf-8"))
    return "\n".join(parts)


def items_for(feed_index: int, count: int, seed: int) -> list[Item]:
    rng = random.Random(seed * 1_000_003 + feed_index)
    language = ("en", "zh-hant", "zh-hans")[feed_index % 3]
    host = f"news{feed_index}.example.org"
    items = []
    for n in range(count):
        link = f"https://{host}/{2024}/{feed_index:03d}/{n:04d}.html"
        title = _sentence(rng, language).rstrip("。.")
        items.append(
            Item(
                guid=f"{host}-{n}",
                link=link,
                title=f"{title} ({n})",
                summary_html=_summary(rng, language, link),
                author=rng.choice(AUTHORS),
                published=START + timedelta(minutes=37 * n + feed_index),
                categories=tuple(rng.sample(CATEGORIES, rng.randint(1, 3))),
            )
        )
    return items


def rss_document(feed_index: int, items: list[Item]) -> str:
    entries = []
    for n, item in enumerate(items):
        content = ""
        if n % 3 == 0:  # a full text longer than the description
            content = f"<content:encoded><![CDATA[{item.summary_html}<p>Full text.</p>]]></content:encoded>"
        categories = "".join(f"<category>{escape(c)}</category>" for c in item.categories)
        entries.append(
            f"<item><title>{escape(item.title)}</title><link>{item.link}</link>"
            f'<guid isPermaLink="false">{item.guid}</guid>'
            f"<pubDate>{format_datetime(item.published)}</pubDate>"
            f"<dc:creator>{escape(item.author)}</dc:creator>{categories}"
            f"<description>{escape(item.summary_html)}</description>{content}</item>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:atom="http://www.w3.org/2005/Atom">'
        f"<channel><title>Bench feed {feed_index}</title>"
        f"<link>https://news{feed_index}.example.org/</link>"
        f'<atom:link rel="self" href="https://news{feed_index}.example.org/rss.xml"/>'
        "<description>Generated for benchmarks</description><language>zh-hk</language>"
        + "\n".join(entries)
        + "</channel></rss>\n"
    )


def atom_document(feed_index: int, items: list[Item]) -> str:
    entries = []
    for item in items:
        stamp = item.published.isoformat().replace("+00:00", "Z")
        categories = "".join(f'<category term="{escape(c)}"/>' for c in item.categories)
        entries.append(
            f"<entry><id>tag:news{feed_index}.example.org,2024:{item.guid}</id>"
            f"<title>{escape(item.title)}</title>"
            f'<link rel="alternate" type="text/html" href="{item.link}"/>'
            f"<published>{stamp}</published><updated>{stamp}</updated>"
            f"<author><name>{escape(item.author)}</name></author>{categories}"
            f'<summary type="html">{escape(item.summary_html)}</summary></entry>'
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>Bench feed {feed_index}</title><id>tag:news{feed_index}.example.org,2024:feed</id>"
        f'<link href="https://news{feed_index}.example.org/"/>'
        f"<updated>{START.isoformat().replace('+00:00', 'Z')}</updated>"
        + "\n".join(entries)
        + "</feed>\n"
    )


def document(feed_index: int, items_per_feed: int, seed: int) -> bytes:
    items = items_for(feed_index, items_per_feed, seed)
    text = (
        rss_document(feed_index, items) if feed_index % 2 == 0 else atom_document(feed_index, items)
    )
    return text.encode("utf-8")


def generate(directory: Path, *, feeds: int, items_per_feed: int, seed: int = 8) -> list[Path]:
    """Write feed-NNN.xml files into `directory` (reused when already there for these sizes)."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = directory / f".generated-{feeds}x{items_per_feed}-{seed}"
    paths = [directory / f"feed-{i:03d}.xml" for i in range(feeds)]
    if not stamp.exists():
        for index, path in enumerate(paths):
            path.write_bytes(document(index, items_per_feed, seed))
        stamp.touch()
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--seed", type=int, default=8)
    args = parser.parse_args()
    paths = generate(args.directory, feeds=args.feeds, items_per_feed=args.items, seed=args.seed)
    size = sum(p.stat().st_size for p in paths)
    print(f"{len(paths)} feeds, {size / 1e6:.1f} MB in {args.directory}")


if __name__ == "__main__":
    main()
