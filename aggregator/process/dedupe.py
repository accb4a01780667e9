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
import struct
import sys
import unicodedata
import zlib
from array import array
from collections.abc import Callable, Hashable, Iterable, Sequence, Set
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, lru_cache
from itertools import chain, compress
from operator import add
from urllib.parse import urlsplit, urlunsplit

import opencc

LEAD_CHARS = 300  # the title and this much of the text: a news lead says what happened
BANDS = 32
ROWS = 2  # hashes per band: two, so pairs with Jaccard 0.3 still share a band (P ~ 0.95)
NUM_HASHES = BANDS * ROWS
UNDATED_GAP = timedelta(hours=36)  # items naming no date must be this close to be one event
DEFAULT_THRESHOLD = 0.3
_VALUE_BITS = 20
_VALUE_MASK = (1 << _VALUE_BITS) - 1  # signature values: 20 bits, plus the densification distance
_BIN_MASK = NUM_HASHES - 1  # NUM_HASHES is a power of two
_DISTANCE_STEP = _VALUE_MASK + 1  # the densification distance sits above the value bits
_NO_VALUE = 1 << _VALUE_BITS  # above every value: an empty bin
_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_BAND_BITS = 26  # band keys: band index above 26 bits of the band's values, hashed (< 2**31)
_BAND_VALUE_MASK = (1 << _BAND_BITS) - 1
_GOLDEN_LOW = _GOLDEN & ((1 << 30) - 1)
_GOLDEN_HIGH = (_GOLDEN >> 30) & ((1 << 30) - 1)  # with _GOLDEN_LOW: _GOLDEN mod 2**60
_U32 = "I" if array("I").itemsize == 4 else "L"  # array types of unsigned 32- and 64-bit integers
_U64 = "L" if array("L").itemsize == 8 else "Q"
DEFAULT_WINDOW = timedelta(days=7)

# Patterns that begin with a character class (not a repeat of one: `[x][x]*+` for `[x]+`) let
# the regex engine skip quickly to where a match can start; possessive repeats never backtrack.
_LATIN_WORD = re.compile(r"[a-z0-9][a-z0-9]*+(?:\.[0-9]++)?+")
_CJK = r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]"
_CJK_CHAR = re.compile(_CJK)
_CJK_RUN = re.compile(f"{_CJK}{_CJK}*+")
_GAP = "\ue000"  # joins CJK runs: not CJK, and three bytes in UTF-8 like a BMP ideograph
_BEYOND_BMP = re.compile("[\U00010000-\U0010ffff]")
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
_SUFFIX_ENDINGS = tuple(suffix for suffix, _ in _SUFFIXES)

_CN_DIGITS = {c: i for i, c in enumerate("零一二三四五六七八九")} | {"〇": 0, "○": 0, "两": 2}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
_CN_NUMERAL = "[零〇○一二两三四五六七八九十百千]"
_CN_NUMBER_SPLIT = re.compile(f"({_CN_NUMERAL}{_CN_NUMERAL}*+)")
# Two numerals or more, or numerals before a date unit: [N]{2,}|[N but 百千]+(?=[年月日号號])
_CN_NUMBER_IN_TITLE = re.compile(
    f"{_CN_NUMERAL}(?:{_CN_NUMERAL}++|(?<=[零〇○一二两三四五六七八九十])(?=[年月日号號]))"
)
_NUMBER = re.compile(r"\d\d*+(?:[.,]\d++)*+")
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
# \b(name|...)\.? with the names longest first, written to begin with a letter (the regex
# engine then skips to candidates) and grouped by it; `(?<!\w.)` after the first character is
# the \b before it.
_MONTH_NAMES = sorted(_MONTHS, key=len, reverse=True)
_MONTH = (
    "("
    + "|".join(
        first + r"(?<!\w.)(?:" + "|".join(m[1:] for m in _MONTH_NAMES if m[0] == first) + ")"
        for first in dict.fromkeys(m[0] for m in _MONTH_NAMES)
    )
    + r")\.?"
)
_DATE_MONTH_DAY = re.compile(rf"{_MONTH}\s+(\d{{1,2}})\b")
_DATE_DAY_MONTH = re.compile(rf"(\d(?<!\w.)\d?)\s+{_MONTH}\b")  # \b(\d{1,2})\s+...
_MONTH_PREFIX = re.compile("|".join(sorted({m[:3] for m in _MONTHS})))  # no date without one
_DATE_CJK = re.compile(r"(\d\d?)月(\d\d?)[日号號]")
# info.gov.hk: /gia/general/YYYYMM/DD/PYYYYMMDDNNNNN.htm (a trailing letter marks variants).
_RELEASE = re.compile(r"/gia/general/(\d{6})/(\d{2})/P(\d{8})(\d{5})[a-z]?\.htm$")
_RELEASE_HOST = "www.info.gov.hk"


