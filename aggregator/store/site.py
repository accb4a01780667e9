"""Reads for the published site: source health, the tags in use, and each story's lead date."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from aggregator.models import SourceHealth
from aggregator.store.database import from_db_time, to_db_time
from aggregator.store.sources import read_priorities


class SiteStore:
    conn: sqlite3.Connection

    def source_health(self, since: datetime) -> dict[str, SourceHealth]:
        """Every known source's fetch state and how many entries it gave since `since`."""
        rows = self.conn.execute(
            "SELECT s.*, (SELECT count(*) FROM entries e WHERE e.source_id = s.id"
            " AND e.first_seen >= ?) AS recent FROM sources s",
            (to_db_time(since),),
        )
        return {
            row["id"]: SourceHealth(
                source_id=row["id"],
                name=row["name"] or row["id"],
                url=row["url"],
                last_success_at=from_db_time(row["last_success_at"]),
                last_error=row["last_error"],
                last_error_at=from_db_time(row["last_error_at"]),
                consecutive_failures=row["consecutive_failures"],
                recent_items=row["recent"],
            )
            for row in rows
        }

    def tag_names(self) -> list[str]:
        """Every tag some stored entry carries, sorted.

        One index seek per tag (a loose index scan) rather than DISTINCT, which reads every
        row of entry_tags: a handful of tags, millions of rows.
        """
        query = (
            "WITH RECURSIVE tags(tag) AS (SELECT min(tag) FROM entry_tags"
            " UNION ALL SELECT (SELECT min(t.tag) FROM entry_tags t WHERE t.tag > tags.tag)"
            " FROM tags WHERE tags.tag IS NOT NULL)"
            " SELECT tag FROM tags WHERE tag IS NOT NULL"
        )
        return [row[0] for row in self.conn.execute(query)]

    def story_dates(self, tag: str, since: datetime | None = None) -> dict[str, datetime]:
        """Each story with an entry tagged `tag` (published at or after `since`, when given),
        and its lead entry's publication time.

        One pass over those stories' members, without building the stories; the lead is the
        one `process.stories.lead_order` puts first (keep the two in step). With `since`, the
        tag's index is read from `since` on only, so the cost follows the recent stories, not
        the length of the history.
        """
        query = (
            "SELECT e.story_id, e.id, e.source_id, e.published FROM entries e WHERE e.story_id IN"
            " (SELECT x.story_id FROM entry_tags t JOIN entries x ON x.id = t.entry_id"
            " WHERE t.tag = ? AND t.published >= ?)"
        )
        priorities = read_priorities(self.conn)
        leads: dict[str, tuple[tuple[int, object, str], datetime]] = {}
        params = (tag, to_db_time(since) or "")
        for story_id, entry_id, source_id, published_text in self.conn.execute(query, params):
            published = from_db_time(published_text)
            assert published is not None
            key = (-priorities.get(source_id, 0), published, entry_id)
            if story_id not in leads or key < leads[story_id][0]:
                leads[story_id] = (key, published)
        return {story_id: published for story_id, (_, published) in leads.items()}
