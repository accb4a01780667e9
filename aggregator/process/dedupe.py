"""Which stored story a new entry belongs to (pure): fingerprints, MinHash band keys, the decision.

An entry's fingerprint holds its shingles (content words of Latin script, character bigrams of
Chinese after Traditional -> Simplified) as 32-bit hashes, a MinHash signature cut into LSH band
keys, the numbers in its title, the dates it mentions and its government release number. It is
computed once, when the entry arrives, and stored: candidates are compared from their stored
fingerprints, never re-shingled. The store indexes the band keys, so the candidates for a poll's
new entries come from a few indexed queries; `choose_story` then decides, conservatively,
because a false merge hides news while a missed one only repeats it:

1. the same canonical URL is the same article: same story;
2. the English and Chinese versions of one HKSAR press release (info.gov.hk, same day, the
   English release number is the Chinese one plus one): same story;
3. otherwise a candidate must be from another source (a source does not tell one event twice,
   and no story may hold two items of one source), published within the window, agree on the
   numbers of the titles and on the dates mentioned (or, naming no dates, be published within
   `UNDATED_GAP` of each other), and reach the similarity threshold (exact Jaccard of shingles).
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
import zlib
from collections.abc import Hashable, Iterable, Sequence, Set
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, lru_cache
from operator import add
from urllib.parse import urlsplit, urlunsplit

import opencc

LEAD_CHARS = 300  # the title and this much of the text: a news lead says what happened
BANDS = 32
ROWS = 2  # hashes per band: two, so pairs with Jaccard 0.3 still share a band (P ~ 0.95)
NUM_HASHES = BANDS * ROWS
UNDATED_GAP = timedelta(hours=36)  # items naming no date must be this close to be one event
DEFAULT_THRESHOLD = 0.3
_VALUE_MASK = (1 << 20) - 1  # signature values: 20 bits, plus the densification distance above
_BIN_MASK = NUM_HASHES - 1  # NUM_HASHES is a power of two
_DISTANCE_STEP = _VALUE_MASK + 1  # the densification distance sits above the value bits
_EMPTY = 1 << 62
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_BAND_BITS = 26  # band keys: band index above 26 bits of the band's values, hashed (< 2**31)
_BAND_VALUE_MASK = (1 << _BAND_BITS) - 1
DEFAULT_WINDOW = timedelta(days=7)

_LATIN_WORD = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+")
# Words that tell nothing about the event; a short list, since Jaccard is also length-bounded.
_STOPWORD_LIST = """a an the and or nor but if of to in on at by for with from into onto over under about
    after before since until as than then so such that this these those there here it its
    is are was were be been being has have had do does did will would shall should can could
    may might must not no yes he she they we you i his her their our your them us him me who
    whom whose which what when where why how said says say also more most new up out today
    yesterday tomorrow per cent percent"""
_STOPWORDS = frozenset(_STOPWORD_LIST.split())
_ALIASES = {"hk": "hong kong", "hksar": "hong kong", "prc": "china", "pct": "percent"}
_SUFFIXES = (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", ""))

_CN_DIGITS = {c: i for i, c in enumerate("零一二三四五六七八九")} | {"〇": 0, "○": 0, "两": 2}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
_CN_NUMBER = re.compile(r"[零〇○一二两三四五六七八九十百千]+")
_CN_NUMBER_IN_TITLE = re.compile(
    r"[零〇○一二两三四五六七八九十百千]{2,}|[零〇○一二两三四五六七八九十]+(?=[年月日号號])"
)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_MONTHS = {
    m: i
    for i, names in enumerate(
        (
            ("jan", "january"), ("feb", "february"), ("mar", "march"), ("apr", "april"),
            ("may",), ("jun", "june"), ("jul", "july"), ("aug", "august"),
            ("sep", "sept", "september"), ("oct", "october"), ("nov", "november"),
            ("dec", "december"),
        ),
        start=1,
    )
    for m in names
}  # fmt: skip
_MONTH = "(" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DATE_MONTH_DAY = re.compile(rf"\b{_MONTH}\s+(\d{{1,2}})\b")
_DATE_DAY_MONTH = re.compile(rf"\b(\d{{1,2}})\s+{_MONTH}\b")
_DATE_CJK = re.compile(r"(\d{1,2})月(\d{1,2})[日号號]")
# info.gov.hk: /gia/general/YYYYMM/DD/PYYYYMMDDNNNNN.htm (a trailing letter marks variants).
_RELEASE = re.compile(r"/gia/general/(\d{6})/(\d{2})/P(\d{8})(\d{5})[a-z]?\.htm$")
_RELEASE_HOST = "www.info.gov.hk"


@dataclass(frozen=True, slots=True)
class Release:
    """A HKSAR Government press release number: the day and its number within the day."""

    day: str  # YYYYMMDD
    number: int


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What story matching compares about one entry."""

    shingles: frozenset[int]  # shingle hashes (CRC-32 of each shingle): the exact Jaccard
    signature: tuple[int, ...]  # NUM_HASHES MinHash values, each below 2**26
    title_numbers: frozenset[str]
    dates: frozenset[tuple[int, int]]  # (month, day) mentioned in the title or the lead
    release: Release | None
    chinese: bool  # the title is written in Chinese

    @property
    def band_keys(self) -> tuple[int, ...]:
        return band_keys(self.signature)


