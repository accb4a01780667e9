"""Tag entries by rules: `all` groups, `any` and `none` terms, per-field terms, regex terms and
weighted scores, matched on folded text (case, full-width and Traditional/Simplified blind).

Term syntax (see README "Tag rules"):

    Hong Kong              a phrase; Latin script matches whole words, CJK anywhere
    title:香港             only in the title; several fields: "title,summary:香港"
    regex:\\bhku(st)?\\b     a regular expression over the folded text
    title:regex:...        both

Latin-script terms match whole words ("AI" is not in "said"; "Hong Kong" is in "Hong Kong's"
and "Hong-Kong"); terms with any CJK character match as substrings, Chinese having no spaces.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from aggregator.models import Entry
from aggregator.process.text import CJK_RANGES, fold, has_cjk, to_simplified
from aggregator.settings import TAG_FIELDS, TagRule

FIELDS = TAG_FIELDS
"""The entry fields rules look at, in the order explanations name them."""

REGEX_PREFIX = "regex:"
DEFAULT_WEIGHT = 1.0

# A Latin term must not touch a letter or digit of a space-separated script; a CJK neighbour
# is fine ("推動AI發展" holds "AI"). `[^\W...]` is "a word character, but not CJK".
_BEFORE = rf"(?<![^\W{CJK_RANGES}])"
_AFTER = rf"(?![^\W{CJK_RANGES}])"
_BEFORE_FIRST = rf"(?<![^\W{CJK_RANGES}].)"  # after the first character: _BEFORE, shifted by one
_BETWEEN_WORDS = r"[\s\-\u2010]+"  # "Hong Kong", "Hong  Kong", "Hong-Kong"
_FIELD_SEPARATOR = "\x00"  # neither space nor word: no term can match across two fields
_LATIN_WORD = re.compile(rf"[^\W{CJK_RANGES}]+")  # a run that a whole-word term must equal
# ASCII text has no CJK: its Latin words are what is left between non-word characters, found
# by str.split several times faster than by the regex.
_ASCII_NON_WORD = {code: " " for code in range(128) if not re.match(r"\w", chr(code))}
_FIELD_PREFIX = re.compile(rf"^((?:{'|'.join(FIELDS)})(?:\s*,\s*(?:{'|'.join(FIELDS)}))*):")


def term_pattern(term: str) -> str:
    """The regex (over folded text) for one plain rule term; "" for a blank term."""
    body, latin = _term_body(term)
    return _whole_words(body) if latin and body else body


def _whole_words(body: str) -> str:
    """`body` bounded by word boundaries, starting with its first character so that `re` can
    scan for that character quickly instead of trying a lookbehind at every position."""
    head = body[:2] if body.startswith("\\") else body[:1]
    return head + _BEFORE_FIRST + body[len(head) :] + _AFTER


def _term_body(term: str) -> tuple[str, bool]:
    """A plain term's regex without word boundaries, and whether it needs them (Latin script)."""
    words = fold(term).split()
    if not words:
        return "", False
    if has_cjk(term):
        return r"\s*".join(map(re.escape, words)), False
    return _BETWEEN_WORDS.join(map(re.escape, words)), True


@dataclass(frozen=True, slots=True)
class Term:
    """One term as written, where it is looked for, and its compiled pattern.

    `pattern` is None for a blank term, which never matches.
    """

    text: str
    fields: tuple[str, ...]
    pattern: re.Pattern[str] | None
    body: str = ""  # the pattern without word boundaries, for joining with other terms
    whole_words: bool = False  # Latin script: `body` needs word boundaries around it
    is_regex: bool = False
    word: str = ""  # a one-word plain term, folded: looked up as a word or a substring
    first_word: str = ""  # a Latin term's first word: no match unless the text has that word