@dataclass(frozen=True, slots=True)
class Release:
    """A HKSAR Government press release number: the day and its number within the day."""

    day: str  # YYYYMMDD
    number: int


@dataclass(frozen=True, slots=True)
class PackedFingerprint:
    """A fingerprint's values as bytes and text: what the store writes, and what a worker
    process sends (one bytes object loads in a fraction of the time ~120 ints take)."""

    signature: bytes  # NUM_HASHES values, little-endian, 4 bytes each
    shingles: bytes  # the shingle hashes, sorted, likewise
    bands: bytes  # the band keys, likewise
    title_numbers: str  # space-separated, sorted
    dates: str  # "5-16 5-17": month-day, sorted

    def __reduce__(self) -> tuple[Callable[..., PackedFingerprint], tuple[object, ...]]:
        # Rebuilt by its constructor, not by dataclass's state functions (written in Python).
        return PackedFingerprint, (
            self.signature, self.shingles, self.bands, self.title_numbers, self.dates
        )  # fmt: skip


class Fingerprint:
    """What story matching compares about one entry.

    Made from its values, or from their packed form (`unpacked_later`: a fingerprint from a
    worker process or from the store), each value then unpacked on its first use. Most entries
    of a poll are compared with no candidate, or with few, so most sets of shingles are never
    built: a set of ~160 hashes costs ~30 µs to build in a process holding thousands.
    """

    __slots__ = (
        "_dates",
        "_shingles",
        "_signature",
        "_title_numbers",
        "chinese",
        "packed",
        "release",
    )

    def __init__(
        self,
        shingles: frozenset[int],  # shingle hashes (CRC-32 of each shingle): the exact Jaccard
        signature: tuple[int, ...],  # NUM_HASHES MinHash values, each below 2**26
        title_numbers: frozenset[str],
        dates: frozenset[tuple[int, int]],  # (month, day) mentioned in the title or the lead
        release: Release | None,
        chinese: bool,  # the title is written in Chinese
        packed: PackedFingerprint | None = None,  # the same values packed, when made already
    ) -> None:
        self._shingles: frozenset[int] | bytes = shingles
        self._signature: tuple[int, ...] | bytes = signature
        self._title_numbers: frozenset[str] | str = title_numbers
        self._dates: frozenset[tuple[int, int]] | str = dates
        self.release = release
        self.chinese = chinese
        self.packed = packed

    @classmethod
    def unpacked_later(
        cls,
        *,
        signature: bytes,
        shingles: bytes,
        title_numbers: str,
        dates: str,
        release: Release | None,
        chinese: bool,
        packed: PackedFingerprint | None = None,
    ) -> Fingerprint:
        """A fingerprint from its values as `PackedFingerprint` holds them."""
        fp = cls.__new__(cls)
        fp._shingles, fp._signature = shingles, signature
        fp._title_numbers, fp._dates = title_numbers, dates
        fp.release, fp.chinese, fp.packed = release, chinese, packed
        return fp

    @property
    def shingles(self) -> frozenset[int]:
        if isinstance(self._shingles, bytes):
            self._shingles = frozenset(_array_of_values(self._shingles))
        return self._shingles

    @property
    def shingle_count(self) -> int:
        """len(shingles), without building the set."""
        packed = self._shingles
        return len(packed) // 4 if isinstance(packed, bytes) else len(packed)

    @property
    def signature(self) -> tuple[int, ...]:
        if isinstance(self._signature, bytes):
            self._signature = unpack_values(self._signature)
        return self._signature

    @property
    def title_numbers(self) -> frozenset[str]:
        if isinstance(self._title_numbers, str):
            self._title_numbers = frozenset(self._title_numbers.split())
        return self._title_numbers

    @property
    def dates(self) -> frozenset[tuple[int, int]]:
        if isinstance(self._dates, str):
            self._dates = frozenset(map(month_day, self._dates.split()))
        return self._dates

    @property
    def band_keys(self) -> tuple[int, ...]:
        if self.packed is not None:
            return unpack_values(self.packed.bands)
        return band_keys(self.signature)

    def packed_form(self) -> PackedFingerprint:
        return self.packed if self.packed is not None else pack_fingerprint(self)

    def _values(self) -> tuple[object, ...]:
        return (self.shingles, self.signature, self.title_numbers, self.dates, self.release,
                self.chinese)  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Fingerprint):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return (
            f"Fingerprint(shingles={self.shingles!r}, signature={self.signature!r}, "
            f"title_numbers={self.title_numbers!r}, dates={self.dates!r}, "
            f"release={self.release!r}, chinese={self.chinese!r})"
        )

    def __reduce__(self) -> tuple[Callable[..., Fingerprint], tuple[object, ...]]:
        # Sent packed (packing is done by the sender, a worker process); the receiver keeps the
        # packed form for the store and does not compute the band keys again.
        return unpack_fingerprint, (self.packed_form(), self.release, self.chinese)


