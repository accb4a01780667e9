"""Story matching as plain data: shingles, signatures, release numbers, look-alikes that must stay
apart and the same event told by several outlets (English and Chinese) that must merge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aggregator.process.dedupe import (
    BANDS,
    NUM_HASHES,
    StoryItem,
    band_keys,
    choose_story,
    counterpart_urls,
    dates_in,
    estimated_jaccard,
    fingerprint,
    is_language_version,
    jaccard,
    minhash,
    numbers_in,
    release_of,
    shingles,
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
