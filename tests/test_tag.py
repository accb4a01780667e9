"""Tagging rules, table-driven, on items shaped like RTHK and news.gov.hk ones."""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aggregator import config
from aggregator.errors import ConfigError
from aggregator.models import Entry
from aggregator.process.tag import (
    GroupExplanation,
    RuleExplanation,
    Tagger,
    TermMatch,
    _fields,
    _Texts,
    compile_rules,
    parse_term,
    term_pattern,
)
from aggregator.process.text import CJK_RANGES, fold, has_cjk, literal_alternation, nfkc
from aggregator.settings import TagRule

WHEN = datetime(2024, 4, 26, tzinfo=UTC)

HK_MAINLAND_SCIENCE = TagRule(
    name="hk-mainland-science",
    title="Hong Kong–Mainland science & technology cooperation",
    all=(
        ("Hong Kong", "香港"),
        ("Mainland", "內地", "Shenzhen", "深圳", "Shanghai", "上海"),
        ("technology", "科技", "innovation", "創新"),
    ),
)
AI = TagRule(
    name="ai", title="Artificial intelligence", any=("AI", "artificial intelligence", "人工智能")
)
FIRE_NOT_DRILL = TagRule(name="fire", title="Fires", any=("fire", "火警"), none=("drill", "演習"))
OFFICIAL = TagRule(name="official", title="Official sources")  # source-only: never by rules
RULES = (HK_MAINLAND_SCIENCE, AI, FIRE_NOT_DRILL, OFFICIAL)


def entry(title: str, summary: str = "", categories: tuple[str, ...] = ()) -> Entry:
    return Entry(
        id="e1",
        source_id="s",
        guid=None,
        link=None,
        canonical_url=None,
        title=title,
        summary_html="",
        summary_text=summary,
        author=None,
        published=WHEN,
        updated=None,
        first_seen=WHEN,
        content_hash="h",
        categories=categories,
    )


RTHK_SHANGHAI = entry(
    "HK-Shanghai conference an important milestone: CE",
    "Chief Executive John Lee said cooperation between Hong Kong and Shanghai was entering a new "
    "phase. The two cities would reach consensus on 65 projects in areas such as innovation "
    "technology, industrial development, digital economy and finance.",
)
GOVHK_SHENZHEN = entry(
    "李家超與深圳市委書記會面",
    "行政長官李家超今日在禮賓府與深圳市委書記孟凡利會面，就進一步加強港深合作、"
    "共同推動粵港澳大灣區高質量發展等議題交換意見。李家超表示，香港與深圳在創新科技方面優勢互補。",
)
RTHK_SAID = entry(
    "Govt changing fire safety priorities after Jordan fire",
    "Development minister Bernadette Linn said officials were redeploying resources, she said.",
)

CASES = [
    # (case id, entry, source name, expected tags)
    (
        "en: all three groups, Hong Kong + Shanghai + technology",
        RTHK_SHANGHAI,
        "",
        {"hk-mainland-science"},
    ),
    ("tc: 香港 + 深圳 + 科技 as substrings", GOVHK_SHENZHEN, "", {"hk-mainland-science"}),
    (
        "tc: one group missing (no 科技/創新)",
        entry("特首晤內地官員商人才協作", "香港與內地官員會面。"),
        "",
        set(),
    ),
    ("en: 'AI' is not in 'said'; fire without drill", RTHK_SAID, "", {"fire"}),
    (
        "en: AI as a word",
        entry("Universities bet on AI", "Funding for AI-driven labs."),
        "",
        {"ai"},
    ),
    ("en: AI's and plural-less boundaries", entry("HK's AI's future"), "", {"ai"}),
    (
        "en: no AI inside other words",
        entry("Airport Authority maintains AIS", "Paid trains, said."),
        "",
        set(),
    ),
    ("full-width ＡＩ matches AI", entry("ＡＩ晶片研發中心開幕"), "", {"ai"}),
    ("AI next to CJK text", entry("政府推動AI發展"), "", {"ai"}),
    ("tc: 人工智能 substring", entry("數碼港人工智能超算中心啟用"), "", {"ai"}),
    (
        "multi-word term across a line break",
        entry("x", "research in artificial\n  intelligence grows"),
        "",
        {"ai"},
    ),
    (
        "multi-word term with a hyphen",
        entry("Hong-Kong and Shenzhen sign technology pact"),
        "",
        {"hk-mainland-science"},
    ),
    (
        "Hong Kong's",
        entry("Hong Kong's ties with the Mainland in technology"),
        "",
        {"hk-mainland-science"},
    ),
    ("case-insensitive", entry("HONG KONG AND SHENZHEN TECHNOLOGY"), "", {"hk-mainland-science"}),
    ("none term excludes", entry("Fire drill held at Kai Tak"), "", set()),
    ("none term excludes in Chinese", entry("屯門貨倉火警演習"), "", set()),
    ("any: one of several", entry("屯門菜園村一貨倉起火", "消防到場將火警救熄。"), "", {"fire"}),
    ("categories are searched", entry("Budget debate", categories=("AI", "Legco")), "", {"ai"}),
    (
        "source name is searched",
        entry("Lab opens in Shenzhen", "A technology lab."),
        "Hong Kong Science Park",
        {"hk-mainland-science"},
    ),
    ("terms do not span two fields", entry("Talks in Hong", categories=("Kong",)), "", set()),
    ("empty entry", entry(""), "", set()),
]


