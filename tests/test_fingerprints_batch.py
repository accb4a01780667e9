"""Batch fingerprints (numpy) against the one-entry path: the same bytes for every entry, on
made-up text, on every entry of the shared real-world corpus, and at the edges."""

from __future__ import annotations

import subprocess
import sys
import zlib
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.errors import ParseError
from aggregator.parse.feeds import parse_feed
from aggregator.process.dedupe import (
    NUM_HASHES,
    PackedFingerprint,
    fingerprint,
    pack_fingerprint,
    unpack_values,
)
from aggregator.process.fingerprints import packed_fingerprints
from aggregator.process.normalize import normalize_entry
from tests.corpus import CORPUS

Item = tuple[str, str, str | None]

RELEASE = "https://www.info.gov.hk/gia/general/202412/13/P2024121300383.htm"


def one_by_one(items: list[Item]) -> list[PackedFingerprint]:
    return [pack_fingerprint(fingerprint(*item)) for item in items]


# Text as feeds give it: English words (stopwords, aliases, stems, numbers), Traditional and
# Simplified Chinese, characters beyond U+FFFF, compatibility ideographs, full-width forms,
# Chinese numerals and dates, combining marks, punctuation and spaces.
PIECES = [
    "Hong", "Kong", "HK", "hksar", "signed", "studies", "the", "of", "May", "16", "sept.", "3.5",
    "1,000", "v1.2.3", "2024", "Dec", "香港", "衞生署", "簽署", "中药", "醫院", "学", "國",
    "𠀋", "𠀀", "𪚥", "㐀", "豈", "五月", "十六日", "5月16日", "二○二四年", "一", "，", "。",
    "（", "）", "Ｍａｙ", "１６", "ＡＢＣ", "e\u0301", "é", "ß", " ", " ", "\n", "-", "'", "",
]  # fmt: skip
NEWS_TEXT = st.lists(st.sampled_from(PIECES) | st.text(max_size=3), max_size=120).map("".join)
ITEMS = st.tuples(NEWS_TEXT, NEWS_TEXT, st.none() | st.just(RELEASE))


@settings(max_examples=300, deadline=None)
@given(st.lists(ITEMS, max_size=8))
def test_batch_is_the_one_entry_path(items: list[Item]) -> None:
    assert packed_fingerprints(items) == one_by_one(items)


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name != "MANIFEST.md")


@pytest.mark.skipif(not corpus_files(), reason=f"no corpus at {CORPUS}")
def test_every_corpus_entry_is_the_one_entry_path() -> None:
    checked = 0
    for path in corpus_files():
        url = "https://base.example.org/feeds/feed.xml"
        try:
            feed = parse_feed(path.read_bytes(), url=url, content_type=None)
        except ParseError:
            continue
        first_seen = datetime(2030, 1, 1, tzinfo=UTC)
        entries = [
            normalize_entry(e, source_id="s", base_url=url, first_seen=first_seen)
            for e in feed.entries
        ]
        items: list[Item] = [(e.title, e.summary_text, e.canonical_url) for e in entries]
        assert packed_fingerprints(items) == one_by_one(items), path.name
        checked += len(items)
    assert checked > 1000


@pytest.mark.parametrize(
    "items",
    [
        pytest.param([], id="no items"),
        pytest.param([("Hong Kong signs deal", "", None)], id="one item"),
        pytest.param([("", "", None)], id="no text"),
        pytest.param([("the of and", "— 。，", None), ("A b", "", None)], id="no shingles"),
        pytest.param([("香", "", None), ("𠀋", "x 𠀋 y", None)], id="one-character runs"),
        pytest.param([("word" + "x" * i, "", None) for i in range(3)], id="few shingles"),
        pytest.param(
            [(" ".join(f"word{i}" for i in range(200)), "", None), ("", "", None)],
            id="more shingles than bins",
        ),
        pytest.param(
            [("𠀋𠀀香港𪚥𪚥", "𠀋𠀋 香𠀋 𠀋港", RELEASE), ("ＨＫ　１６", "", None)],
            id="beyond U+FFFF",
        ),
    ],
)
def test_edges(items: list[Item]) -> None:
    assert packed_fingerprints(items) == one_by_one(items)


def test_empty_shingles_pack_empty_and_others_fill_every_bin() -> None:
    empty, sparse, full = packed_fingerprints(
        [("the", "", None), ("quantum", "", None), (" ".join(map(str, range(500))), "", None)]
    )
    assert (empty.signature, empty.shingles, empty.bands) == (b"", b"", b"")
    assert len(unpack_values(sparse.shingles)) == 1  # 63 bins borrow
    assert len(unpack_values(sparse.signature)) == len(unpack_values(full.signature)) == NUM_HASHES


def test_every_cjk_character_of_the_bmp_hashes_as_zlib_does() -> None:
    """The CRC tables (affine over GF(2)) for every character they can meet, alone and paired."""
    from aggregator.process.fingerprints import _cjk_in_bmp, _cjk_shingle_crcs

    characters = [chr(code) for code in _cjk_in_bmp().nonzero()[0].tolist()]
    assert min(map(ord, characters)) >= 0x800  # three bytes of UTF-8, as the tables assume
    text = "".join(characters)
    _, crcs = _cjk_shingle_crcs([" ".join(characters), text])
    singles = [zlib.crc32(c.encode()) for c in characters]
    pairs = [zlib.crc32((a + b).encode()) for a, b in pairwise(text)]
    assert crcs.tolist() == pairs + singles


def test_importing_the_module_does_not_import_numpy() -> None:
    code = "import sys, aggregator.process.fingerprints; print('numpy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