def pack_fingerprint(fp: Fingerprint) -> PackedFingerprint:
    return PackedFingerprint(
        signature=pack_values(fp.signature),
        shingles=pack_values(sorted(fp.shingles)),
        bands=pack_values(band_keys(fp.signature)),
        title_numbers=numbers_text(fp.title_numbers),
        dates=dates_text(fp.dates),
    )


def unpack_fingerprint(
    packed: PackedFingerprint, release: Release | None, chinese: bool
) -> Fingerprint:
    return Fingerprint.unpacked_later(
        signature=packed.signature,
        shingles=packed.shingles,
        title_numbers=packed.title_numbers,
        dates=packed.dates,
        release=release,
        chinese=chinese,
        packed=packed,
    )


def numbers_text(numbers: Iterable[str]) -> str:
    """The packed form of title numbers: space-separated, sorted."""
    return " ".join(sorted(numbers))


def dates_text(dates: Iterable[tuple[int, int]]) -> str:
    """The packed form of dates: "5-16 5-17", sorted (`month_day` reads one back)."""
    return " ".join(f"{month}-{day}" for month, day in sorted(dates))


def month_day(text: str) -> tuple[int, int]:
    """(5, 16) from "5-16"."""
    month, _, day = text.partition("-")
    return int(month), int(day)


def pack_values(values: Sequence[int]) -> bytes:
    """Unsigned 32-bit values as little-endian bytes."""
    return struct.pack(f"<{len(values)}I", *values)


def unpack_values(blob: bytes) -> tuple[int, ...]:
    return tuple(_array_of_values(blob))


def _array_of_values(blob: bytes) -> array[int]:
    # Not struct.unpack: its format, one per length, would miss struct's small cache of them.
    return _bytes_to_lanes(blob, _U32)


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
    title_text, text = normal_texts(title, lead)
    hashes = frozenset(_shingle_crcs(text))
    return Fingerprint(
        shingles=hashes,
        signature=signature_of(hashes),
        title_numbers=numbers_in(title_text),
        dates=dates_in(text),
        release=release_of(canonical_url),
        chinese=has_chinese(title),
    )


def normal_texts(title: str, lead: str) -> tuple[str, str]:
    """The normalized title, and what is shingled: it and the start of the lead."""
    title_text = _normal(title)
    return title_text, title_text + "\n" + _normal(lead[:LEAD_CHARS])


