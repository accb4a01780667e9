"""`aggregator retag`: re-apply the current tag rules and story grouping to every stored entry.

    all entries | tag (compiled rules) | regroup in first-seen order | diff against before

Runs in one transaction, so a crash leaves the store as it was. Regrouping starts from scratch
and walks entries in the order they were first seen, each looking only at those before it, as
polling does; so a second run changes nothing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from aggregator.process.tag import compile_rules
from aggregator.settings import Settings
from aggregator.store import Store
from aggregator.store.database import transaction
from aggregator.store.stories import merge_stories
from aggregator.update import assign_story


@dataclass(frozen=True, slots=True)
class RetagReport:
    """What a retag changed."""

    entries: int
    gained: Mapping[str, int] = field(default_factory=dict)  # tag -> entries that gained it
    lost: Mapping[str, int] = field(default_factory=dict)  # tag -> entries that lost it
    merged: int = 0  # stories now made of members of more than one former story
    split: int = 0  # former stories whose members now sit in more than one story
    moved: int = 0  # entries whose story changed

    @property
    def changed(self) -> bool:
        return bool(self.gained or self.lost or self.moved)

    def summary(self) -> str:
        """One line: "12 entries gained hk-mainland-science, 3 lost it; 5 stories merged, 1 split"."""
        if not self.changed:
            return f"nothing changed ({self.entries} entries)"
        parts = []
        for tag in sorted(set(self.gained) | set(self.lost)):
            words = []
            if self.gained.get(tag):
                words.append(f"{_entries(self.gained[tag])} gained {tag}")
            if self.lost.get(tag):
                lost = self.lost[tag]
                words.append(f"{lost} lost it" if words else f"{_entries(lost)} lost {tag}")
            parts.append(", ".join(words))
        tags = "; ".join(parts) or "no tag changed"
        stories = (
            f"{self.merged} {'story' if self.merged == 1 else 'stories'} merged, {self.split} split"
        )
        return f"{tags}; {stories} ({self.moved} entries changed story)"


def retag(settings: Settings, store: Store) -> RetagReport:
    """Re-tag and regroup every stored entry with the current settings."""
    tagger = compile_rules(settings.tags)
    sources = {s.id: s for s in settings.sources}
    before_stories = store.story_map()
    gained: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    try:
        with transaction(store.conn):
            stored = store.entries()
            for item in stored:
                entry = item.entry
                source = sources.get(entry.source_id)
                tags = tagger.tags_for(
                    entry,
                    source_name=source.name if source else item.source_name,
                    source_tags=source.tags if source else (),
                )
                if tags != entry.tags:
                    gained.update(set(tags) - set(entry.tags))
                    lost.update(set(entry.tags) - set(tags))
                    store.replace_tags(entry.id, tags, entry.published)
            store.ungroup_all()
            for story_item in list(store.entries_for_regrouping()):
                story_id, keys, merges = assign_story(store, story_item, settings.stories)
                store.set_story(story_item.entry_id, story_id)
                store.write_story_keys([keys])
                merge_stories(store.conn, [(absorbed, story_id) for absorbed in merges])
    except BaseException:
        store.band_index.clear()  # it may hold fingerprints the rollback undid
        raise
    after_stories = store.story_map()
    merged, split, moved = _story_changes(before_stories, after_stories)
    return RetagReport(len(stored), dict(gained), dict(lost), merged, split, moved)


def _story_changes(before: Mapping[str, str], after: Mapping[str, str]) -> tuple[int, int, int]:
    """(stories merged, stories split, entries moved) between two entry -> story maps."""
    sources_of: defaultdict[str, set[str]] = defaultdict(set)  # new story -> old stories
    targets_of: defaultdict[str, set[str]] = defaultdict(set)  # old story -> new stories
    for entry_id, new in after.items():
        old = before.get(entry_id, entry_id)
        sources_of[new].add(old)
        targets_of[old].add(new)
    merged = sum(1 for olds in sources_of.values() if len(olds) > 1)
    split = sum(1 for news in targets_of.values() if len(news) > 1)
    # Story ids are entry ids, so compare partitions, not labels: moved = left its companions.
    old_members: defaultdict[str, set[str]] = defaultdict(set)
    new_members: defaultdict[str, set[str]] = defaultdict(set)
    for entry_id, new in after.items():
        old_members[before.get(entry_id, entry_id)].add(entry_id)
        new_members[new].add(entry_id)
    moved = sum(
        1
        for entry_id, new in after.items()
        if old_members[before.get(entry_id, entry_id)] != new_members[new]
    )
    return merged, split, moved


def _entries(count: int) -> str:
    return f"{count} {'entry' if count == 1 else 'entries'}"