@dataclass(frozen=True, slots=True)
class StoryItem:
    """What matching needs of one entry: the new one, or a stored candidate."""

    entry_id: str
    source_id: str
    title: str
    lead: str  # the start of the plain-text summary; LEAD_CHARS are used
    published: datetime
    canonical_url: str | None = None
    story_id: str | None = None  # the stored story (candidates); None for the new entry
    story_sources: frozenset[str] = frozenset()  # every source already in that story
    fingerprint: Fingerprint | None = None  # stored (candidates): compared, never recomputed


@dataclass(frozen=True, slots=True)
class StoryMatch:
    """The story an entry joins, and why."""

    story_id: str
    reason: str  # "same-url", "language-version" or "similar"
    score: float  # 1.0 for the first two
    matched_entry_id: str
    merges: tuple[str, ...] = ()  # other stories this entry links to the chosen one: fold them in


def fingerprint(title: str, lead: str, canonical_url: str | None) -> Fingerprint:
    """The fingerprint of an entry from its title, plain-text summary and canonical URL."""
    title_text = _normal(title)
    text = title_text + "\n" + _normal(lead[:LEAD_CHARS])
    hashes = shingle_hashes(shingles(text))
    return Fingerprint(
        shingles=hashes,
        signature=signature_of(hashes),
        title_numbers=numbers_in(title_text),
        dates=dates_in(text),
        release=release_of(canonical_url),
        chinese=has_chinese(title),
    )


def shingles(text: str) -> frozenset[str]:
    """Content words of Latin script (lightly stemmed) and character bigrams of CJK runs.

    `text` must already be normalized (NFKC, casefolded, Simplified).
    """
    found: set[str] = set()
    for raw in _LATIN_WORD.findall(text):
        found.update(_word_shingles(raw))
    for run in _CJK_RUN.findall(text):
        if len(run) == 1:
            found.add(run)
        found.update(map(add, run[:-1], run[1:]))  # the character bigrams
    return frozenset(found)


@lru_cache(maxsize=1 << 14)
def _word_shingles(raw: str) -> tuple[str, ...]:
    """The shingles of one Latin-script word: aliases spelled out, stopwords dropped, stemmed."""
    return tuple(
        _stem(word)
        for word in _ALIASES.get(raw, raw).split()
        if len(word) > 1 and word not in _STOPWORDS
    )


def shingle_hashes(found: Iterable[str]) -> frozenset[int]:
    """Each shingle as its CRC-32: what is stored and compared (collisions are ~1 in 2**32)."""
    return frozenset(map(zlib.crc32, map(str.encode, found)))  # str.encode: UTF-8


def minhash(found: Iterable[str]) -> tuple[int, ...]:
    """The MinHash signature of a set of shingles (see `signature_of`)."""
    return signature_of(shingle_hashes(found))


def signature_of(hashes: Iterable[int]) -> tuple[int, ...]:
    """A one-permutation MinHash signature of NUM_HASHES values (Li, Owen & Zhang 2012).

    Each shingle hash is spread over 64 bits once (Fibonacci hashing: CRC alone is too regular
    to rank by); that picks a bin and the smallest value per bin is kept. Empty bins borrow
    from the next filled one, marked by the distance (rotation densification, Shrivastava & Li
    2014), so equal sets always get equal signatures.
    """
    bins = [_EMPTY] * NUM_HASHES
    for crc in hashes:
        h = (crc * _GOLDEN) & _MASK64
        h ^= h >> 29
        index, value = h & _BIN_MASK, (h >> 40) & _VALUE_MASK
        if value < bins[index]:
            bins[index] = value
    first = next((k for k, value in enumerate(bins) if value != _EMPTY), None)
    if first is None:
        return ()
    signature = [0] * NUM_HASHES
    # Walk backwards from the first filled bin of the next round: `nearest` is the first filled
    # bin at or after `k` (wrapping round), `value` its minimum.
    nearest, value = first + NUM_HASHES, bins[first]
    for k in range(NUM_HASHES - 1, -1, -1):
        if bins[k] != _EMPTY:
            nearest, value = k, bins[k]
        signature[k] = value + (nearest - k) * _DISTANCE_STEP
    return tuple(signature)


