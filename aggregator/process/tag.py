"""Tag entries by rules: `all` groups, `any` and `none` terms, matched on folded text.

Latin-script terms match whole words ("AI" is not in "said"; "Hong Kong" is in "Hong Kong's"
and "Hong-Kong"); terms with any CJK character match as substrings, Chinese having no spaces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aggregator.models import Entry
from aggregator.process.text import CJK_RANGES, fold, has_cjk
from aggregator.settings import TagRule

FIELDS = ("title", "summary", "categories", "source")
"""The entry fields rules look at, in the order explanations name them."""

# A Latin term must not touch a letter or digit of a space-separated script; a CJK neighbour
# is fine ("推動AI發展" holds "AI"). `[^\W...]` is "a word character, but not CJK".
_BEFORE = rf"(?<![^\W{CJK_RANGES}])"
_AFTER = rf"(?![^\W{CJK_RANGES}])"
_BETWEEN_WORDS = r"[\s\-\u2010]+"  # "Hong Kong", "Hong  Kong", "Hong-Kong"
_FIELD_SEPARATOR = "\x00"  # neither space nor word: no term can match across two fields


def term_pattern(term: str) -> str:
    """The regex (over folded text) for one rule term; "" for a blank term."""
    words = fold(term).split()
    if not words:
        return ""
    if has_cjk(term):
        return r"\s*".join(map(re.escape, words))
    return _BEFORE + _BETWEEN_WORDS.join(map(re.escape, words)) + _AFTER


@dataclass(frozen=True, slots=True)
class _Terms:
    """Terms compiled one by one (for explanations) and as one alternation (for speed)."""

    terms: tuple[str, ...]
    patterns: tuple[re.Pattern[str] | None, ...]  # None: a blank term, never matches
    combined: re.Pattern[str] | None  # None: no term can match

    @classmethod
    def compile(cls, terms: Iterable[str]) -> _Terms:
        terms = tuple(terms)
        sources = [term_pattern(t) for t in terms]
        patterns = tuple(re.compile(s) if s else None for s in sources)
        alternatives = [s for s in sources if s]
        combined = re.compile("|".join(f"(?:{s})" for s in alternatives)) if alternatives else None
        return cls(terms, patterns, combined)

    def found_in(self, text: str) -> bool:
        return self.combined is not None and self.combined.search(text) is not None

    def matches(self, fields: dict[str, str]) -> tuple[TermMatch, ...]:
        return tuple(
            TermMatch(term=term, field=name, text=found.group(0))
            for term, pattern in zip(self.terms, self.patterns, strict=True)
            if pattern is not None
            for name, text in fields.items()
            if (found := pattern.search(text)) is not None
        )


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    rule: TagRule
    all: tuple[_Terms, ...]
    any: _Terms
    none: _Terms

    @property
    def can_match(self) -> bool:
        return bool(self.rule.all or self.rule.any)

    def matches(self, text: str) -> bool:
        return (
            self.can_match
            and all(group.found_in(text) for group in self.all)
            and (not self.rule.any or self.any.found_in(text))
            and not self.none.found_in(text)
        )


@dataclass(frozen=True, slots=True)
class TermMatch:
    """One term found in one field; `text` is the folded text that matched."""

    term: str
    field: str  # one of FIELDS
    text: str


@dataclass(frozen=True, slots=True)
class GroupExplanation:
    """One group of terms of a rule and where its terms were found."""

    kind: str  # "all", "any" or "none"
    index: int  # 1-based position among the `all` groups; 0 for "any" and "none"
    terms: tuple[str, ...]
    matches: tuple[TermMatch, ...]

    @property
    def found(self) -> bool:
        return bool(self.matches)

    @property
    def label(self) -> str:
        return f"group {self.index} of all" if self.kind == "all" else self.kind


@dataclass(frozen=True, slots=True)
class RuleExplanation:
    """Whether a rule tags an entry, term by term; `reasons` says why not (empty if it does)."""

    name: str
    title: str
    matched: bool
    all: tuple[GroupExplanation, ...]
    any: GroupExplanation | None  # None when the rule has no `any` terms
    none: GroupExplanation | None  # None when the rule has no `none` terms
    reasons: tuple[str, ...]


class Tagger:
    """Rules compiled once; tags entries and explains its decisions."""

    def __init__(self, rules: Sequence[_CompiledRule]) -> None:
        self._rules = tuple(rules)

    @property
    def rules(self) -> tuple[TagRule, ...]:
        return tuple(compiled.rule for compiled in self._rules)

    def tags_for(
        self, entry: Entry, *, source_name: str = "", source_tags: Sequence[str] = ()
    ) -> tuple[str, ...]:
        """Sorted, unique: the source's own tags plus the name of every matching rule."""
        text = _FIELD_SEPARATOR.join(_fields(entry, source_name).values())
        matched = {compiled.rule.name for compiled in self._rules if compiled.matches(text)}
        return tuple(sorted(matched.union(source_tags)))

    def explain(self, entry: Entry, *, source_name: str = "") -> list[RuleExplanation]:
        """For every rule in order: which terms matched in which field, and the verdict."""
        fields = _fields(entry, source_name)
        return [_explain(compiled, fields) for compiled in self._rules]


def compile_rules(rules: Sequence[TagRule]) -> Tagger:
    """Compile every term of every rule once; the Tagger can be reused for any number of entries."""
    return Tagger(
        [
            _CompiledRule(
                rule=rule,
                all=tuple(_Terms.compile(group) for group in rule.all),
                any=_Terms.compile(rule.any),
                none=_Terms.compile(rule.none),
            )
            for rule in rules
        ]
    )


def _fields(entry: Entry, source_name: str) -> dict[str, str]:
    """The folded text of each field, keyed by FIELDS."""
    return {
        "title": fold(entry.title),
        "summary": fold(entry.summary_text),
        "categories": fold(_FIELD_SEPARATOR.join(entry.categories)),
        "source": fold(source_name),
    }


def _explain(compiled: _CompiledRule, fields: dict[str, str]) -> RuleExplanation:
    rule = compiled.rule
    groups = tuple(
        GroupExplanation("all", index, terms.terms, terms.matches(fields))
        for index, terms in enumerate(compiled.all, start=1)
    )
    any_group = (
        GroupExplanation("any", 0, compiled.any.terms, compiled.any.matches(fields))
        if rule.any
        else None
    )
    none_group = (
        GroupExplanation("none", 0, compiled.none.terms, compiled.none.matches(fields))
        if rule.none
        else None
    )
    reasons: list[str] = []
    if not compiled.can_match:
        reasons.append("no `all` or `any` terms: a source-only tag, never matched by rules")
    reasons.extend(
        f"{group.label}: none of {list(group.terms)} found"
        for group in (*groups, any_group)
        if group is not None and not group.found
    )
    if none_group is not None:
        reasons.extend(
            f"excluded by none term {match.term!r} in {match.field}" for match in none_group.matches
        )
    return RuleExplanation(
        name=rule.name,
        title=rule.title,
        matched=not reasons,
        all=groups,
        any=any_group,
        none=none_group,
        reasons=tuple(reasons),
    )
