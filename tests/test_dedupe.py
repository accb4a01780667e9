"""Story matching as plain data: shingles, signatures, release numbers, look-alikes that must stay
apart and the same event told by several outlets (English and Chinese) that must merge."""

from __future__ import annotations

import dataclasses
import re
import unicodedata
import zlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.process import dedupe
from aggregator.process.dedupe import (
    BANDS,
    LEAD_CHARS,
    NUM_HASHES,
    Fingerprint,
    StoryItem,
    StoryMatch,
    _nfkc,
    _normal,
    band_keys,
    choose_story,
    counterpart_urls,
    dates_in,
    estimated_jaccard,
    fingerprint,
    is_language_version,
    jaccard,
    look_alike_conflict,
    minhash,
    numbers_in,
    release_of,
    shingle_hashes,
    shingles,
    signature_of,
)

T0 = datetime(2024, 5, 16, 4, 30, tzinfo=UTC)


def item(
    entry_id: str,
    source_id: str,
    title: str,
    lead: str = "",
    *,
    hours: float = 0,
    url: str | None = None,
    story_sources: frozenset[str] | None = None,
) -> StoryItem:
    return StoryItem(
        entry_id=entry_id,
        source_id=source_id,
        title=title,
        lead=lead,
        published=T0 + timedelta(hours=hours),
        canonical_url=url or f"https://{source_id}.example/{entry_id}",
        story_id=entry_id,
        story_sources=story_sources if story_sources is not None else frozenset({source_id}),
    )


# The demo story (examples/feeds): one funding arrangement, told three ways in English.
HKSAR = item(
    "gov",
    "hksar-press-en",
    "ITIB and MOST sign arrangement on Hong Kong-Shenzhen joint research funding",
    "The Innovation, Technology and Industry Bureau (ITIB) and the Ministry of Science and "
    "Technology (MOST) today (May 16) signed in Shenzhen the Arrangement on the Hong Kong-Shenzhen "
    "Joint Research Funding Scheme, under which universities and research institutions in Hong "
    "Kong and Shenzhen may jointly apply for funding of up to RMB 3 million per project.",
)
SCMP = item(
    "scmp",
    "scmp-tech",
    "Hong Kong & Shenzhen universities to pool research cash in new cross-border scheme",
    "Scientists in Hong Kong and Shenzhen will be able to apply together for up to 3 million yuan "
    "(US$415,000) per project, after the city's innovation bureau and Beijing's Ministry of "
    "Science and Technology signed a joint funding deal on Thursday. University heads welcomed "
    "the move, saying grant money had long been stuck at the border.",
    hours=7.75,
)
CHINA_DAILY = item(
    "cd",
    "chinadaily-hk",
    "Cross-boundary research fund links HK, Shenzhen campuses",
    "A new funding arrangement signed on Thursday by the Hong Kong Special Administrative Region "
    "government and the Ministry of Science and Technology will let research teams from Hong "
    "Kong and Shenzhen share grants across the boundary. Under the scheme, each joint project "
    "involving universities on both sides may receive up to 3 million yuan.",
    hours=20,
)
# Real shape (news.gov.hk and RTHK, April 2024): one signing, two outlets, Traditional Chinese.
NEWS_GOV = item(
    "ngov",
    "news-gov-hk",
    "中藥標準研究合作安排簽署",
    "衞生署與中國食品藥品檢定研究院今日簽署合作安排，加強中藥標準研究的合作，"
    "推動香港中藥檢測及標準發展。",
)
RTHK_ZH = item(
    "rthkzh",
    "rthk-local-zh",
    "衞生署與中檢院簽署有關中藥標準研究等合作安排",
    "衞生署與中國食品藥品檢定研究院簽署合作安排，在中藥標準研究等方面加強合作，"
    "推動香港中藥檢測發展。",
    hours=2,
)


def test_same_event_from_three_outlets_with_different_wording_merges() -> None:
    for new, stored in [(SCMP, HKSAR), (CHINA_DAILY, HKSAR), (CHINA_DAILY, SCMP)]:
        match = choose_story(new, [stored])
        assert match is not None, (new.entry_id, stored.entry_id)
        assert match.story_id == stored.story_id and match.reason == "similar"


def test_same_event_in_traditional_chinese_from_two_outlets_merges() -> None:
    match = choose_story(RTHK_ZH, [NEWS_GOV])
    assert match is not None and match.story_id == "ngov"


