"""`aggregator explain`: an entry's tag decisions as text, rule by rule and term by term (pure)."""

from __future__ import annotations

from collections.abc import Sequence

from aggregator.models import StoredEntry
from aggregator.process.tag import GroupExplanation, RuleExplanation, Tagger, TermMatch

_QUOTE_LIMIT = 40  # characters of matched text shown


def explain_entry(stored: StoredEntry, tagger: Tagger, source_tags: Sequence[str] = ()) -> str:
    """Why `stored` has or lacks each tag of `tagger`'s rules, plus its source's own tags."""
    entry = stored.entry
    lines = [
        f"{entry.id}  {entry.title}",
        f"source: {entry.source_id} ({stored.source_name})",
        f"stored tags: {', '.join(entry.tags) or '(none)'}",
    ]
    if source_tags:
        lines.append(f"from the source: {', '.join(source_tags)}")
    for explanation in tagger.explain(entry, source_name=stored.source_name):
        lines.append("")
        lines.extend(format_rule(explanation))
    return "\n".join(lines)


def format_rule(explanation: RuleExplanation) -> list[str]:
    """One rule's verdict, its score, each group's matches, and the reasons it failed."""
    verdict = "TAGGED" if explanation.matched else "not tagged"
    lines = [f"{explanation.name}: {verdict}  ({explanation.title})"]
    if explanation.min_score is not None:
        lines.append(f"  score {explanation.score:g} (min_score {explanation.min_score:g})")
    for group in (*explanation.all, explanation.any, explanation.none):
        if group is not None:
            lines.extend(_format_group(group))
    lines.extend(f"  why not: {reason}" for reason in explanation.reasons)
    return lines


def _format_group(group: GroupExplanation) -> list[str]:
    if not group.found:
        return [f"  {group.label}: nothing found among {len(group.terms)} term(s)"]
    lines = [f"  {group.label}:"]
    lines.extend(f"    {_format_match(match, group.kind)}" for match in group.matches)
    return lines


def _format_match(match: TermMatch, kind: str) -> str:
    shown = match.text if len(match.text) <= _QUOTE_LIMIT else match.text[:_QUOTE_LIMIT] + "…"
    found = f"{match.term!r} in {match.field}: {shown!r}"
    return found if kind == "none" else f"{found}  +{match.points:g}"