def shingles(text: str) -> frozenset[str]:
    """Content words of Latin script (lightly stemmed) and character bigrams of CJK runs (a run
    of one character is a shingle itself).

    `text` must already be normalized (NFKC, casefolded, Simplified). `fingerprint` computes
    the hashes of these shingles directly (`_shingle_crcs`).
    """
    words = set(_LATIN_WORD.findall(text))
    found = set(chain.from_iterable(map(_word_shingles, words)))
    runs, joined, in_run = _cjk_runs(text)
    found.update(compress(map(add, joined[:-1], joined[1:]), in_run))  # the character bigrams
    found.update(run for run in runs if len(run) == 1)
    return frozenset(found)


def _shingle_crcs(text: str) -> list[int]:
    """`shingle_hashes(shingles(text))` as a list (it may repeat a hash), computed faster: the
    hashes of a word are cached, and CJK bigrams are hashed from the UTF-8 of all runs at once."""
    crcs = _latin_word_crcs(text)
    runs, joined, in_run = _cjk_runs(text)
    if runs:
        crcs += _bigram_crcs(joined, in_run)
        crcs += map(zlib.crc32, map(str.encode, [run for run in runs if len(run) == 1]))
    return crcs


def _latin_word_crcs(text: str) -> list[int]:
    """The hashes of the Latin-script shingles of `text` (it may repeat a hash)."""
    return list(chain.from_iterable(map(_word_crcs, set(_LATIN_WORD.findall(text)))))


def _cjk_runs(text: str) -> tuple[list[str], str, bytes]:
    """The runs of CJK characters in `text`; the runs joined by `_GAP`; and for each pair of
    adjacent characters of that joined text, 1 when it is a bigram of one run, 0 when it
    straddles a gap (one pass over all pairs costs less than one per run)."""
    runs = [] if text.isascii() else _CJK_RUN.findall(text)
    in_run = b"\0\0".join(map(_RUN_PAIRS.__getitem__, map(len, runs)))
    return runs, _GAP.join(runs), in_run


class _RunPairs(dict[int, bytes]):
    """Run length -> one 1 per pair of adjacent characters in the run (kept up to 512)."""

    def __missing__(self, length: int) -> bytes:
        pairs = b"\1" * (length - 1)
        if length <= 512:
            self[length] = pairs
        return pairs


_RUN_PAIRS = _RunPairs()