def parse_term(text: str, default_fields: Sequence[str] = FIELDS) -> Term:
    """Read one term's syntax: an optional `FIELD[,FIELD]:` prefix, an optional `regex:` prefix.

    Raises ValueError (with a message fit for a config error) on a bad regex or an empty term
    after a prefix.
    """
    body = text.strip()
    fields = tuple(default_fields)
    prefix = _FIELD_PREFIX.match(body)
    if prefix:
        named = [name.strip() for name in prefix.group(1).split(",")]
        fields = tuple(name for name in FIELDS if name in named)
        body = body[prefix.end() :].strip()
        if not body:
            raise ValueError(f"{text!r}: nothing to look for after {prefix.group(0)!r}")
    if body.startswith(REGEX_PREFIX):
        expression = body[len(REGEX_PREFIX) :].strip()
        if not expression:
            raise ValueError(f"{text!r}: an empty regular expression")
        try:
            # Entries are folded to Simplified and lower case; fold the pattern's Chinese alike.
            pattern = re.compile(to_simplified(expression), re.IGNORECASE)
        except re.error as error:
            raise ValueError(f"{text!r} is not a regular expression: {error}") from None
        if pattern.search("") is not None:
            raise ValueError(f"{text!r} matches empty text, so it would match every item")
        return Term(text, fields, pattern, _inline_flags(pattern), is_regex=True)
    source, whole_words = _term_body(body)
    if not source:
        return Term(text, fields, None)
    pattern = re.compile(_whole_words(source) if whole_words else source)
    words = fold(body).split()
    word = words[0] if len(words) == 1 else ""
    first = _LATIN_WORD.match(words[0]) if whole_words else None
    first_word = first.group(0) if first else ""
    return Term(text, fields, pattern, source, whole_words, word=word, first_word=first_word)


def check_term(text: str) -> str:
    """`text` if it is a valid term; raises ValueError otherwise (for config validation)."""
    parse_term(text)
    return text


class _Texts:
    """The folded fields of one entry, their concatenations and their words, each built at most
    once."""

    __slots__ = ("_joined", "_words", "field_words", "fields")

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields
        self._joined: dict[tuple[str, ...], str] = {}
        self._words: dict[tuple[str, ...], frozenset[str]] = {}
        self.field_words = _FieldWords(fields)

    def joined(self, names: tuple[str, ...]) -> str:
        text = self._joined.get(names)
        if text is None:
            text = self._joined[names] = _FIELD_SEPARATOR.join(self.fields[n] for n in names)
        return text

    def words(self, names: tuple[str, ...]) -> frozenset[str]:
        """The Latin-script words of these fields: what whole-word terms are looked up in."""
        words = self._words.get(names)
        if words is None:
            # No word spans two fields (the separator is not a word character): split each
            # field once, whichever sets of fields ask.
            words = self._words[names] = frozenset().union(
                *(self.field_words[name] for name in names)
            )
        return words


class _FieldWords(dict[str, frozenset[str]]):
    """Field name -> the field's Latin words, split on first use."""

    __slots__ = ("_fields",)

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__()
        self._fields = fields

    def __missing__(self, name: str) -> frozenset[str]:
        words = self[name] = latin_words(self._fields[name])
        return words


def latin_words(text: str) -> frozenset[str]:
    """The maximal runs of word characters other than CJK in `text` (folded)."""
    if text.isascii():
        return frozenset(text.translate(_ASCII_NON_WORD).split())
    return frozenset(_LATIN_WORD.findall(text))


@dataclass(frozen=True, slots=True)
class _Terms:
    """Terms compiled one by one (for explanations and scores) and, per set of fields they are
    looked for in, as one alternation (for the yes/no question asked of every entry)."""

    terms: tuple[Term, ...]
    lookups: tuple[_Lookup, ...]  # one per set of fields the terms are looked for in

    @classmethod
    def compile(cls, texts: Iterable[str], default_fields: Sequence[str]) -> _Terms:
        terms = tuple(parse_term(text, default_fields) for text in texts)
        by_fields: dict[tuple[str, ...], list[Term]] = {}
        for term in terms:
            if term.pattern is not None and term.fields:
                by_fields.setdefault(term.fields, []).append(term)
        return cls(terms, tuple(_Lookup.compile(f, group) for f, group in by_fields.items()))

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(term.text for term in self.terms)

    def found_in(self, texts: _Texts) -> bool:
        return any(lookup.found_in(texts) for lookup in self.lookups)

    def matches(self, texts: _Texts, weights: Mapping[str, float]) -> tuple[TermMatch, ...]:
        return tuple(
            TermMatch(term=term.text, field=name, text=found.group(0), points=weights[name])
            for term in self.terms
            if term.pattern is not None
            for name in term.fields
            if (found := term.pattern.search(texts.fields[name])) is not None
        )


