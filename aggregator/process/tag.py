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
from functools import lru_cache
from itertools import repeat

from aggregator.models import Entry
from aggregator.process.text import (
    CJK_RANGES,
    fold,
    fold_name,
    has_cjk,
    literal_alternation,
    to_simplified,
)
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
# Word bytes of ASCII kept, every other byte a space: `bytes.split` then yields the runs of ASCII
# word characters, at C speed. In ASCII text those runs are its Latin words.
_ASCII_RUNS = bytes(c if c < 128 and re.match(r"\w", chr(c)) else 32 for c in range(256))
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
    # A Latin term's words (runs of word characters): each is a whole word wherever it matches.
    latin_words: frozenset[str] = frozenset()


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
    # Words are joined by spaces or hyphens and bounded by non-word characters at the ends, so
    # every run of word characters in a match is a whole word of the text.
    latin = frozenset(_LATIN_WORD.findall(" ".join(words))) if whole_words else frozenset()
    return Term(
        text, fields, pattern, source, whole_words, word=word, first_word=first_word,
        latin_words=latin,
    )  # fmt: skip


def check_term(text: str) -> str:
    """`text` if it is a valid term; raises ValueError otherwise (for config validation)."""
    parse_term(text)
    return text


class _Vocabulary:
    """Every word and Chinese substring the rules' quick tests ask about, and how to find the
    ones a text holds in a few C-speed passes instead of a scan per rule.

    The tests only ask whether one of these words is among a text's Latin words, or one of these
    substrings is in it: that is all `words_in` and `substrings_in` find.
    """

    __slots__ = ("_ascii", "_others", "_remembered", "_substrings", "_within")

    def __init__(self, words: Iterable[str], substrings: Iterable[str]) -> None:
        words = set(words)
        self._ascii = {w.encode(): w for w in words if w.isascii()}
        self._others = tuple(sorted(w for w in words if not w.isascii()))
        unique = sorted(set(substrings), key=lambda s: (-len(s), s))
        # Longest first: where several start at one position, the search reports the longest,
        # and the shorter ones are substrings of it (`_within`).
        self._substrings = re.compile(literal_alternation(unique)) if unique else None
        self._within = {s: frozenset(t for t in unique if t in s) for s in unique}
        self._remembered: dict[str, frozenset[str]] = {}

    def found_in(self, text: str) -> frozenset[str]:
        """The vocabulary's words and substrings in `text` (folded); no word is a substring."""
        return self.words_in(text) | self.substrings_in(text)

    def found_in_name(self, text: str) -> frozenset[str]:
        """found_in, remembered for the short texts that recur: source names, categories."""
        if len(text) > _SHORT_TEXT:
            return self.found_in(text)
        found = self._remembered.get(text)
        if found is None:
            if len(self._remembered) >= _REMEMBERED_TEXTS:
                self._remembered.clear()
            found = self._remembered[text] = self.found_in(text)
        return found

    def words_in(self, text: str) -> frozenset[str]:
        """The vocabulary's words that are Latin words of `text` (folded)."""
        if text.isascii():
            runs = text.encode("ascii").translate(_ASCII_RUNS).split()
            return frozenset(self._ascii[run] for run in self._ascii.keys() & runs)
        # In text that is not ASCII, an ASCII run may be part of a longer word ("café" holds
        # "caf"), and a word that is not ASCII is found only by its pattern.
        runs = text.encode("ascii", "replace").translate(_ASCII_RUNS).split()
        candidates = [self._ascii[run] for run in self._ascii.keys() & runs]
        return frozenset(
            word
            for word in (*candidates, *self._others)
            if _whole_word(word).search(text) is not None
        )

    def substrings_in(self, text: str) -> frozenset[str]:
        """The vocabulary's substrings that `text` holds."""
        if self._substrings is None or text.isascii():  # every one holds a CJK character
            return _NOTHING
        search = self._substrings.search
        found: set[str] = set()
        match = search(text)
        while match is not None:
            found.add(match.group())
            match = search(text, match.start() + 1)  # they may overlap
        return frozenset().union(*(self._within[s] for s in found))


_NOTHING: frozenset[str] = frozenset()


@lru_cache(maxsize=4096)  # compiled when first needed: a CJK-range lookbehind compiles slowly
def _whole_word(word: str) -> re.Pattern[str]:
    return re.compile(_whole_words(re.escape(word)))


_SHORT_TEXT = 200
_REMEMBERED_TEXTS = 4096


def _scannable(substring: str) -> bool:
    """Whether `_Vocabulary` can look for this one-word term (folded) as a substring."""
    return has_cjk(substring) and _FIELD_SEPARATOR not in substring