@pytest.mark.parametrize(
    ("item", "source_name", "expected"),
    [pytest.param(e, s, x, id=case) for case, e, s, x in CASES],
)
def test_tags_for(item: Entry, source_name: str, expected: set[str]) -> None:
    tagger = compile_rules(RULES)
    assert tagger.tags_for(item, source_name=source_name) == tuple(sorted(expected))


@pytest.mark.parametrize(
    ("item", "source_name"),
    [pytest.param(e, s, id=case) for case, e, s, _ in CASES],
)
def test_explain_agrees_with_tags_for(item: Entry, source_name: str) -> None:
    tagger = compile_rules(RULES)
    tags = tagger.tags_for(item, source_name=source_name)
    explained = tagger.explain(item, source_name=source_name)
    assert [e.name for e in explained] == [r.name for r in RULES]
    assert {e.name for e in explained if e.matched} == set(tags)
    for explanation in explained:
        assert explanation.matched == (not explanation.reasons)


def test_source_tags_are_included_sorted_and_unique() -> None:
    tagger = compile_rules(RULES)
    tags = tagger.tags_for(RTHK_SAID, source_tags=("official", "rthk", "fire"))
    assert tags == ("fire", "official", "rthk")
    assert compile_rules([]).tags_for(RTHK_SAID, source_tags=("b", "a", "b")) == ("a", "b")


def test_rule_without_all_or_any_never_matches() -> None:
    only_none = TagRule(name="odd", title="Only none", none=("xyz",))
    tagger = compile_rules([OFFICIAL, only_none])
    assert tagger.tags_for(entry("official xyz", "Official sources")) == ()
    assert tagger.tags_for(entry("x"), source_tags=("official",)) == ("official",)
    explained = tagger.explain(entry("x"))
    assert not explained[0].matched
    assert explained[0].reasons == (
        "no `all` or `any` terms: a source-only tag, never matched by rules",
    )


def test_all_and_any_combine() -> None:
    rule = TagRule(
        name="hk-ai", title="HK AI", all=(("Hong Kong", "香港"),), any=("AI", "人工智能")
    )
    tagger = compile_rules([rule])
    assert tagger.tags_for(entry("Hong Kong AI lab")) == ("hk-ai",)
    assert tagger.tags_for(entry("香港人工智能實驗室")) == ("hk-ai",)
    assert tagger.tags_for(entry("Hong Kong lab")) == ()
    assert tagger.tags_for(entry("AI lab")) == ()


def test_blank_terms_never_match() -> None:
    rule = TagRule(name="blank", title="Blank", all=(("", "  "),))
    tagger = compile_rules([rule])
    assert tagger.tags_for(entry("anything at all")) == ()
    assert tagger.explain(entry("anything"))[0].reasons == (
        "group 1 of all: none of ['', '  '] found",
    )