def test_traditional_and_simplified_spellings_are_one_text() -> None:
    simplified = item(
        "gb",
        "xinhua-zh",
        "卫生署与中检院签署有关中药标准研究等合作安排",
        "卫生署与中国食品药品检定研究院签署合作安排，在中药标准研究等方面加强合作，"
        "推动香港中药检测发展。",
        hours=1,
    )
    assert jaccard(fingerprint(RTHK_ZH.title, RTHK_ZH.lead, None).shingles,
                   fingerprint(simplified.title, simplified.lead, None).shingles) == 1.0  # fmt: skip
    assert choose_story(simplified, [RTHK_ZH]) is not None


def test_best_of_several_candidates_wins() -> None:
    unrelated = item(
        "hetao",
        "rthk-greaterchina-en",
        "Hetao zone opens biomedical lab shared by HK and Shenzhen teams",
        "A biomedical laboratory jointly run by two Hong Kong universities and a Shenzhen "
        "hospital opened on Wednesday in the Hetao zone, with 60 researchers.",
        hours=-20,
    )
    match = choose_story(CHINA_DAILY, [unrelated, SCMP, HKSAR])
    assert match is not None and match.story_id in {"gov", "scmp"}
    assert choose_story(unrelated, [HKSAR]) is None


LEGCO = (
    "The Legislative Council (LegCo) will hold a meeting on Wednesday ({date}) at 11am in the "
    "Chamber of the LegCo Complex. During the meeting, Members will debate a motion and will "
    "ask the Government 22 questions. The agenda can be obtained via the LegCo website."
)
DENGUE = (
    "The Centre for Health Protection today ({date}) released the weekly dengue fever report. "
    "{n} imported cases were recorded in the week, and no local case. Members of the public "
    "should prevent mosquito breeding and avoid mosquito bites."
)
RAIN_EN = (
    "The Hong Kong Observatory issued the Red Rainstorm Warning Signal at 6.05am today ({date}). "
    "Heavy rain has fallen or is expected to fall generally over Hong Kong, exceeding 70 "
    "millimetres in an hour, and is likely to continue. Members of the public should stay indoors."
)
RAIN_ZH = (
    "香港天文台在今日（{date}）上午六時零五分發出紅色暴雨警告信號。本港廣泛地區已錄得或預料會有"
    "每小時雨量超過七十毫米的豪雨，且雨勢可能持續。市民應留在室內安全地方。"
)