def _bigram_crcs(joined: str, in_run: bytes) -> list[int]:
    """The CRC-32 of the UTF-8 of each pair of adjacent characters of `joined` that is
    `in_run`. Every character taking three bytes, the pairs starting at even characters are
    the six-byte pieces of the UTF-8, those starting at odd ones the pieces from byte 3: one
    `struct` unpacking each. The rare characters beyond U+FFFF (four bytes) are replaced for
    that, and the pairs holding them hashed one by one."""
    count = len(joined)
    encoded = joined.encode()
    redone = []
    if len(encoded) != 3 * count:
        encoded = _BEYOND_BMP.sub(_GAP, joined).encode()
        wanted = bytearray(in_run)
        for found in _BEYOND_BMP.finditer(joined):
            for pair in (found.start() - 1, found.start()):
                if 0 <= pair < count - 1 and wanted[pair]:
                    wanted[pair] = 0
                    redone.append(zlib.crc32(joined[pair : pair + 2].encode()))
        in_run = bytes(wanted)
    evens = _six_byte_pieces(count // 2).unpack_from(encoded, 0)
    odds = _six_byte_pieces((count - 1) // 2).unpack_from(encoded, 3)
    crcs = list(map(zlib.crc32, compress(evens, in_run[0::2])))
    crcs += map(zlib.crc32, compress(odds, in_run[1::2]))
    return crcs + redone


@lru_cache(maxsize=512)
def _six_byte_pieces(count: int) -> struct.Struct:
    return struct.Struct("6s" * count)


def _word_shingles(raw: str) -> tuple[str, ...]:
    """The shingles of one Latin-script word: aliases spelled out, stopwords dropped, stemmed."""
    return tuple(
        _stem(word)
        for word in _ALIASES.get(raw, raw).split()
        if len(word) > 1 and word not in _STOPWORDS
    )


@lru_cache(maxsize=1 << 15)
def _word_crcs(raw: str) -> tuple[int, ...]:
    return tuple(map(zlib.crc32, map(str.encode, _word_shingles(raw))))


def shingle_hashes(found: Iterable[str]) -> frozenset[int]:
    """Each shingle as its CRC-32: what is stored and compared (collisions are ~1 in 2**32)."""
    return frozenset(map(zlib.crc32, map(str.encode, found)))  # str.encode: UTF-8


def minhash(found: Iterable[str]) -> tuple[int, ...]:
    """The MinHash signature of a set of shingles (see `signature_of`)."""
    return signature_of(shingle_hashes(found))


def signature_of(hashes: Iterable[int]) -> tuple[int, ...]:
    """A one-permutation MinHash signature of NUM_HASHES values (Li, Owen & Zhang 2012).

    Each shingle hash (32 bits) is spread over 64 bits once (Fibonacci hashing: CRC alone is
    too regular to rank by); that picks a bin and the smallest value per bin is kept. Empty
    bins borrow from the next filled one, marked by the distance (rotation densification,
    Shrivastava & Li 2014), so equal sets always get equal signatures.
    """
    smallest = [_NO_VALUE] * NUM_HASHES  # per bin, its smallest value
    for index, value in zip(*_bins_and_values(hashes), strict=True):
        if value < smallest[index]:
            smallest[index] = value
    empty = smallest.count(_NO_VALUE)
    if empty == NUM_HASHES:
        return ()
    if empty:
        empties = _positions(smallest, _NO_VALUE, empty)
        first = 0  # the first filled bin
        while first < empty and empties[first] == first:
            first += 1
        # Down through the empty bins, each one step further than the next bin (filled, or
        # already borrowing); the last bin wraps round to the first filled one.
        for k in reversed(empties):
            if k == NUM_HASHES - 1:
                smallest[k] = smallest[first] + (first + 1) * _DISTANCE_STEP
            else:
                smallest[k] = smallest[k + 1] + _DISTANCE_STEP
    return tuple(smallest)


def _positions(values: list[int], value: int, count: int) -> list[int]:
    """Where the `count` occurrences of `value` are, in order."""
    found, at = [], -1
    for _ in range(count):
        at = values.index(value, at + 1)
        found.append(at)
    return found


def _bins_and_values(hashes: Iterable[int]) -> tuple[bytes, list[int]]:
    """The bin and the value of each hash: h = (hash * _GOLDEN) mod 2**64, h ^= h >> 29, its bin
    is h mod NUM_HASHES and its value bits 40..59 of h.

    All hashes at once, each in a 64-bit lane of one big integer: a few operations on it cost
    less than as many per hash (and small-integer arithmetic in Python is no cheaper than a
    list lookup). Only bits below 60 of the product are used, so it is taken mod 2**60 in two
    halves of 30 bits, and no lane carries into the next. Each lane ends as bin << 32 | value.
    """
    lanes = array(_U64, list(hashes))
    if not lanes:
        return b"", []
    count = len(lanes)
    low30, low6, low20, high32 = _hash_lane_masks(count.bit_length())
    packed = _lanes_to_int(lanes)
    if packed & high32:
        raise ValueError("shingle hashes must be below 2**32")
    product = packed * _GOLDEN_LOW + (((packed * _GOLDEN_HIGH) & low30) << 30)
    result = (((product ^ (product >> 29)) & low6) << 32) | ((product >> 40) & low20)
    lanes_bytes = result.to_bytes(8 * count, "little")
    bins = lanes_bytes[4::8]  # as bytes: iterating them makes no integer objects
    return bins, _bytes_to_lanes(lanes_bytes, _U32)[0::2].tolist()


@cache
def _hash_lane_masks(size_log2: int) -> tuple[int, int, int, int]:
    """Masks of 2**size_log2 64-bit lanes: each lane's low 30, 6 and 20 bits, its high 32."""
    lanes = 1 << size_log2
    return (
        _each_lane((1 << 30) - 1, 64, lanes),
        _each_lane(_BIN_MASK, 64, lanes),
        _each_lane(_VALUE_MASK, 64, lanes),
        _each_lane(_MASK64 ^ 0xFFFFFFFF, 64, lanes),
    )


def band_keys(signature: Sequence[int]) -> tuple[int, ...]:
    """One integer below 2**31 per LSH band: the band's index and a hash of its ROWS values.

    A hash collision only adds a candidate, which is then compared exactly; at 26 bits it is
    about one spurious candidate per ten thousand queries.
    """
    if len(signature) != NUM_HASHES:
        return ()
    # Per band (ROWS = 2): ((first << 26 | second) * _GOLDEN) mod 2**64 >> 38, below the band's
    # index; all bands at once, each in a 128-bit lane (as in `_bins_and_values`).
    pairs = _lanes_to_int(array(_U64, signature))  # a band's two values: one lane
    firsts, seconds = pairs & _BAND_LOW64, (pairs >> 64) & _BAND_LOW64
    if (firsts | seconds) & _BAND_HIGH:
        raise ValueError("signature values must be below 2**32")
    product = ((firsts << _BAND_BITS) | seconds) * _GOLDEN
    keys = ((product >> (64 - _BAND_BITS)) & _BAND_VALUES) | _BAND_INDEXES
    return tuple(_bytes_to_lanes(keys.to_bytes(16 * BANDS, "little"), _U64)[0::2])


def _each_lane(mask: int, lane_bits: int, lanes: int) -> int:
    """`mask` repeated in each of `lanes` lanes of `lane_bits` bits."""
    return int.from_bytes(mask.to_bytes(lane_bits // 8, "little") * lanes, "little")


def _lanes_to_int(lanes: array[int]) -> int:
    """The unsigned integers of an array as lanes of one integer, the first lane lowest (the
    inverse of `_bytes_to_lanes` of its `to_bytes(..., "little")`)."""
    if sys.byteorder == "big":
        lanes.byteswap()
    return int.from_bytes(lanes, "little")


def _bytes_to_lanes(lanes_bytes: bytes, typecode: str) -> array[int]:
    """The unsigned integers of the array type's size in these bytes, each little-endian."""
    lanes = array(typecode, lanes_bytes)
    if sys.byteorder == "big":
        lanes.byteswap()
    return lanes


_BAND_LOW64 = _each_lane(_MASK64, 128, BANDS)
_BAND_HIGH = _each_lane(((1 << 128) - 1) ^ 0xFFFFFFFF, 128, BANDS)
_BAND_VALUES = _each_lane(_BAND_VALUE_MASK, 128, BANDS)
_BAND_INDEXES = int.from_bytes(
    b"".join((band << _BAND_BITS).to_bytes(16, "little") for band in range(BANDS)), "little"
)


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
    named_months = _MONTH_PREFIX.search(text) is not None
    if not named_months and "月" not in text:
        return frozenset()  # (Chinese numerals turned into digits add neither)
    parts = _CN_NUMBER_SPLIT.split(text)  # text, numerals, text, ...
    if len(parts) > 1:
        parts[1::2] = map(_in_digits, parts[1::2])
        text = "".join(parts)
    found: set[tuple[int, int]] = set()
    if named_months:
        found.update((_MONTHS[m], int(d)) for m, d in _DATE_MONTH_DAY.findall(text))
        found.update((_MONTHS[m], int(d)) for d, m in _DATE_DAY_MONTH.findall(text))
    if "月" in text:
        found.update((int(m), int(d)) for m, d in _DATE_CJK.findall(text))
    return frozenset((m, d) for m, d in found if 1 <= m <= 12 and 1 <= d <= 31)


@lru_cache(maxsize=1024)
def _in_digits(numerals: str) -> str:
    """A run of Chinese numerals as the digits of its value; as it is when it has none or 0."""
    return str(_chinese_number(numerals) or numerals)


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
    return not text.isascii() and _CJK_CHAR.search(text) is not None


def look_alike_conflict(
    new: StoryItem, new_fp: Fingerprint, other: StoryItem, other_fp: Fingerprint
) -> str | None:
    """Why two similar texts are still different events, or None when nothing says so."""
    conflict = _conflict(new, new_fp, other, other_fp)
    if conflict == "numbers":
        a, b = sorted(new_fp.title_numbers), sorted(other_fp.title_numbers)
        return f"numbers in the titles differ ({a} vs {b})"
    if conflict == "dates":
        return "the dates mentioned differ"
    if conflict == "undated":
        return "no common date named and published more than 36 hours apart"
    return None


def _conflict(
    new: StoryItem, new_fp: Fingerprint, other: StoryItem, other_fp: Fingerprint
) -> str | None:
    """Which look-alike guard keeps two items apart ("numbers", "dates", "undated"), if any."""
    a, b = new_fp.title_numbers, other_fp.title_numbers
    if a and b and not (a <= b or b <= a):
        return "numbers"
    if new_fp.dates and other_fp.dates:
        if not new_fp.dates & other_fp.dates:
            return "dates"
    elif abs(new.published - other.published) > UNDATED_GAP:
        return "undated"
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
    """The most similar candidate that passes every look-alike guard.

    The cheap tests come first: the guards, and the bound the sizes of two sets put on their
    Jaccard similarity (min / max), so that most candidates are dropped before comparing
    shingles.
    """
    best: StoryMatch | None = None
    size = new_fp.shingle_count
    for other in ordered:
        if other.entry_id == new.entry_id or other.story_id is None:
            continue
        if other.source_id == new.source_id or new.source_id in other.story_sources:
            continue  # a source does not tell one event twice
        if abs(new.published - other.published) > window:
            continue
        other_fp = other.fingerprint or fingerprint(other.title, other.lead, other.canonical_url)
        other_size = other_fp.shingle_count
        bound = min(size, other_size) / max(size, other_size, 1)  # the score is at most this
        if bound < threshold or (best is not None and bound <= best.score):
            continue
        if _conflict(new, new_fp, other, other_fp) is not None:
            continue
        score = jaccard(new_fp.shingles, other_fp.shingles)
        if score < threshold or (best is not None and score <= best.score):
            continue
        best = StoryMatch(other.story_id, "similar", round(score, 3), other.entry_id)
    return best


@cache
def _converter() -> opencc.OpenCC:
    return opencc.OpenCC("hk2s")  # Hong Kong and standard Traditional -> Simplified


def _normal(text: str) -> str:
    """NFKC, casefolded, Traditional Chinese turned Simplified."""
    text = _nfkc(text).casefold()
    if not text.isascii() and _CJK_CHAR.search(text):
        text = _converter().convert(text)
    return text


def _nfkc(text: str) -> str:
    """`unicodedata.normalize("NFKC", text)`, faster for text that needs only a few characters
    mapped, each on its own (full-width punctuation in Chinese text, mostly).

    Mapping a character to its NFKC keeps the text equivalent; when the result is normalized,
    it is therefore the NFKC of the text. When it is not (combining marks), normalize it all.
    """
    if text.isascii() or unicodedata.is_normalized("NFKC", text):
        return text
    changed, mapping = _nfkc_of_characters()
    for char in set(changed.findall(text)):
        text = text.replace(char, mapping[char])
    return text if unicodedata.is_normalized("NFKC", text) else unicodedata.normalize("NFKC", text)


@cache
def _nfkc_of_characters() -> tuple[re.Pattern[str], dict[str, str]]:
    """The characters of the Basic Multilingual Plane whose NFKC is not themselves, and that."""
    mapping = {}
    for code in range(0x10000):
        char = chr(code)
        if unicodedata.decomposition(char):
            normal = unicodedata.normalize("NFKC", char)
            if normal != char:
                mapping[char] = normal
    return re.compile("[" + "".join(map(re.escape, mapping)) + "]"), mapping


def _stem(word: str) -> str:
    """A crude English stemmer: enough for "signs/signed/signing" to meet, never for meaning."""
    if len(word) <= 4 or word[-1].isdigit() or not word.endswith(_SUFFIX_ENDINGS):
        return word
    for suffix, replacement in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + replacement
    return word


@lru_cache(maxsize=1024)
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