@dataclass(frozen=True, slots=True)
class _Lookup:
    """Whether any of some terms is in some fields, cheapest test first: one-word Latin terms
    against the set of the text's words, one-word Chinese terms as substrings, then a regex
    for the rest (phrases, terms with symbols, regex terms). Costs little more with 100 terms
    than with 10, unlike a regex alternation tried at every position of the text."""

    fields: tuple[str, ...]
    words: frozenset[str]
    substrings: re.Pattern[str] | None  # the one-word Chinese terms as one alternation
    phrases: Mapping[str, tuple[re.Pattern[str], ...]]  # other Latin terms, by their first word
    patterns: tuple[re.Pattern[str], ...]

    @classmethod
    def compile(cls, fields: tuple[str, ...], terms: Sequence[Term]) -> _Lookup:
        words = {t.word for t in terms if t.whole_words and _LATIN_WORD.fullmatch(t.word)}
        substrings = {t.word for t in terms if t.word and not t.whole_words and not t.is_regex}
        phrases: dict[str, tuple[re.Pattern[str], ...]] = {}
        for t in terms:
            if t.pattern is not None and t.first_word and t.word not in words:
                phrases[t.first_word] = (*phrases.get(t.first_word, ()), t.pattern)
        rest = [t for t in terms if not t.first_word and t.word not in substrings]
        patterns: list[re.Pattern[str]] = []
        if rest:
            sources = _alternation(rest)
            try:
                patterns.append(re.compile("|".join(f"(?:{s})" for s in sources)))
            except re.error:  # regex terms whose group names or numbers clash when joined
                patterns.extend(re.compile(source) for source in sources)
        # One scan for all of them: several times faster than `s in text` for each.
        either = re.compile("|".join(map(re.escape, sorted(substrings)))) if substrings else None
        return cls(fields, frozenset(words), either, phrases, tuple(patterns))

    def found_in(self, texts: _Texts) -> bool:
        words = texts.words(self.fields)
        if not self.words.isdisjoint(words):
            return True
        text = texts.joined(self.fields)
        return (
            (self.substrings is not None and self.substrings.search(text) is not None)
            or any(
                p.search(text) for first in self.phrases.keys() & words for p in self.phrases[first]
            )
            or any(pattern.search(text) for pattern in self.patterns)
        )


def _alternation(terms: Sequence[Term]) -> list[str]:
    """Patterns whose union finds any of `terms`, arranged for speed.

    Latin terms share one pair of word-boundary checks, behind a cheap test of the first
    character, instead of running the costly lookbehind once per term at every position.
    """
    latin = [term for term in terms if term.whole_words]
    chinese = [term for term in terms if not term.whole_words and not term.is_regex]
    plain = [term.body for term in chinese]
    if latin:
        plain.append(f"{_BEFORE}(?:{'|'.join(term.body for term in latin)}){_AFTER}")
    patterns = [term.body for term in terms if term.is_regex]
    if plain:
        firsts = "".join(sorted({_first_char(term) for term in (*latin, *chinese)}))
        patterns.append(f"(?=[{firsts}])(?:{'|'.join(plain)})")
    return patterns


def _first_char(term: Term) -> str:
    """The first character a plain term's match can start with, escaped for a character class."""
    return term.body[:2] if term.body.startswith("\\") else re.escape(term.body[0])


def _inline_flags(pattern: re.Pattern[str]) -> str:
    """A pattern's source, carrying its IGNORECASE flag so it can join an alternation."""
    return f"(?i:{pattern.pattern})" if pattern.flags & re.IGNORECASE else pattern.pattern


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    rule: TagRule
    all: tuple[_Terms, ...]
    any: _Terms
    none: _Terms
    weights: Mapping[str, float]
    scoring: tuple[_ScoreCheck, ...] = ()  # from _score_checks

    @property
    def can_match(self) -> bool:
        return bool(self.rule.all or self.rule.any)

    def matches(self, texts: _Texts) -> bool:
        if not (
            self.can_match
            and all(group.found_in(texts) for group in self.all)
            and (not self.rule.any or self.any.found_in(texts))
            and not self.none.found_in(texts)
        ):
            return False
        # Scores need every term in every field: only worth it once the rest has matched.
        return self.rule.min_score is None or self.score(texts) >= self.rule.min_score

    def score(self, texts: _Texts) -> float:
        """The points of every term found in every field: what `_explain` adds up from the
        matches, in the same order, without building them. Hot: hundreds of checks a rule."""
        fields, words = texts.fields, texts.field_words
        total: float = 0  # as sum() starts
        for name, first_word, substring, pattern, points in self.scoring:
            if first_word:
                if first_word not in words[name]:
                    continue
                if pattern is None:
                    total += points
                    continue
            elif substring:
                if substring in fields[name]:
                    total += points
                continue
            if pattern is not None and pattern.search(fields[name]) is not None:
                total += points
        return total


