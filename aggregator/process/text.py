"""Text folding shared by matching stages: one `fold` decides what counts as "the same text"."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import cache, lru_cache

import opencc

# Han (with radicals, extensions and compatibility ideographs), kana, bopomofo and Hangul:
# scripts written without spaces between words, so terms in them match as plain substrings.
CJK_RANGES = (
    "\u1100-\u11ff"  # Hangul Jamo
    "\u2e80-\u2fdf"  # CJK and Kangxi radicals
    "\u3005-\u3007"  # 々 〆 〇
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3100-\u312f"  # Bopomofo
    "\u3190-\u31ff"  # Kanbun, Bopomofo extended, CJK strokes, Katakana extension
    "\u3400-\u4dbf"  # CJK Extension A
    "\u4e00-\u9fff"  # CJK Unified Ideographs
    "\ua960-\ua97f"  # Hangul Jamo Extended-A
    "\uac00-\ud7ff"  # Hangul syllables, Jamo Extended-B
    "\uf900-\ufaff"  # CJK Compatibility Ideographs
    "\U00020000-\U0003134f"  # CJK Extensions B..G
)
"""Character ranges, ready to put inside a regex character class."""

_CJK_CHAR = re.compile(f"[{CJK_RANGES}]")
# Full-width ASCII (！ to ～) and the ideographic space: what keeps most Chinese text from being
# NFKC already. Each maps to its whole compatibility decomposition, so swapping them first
# leaves the NFKC result exactly as it was.
_FULL_WIDTH = re.compile("[\uff01-\uff5e\u3000]")
_HALF_WIDTH = {chr(code): chr(code - 0xFEE0) for code in range(0xFF01, 0xFF5F)} | {"\u3000": " "}
# The ones Chinese news is full of, most frequent first: str.replace beats a regex scan.
_COMMON_FULL_WIDTH = tuple((c, _HALF_WIDTH[c]) for c in "，；（）\u3000：！？")


def fold(text: str) -> str:
    """Fold `text` for matching: NFKC (full-width ＡＩ -> AI, ﬁ -> fi), Traditional Chinese to
    Simplified (大灣區 -> 大湾区, HK variants too: 衞 -> 卫), then casefold.

    The one place deciding which spellings are equal, so rules and entries are always folded
    alike. Folding may change the length of CJK text (OpenCC converts some phrases whole).
    """
    return to_simplified(nfkc(text)).casefold()


def fold_name(text: str) -> str:
    """fold, remembered for the short texts that recur from item to item: categories, sources."""
    return _fold_remembered(text) if len(text) <= _NAME_CHARS else fold(text)


_NAME_CHARS = 200
_fold_remembered = lru_cache(maxsize=4096)(fold)


def nfkc(text: str) -> str:
    """unicodedata.normalize("NFKC", text), skipping the (slow) full normalization when text
    is already normalized once full-width forms are swapped for ASCII."""
    if unicodedata.is_normalized("NFKC", text):
        return text
    for full, half in _COMMON_FULL_WIDTH:
        if full in text:
            text = text.replace(full, half)
    if unicodedata.is_normalized("NFKC", text):
        return text
    text = _FULL_WIDTH.sub(_half_width, text)
    return text if unicodedata.is_normalized("NFKC", text) else unicodedata.normalize("NFKC", text)


def _half_width(match: re.Match[str]) -> str:
    return _HALF_WIDTH[match.group()]


def to_simplified(text: str) -> str:
    """Traditional Chinese characters and phrases in `text` as Simplified; the rest unchanged."""
    if not has_cjk(text):
        return text
    if "\x00" in text:  # OpenCC stops at a NUL: convert what lies between them
        return "\x00".join(map(to_simplified, text.split("\x00")))
    converted: str = _to_simplified().convert(text)
    return converted


@cache
def _to_simplified() -> opencc.OpenCC:
    """OpenCC's "hk2s": Hong Kong Traditional (and standard Traditional) to Simplified."""
    return opencc.OpenCC("hk2s")


def has_cjk(text: str) -> bool:
    """Whether `text` holds any CJK character."""
    return not text.isascii() and _CJK_CHAR.search(text) is not None


def literal_alternation(words: Iterable[str]) -> str:
    """A regex for any of `words` (non-empty), longest first among those sharing a start, and
    grouped by first character: `re` then tries each character once where a word may start,
    instead of once per word."""
    by_first: dict[str, list[str]] = {}
    for word in sorted(set(words), key=lambda w: (-len(w), w)):
        by_first.setdefault(word[0], []).append(re.escape(word[1:]))
    return "|".join(
        re.escape(first) + ("" if rests == [""] else f"(?:{'|'.join(rests)})")
        for first, rests in by_first.items()
    )


def collapse_whitespace(text: str) -> str:
    """Runs of any Unicode whitespace become one space; ends are stripped."""
    # str.split() and re's \s agree on what whitespace is (str.isspace); split is ~4x faster.
    return " ".join(text.split())