class _Texts:
    """The folded fields of one entry, their concatenations, and the vocabulary's words and
    substrings found in them, each built at most once."""

    __slots__ = ("_found", "_joined", "field_found", "fields")

    def __init__(self, fields: dict[str, str], vocabulary: _Vocabulary) -> None:
        self.fields = fields
        self._joined: dict[tuple[str, ...], str] = {}
        self._found: dict[tuple[str, ...], frozenset[str]] = {}
        self.field_found = _Found(fields, vocabulary)

    def joined(self, names: tuple[str, ...]) -> str:
        text = self._joined.get(names)
        if text is None:
            text = self._joined[names] = _FIELD_SEPARATOR.join(self.fields[n] for n in names)
        return text

    def found(self, names: tuple[str, ...]) -> frozenset[str]:
        """The vocabulary's words and substrings found in these fields."""
        found = self._found.get(names)
        if found is None:
            # None spans two fields: the separator is no word character and in no substring.
            found = self._found[names] = frozenset().union(
                *map(self.field_found.__getitem__, names)
            )
        return found


class _Found(dict[str, frozenset[str]]):
    """Field name -> the vocabulary's words and substrings in the field, found on first use."""

    __slots__ = ("_fields", "_vocabulary")

    def __init__(self, fields: dict[str, str], vocabulary: _Vocabulary) -> None:
        super().__init__()
        self._fields = fields
        self._vocabulary = vocabulary

    def __missing__(self, name: str) -> frozenset[str]:
        text = self._fields[name]
        if name in _RECURRING_FIELDS:
            found = self[name] = self._vocabulary.found_in_name(text)
        else:
            found = self[name] = self._vocabulary.found_in(text)
        return found


