"""Sources: configured ids and URLs, and each source's fetch state between polls."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import datetime

from aggregator.models import SourceState
from aggregator.settings import SourceSettings
from aggregator.store.database import from_db_time, to_db_time, transaction


class SourcesStore:
    conn: sqlite3.Connection

    def sync_sources(self, sources: Iterable[SourceSettings], now: datetime) -> None:
        """Make sure every configured source has a row; a new URL resets its validators."""
        with transaction(self.conn) as conn:
            for source in sources:
                source_id, url = source.id, source.url
                row = conn.execute("SELECT url FROM sources WHERE id = ?", (source_id,)).fetchone()
                if row is None:
                    conn.execute(
                        "INSERT INTO sources (id, url, name, priority, created_at)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (source_id, url, source.name, source.priority, to_db_time(now)),
                    )
                    continue
                conn.execute(
                    "UPDATE sources SET name = ?, priority = ? WHERE id = ?",
                    (source.name, source.priority, source_id),
                )
                if row["url"] != url:
                    conn.execute(
                        "UPDATE sources SET url = ?, etag = NULL, last_modified = NULL,"
                        " consecutive_failures = 0, next_poll_at = NULL WHERE id = ?",
                        (url, source_id),
                    )

    def source_states(self) -> dict[str, SourceState]:
        rows = self.conn.execute("SELECT * FROM sources").fetchall()
        return {row["id"]: _source_state(row) for row in rows}

    def record_failure(
        self,
        source_id: str,
        *,
        at: datetime,
        error: str,
        status: int | None,
        next_poll_at: datetime,
    ) -> None:
        with transaction(self.conn) as conn:
            conn.execute(
                "UPDATE sources SET last_error = ?, last_error_at = ?, last_status = ?,"
                " consecutive_failures = consecutive_failures + 1, next_poll_at = ? WHERE id = ?",
                (error, to_db_time(at), status, to_db_time(next_poll_at), source_id),
            )

    def source_priorities(self) -> dict[str, int]:
        return {row[0]: row[1] for row in self.conn.execute("SELECT id, priority FROM sources")}


def _source_state(row: sqlite3.Row) -> SourceState:
    return SourceState(
        source_id=row["id"],
        url=row["url"],
        etag=row["etag"],
        last_modified=row["last_modified"],
        last_success_at=from_db_time(row["last_success_at"]),
        last_error=row["last_error"],
        last_error_at=from_db_time(row["last_error_at"]),
        consecutive_failures=row["consecutive_failures"],
        next_poll_at=from_db_time(row["next_poll_at"]),
    )
