"""Turning grouped entries into stories: which member leads (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aggregator.models import StoredEntry, Story


def lead_order(stored: StoredEntry, priorities: Mapping[str, int]) -> tuple[int, object, str]:
    """Sort key: the highest-priority source first (official ones), then the earliest item."""
    entry = stored.entry
    return (-priorities.get(entry.source_id, 0), entry.published, entry.id)


def build_story(
    story_id: str, members: Sequence[StoredEntry], priorities: Mapping[str, int]
) -> Story:
    """A story from its members (at least one): the lead and the others in lead order."""
    ordered = sorted(members, key=lambda m: lead_order(m, priorities))
    return Story(id=story_id, lead=ordered[0], others=tuple(ordered[1:]))