_RECURRING_FIELDS = frozenset({"categories", "source"})


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
        return any(map(_Lookup.found_in, self.lookups, repeat(texts)))

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
    against the vocabulary's words found in the text, one-word Chinese terms against its
    substrings found there, then a regex for the rest (phrases, behind their first word; terms
    with symbols, regex terms). Costs little more with 100 terms than with 10, unlike a regex
    alternation tried at every position of the text."""

    fields: tuple[str, ...]
    words: frozenset[str]  # one-word Latin terms
    substrings: frozenset[str]  # one-word Chinese terms (`_scannable` ones)
    # Other Latin terms starting with a word: the words of each, and its pattern.
    phrases: tuple[tuple[frozenset[str], re.Pattern[str]], ...]
    patterns: tuple[re.Pattern[str], ...]
    keys: frozenset[str] = frozenset()  # words | substrings: any found, a term is found

    @classmethod
    def compile(cls, fields: tuple[str, ...], terms: Sequence[Term]) -> _Lookup:
        words = {t.word for t in terms if t.whole_words and _LATIN_WORD.fullmatch(t.word)}
        substrings = {
            t.word
            for t in terms
            if t.word and not t.whole_words and not t.is_regex and _scannable(t.word)
        }
        phrases = tuple(
            (t.latin_words, t.pattern)
            for t in terms
            if t.pattern is not None and t.first_word and t.word not in words
        )
        rest = [t for t in terms if not t.first_word and t.word not in substrings]
        patterns: list[re.Pattern[str]] = []
        if rest:
            sources = _alternation(rest)
            try:
                patterns.append(re.compile("|".join(f"(?:{s})" for s in sources)))
            except re.error:  # regex terms whose group names or numbers clash when joined
                patterns.extend(re.compile(source) for source in sources)
        return cls(
            fields, frozenset(words), frozenset(substrings), phrases, tuple(patterns),
            keys=frozenset(words | substrings),
        )  # fmt: skip

    def found_in(self, texts: _Texts) -> bool:
        fields = self.fields
        found = texts.found(fields)
        if not self.keys.isdisjoint(found):
            return True
        for needed, phrase in self.phrases:
            if needed <= found and phrase.search(texts.joined(fields)) is not None:
                return True
        if self.patterns:
            text = texts.joined(fields)
            return any(pattern.search(text) is not None for pattern in self.patterns)
        return False


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
    scoring: _Scoring
    can_match: bool  # the rule has `all` or `any` terms

    def matches(self, texts: _Texts) -> bool:
        if not self.can_match:
            return False
        for group in self.all:
            if not group.found_in(texts):
                return False
        rule = self.rule
        if (rule.any and not self.any.found_in(texts)) or (
            self.none.lookups and self.none.found_in(texts)
        ):
            return False
        # Scores need every term in every field: only worth it once the rest has matched.
        return rule.min_score is None or self.scoring.score(texts) >= rule.min_score

    def score(self, texts: _Texts) -> float:
        """The points of every term found in every field: what `_explain` adds up from the
        matches, without building them."""
        return self.scoring.score(texts)


@dataclass(frozen=True, slots=True)
class _Scoring:
    """Adds up the points of a rule's terms found in each field, as `_explain` does from the
    matches: in order, for an exact float sum. Hot: hundreds of checks a rule.

    When every point is a whole number, any order gives the same sum: then the checks needing
    one word or substring and no pattern are added up by field, a set intersection each.
    """

    checks: tuple[_ScoreCheck, ...]  # all of them, in order
    by_key: tuple[tuple[str, Mapping[str, float]], ...] = ()  # field, key -> its points
    rest: tuple[_ScoreCheck, ...] = ()  # the others, when by_key holds any

    @classmethod
    def compile(cls, checks: tuple[_ScoreCheck, ...]) -> _Scoring:
        points = [check[3] for check in checks]
        if not all(float(p).is_integer() for p in points) or sum(map(abs, points)) >= 2**53:
            return cls(checks)
        by_key: dict[str, dict[str, float]] = {}
        rest: list[_ScoreCheck] = []
        for check in checks:
            name, needed, pattern, point = check
            if pattern is None and len(needed) == 1:
                (key,) = needed
                keys = by_key.setdefault(name, {})
                keys[key] = keys.get(key, 0) + point
            else:
                rest.append(check)
        return cls(checks, tuple(by_key.items()), tuple(rest))

    def score(self, texts: _Texts) -> float:
        fields, found = texts.fields, texts.field_found
        total: float = 0  # as sum() starts
        for name, points in self.by_key:
            for key in points.keys() & found[name]:
                total += points[key]
        for name, needed, pattern, point in self.rest if self.by_key else self.checks:
            if needed and not needed <= found[name]:
                continue
            if pattern is None or pattern.search(fields[name]) is not None:
                total += point
        return total


_ScoreCheck = tuple[str, frozenset[str], "re.Pattern[str] | None", float]
"""(field, needed, pattern, points): the term is in the field when the vocabulary found all it
needs there (words and substrings) and then the pattern, if any, matches."""


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
                    checks.append((name, term.latin_words, None, points))  # one Latin word
                elif term.first_word:
                    checks.append((name, term.latin_words, term.pattern, points))
                elif (
                    term.word
                    and not term.whole_words
                    and not term.is_regex
                    and _scannable(term.word)
                ):
                    checks.append((name, frozenset((term.word,)), None, points))  # one CJK word
                else:
                    checks.append((name, frozenset(), term.pattern, points))
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
        words: set[str] = set()
        substrings: set[str] = set()
        for compiled in self._rules:
            for group in (*compiled.all, compiled.any, compiled.none):
                for lookup in group.lookups:
                    words.update(lookup.words, *(needed for needed, _ in lookup.phrases))
                    substrings.update(lookup.substrings)
            for _, needed, _, _ in compiled.scoring.checks:
                for key in needed:
                    (substrings if _scannable(key) else words).add(key)
        self._vocabulary = _Vocabulary(words, substrings)

    @property
    def rules(self) -> tuple[TagRule, ...]:
        return tuple(compiled.rule for compiled in self._rules)

    def tags_for(
        self, entry: Entry, *, source_name: str = "", source_tags: Sequence[str] = ()
    ) -> tuple[str, ...]:
        """Sorted, unique: the source's own tags plus the name of every matching rule."""
        texts = _Texts(_fields(entry, source_name), self._vocabulary)
        matched = {compiled.rule.name for compiled in self._rules if compiled.matches(texts)}
        return tuple(sorted(matched.union(source_tags)))

    def explain(self, entry: Entry, *, source_name: str = "") -> list[RuleExplanation]:
        """For every rule in order: which terms matched in which field, the score, the verdict."""
        texts = _Texts(_fields(entry, source_name), self._vocabulary)
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
                scoring=_Scoring.compile(_score_checks((*all_groups, any_group), weights)),
                can_match=bool(rule.all or rule.any),
            )
        )
    return Tagger(compiled)


def _fields(entry: Entry, source_name: str) -> dict[str, str]:
    """The folded text of each field, keyed by FIELDS."""
    return {
        "title": fold(entry.title),
        "summary": fold(entry.summary_text),
        "categories": _FIELD_SEPARATOR.join(map(fold_name, entry.categories)),
        "source": fold_name(source_name),
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