def band_keys(signature: Sequence[int]) -> tuple[int, ...]:
    """One integer below 2**31 per LSH band: the band's index and a hash of its ROWS values.

    A hash collision only adds a candidate, which is then compared exactly; at 26 bits it is
    about one spurious candidate per ten thousand queries.
    """
    if len(signature) != NUM_HASHES:
        return ()
    keys = []
    for band in range(BANDS):
        packed = (signature[band * ROWS] << 26) | signature[band * ROWS + 1]
        spread = ((packed * _GOLDEN) & _MASK64) >> 38
        keys.append((band << _BAND_BITS) | (spread & _BAND_VALUE_MASK))
    return tuple(keys)


def estimated_jaccard(a: Sequence[int], b: Sequence[int]) -> float:
    """The share of equal signature values: an estimate of the Jaccard similarity."""
    if len(a) != NUM_HASHES or len(b) != NUM_HASHES:
        return 0.0
    return sum(x == y for x, y in zip(a, b, strict=True)) / NUM_HASHES


def jaccard(a: Set[Hashable], b: Set[Hashable]) -> float:
    if not a or not b:
        return 0.0
    common = len(a & b)
    return common / (len(a) + len(b) - common)


def numbers_in(text: str) -> frozenset[str]:
    """Numbers written with digits or Chinese numerals, as digit strings ("五月" -> "5")."""
    found = {n.replace(",", "") for n in _NUMBER.findall(text)}
    # A lone 一 or 二 is mostly part of a word (一帶一路, 第二); count it only before a unit.
    for run in _CN_NUMBER_IN_TITLE.findall(text):
        value = _chinese_number(run)
        if value is not None:
            found.add(str(value))
    return frozenset(found)


def dates_in(text: str) -> frozenset[tuple[int, int]]:
    """(month, day) pairs: "May 16", "16 May", "5月16日", "五月十六日"."""
    text = _CN_NUMBER.sub(lambda m: str(_chinese_number(m.group(0)) or m.group(0)), text)
    found = {(_MONTHS[m], int(d)) for m, d in _DATE_MONTH_DAY.findall(text)}
    found.update((_MONTHS[m], int(d)) for d, m in _DATE_DAY_MONTH.findall(text))
    found.update((int(m), int(d)) for m, d in _DATE_CJK.findall(text))
    return frozenset((m, d) for m, d in found if 1 <= m <= 12 and 1 <= d <= 31)


def release_of(url: str | None) -> Release | None:
    """The release number in an info.gov.hk press release address, if it is one."""
    if not url or "/gia/general/" not in url:
        return None
    parts = urlsplit(url)
    if (parts.hostname or "") != _RELEASE_HOST:
        return None
    match = _RELEASE.search(parts.path)
    if match is None or match.group(1) + match.group(2) != match.group(3):
        return None
    return Release(day=match.group(3), number=int(match.group(4)))


def counterpart_urls(url: str | None, *, chinese: bool) -> tuple[str, ...]:
    """Where the other language version of this press release lives (for the candidate query).

    The publisher numbers a release's Chinese version one below its English version (checked
    on real pairs, e.g. TC P2024121300383 / EN P2024121300384).
    """
    release = release_of(url)
    if release is None or url is None:
        return ()
    other = release.number + (1 if chinese else -1)
    if other < 0:
        return ()
    parts = urlsplit(url)
    path = parts.path.rsplit("/", 1)[0] + f"/P{release.day}{other:05d}.htm"
    return (urlunsplit(parts._replace(path=path, query="", fragment="")),)


def is_language_version(a_url: str | None, a_title: str, b_url: str | None, b_title: str) -> bool:
    """Whether a and b are the Chinese and English versions of one press release."""
    a, b = release_of(a_url), release_of(b_url)
    a_chinese, b_chinese = has_chinese(a_title), has_chinese(b_title)
    if a is None or b is None or a_chinese == b_chinese:
        return False
    chinese, english = (a, b) if a_chinese else (b, a)
    return chinese.day == english.day and english.number == chinese.number + 1


def has_chinese(text: str) -> bool:
    return _CJK_RUN.search(text) is not None