def test_explain_matched_rule_names_terms_and_fields() -> None:
    tagger = compile_rules([HK_MAINLAND_SCIENCE])
    [explained] = tagger.explain(RTHK_SHANGHAI)
    assert explained == RuleExplanation(
        name="hk-mainland-science",
        title="Hong Kong–Mainland science & technology cooperation",
        matched=True,
        all=(
            GroupExplanation(
                kind="all",
                index=1,
                terms=("Hong Kong", "香港"),
                matches=(TermMatch(term="Hong Kong", field="summary", text="hong kong"),),
            ),
            GroupExplanation(
                kind="all",
                index=2,
                terms=("Mainland", "內地", "Shenzhen", "深圳", "Shanghai", "上海"),
                matches=(
                    TermMatch(term="Shanghai", field="title", text="shanghai"),
                    TermMatch(term="Shanghai", field="summary", text="shanghai"),
                ),
            ),
            GroupExplanation(
                kind="all",
                index=3,
                terms=("technology", "科技", "innovation", "創新"),
                matches=(
                    TermMatch(term="technology", field="summary", text="technology"),
                    TermMatch(term="innovation", field="summary", text="innovation"),
                ),
            ),
        ),
        any=None,
        none=None,
        reasons=(),
        score=5.0,
    )


def test_explain_says_why_not() -> None:
    tagger = compile_rules([HK_MAINLAND_SCIENCE, FIRE_NOT_DRILL])
    item = entry("Fire drill in Hong Kong", "No technology involved.", categories=("Drill",))
    science, fire = tagger.explain(item)
    assert not science.matched
    assert science.reasons == (
        "group 2 of all: none of ['Mainland', '內地', 'Shenzhen', '深圳', 'Shanghai', '上海'] found",
    )
    assert [g.found for g in science.all] == [True, False, True]
    assert not fire.matched
    assert fire.any is not None and fire.any.matches == (TermMatch("fire", "title", "fire"),)
    assert fire.none is not None
    assert fire.reasons == (
        "excluded by none term 'drill' in title",
        "excluded by none term 'drill' in categories",
    )


def test_explain_any_not_found() -> None:
    [explained] = compile_rules([AI]).explain(RTHK_SAID)
    assert explained.reasons == (
        "any: none of ['AI', 'artificial intelligence', '人工智能'] found",
    )
    assert explained.any is not None and explained.any.label == "any"


def test_explain_reports_the_source_field() -> None:
    [explained] = compile_rules([AI]).explain(entry("x"), source_name="AI Weekly")
    assert explained.matched
    assert explained.any is not None
    assert explained.any.matches == (TermMatch("AI", "source", "ai"),)


def test_tagger_is_reusable_and_keeps_rules() -> None:
    tagger = compile_rules(RULES)
    assert tagger.rules == RULES
    first = tagger.tags_for(GOVHK_SHENZHEN)
    assert tagger.tags_for(replace(GOVHK_SHENZHEN, id="other")) == first


@pytest.mark.parametrize(
    ("term", "text", "found"),
    [
        ("AI", "he said so", False),
        ("AI", "AI.", True),
        ("ＡＩ", "ai", True),
        ("AI", "ＡＩ", True),
        ("Hong Kong", "hong   kong", True),
        ("Hong Kong", "hongkong", False),
        ("Hong Kong", "hong\u2011kong", True),  # non-breaking hyphen
        ("C++", "learn c++ now", True),
        ("科技", "創新科技局", True),
        ("香港 科技", "香港科技大學", True),
        ("內地", "内地", True),  # Traditional and Simplified fold alike (OpenCC)
        ("大湾区", "大灣區", True),
        ("衞生署", "卫生署", True),  # a Hong Kong variant character
        ("Straße", "STRASSE", True),  # casefold
        ("", "anything", False),
    ],
)
def test_term_pattern(term: str, text: str, found: bool) -> None:
    pattern = term_pattern(term)
    assert bool(pattern and re.search(pattern, fold(text))) == found


def test_fold_and_has_cjk() -> None:
    assert fold("ＡＩ Ｈｏｎｇ Ｋｏｎｇ") == "ai hong kong"
    assert fold("ﬁnance") == "finance"
    assert has_cjk("AI晶片")
    assert has_cjk("ソニー")
    assert not has_cjk("Hong Kong–Shenzhen")


# --- rules v2: scripts, per-field terms, regex terms, weights -----------------------------------

GBA_TC = TagRule(name="gba", title="GBA", any=("大灣區", "河套"))
GBA_SC = TagRule(name="gba", title="GBA", any=("大湾区", "河套"))


