"""Text folding shared by matching stages: one `fold` decides what counts as "the same text"."""

from __future__ import annotations

import re
import unicodedata
from functools import cache

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
_WHITESPACE = re.compile(r"\s+")


def fold(text: str) -> str:
    """Fold `text` for matching: NFKC (full-width ＡＩ -> AI, ﬁ -> fi), Traditional Chinese to
    Simplified (大灣區 -> 大湾区, HK variants too: 衞 -> 卫), then casefold.

    The one place deciding which spellings are equal, so rules and entries are always folded
    alike. Folding may change the length of CJK text (OpenCC converts some phrases whole).
    """
    return to_simplified(unicodedata.normalize("NFKC", text)).casefold()


def to_simplified(text: str) -> str:
    """Traditional Chinese characters and phrases in `text` as Simplified; the rest unchanged."""
    return _to_simplified().convert(text) if has_cjk(text) else text


@cache
def _to_simplified() -> opencc.OpenCC:
    """OpenCC's "hk2s": Hong Kong Traditional (and standard Traditional) to Simplified."""
    return opencc.OpenCC("hk2s")


def has_cjk(text: str) -> bool:
    """Whether `text` holds any CJK character."""
    return _CJK_CHAR.search(text) is not None


def collapse_whitespace(text: str) -> str:
    """Runs of any Unicode whitespace become one space; ends are stripped."""
    return _WHITESPACE.sub(" ", text).strip()
