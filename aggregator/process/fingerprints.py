"""The packed fingerprints of a batch of entries (one feed's), computed together with numpy."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from functools import cache
from itertools import chain, pairwise
from typing import TYPE_CHECKING

from aggregator.process.dedupe import (
    _BAND_BITS,
    _BAND_VALUE_MASK,
    _BIN_MASK,
    _CJK_CHAR,
    _CJK_RUN,
    _DISTANCE_STEP,
    _GOLDEN,
    _NO_VALUE,
    _VALUE_MASK,
    BANDS,
    NUM_HASHES,
    ROWS,
    PackedFingerprint,
    _latin_word_crcs,
    dates_in,
    dates_text,
    normal_texts,
    numbers_in,
    numbers_text,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Int64s = npt.NDArray[np.int64]
    UInt64s = npt.NDArray[np.uint64]
    UInt32s = npt.NDArray[np.uint32]

_BMP = 0x10000
_HASH_BITS = 32  # a shingle hash; above it, in the sort keys, the item's index


def packed_fingerprints(items: Sequence[tuple[str, str, str | None]]) -> list[PackedFingerprint]:
    """`pack_fingerprint(fingerprint(title, lead, canonical_url))` of each item, byte for byte.

    Per item, in Python: the normalized texts, the hashes of the Latin words (cached per word),
    the numbers and the dates. For the whole batch at once, in numpy: the hashes of the CJK
    shingles, each item's sorted distinct hashes, the MinHash signatures and their band keys.
    """
    # Imported here: CLI commands that never fingerprint do not pay for it (~50 ms).
    import numpy as np

    texts: list[str] = []
    word_crcs: list[list[int]] = []
    numbers: list[str] = []
    dates: list[str] = []
    for title, lead, _canonical_url in items:  # the URL gives the release, which is not packed
        title_text, text = normal_texts(title, lead)
        texts.append(text)
        word_crcs.append(_latin_word_crcs(text))
        numbers.append(numbers_text(numbers_in(title_text)))
        dates.append(dates_text(dates_in(text)))
    count = len(texts)
    word_counts = list(map(len, word_crcs))
    word_items = np.repeat(np.arange(count, dtype=np.uint64), word_counts)
    words = np.fromiter(chain.from_iterable(word_crcs), np.uint64, sum(word_counts))
    cjk_items, cjk = _cjk_shingle_crcs(texts)
    # One sort gives every item's distinct hashes, in order, the items one after the other
    # (np.unique would too, but hashes first and then sorts: several times slower).
    keys = np.concatenate(((word_items << _HASH_BITS) | words, (cjk_items << _HASH_BITS) | cjk))
    keys.sort()
    keys = np.concatenate((keys[:1], keys[1:][keys[1:] != keys[:-1]]))
    hashes = keys & np.uint64(0xFFFFFFFF)
    item_ends = np.searchsorted(keys, np.arange(1, count + 1, dtype=np.uint64) << _HASH_BITS)
    signatures = _signatures((keys >> _HASH_BITS).astype(np.int64), hashes, count)
    shingle_bytes = hashes.astype("<u4").tobytes()
    signature_bytes = signatures.astype("<u4").tobytes()
    band_bytes = _band_keys(signatures).astype("<u4").tobytes()
    signature_size, bands_size = 4 * NUM_HASHES, 4 * BANDS
    packed = []
    for index, (start, end) in enumerate(pairwise([0, *item_ends.tolist()])):
        rows = index, index + (end > start)  # its row, or none: no shingles, no signature
        packed.append(
            PackedFingerprint(
                signature=signature_bytes[rows[0] * signature_size : rows[1] * signature_size],
                shingles=shingle_bytes[start * 4 : end * 4],
                bands=band_bytes[rows[0] * bands_size : rows[1] * bands_size],
                title_numbers=numbers[index],
                dates=dates[index],
            )
        )
    return packed


def _signatures(items: Int64s, hashes: UInt64s, count: int) -> Int64s:
    """`signature_of` of each item's hashes, one row per item (a row of an item without hashes
    is meaningless). `items` holds each hash's item, in order."""
    import numpy as np

    spread = hashes * np.uint64(_GOLDEN)  # wraps: mod 2**64, as signature_of takes it
    spread ^= spread >> np.uint64(29)
    cells = items * NUM_HASHES + (spread & np.uint64(_BIN_MASK)).astype(np.int64)
    values = ((spread >> np.uint64(40)) & np.uint64(_VALUE_MASK)).astype(np.int64)  # bits 40..59
    smallest = np.full(count * NUM_HASHES, _NO_VALUE, dtype=np.int64)
    np.minimum.at(smallest, cells, values)
    rows = smallest.reshape(count, NUM_HASHES)
    # Densification: an empty bin takes the value of the next filled bin, circularly, plus the
    # distance to it. On the row written twice, the next filled position is a running minimum
    # from the right; a row with no filled bin gets 2 * NUM_HASHES (and is not used).
    positions = np.arange(2 * NUM_HASHES)
    filled_at = np.where(np.tile(rows != _NO_VALUE, 2), positions, 2 * NUM_HASHES)
    next_filled = np.minimum.accumulate(filled_at[:, ::-1], axis=1)[:, ::-1][:, :NUM_HASHES]
    distance = next_filled - positions[:NUM_HASHES]
    taken = np.take_along_axis(rows, next_filled & _BIN_MASK, axis=1)
    dense: Int64s = taken + distance * _DISTANCE_STEP
    return dense