@pytest.mark.parametrize(
    "rule", [GBA_TC, GBA_SC], ids=["rule in Traditional", "rule in Simplified"]
)
@pytest.mark.parametrize(
    "text",
    ["粵港澳大灣區創科合作", "粤港澳大湾区科创合作", "深港河套合作區"],
    ids=["tc", "sc", "both"],
)
def test_chinese_rules_match_both_scripts(rule: TagRule, text: str) -> None:
    assert compile_rules([rule]).tags_for(entry(text)) == ("gba",)


def test_full_width_and_case_fold_in_chinese_context() -> None:
    rule = TagRule(name="ai", title="AI", any=("AI", "人工智能"))
    assert compile_rules([rule]).tags_for(entry("港深ＡＩ實驗室")) == ("ai",)
    assert compile_rules([rule]).tags_for(entry("人工智慧")) == ()  # Taiwan wording is another word


def test_field_prefix_limits_a_term_to_that_field() -> None:
    rule = TagRule(name="t", title="T", any=("title:Shenzhen",))
    tagger = compile_rules([rule])
    assert tagger.tags_for(entry("Shenzhen lab opens")) == ("t",)
    assert tagger.tags_for(entry("Lab opens", "in Shenzhen")) == ()
    assert tagger.tags_for(entry("Lab", categories=("Shenzhen",))) == ()


def test_field_prefix_with_several_fields_and_in_none() -> None:
    rule = TagRule(
        name="t", title="T", any=("title,categories:深圳",), none=("title:上市", "summary:IPO")
    )
    tagger = compile_rules([rule])
    assert tagger.tags_for(entry("x", categories=("深圳",))) == ("t",)
    assert tagger.tags_for(entry("深圳科技公司上市")) == ()
    assert tagger.tags_for(entry("深圳科技公司", "上市計劃")) == ("t",)  # 上市 only in the body
    assert tagger.tags_for(entry("深圳", "An IPO soon")) == ()


def test_rule_fields_set_where_unprefixed_terms_look() -> None:
    rule = TagRule(name="hk", title="HK", any=("Hong Kong",), fields=("title", "summary"))
    tagger = compile_rules([rule])
    assert tagger.tags_for(entry("x"), source_name="Hong Kong Daily") == ()
    assert tagger.tags_for(entry("Hong Kong news")) == ("hk",)
    with_source = TagRule(name="hk", title="HK", any=("source:Hong Kong",), fields=("title",))
    assert compile_rules([with_source]).tags_for(entry("x"), source_name="Hong Kong Daily") == (
        "hk",
    )


def test_regex_terms() -> None:
    rule = TagRule(
        name="sign",
        title="Signed",
        any=(r"regex:\bsign(s|ed|ing)?\b", r"regex:簽[署訂]\S{0,4}(協議|安排)"),
    )
    tagger = compile_rules([rule])
    assert tagger.tags_for(entry("HK and Shenzhen SIGNED a pact")) == ("sign",)
    assert tagger.tags_for(entry("Signing ceremony")) == ("sign",)
    assert tagger.tags_for(entry("New road signage")) == ()
    # The pattern's Chinese is folded like the text: Traditional pattern, Simplified text.
    assert tagger.tags_for(entry("两地签署合作安排")) == ("sign",)
    assert tagger.tags_for(entry("兩地簽訂科研協議")) == ("sign",)
    [explained] = tagger.explain(entry("They signed it"))
    assert explained.any is not None
    assert explained.any.matches == (TermMatch(r"regex:\bsign(s|ed|ing)?\b", "title", "signed"),)


def test_regex_terms_with_clashing_group_names_still_work() -> None:
    rule = TagRule(name="t", title="T", any=("regex:(?P<x>foo)", "regex:(?P<x>bar)"))
    tagger = compile_rules([rule])
    assert tagger.tags_for(entry("a bar")) == ("t",)
    assert tagger.tags_for(entry("a baz")) == ()