# (stored, new): look-alikes that are different events. Each pair is from two sources (so the
# same-source rule alone would not keep them apart), and the texts are nearly the same.
LOOK_ALIKES = [
    pytest.param(
        item("l1", "gov-en", "LegCo meeting on Wednesday", LEGCO.format(date="May 22")),
        item("l2", "rthk-en", "LegCo meeting on Wednesday", LEGCO.format(date="May 29"), hours=168),
        id="legco-weekly-meeting",
    ),
    pytest.param(
        item("l1", "gov-en", "LegCo meeting", LEGCO.format(date="May 22")),
        item("l2", "rthk-en", "LegCo meeting", LEGCO.format(date="May 23"), hours=24),
        id="legco-next-day",
    ),
    pytest.param(
        item("d1", "chp", "Weekly dengue fever report (week 20)", DENGUE.format(date="May 17", n=3)),
        item(
            "d2", "gov-en", "Weekly dengue fever report (week 21)",
            DENGUE.format(date="May 24", n=5), hours=168,
        ),
        id="weekly-statistics-numbered",
    ),
    pytest.param(
        item("d1", "chp", "Weekly dengue fever report", DENGUE.format(date="May 17", n=3)),
        item("d2", "gov-en", "Weekly dengue fever report", DENGUE.format(date="May 24", n=3),
             hours=168),
        id="weekly-statistics-same-numbers-other-date",
    ),
    pytest.param(
        item("r1", "gov-en", "Red Rainstorm Warning Signal issued", RAIN_EN.format(date="May 4")),
        item("r2", "rthk-en", "Red Rainstorm Warning Signal issued", RAIN_EN.format(date="May 6"),
             hours=48),
        id="red-rainstorm-en",
    ),
    pytest.param(
        item("r1", "gov-zh", "紅色暴雨警告信號已經發出", RAIN_ZH.format(date="五月四日")),
        item("r2", "rthk-zh", "紅色暴雨警告信號已經發出", RAIN_ZH.format(date="五月六日"), hours=48),
        id="red-rainstorm-zh",
    ),
    pytest.param(
        item("r1", "gov-en", "Red Rainstorm Warning Signal issued",
             "Heavy rain is falling over Hong Kong. Members of the public should stay indoors."),
        item("r2", "rthk-en", "Red Rainstorm Warning Signal issued",
             "Heavy rain is falling over Hong Kong. Members of the public should stay indoors.",
             hours=50),
        id="red-rainstorm-no-date-two-days-apart",
    ),
    pytest.param(
        item("v1", "gov-zh", "二○二四年三月訪港旅客數字", "根據公布的臨時數字，訪港旅客約有三百萬人次。"),
        item("v2", "news-zh", "二○二四年四月訪港旅客數字", "根據公布的臨時數字，訪港旅客約有三百萬人次。",
             hours=2),
        id="monthly-statistics-zh-month-differs",
    ),
    pytest.param(
        item("w1", "gov-en", "Red Rainstorm Warning Signal issued", RAIN_EN.format(date="May 4")),
        item("w2", "rthk-en", "Red Rainstorm Warning Signal issued", RAIN_EN.format(date="May 4"),
             hours=24 * 8),
        id="outside-the-window",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("stored", "new"), LOOK_ALIKES)
def test_recurring_look_alikes_stay_apart(stored: StoryItem, new: StoryItem) -> None:
    assert choose_story(new, [stored]) is None


def test_the_same_bulletin_told_by_two_sources_merges() -> None:
    """The control for the look-alikes: same date, same day, another source: one event."""
    gov = item("r1", "gov-en", "Red Rainstorm Warning Signal issued", RAIN_EN.format(date="May 4"))
    rthk = item(
        "r2", "rthk-en", "Red rainstorm warning issued", RAIN_EN.format(date="May 4"), hours=0.5
    )
    match = choose_story(rthk, [gov])
    assert match is not None and match.story_id == "r1"


def test_one_source_never_reports_an_event_twice() -> None:
    first = item("a", "gov-en", "Red Rainstorm Warning Signal issued", RAIN_EN.format(date="May 4"))
    again = item(
        "b", "gov-en", "Red Rainstorm Warning Signal issued", RAIN_EN.format(date="May 4"), hours=1
    )
    assert choose_story(again, [first]) is None


def test_a_story_that_already_holds_the_source_is_not_joined() -> None:
    stored = item(
        "gov", HKSAR.source_id, HKSAR.title, HKSAR.lead,
        story_sources=frozenset({HKSAR.source_id, "scmp-tech"}),
    )  # fmt: skip
    assert choose_story(SCMP, [stored]) is None


def test_threshold_and_window_are_settings() -> None:
    assert choose_story(SCMP, [HKSAR], threshold=0.9) is None
    assert choose_story(SCMP, [HKSAR], window=timedelta(hours=1)) is None


def test_same_canonical_url_is_one_story_even_from_one_source() -> None:
    url = "https://news.example/2024/05/16/joint-lab"
    a = item("a", "news", "Joint lab opens", url=url)
    b = item("b", "news", "Completely different title now", url=url, hours=3)
    match = choose_story(b, [a])
    assert match is not None and match.reason == "same-url" and match.story_id == "a"


EN_URL = "https://www.info.gov.hk/gia/general/202405/16/P2024051600123.htm"
ZH_URL = "https://www.info.gov.hk/gia/general/202405/16/P2024051600122.htm"


def test_release_numbers() -> None:
    assert release_of(EN_URL) is not None and release_of(EN_URL).number == 123  # type: ignore[union-attr]
    assert release_of("https://www.info.gov.hk/gia/general/202406/26/P2024062600192p.htm")
    assert release_of("https://example.org/gia/general/202405/16/P2024051600123.htm") is None
    assert release_of("https://www.info.gov.hk/gia/general/202405/17/P2024051600123.htm") is None
    assert counterpart_urls(EN_URL, chinese=False) == (ZH_URL,)
    assert counterpart_urls(ZH_URL, chinese=True) == (EN_URL,)
    assert counterpart_urls("https://scmp.com/x", chinese=False) == ()


@pytest.mark.parametrize(
    ("a_url", "a_title", "b_url", "b_title", "linked"),
    [
        (EN_URL, "ITIB and MOST sign arrangement", ZH_URL, "創科及工業局與科技部簽署安排", True),
        (ZH_URL, "創科及工業局與科技部簽署安排", EN_URL, "ITIB and MOST sign arrangement", True),
        # Chinese number must be the English one minus one, not plus one.
        (EN_URL.replace("00123", "00121"), "English", ZH_URL, "中文", False),
        (EN_URL, "English", EN_URL.replace("00123", "00122"), "Also English", False),
        (EN_URL, "English", ZH_URL.replace("/16/P20240516", "/17/P20240517"), "中文", False),
    ],
)
def test_language_versions(
    a_url: str, a_title: str, b_url: str, b_title: str, linked: bool
) -> None:
    assert is_language_version(a_url, a_title, b_url, b_title) is linked


def test_language_versions_join_across_sources_whatever_the_text() -> None:
    zh = item(
        "zh",
        "hksar-press-zh",
        "創新科技及工業局與國家科學技術部簽署港深聯合科研資助安排",
        url=ZH_URL,
    )
    en = item("en", "hksar-press-en", HKSAR.title, HKSAR.lead, url=EN_URL)
    match = choose_story(en, [zh])
    assert match is not None and match.reason == "language-version" and match.story_id == "zh"


def test_numbers_and_dates() -> None:
    assert numbers_in("weekly report (week 21): 3,400 cases, up 2.7%") == {"21", "3400", "2.7"}
    assert numbers_in("二○二四年四月訪港旅客數字") == {"2024", "4"}
    assert numbers_in("一帶一路論壇") == frozenset()  # a lone 一 is part of a word
    assert dates_in("today (may 16) and 17 may") == {(5, 16), (5, 17)}
    assert dates_in("今日（五月十七日）及5月18日") == {(5, 17), (5, 18)}


def test_shingles_latin_words_and_chinese_bigrams() -> None:
    assert shingles("the universities signed a joint funding deal") == {
        "university", "sign", "joint", "fund", "deal",
    }  # fmt: skip
    assert shingles("香港科技") == {"香港", "港科", "科技"}


def test_signature_and_band_keys_are_stable_and_estimate_jaccard() -> None:
    a = frozenset(f"w{i}" for i in range(100))
    b = frozenset(f"w{i}" for i in range(50, 150))
    sig_a, sig_b = minhash(a), minhash(b)
    assert len(sig_a) == NUM_HASHES and sig_a == minhash(set(a))
    assert len(band_keys(sig_a)) == BANDS
    assert band_keys(sig_a) == band_keys(minhash(a))
    assert abs(estimated_jaccard(sig_a, sig_b) - jaccard(a, b)) < 0.2
    assert estimated_jaccard(sig_a, minhash(frozenset({"x", "y"}))) < 0.2
    assert minhash(frozenset()) == () and band_keys(()) == ()
    # Values are the same on every run (stored keys must match next process's keys).
    assert minhash(frozenset({"hong kong"})) == minhash(frozenset({"hong kong"}))


def test_an_item_linking_two_stories_folds_one_into_the_other() -> None:
    """The English release arrives last: linked to the Chinese one by its number and to the
    SCMP story by its text, it brings the two together."""
    zh = item(
        "zh",
        "hksar-press-zh",
        "創新科技及工業局與國家科學技術部簽署港深聯合科研資助安排",
        url=ZH_URL,
    )
    en = item("en", "hksar-press-en", HKSAR.title, HKSAR.lead, url=EN_URL)
    match = choose_story(en, [zh, SCMP])
    assert match is not None and match.story_id == "zh" and match.merges == ("scmp",)
    crowded = item(
        "zh", "hksar-press-zh", zh.title, url=ZH_URL,
        story_sources=frozenset({"hksar-press-zh", "scmp-tech"}),
    )  # fmt: skip
    match = choose_story(en, [crowded, SCMP])
    assert match is not None and match.story_id == "zh" and match.merges == ()


# --- Pinned values: fingerprints are stored, so their hashing must never change ---------------
# Computed with the per-hash implementation this module had before it was made faster; a
# change here means every stored fingerprint, signature and band key would go stale.


def ints(text: str) -> tuple[int, ...]:
    return tuple(map(int, text.split()))


HKSAR_SHINGLES = ints(
    "376430276 588347267 983537893 1212055764 1475039426 1729573288 1885069069 1901663616 "
    "2124006329 2291926321 2650110983 2675872254 2692384236 2789249489 3035971135 3082471913 "
    "3219359051 3455741088 3700571664 4100149837"
)
HKSAR_SIGNATURE = ints(
    "7609161 6560585 5512009 4463433 3414857 2366281 1317705 269129 769087 3382879 2334303 "
    "1285727 237151 4073104 3024528 1975952 927376 3701402 2652826 1604250 555674 1581347 "
    "532771 2844213 1795637 747061 4780789 3732213 2683637 1635061 586485 2533391 1484815 "
    "436239 2380543 1331967 283391 2053837 1005261 3273338 2224762 1176186 127610 5867348 "
    "4818772 3770196 2721620 1673044 624468 1315246 266670 6402343 5353767 4305191 3256615 "
    "2208039 1159463 110887 1349066 300490 11803465 10754889 9706313 8657737"
)
HKSAR_BANDS = ints(
    "53904759 90282961 193770028 230148231 303325632 356822507 456352469 535514398 569306448 "
    "642935239 705024893 784772945 872264578 919931534 956309736 1038905043 1123939573 "
    "1205114038 1269076246 1329832926 1359242050 1447851535 1489872438 1593359505 1622387146 "
    "1702497081 1792623871 1829002074 1932489141 1955192356 2061523137 2097901340"
)
NEWS_GOV_SIGNATURE = ints(
    "50778 1615699 567123 5736449 4687873 3639297 2590721 1542145 493569 3602754 2554178 "
    "1505602 457026 2334440 1285864 237288 3296400 2247824 1199248 150672 5580062 4531486 "
    "3482910 2434334 1385758 337182 500952 819172 941125 1477078 428502 2346694 1298118 249542 "
    "8954 539562 803421 1347789 299213 111933 2262980 1214404 165828 6329761 5281185 4232609 "
    "3184033 2135457 1086881 38305 515424 3024086 1975510 926934 185725 502959 871329 949431 "
    "2584649 1536073 487497 2219525 1170949 122373"
)
NEWS_GOV_BANDS = ints(
    "37544990 99581213 151953923 255440990 333097771 400654114 455201526 526051184 560404264 "
    "663891331 727087026 763465228 866952295 907420717 984588522 1031778771 1083813852 "
    "1199699390 1221180307 1317294832 1349404638 1433172739 1497848673 1601335740 1637713943 "
    "1736582355 1777683966 1813555626 1917181824 1949798606 2038605871 2113310251"
)
# Full-width forms, a character beyond U+FFFF, Chinese numerals, Traditional characters.
MIXED_TITLE = "𠀀香港，五月十六日（星期四）"
MIXED_LEAD = "ＨＫ  Ｍａｙ １６ —— 衞生署 𪚥 2024年5月16日"
MIXED_SHINGLES = ints(
    "77541888 1212055764 1591682298 1705059278 1795959104 1824111364 2025593130 2479467106 "
    "2744073931 2789249489 2841880893 2858561535 3035971135 3350920295 3398581946 3662375305 "
    "4135537154 4251436635"
)


def test_fingerprints_are_pinned() -> None:
    fp = fingerprint(HKSAR.title, HKSAR.lead, EN_URL)
    assert tuple(sorted(fp.shingles)) == HKSAR_SHINGLES
    assert fp.signature == HKSAR_SIGNATURE and fp.band_keys == HKSAR_BANDS
    assert not fp.title_numbers and fp.dates == {(5, 16)} and not fp.chinese
    assert fp.release is not None and (fp.release.day, fp.release.number) == ("20240516", 123)

    fp = fingerprint(NEWS_GOV.title, NEWS_GOV.lead, None)
    assert fp.signature == NEWS_GOV_SIGNATURE and fp.band_keys == NEWS_GOV_BANDS
    assert len(fp.shingles) == 42 and zlib.crc32("中药".encode()) in fp.shingles
    assert fp.chinese and fp.release is None

    fp = fingerprint(MIXED_TITLE, MIXED_LEAD, None)
    assert tuple(sorted(fp.shingles)) == MIXED_SHINGLES
    assert fp.signature[:4] == (4203903, 3155327, 2106751, 1058175)
    assert fp.band_keys[:4] == (33719915, 70098117, 193288286, 264743474)
    assert fp.title_numbers == {"16", "5"} and fp.dates == {(5, 16)}

    fp = fingerprint("香", "", None)
    assert fp.shingles == {687604402} and fp.signature[:2] == (48235270, 47186694)
    for title, lead in [("", ""), ("The of and", "a an")]:
        fp = fingerprint(title, lead, None)
        assert fp.shingles == frozenset() and fp.signature == () and fp.band_keys == ()


# --- The fast paths against their plain definitions ---------------------------------------------


def reference_signature(hashes: frozenset[int]) -> tuple[int, ...]:
    """`signature_of` as defined: one hash at a time."""
    bins: list[int | None] = [None] * NUM_HASHES
    for crc in hashes:
        h = (crc * 0x9E3779B97F4A7C15) % 2**64
        h ^= h >> 29
        index, value = h % NUM_HASHES, (h >> 40) % 2**20
        if bins[index] is None or value < bins[index]:  # type: ignore[operator]
            bins[index] = value
    if all(value is None for value in bins):
        return ()
    signature = []
    for k in range(NUM_HASHES):
        nearest = next(j for j in range(k, k + NUM_HASHES) if bins[j % NUM_HASHES] is not None)
        signature.append(bins[nearest % NUM_HASHES] + (nearest - k) * 2**20)  # type: ignore[operator]
    return tuple(signature)


def reference_band_keys(signature: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(
        (band << 26) | ((((first << 26) | second) * 0x9E3779B97F4A7C15) % 2**64) >> 38
        for band, (first, second) in enumerate(zip(signature[0::2], signature[1::2], strict=True))
    )


@settings(max_examples=300)
@given(st.frozensets(st.integers(0, 2**32 - 1), max_size=400))
def test_signature_is_its_definition(hashes: frozenset[int]) -> None:
    assert signature_of(hashes) == reference_signature(hashes)


@given(st.lists(st.integers(0, 2**32 - 1), min_size=NUM_HASHES, max_size=NUM_HASHES))
def test_band_keys_are_their_definition(values: list[int]) -> None:
    signature = tuple(values)
    assert band_keys(signature) == reference_band_keys(signature)
    small = tuple(value % 2**26 for value in values)  # what signatures hold
    assert band_keys(small) == reference_band_keys(small)


def test_hashes_and_signature_values_must_fit_their_bits() -> None:
    with pytest.raises(ValueError, match="2\\*\\*32"):
        signature_of({1, 2**32})
    with pytest.raises(ValueError, match="2\\*\\*32"):
        band_keys((2**32,) * NUM_HASHES)


# Characters that normalize in every way: compatibility forms (full-width, circled, ligatures,
# super/subscripts), composing sequences (Latin, Indic, Hangul jamo and syllables), and CJK.
TRICKY = (
    "，。！：；（）　ＡＺａｚ０９｡ｱｶﾞﾟ①⑳Ⅻⅻ²₃½ﬁﬀ™℃㎏㍻µſǅ"
    "aeiouAEIOUnc\u0300\u0301\u0302\u0308\u0327\u0323\u031b\u0345"
    "\u0b47\u0b3e\u0b56\u0b57\u0bc6\u0bbe\u0bd7\u0cc6\u0cd5\u0cd6\u0d46\u0d3e\u0dd9\u0dcf\u1025\u102e"
    "\u1100\u1112\u1161\u1175\u11a8\u11c2가각힣"
    "香港衞發臺國﨑豈更\U00020000\U0002a6a5\U0002f800 \n-.,"
)
TEXT = st.text(st.sampled_from(TRICKY) | st.characters(), max_size=40)


@settings(max_examples=500)
@given(TEXT)
def test_nfkc_is_unicode_nfkc(text: str) -> None:
    assert _nfkc(text) == unicodedata.normalize("NFKC", text)


# Text as feeds give it: words, numbers, Chinese (Traditional, Simplified, beyond U+FFFF),
# punctuation, full-width forms.
PIECES = [
    "Hong", "Kong", "HK", "signed", "studies", "the", "May", "16", "3.5", "1,000", "v1.2.3",
    "香港", "衞生署", "簽署", "中药", "𠀀", "𪚥", "五月", "十六日", "二○二四年", "一", "，", "。",
    "（", "）", "Ｍａｙ", "１６", " ", " ", "\n", "-", "'", "é",
]  # fmt: skip
NEWS_TEXT = st.lists(st.sampled_from(PIECES) | st.text(max_size=3), max_size=30).map("".join)


@settings(max_examples=300)
@given(NEWS_TEXT, NEWS_TEXT)
def test_fingerprint_hashes_the_shingles(title: str, lead: str) -> None:
    fp = fingerprint(title, lead, None)
    text = _normal(title) + "\n" + _normal(lead[:LEAD_CHARS])
    assert fp.shingles == shingle_hashes(shingles(text))
    assert fp.signature == minhash(shingles(text))


MONTHS = sorted(dedupe._MONTHS, key=len, reverse=True)
CN = "零〇○一二两三四五六七八九十百千"
# The module's patterns, written to be fast, against the plain ones they stand for.
PATTERNS = [
    (dedupe._DATE_MONTH_DAY, rf"\b({'|'.join(MONTHS)})\.?\s+(\d{{1,2}})\b"),
    (dedupe._DATE_DAY_MONTH, rf"\b(\d{{1,2}})\s+({'|'.join(MONTHS)})\.?\b"),
    (dedupe._DATE_CJK, r"(\d{1,2})月(\d{1,2})[日号號]"),
    (dedupe._CN_NUMBER_IN_TITLE, f"[{CN}]{{2,}}|[{CN[:-2]}]+(?=[年月日号號])"),
    (dedupe._CN_NUMBER_SPLIT, f"([{CN}]+)"),
    (dedupe._NUMBER, r"\d+(?:[.,]\d+)*"),
    (dedupe._LATIN_WORD, r"[a-z0-9]+(?:\.[0-9]+)?"),
    (dedupe._CJK_RUN, r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+"),
]
DATE_TEXT = st.lists(
    st.sampled_from([*MONTHS, *CN, *"年月日号號 .,\n-a1２٣", "16", "05", "1.5", "香"]), max_size=12
).map("".join)


@settings(max_examples=500)
@given(DATE_TEXT)
def test_fast_patterns_find_what_the_plain_ones_do(text: str) -> None:
    for fast, plain in PATTERNS:
        assert fast.findall(text) == re.findall(plain, text), plain
    assert bool(dedupe._MONTH_PREFIX.search(text)) == any(m in text for m in MONTHS)


def reference_most_similar(
    new: StoryItem, new_fp: Fingerprint, candidates: list[StoryItem], threshold: float,
    window: timedelta,
) -> StoryMatch | None:  # fmt: skip
    """The similar-text decision as first written: score each candidate, then the guards."""
    best = None
    for other in sorted(candidates, key=lambda c: (c.published, c.entry_id)):
        if other.entry_id == new.entry_id or other.story_id is None:
            continue
        if other.source_id == new.source_id or new.source_id in other.story_sources:
            continue
        if abs(new.published - other.published) > window:
            continue
        assert other.fingerprint is not None
        score = jaccard(new_fp.shingles, other.fingerprint.shingles)
        if score < threshold or (best is not None and score <= best.score):
            continue
        if look_alike_conflict(new, new_fp, other, other.fingerprint) is None:
            best = StoryMatch(other.story_id, "similar", round(score, 3), other.entry_id)
    return best


@st.composite
def story_items(draw: st.DrawFn, entry_id: str) -> StoryItem:
    """Small random items: a few shingles, numbers and dates, so that all paths are taken."""
    source = draw(st.sampled_from("abc"))
    fp = Fingerprint(
        shingles=draw(st.frozensets(st.integers(0, 5), max_size=4)),  # equal, subsets, ...
        signature=(),
        title_numbers=draw(st.frozensets(st.sampled_from(["1", "2", "3"]), max_size=2)),
        dates=draw(st.frozensets(st.sampled_from([(5, 1), (5, 2)]), max_size=2)),
        release=None,
        chinese=False,
    )
    return StoryItem(
        entry_id=entry_id,
        source_id=source,
        title="",
        lead="",
        published=T0 + timedelta(hours=draw(st.integers(-200, 200))),
        story_id=draw(st.sampled_from([entry_id, "s1", "s2", None])),
        story_sources=frozenset({source}) | draw(st.frozensets(st.sampled_from("abc"))),
        fingerprint=fp,
    )


def test_a_score_equal_to_the_threshold_is_enough() -> None:
    hksar_fp = fingerprint(HKSAR.title, HKSAR.lead, None)

    def with_shingles(story_item: StoryItem, hashes: set[int]) -> StoryItem:
        fp = Fingerprint(
            shingles=frozenset(hashes),
            signature=hksar_fp.signature,
            title_numbers=hksar_fp.title_numbers,
            dates=hksar_fp.dates,
            release=hksar_fp.release,
            chinese=hksar_fp.chinese,
        )
        return dataclasses.replace(story_item, fingerprint=fp)

    new = with_shingles(SCMP, {1, 2})
    for stored, threshold in [(with_shingles(HKSAR, {1, 2, 3, 4}), 0.5), (new, 1.0)]:
        stored = dataclasses.replace(stored, entry_id="stored", source_id="other")
        match = choose_story(new, [stored], threshold=threshold, new_fingerprint=new.fingerprint)
        assert match is not None and match.score == threshold


@settings(max_examples=500)
@given(
    story_items("new"),
    st.lists(st.integers(0, 30).flatmap(lambda n: story_items(f"c{n}")), max_size=8),
    st.sampled_from([0.0, 0.2, 0.3, 0.5, 1.0]),
    st.sampled_from([1, 36, 168]),
)
def test_choose_story_decides_as_first_written(
    new: StoryItem, candidates: list[StoryItem], threshold: float, hours: int
) -> None:
    assert new.fingerprint is not None
    window = timedelta(hours=hours)
    expected = reference_most_similar(new, new.fingerprint, candidates, threshold, window)
    found = choose_story(
        new, candidates, threshold=threshold, window=window, new_fingerprint=new.fingerprint
    )
    assert found == expected


@settings(max_examples=200, deadline=None)
@given(
    title=st.text(max_size=80),
    lead=st.text(max_size=400),
    url=st.sampled_from(
        [None, "https://www.info.gov.hk/gia/general/202405/16/P2024051600321.htm", "https://a.b/c"]
    ),
)
def test_a_fingerprint_crosses_between_processes_packed_and_unchanged(
    title: str, lead: str, url: str | None
) -> None:
    """A worker process sends fingerprints packed: what arrives equals what was sent, and its
    packed form is what the store wrote before packing moved to the sender."""
    import pickle
    import struct

    fp = dedupe.fingerprint(title, lead, url)
    arrived = pickle.loads(pickle.dumps(fp))
    assert arrived == fp
    for name in ("shingles", "signature", "title_numbers", "dates", "release", "chinese"):
        assert getattr(arrived, name) == getattr(fp, name)
    assert arrived.band_keys == fp.band_keys == dedupe.band_keys(fp.signature)
    packed = arrived.packed
    assert packed is not None and fp.packed is None
    assert packed.signature == struct.pack(f"<{len(fp.signature)}I", *fp.signature)
    assert packed.shingles == struct.pack(f"<{len(fp.shingles)}I", *sorted(fp.shingles))
    assert packed.bands == struct.pack(f"<{len(fp.band_keys)}I", *fp.band_keys)
    assert packed.title_numbers == " ".join(sorted(fp.title_numbers))
    assert packed.dates == " ".join(f"{m}-{d}" for m, d in sorted(fp.dates))
    assert arrived.shingle_count == len(fp.shingles)
    assert hash(arrived) == hash(fp)


def test_an_unpacked_fingerprint_is_compared_as_its_values() -> None:
    """A fingerprint unpacked on first use compares, hashes and matches like the one it packs:
    the same story is chosen with either on either side."""
    fp = dedupe.fingerprint(HKSAR.title, HKSAR.lead, None)
    later = dedupe.unpack_fingerprint(dedupe.pack_fingerprint(fp), fp.release, fp.chinese)
    assert later.shingle_count == len(fp.shingles) > 0
    assert later == fp and fp == later and hash(later) == hash(fp)
    assert later != dedupe.fingerprint(SCMP.title, SCMP.lead, None)
    assert (later == "not a fingerprint") is False
    assert repr(later) == repr(fp)
    stored = dataclasses.replace(HKSAR, entry_id="stored", source_id="other", story_id="s1")
    for new_fp, stored_fp in [(fp, later), (later, fp)]:
        match = choose_story(
            dataclasses.replace(HKSAR, entry_id="new"),
            [dataclasses.replace(stored, fingerprint=stored_fp)],
            new_fingerprint=new_fp,
        )
        assert match is not None and (match.story_id, match.score) == ("s1", 1.0)