def look_alike_conflict(
    new: StoryItem, new_fp: Fingerprint, other: StoryItem, other_fp: Fingerprint
) -> str | None:
    """Why two similar texts are still different events, or None when nothing says so."""
    a, b = new_fp.title_numbers, other_fp.title_numbers
    if a and b and not (a <= b or b <= a):
        return f"numbers in the titles differ ({sorted(a)} vs {sorted(b)})"
    if new_fp.dates and other_fp.dates:
        if not new_fp.dates & other_fp.dates:
            return "the dates mentioned differ"
    elif abs(new.published - other.published) > UNDATED_GAP:
        return "no common date named and published more than 36 hours apart"
    return None


def choose_story(
    new: StoryItem,
    candidates: Sequence[StoryItem],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    window: timedelta = DEFAULT_WINDOW,
    new_fingerprint: Fingerprint | None = None,
) -> StoryMatch | None:
    """The stored story `new` belongs to, or None when it starts its own (see the module doc)."""
    new_fp = new_fingerprint or fingerprint(new.title, new.lead, new.canonical_url)
    ordered = sorted(candidates, key=lambda c: (c.published, c.entry_id))
    strong = _publisher_link(new, new_fp, ordered)
    similar = _most_similar(new, new_fp, ordered, threshold, window)
    if strong is None:
        return similar
    if similar is None or similar.story_id == strong.story_id:
        return strong
    # Linked to one story by its address and to another by its text: they tell one event,
    # unless joining them would put two items of one source in one story.
    strong_sources = next(c.story_sources for c in ordered if c.entry_id == strong.matched_entry_id)
    similar_sources = next(
        c.story_sources for c in ordered if c.entry_id == similar.matched_entry_id
    )
    if strong_sources & similar_sources:
        return strong
    return dataclasses.replace(strong, merges=(similar.story_id,))


def _publisher_link(
    new: StoryItem, new_fp: Fingerprint, ordered: Sequence[StoryItem]
) -> StoryMatch | None:
    """The first candidate the publisher says is the same item: same URL, or language version."""
    for other in ordered:
        if other.entry_id == new.entry_id or other.story_id is None:
            continue
        if new.canonical_url and other.canonical_url == new.canonical_url:
            return StoryMatch(other.story_id, "same-url", 1.0, other.entry_id)
        if new_fp.release is None:
            continue  # only a press release has a language version
        if is_language_version(new.canonical_url, new.title, other.canonical_url, other.title):
            return StoryMatch(other.story_id, "language-version", 1.0, other.entry_id)
    return None


def _most_similar(
    new: StoryItem,
    new_fp: Fingerprint,
    ordered: Sequence[StoryItem],
    threshold: float,
    window: timedelta,
) -> StoryMatch | None:
    """The most similar candidate that passes every look-alike guard."""
    best: StoryMatch | None = None
    for other in ordered:
        if other.entry_id == new.entry_id or other.story_id is None:
            continue
        if other.source_id == new.source_id or new.source_id in other.story_sources:
            continue  # a source does not tell one event twice
        if abs(new.published - other.published) > window:
            continue
        other_fp = other.fingerprint or fingerprint(other.title, other.lead, other.canonical_url)
        score = jaccard(new_fp.shingles, other_fp.shingles)
        if score < threshold or (best is not None and score <= best.score):
            continue
        if look_alike_conflict(new, new_fp, other, other_fp) is None:
            best = StoryMatch(other.story_id, "similar", round(score, 3), other.entry_id)
    return best


@cache
def _converter() -> opencc.OpenCC:
    return opencc.OpenCC("hk2s")  # Hong Kong and standard Traditional -> Simplified


def _normal(text: str) -> str:
    """NFKC, casefolded, Traditional Chinese turned Simplified."""
    text = unicodedata.normalize("NFKC", text).casefold()
    if _CJK_RUN.search(text):
        text = _converter().convert(text)
    return text


def _stem(word: str) -> str:
    """A crude English stemmer: enough for "signs/signed/signing" to meet, never for meaning."""
    if len(word) <= 4 or word[-1].isdigit():
        return word
    for suffix, replacement in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + replacement
    return word


def _chinese_number(text: str) -> int | None:
    """二○二四 -> 2024 (digit by digit), 三十一 -> 31, 十七 -> 17 (positional)."""
    if not any(c in _CN_UNITS for c in text):
        digits = [_CN_DIGITS.get(c) for c in text]
        if any(d is None for d in digits):
            return None
        return int("".join(str(d) for d in digits))
    total, current = 0, 0
    for char in text:
        if char in _CN_UNITS:
            total += (current or 1) * _CN_UNITS[char]
            current = 0
        elif char in _CN_DIGITS:
            current = _CN_DIGITS[char]
        else:
            return None
    return total + current