@pytest.mark.parametrize(
    ("term", "message"),
    [
        ("regex:(unclosed", "is not a regular expression"),
        ("regex:", "an empty regular expression"),
        ("regex:x*", "matches empty text"),
        ("title:", "nothing to look for"),
        ("title:regex:[", "is not a regular expression"),
    ],
)
def test_bad_terms_are_rejected(term: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_term(term)


def test_term_prefixes_are_parsed() -> None:
    assert parse_term("title:香港").fields == ("title",)
    assert parse_term("summary, title:香港").fields == ("title", "summary")  # FIELDS order
    assert parse_term("香港").fields == ("title", "summary", "categories", "source")
    assert parse_term("Note: this").fields == ("title", "summary", "categories", "source")


WEIGHTED = TagRule(
    name="hk-tech",
    title="HK tech",
    all=(("Hong Kong", "香港"), ("technology", "科技")),
    weights=(("title", 3.0), ("summary", 1.0)),
    min_score=4,
)


@pytest.mark.parametrize(
    ("item", "score", "tagged"),
    [
        (entry("Hong Kong technology fair"), 6.0, True),  # two title terms
        (entry("Hong Kong fair", "A technology show."), 4.0, True),  # title 3 + body 1
        (entry("Fair opens", "Hong Kong hosts a technology show."), 2.0, False),  # body only
        (entry("Fair", "Hong Kong, 香港: technology, 科技."), 4.0, True),  # four body terms
    ],
)
def test_weights_and_min_score(item: Entry, score: float, tagged: bool) -> None:
    tagger = compile_rules([WEIGHTED])
    assert (tagger.tags_for(item) == ("hk-tech",)) is tagged
    [explained] = tagger.explain(item)
    assert explained.score == score
    assert explained.min_score == 4
    assert explained.matched is tagged
    if not tagged:
        assert explained.reasons == (f"score {score:g} is below min_score 4",)


def test_term_matches_carry_their_field_weight() -> None:
    [explained] = compile_rules([WEIGHTED]).explain(entry("Hong Kong fair", "technology"))
    assert explained.all[0].matches == (TermMatch("Hong Kong", "title", "hong kong", 3.0),)
    assert explained.all[1].matches == (TermMatch("technology", "summary", "technology", 1.0),)


# --- config: rules v2 are validated with the key path and the line --------------------------------

CONFIG_HEAD = """[aggregator]
data_dir = "var"

"""


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            '[tags.t]\nany = ["regex:(x"]\n',
            ":5: tags.t.any: 'regex:(x' is not a regular expression",
        ),
        (
            '[tags.t]\nall = [\n  ["a"],\n  ["title:"],\n]\n',
            ":5: tags.t.all[1]: 'title:': nothing to look for after 'title:'",
        ),
        ('[tags.t]\nany = ["a"]\nfields = ["body"]\n', ":6: tags.t.fields: 'body' is not a field"),
        (
            '[tags.t]\nany = ["a"]\nmin_score = 0\n',
            ":6: tags.t.min_score: must be greater than zero",
        ),
        ('[tags.t]\nany = ["a"]\nmin_score = "3"\n', ":6: tags.t.min_score: expected a number"),
        (
            '[tags.t]\nany = ["a"]\n[tags.t.weights]\nbody = 2\n',
            ":7: tags.t.weights.body: unknown key 'body'",
        ),
        (
            '[tags.t]\nany = ["a"]\n[tags.t.weights]\ntitle = -1\n',
            ":7: tags.t.weights.title: must not be negative",
        ),
        ('[tags.t]\nany = ["a"]\nweight = 2\n', ":6: tags.t.weight: unknown key 'weight'"),
    ],
)
def test_config_rejects_bad_rules(tmp_path: Path, rule: str, expected: str) -> None:
    path = tmp_path / "feeds.toml"
    path.write_text(CONFIG_HEAD + rule, encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        config.load(path)
    assert expected in str(error.value)


def test_config_reads_rules_v2(tmp_path: Path) -> None:
    path = tmp_path / "feeds.toml"
    path.write_text(
        CONFIG_HEAD
        + '[tags.t]\nall = [["香港"], ["title:regex:科[技研]"]]\nfields = ["title", "summary"]\n'
        + "min_score = 4.5\n[tags.t.weights]\ntitle = 3\nsummary = 1\n",
        encoding="utf-8",
    )
    [rule] = config.load(path).tags
    assert rule.all == (("香港",), ("title:regex:科[技研]",))
    assert rule.fields == ("title", "summary")
    assert rule.weights == (("title", 3.0), ("summary", 1.0))
    assert rule.min_score == 4.5
    tagger = compile_rules([rule])
    assert tagger.tags_for(entry("香港科研成果")) == ("t",)  # 3 + 3
    assert tagger.tags_for(entry("成果", "香港科研")) == ()  # the regex is title-only


def test_shipped_config_loads_and_compiles() -> None:
    root = Path(__file__).resolve().parent.parent
    for name in ("config/feeds.toml", "examples/demo.toml"):
        settings = config.load(root / name)
        assert settings.tag("hk-mainland-science") is not None
        compile_rules(settings.tags)


SYMBOLS = TagRule(name="sym", title="Symbols", any=("I&T", "C++", "#HK", "co-operation", "R&D lab"))


@pytest.mark.parametrize(
    ("text", "tagged"),
    [
        ("Boost for I&T sector", True),
        ("MI&TS report", False),
        ("Learn C++ today", True),
        ("tags #hk and more", True),
        ("a#hk", False),  # a term may not touch a letter, even by its symbol
        ("Hong Kong co-operation", True),
        ("cooperation", False),
        ("new R&D labs", False),  # whole words: "lab" is not "labs"
        ("港深R&D lab啟用", True),  # Latin next to Chinese
    ],
)
def test_terms_with_symbols_agree_with_explain(text: str, tagged: bool) -> None:
    tagger = compile_rules([SYMBOLS])
    assert (tagger.tags_for(entry(text)) == ("sym",)) is tagged
    assert tagger.explain(entry(text))[0].matched is tagged


def test_chinese_terms_are_found_in_every_category() -> None:
    # Categories are folded one by one: OpenCC stops at the NUL that separates fields, so
    # folding them joined lost every category after the first once one held Chinese.
    rule = TagRule(name="t", title="T", any=("categories:科技",))
    tagger = compile_rules([rule])
    assert tagger.tags_for(entry("x", categories=("香港", "科技"))) == ("t",)
    assert tagger.tags_for(entry("x", categories=("Hong Kong", "創新科技"))) == ("t",)


def test_fold_keeps_the_text_after_a_nul() -> None:
    assert fold("香港\x00臺灣 ABC\x00衞生") == "香港\x00台湾 abc\x00卫生"


SCORED = TagRule(
    name="scored",
    title="Scored",
    all=(("Hong Kong", "香港", "HK"), ("science", "科學", "regex:\\blabs?\\b")),
    any=("title:Shenzhen", "深圳", "cross-boundary"),
    weights=(("title", 3.0), ("summary", 0.1), ("categories", 0.7)),
    min_score=3.4,
)


@pytest.mark.parametrize(
    "item",
    [
        entry("Hong Kong science park", "深圳 labs and HK science", ("科學",)),
        entry("香港科學園", "深圳 lab; cross-boundary science", ("Hong Kong",)),
        entry("HK lab", "深圳", ()),
        entry("Shenzhen", "Hong Kong-Shenzhen science, science and cross-boundary labs", ()),
        entry("Hong Kong", "science", ("深圳", "Shenzhen")),
    ],
)
def test_score_is_the_sum_explain_shows(item: Entry) -> None:
    # The tagger scores without building matches; it must add up what explain lists, exactly:
    # a min_score of exactly that sum tags the item, the next float above it does not.
    [explained] = compile_rules([SCORED]).explain(item)
    points = [m.points for g in (*explained.all, explained.any) if g is not None for m in g.matches]
    assert explained.score == sum(points) > 0
    at = compile_rules([replace(SCORED, min_score=explained.score)])
    above = compile_rules([replace(SCORED, min_score=math.nextafter(explained.score, math.inf))])
    assert at.tags_for(item) == ("scored",)
    assert above.tags_for(item) == ()


# --- the fast paths, held to their definitions --------------------------------------------------

SHIPPED = config.load(Path(__file__).resolve().parent.parent / "config" / "feeds.toml").tags

# Terms of the shipped rules, and what may stand next to them: Latin and CJK neighbours, letters
# that extend a word ("é", "_", digits), full-width forms, Traditional spellings, hyphens, NUL.
_PIECES = sorted(
    {term.split(":", 1)[-1] for rule in SHIPPED for group in (*rule.all, rule.any, rule.none)
     for term in group if "regex:" not in term}
    | {"sign", "signed", "signing", "ＡＩ", "Ａi", "香港", "港", "深", "圳", "大灣", "區", "臺灣"}
)  # fmt: skip
SHIPPED_TAGGER = compile_rules(SHIPPED)
_GLUE = ["", " ", "  ", "-", "é", "_", "1", "x", "中", ",", ".", "\x00", "\n", "s", "ed", "’"]
_TEXT = st.lists(st.one_of(st.sampled_from(_PIECES), st.sampled_from(_GLUE)), max_size=14).map(
    "".join
)


@settings(max_examples=1500, deadline=None)
@given(_TEXT, _TEXT, st.lists(_TEXT, max_size=3), st.sampled_from(["", "Bench News 新聞", "科技"]))
def test_tags_for_agrees_with_explain_on_the_shipped_rules(
    title: str, summary: str, categories: list[str], source: str
) -> None:
    # explain looks for every term with its own pattern in every field: the reference.
    tagger = SHIPPED_TAGGER
    item = entry(title, summary, tuple(categories))
    explained = {e.name for e in tagger.explain(item, source_name=source) if e.matched}
    assert set(tagger.tags_for(item, source_name=source)) == explained


@settings(max_examples=1000, deadline=None)
@given(_TEXT, _TEXT, st.lists(_TEXT, max_size=3))
@example("HK lab talks", "HK and Shenzhen labs: AI, R&D, I&T", ["HK", "科技"])
@example(RTHK_SHANGHAI.title, RTHK_SHANGHAI.summary_text, [])
@example(GOVHK_SHENZHEN.title, GOVHK_SHENZHEN.summary_text, ["香港", "內地"])
def test_scores_are_the_sums_explain_shows_on_the_shipped_rules(
    title: str, summary: str, categories: list[str]
) -> None:
    # Whole-number weights: the tagger adds up by set intersection, in another order.
    item = entry(title, summary, tuple(categories))
    explained = SHIPPED_TAGGER.explain(item, source_name="科技")
    texts = _Texts(_fields(item, "科技"), SHIPPED_TAGGER._vocabulary)
    for compiled, explanation in zip(SHIPPED_TAGGER._rules, explained, strict=True):
        assert compiled.score(texts) == explanation.score, compiled.rule.name


@settings(max_examples=1500, deadline=None)
@given(_TEXT)
def test_vocabulary_finds_what_patterns_find(text: str) -> None:
    tagger = SHIPPED_TAGGER
    vocabulary = tagger._vocabulary
    folded = fold(text)
    words = set(re.findall(rf"[^\W{CJK_RANGES}]+", folded))
    assert vocabulary.words_in(folded) == {w for w in _vocabulary_words(tagger) if w in words}
    assert vocabulary.substrings_in(folded) == {
        s for s in _vocabulary_substrings(tagger) if s in folded
    }


def _vocabulary_words(tagger: Tagger) -> set[str]:
    vocabulary = tagger._vocabulary
    return set(vocabulary._ascii.values()) | set(vocabulary._others)


def _vocabulary_substrings(tagger: Tagger) -> set[str]:
    return set(tagger._vocabulary._within)


def test_vocabulary_words_are_whole_words_next_to_any_letter() -> None:
    tagger = compile_rules([TagRule(name="t", title="T", any=("caf", "café", "ai"))])
    found = tagger._vocabulary.words_in
    assert found("café") == {"café"}
    assert found("caf") == {"caf"}
    assert found("港深ai實驗室") == {"ai"}
    assert found("aié") == set()
    assert found("ai_") == set()


@settings(max_examples=3000, deadline=None)
@given(
    st.text(alphabet="aA ，；（）\u3000：！？．｜ＡＫ\uff5e\u0338＜ﬁ㍿é\u0301香港臺", max_size=10)
)
def test_nfkc_is_unicodedatas(text: str) -> None:
    assert nfkc(text) == unicodedata.normalize("NFKC", text)
    assert has_cjk(text) == (re.search(f"[{CJK_RANGES}]", text) is not None)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.text(alphabet="ab香港", min_size=1, max_size=3), min_size=1), st.text("ab香港"))
def test_literal_alternation_finds_the_longest_word_at_each_place(
    words: list[str], text: str
) -> None:
    factored = re.compile(literal_alternation(words))
    plain = re.compile("|".join(map(re.escape, sorted(set(words), key=lambda w: (-len(w), w)))))
    for start in range(len(text) + 1):
        got, want = factored.match(text, start), plain.match(text, start)
        assert (got and got.group()) == (want and want.group())