def _band_keys(signatures: Int64s) -> UInt64s:
    """`band_keys` of each row of signatures (ROWS = 2, as band_keys takes it)."""
    import numpy as np

    values = signatures.astype(np.uint64)
    pairs = (values[:, 0::ROWS] << np.uint64(_BAND_BITS)) | values[:, 1::ROWS]
    product = pairs * np.uint64(_GOLDEN)  # wraps: mod 2**64
    indexes = np.arange(BANDS, dtype=np.uint64) << np.uint64(_BAND_BITS)
    keys: UInt64s = (
        (product >> np.uint64(64 - _BAND_BITS)) & np.uint64(_BAND_VALUE_MASK)
    ) | indexes
    return keys


def _cjk_shingle_crcs(texts: list[str]) -> tuple[UInt64s, UInt64s]:
    """The item and the hash of each CJK shingle of the texts (as `_shingle_crcs` finds them:
    the bigrams of each run, and the runs of one character), which may repeat.

    On the code points of all texts at once: CJK or not, then where a bigram or a lone character
    starts. CRC-32 is affine over GF(2) for messages of one length, so the CRC of a bigram of
    two three-byte characters is one table entry for each character (see `_crc_tables`); pairs
    holding a character beyond U+FFFF (four bytes) are few and hashed by zlib.
    """
    import numpy as np

    joined = "\n".join(texts)  # not CJK: no shingle spans two texts
    if joined.isascii():
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
    codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), "<u4")
    cjk = _cjk_in_bmp().take(np.minimum(codes, _BMP - 1))
    beyond_bmp = np.flatnonzero(codes >= _BMP)  # rare: asked of the pattern one by one
    cjk[beyond_bmp] = [
        _CJK_CHAR.match(chr(code)) is not None for code in codes[beyond_bmp].tolist()
    ]
    bigrams = np.flatnonzero(cjk[:-1] & cjk[1:])
    alone = np.concatenate(([False], cjk, [False]))
    singles = np.flatnonzero(cjk & ~alone[:-2] & ~alone[2:])
    firsts, seconds, lone = codes[bigrams], codes[bigrams + 1], codes[singles]
    pair_first, pair_second, single = _crc_tables()
    in_bmp, lone_in_bmp = (firsts < _BMP) & (seconds < _BMP), lone < _BMP
    crcs = [
        pair_first[firsts[in_bmp]] ^ pair_second[seconds[in_bmp]],
        single[lone[lone_in_bmp]],
    ]
    starts = [bigrams[in_bmp], singles[lone_in_bmp]]
    wide_pairs, wide_singles = np.flatnonzero(~in_bmp), np.flatnonzero(~lone_in_bmp)
    if len(wide_pairs) or len(wide_singles):
        pairs = zip(firsts[wide_pairs].tolist(), seconds[wide_pairs].tolist(), strict=True)
        wide = [zlib.crc32((chr(a) + chr(b)).encode()) for a, b in pairs]
        wide += [zlib.crc32(chr(c).encode()) for c in lone[wide_singles].tolist()]
        crcs.append(np.array(wide, np.uint32))
        starts += [bigrams[wide_pairs], singles[wide_singles]]
    text_starts = np.cumsum([0] + [len(text) + 1 for text in texts[:-1]])
    items = np.searchsorted(text_starts, np.concatenate(starts), side="right") - 1
    return items.astype(np.uint64), np.concatenate(crcs).astype(np.uint64)


@cache
def _cjk_in_bmp() -> npt.NDArray[np.bool_]:
    """For each code point below U+10000, whether it is CJK: read off the pattern itself, once
    (about a millisecond)."""
    import numpy as np

    every_character = np.arange(_BMP, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")
    cjk = np.zeros(_BMP, bool)
    for run in _CJK_RUN.finditer(every_character):
        cjk[run.start() : run.end()] = True
    return cjk


@cache
def _crc_tables() -> tuple[UInt32s, UInt32s, UInt32s]:
    """For each code point below U+10000 whose UTF-8 takes three bytes: what it adds to the
    CRC-32 of a bigram as its first character (the constant included) and as its second, and
    the CRC-32 of the character alone.

    For messages of one length, crc(a ^ b) = crc(a) ^ crc(b) ^ crc(zeros), so a message's CRC is
    crc(zeros) and, for each byte, crc(that byte in place, zeros elsewhere) ^ crc(zeros).
    """
    import numpy as np

    codes = np.arange(_BMP, dtype=np.uint32)
    utf8 = (0xE0 | codes >> 12, 0x80 | (codes >> 6) & 0x3F, 0x80 | codes & 0x3F)

    def added(length: int, offset: int) -> UInt32s:
        zeros = zlib.crc32(bytes(length))
        found = np.full(_BMP, zeros if offset == 0 else 0, np.uint32)
        for at, byte in enumerate(utf8, start=offset):
            table = np.array(
                [
                    zlib.crc32(bytes(at) + bytes([b]) + bytes(length - at - 1)) ^ zeros
                    for b in range(256)
                ],
                np.uint32,
            )
            found ^= table[byte]
        return found

    return added(6, 0), added(6, 3), added(3, 0)