_ScoreCheck = tuple[str, str, str, "re.Pattern[str] | None", float]
"""(field, first word, substring, pattern, points): the term is in the field when the field has
the first word (if any) and then the pattern matches (if any), or the substring is in it."""


def _score_checks(
    groups: Sequence[_Terms], weights: Mapping[str, float]
) -> tuple[_ScoreCheck, ...]:
    """For every term of `groups` and field it is looked for in, in order: the cheapest test
    that gives the same answer as `term.pattern.search` on that field."""
    checks: list[_ScoreCheck] = []
    for group in groups:
        for term in group.terms:
            if term.pattern is None:
                continue
            for name in term.fields:
                points = weights[name]
                if term.first_word and term.word == term.first_word:
                    checks.append((name, term.word, "", None, points))  # one Latin word
                elif term.first_word:
                    checks.append((name, term.first_word, "", term.pattern, points))
                elif term.word and not term.whole_words and not term.is_regex:
                    checks.append((name, "", term.word, None, points))  # one CJK word
                else:
                    checks.append((name, "", "", term.pattern, points))
    return tuple(checks)


@dataclass(frozen=True, slots=True)
class TermMatch:
    """One term found in one field; `text` is the folded text that matched; `points` is the
    field's weight, what this match adds to the rule's score."""

    term: str
    field: str  # one of FIELDS
    text: str
    points: float = DEFAULT_WEIGHT


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
    score: float = 0.0  # the points of every `all` and `any` match
    min_score: float | None = None


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
        texts = _Texts(_fields(entry, source_name))
        matched = {compiled.rule.name for compiled in self._rules if compiled.matches(texts)}
        return tuple(sorted(matched.union(source_tags)))

    def explain(self, entry: Entry, *, source_name: str = "") -> list[RuleExplanation]:
        """For every rule in order: which terms matched in which field, the score, the verdict."""
        texts = _Texts(_fields(entry, source_name))
        return [_explain(compiled, texts) for compiled in self._rules]


def compile_rules(rules: Sequence[TagRule]) -> Tagger:
    """Compile every term of every rule once; the Tagger can be reused for any number of entries.

    Raises ValueError on a term `parse_term` rejects (config.load has already checked them).
    """
    compiled = []
    for rule in rules:
        weights = dict.fromkeys(FIELDS, DEFAULT_WEIGHT) | dict(rule.weights)
        all_groups = tuple(_Terms.compile(group, rule.fields) for group in rule.all)
        any_group = _Terms.compile(rule.any, rule.fields)
        compiled.append(
            _CompiledRule(
                rule=rule,
                all=all_groups,
                any=any_group,
                none=_Terms.compile(rule.none, rule.fields),
                weights=weights,
                scoring=_score_checks((*all_groups, any_group), weights),
            )
        )
    return Tagger(compiled)


def _fields(entry: Entry, source_name: str) -> dict[str, str]:
    """The folded text of each field, keyed by FIELDS."""
    return {
        "title": fold(entry.title),
        "summary": fold(entry.summary_text),
        "categories": _FIELD_SEPARATOR.join(map(fold, entry.categories)),
        "source": fold(source_name),
    }


def _explain(compiled: _CompiledRule, texts: _Texts) -> RuleExplanation:
    rule = compiled.rule
    weights = compiled.weights

    def group(kind: str, index: int, terms: _Terms) -> GroupExplanation:
        return GroupExplanation(kind, index, terms.texts, terms.matches(texts, weights))

    groups = tuple(group("all", i, terms) for i, terms in enumerate(compiled.all, start=1))
    any_group = group("any", 0, compiled.any) if rule.any else None
    none_group = group("none", 0, compiled.none) if rule.none else None
    score = sum(m.points for g in (*groups, any_group) if g is not None for m in g.matches)
    reasons: list[str] = []
    if not compiled.can_match:
        reasons.append("no `all` or `any` terms: a source-only tag, never matched by rules")
    reasons.extend(
        f"{g.label}: none of {list(g.terms)} found"
        for g in (*groups, any_group)
        if g is not None and not g.found
    )
    if none_group is not None:
        reasons.extend(
            f"excluded by none term {match.term!r} in {match.field}" for match in none_group.matches
        )
    if rule.min_score is not None and score < rule.min_score and compiled.can_match:
        reasons.append(f"score {score:g} is below min_score {rule.min_score:g}")
    return RuleExplanation(
        name=rule.name,
        title=rule.title,
        matched=not reasons,
        all=groups,
        any=any_group,
        none=none_group,
        reasons=tuple(reasons),
        score=score,
        min_score=rule.min_score,
    )
