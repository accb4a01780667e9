"""Sources: configured ids and URLs, and each source's fetch state between polls."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from aggregator.fetch import track_permanent_redirect
from aggregator.models import SourceState
from aggregator.settings import SourceSettings
from aggregator.store.database import from_db_time, to_db_time, transaction

if TYPE_CHECKING:
    from aggregator.store.entries import PollWrite

RECENT_DAYS = 7
HISTORY_SIZE = 20  # publication dates kept per source for the "silent" rule


@dataclass(frozen=True, slots=True)
class SourceHistory:
    """What a source's stored items say about it: recent volume and publication history."""

    recent_items: int  # entries first seen in the last RECENT_DAYS days
    published: tuple[datetime, ...]  # the latest publication dates, newest first


@dataclass(frozen=True, slots=True)
class SourceFailure:
    """A failed poll: the error, the next attempt (after backoff) and, for 410, disabling."""

    source_id: str
    at: datetime
    error: str
    status: int | None
    next_poll_at: datetime
    disable: bool = False  # 410 Gone: stop polling until the URL changes or `enable_source`


class SourcesStore:
    conn: sqlite3.Connection

    def sync_sources(self, sources: Iterable[SourceSettings], now: datetime) -> None:
        """Make sure every configured source has a row; a new URL resets its state.

        A new configured URL also forgets an adopted redirect and re-enables a source that
        was disabled by 410 Gone: the user pointed it somewhere else.
        """
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
                        " consecutive_failures = 0, next_poll_at = NULL, fetch_url = NULL,"
                        " moved_to = NULL, moved_polls = 0, disabled_reason = NULL,"
                        " disabled_at = NULL WHERE id = ?",
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
        self.record_states(failures=[SourceFailure(source_id, at, error, status, next_poll_at)])

    def record_states(
        self, polls: Sequence[PollWrite] = (), failures: Sequence[SourceFailure] = ()
    ) -> None:
        """The fetch state of many sources in one transaction: polls that brought no entries
        (304) and failed polls. Any entries of `polls` are not written: use `apply_poll`."""
        with transaction(self.conn) as conn:
            for poll in polls:
                write_success_state(conn, poll)
            for failure in failures:
                conn.execute(
                    "UPDATE sources SET last_error = ?, last_error_at = ?, last_status = ?,"
                    " consecutive_failures = consecutive_failures + 1, next_poll_at = ?"
                    " WHERE id = ?",
                    (
                        failure.error,
                        to_db_time(failure.at),
                        failure.status,
                        to_db_time(failure.next_poll_at),
                        failure.source_id,
                    ),
                )
                if failure.disable:
                    _disable(conn, failure.source_id, failure.at, failure.error)

    def disable_source(self, source_id: str, *, at: datetime, reason: str) -> None:
        """Stop polling a source (410 Gone) until its URL changes or `enable_source`."""
        with transaction(self.conn) as conn:
            _disable(conn, source_id, at, reason)

    def enable_source(self, source_id: str) -> bool:
        """Poll a disabled source again, at the next poll; False when it was not disabled."""
        with transaction(self.conn) as conn:
            cursor = conn.execute(
                "UPDATE sources SET disabled_reason = NULL, disabled_at = NULL,"
                " consecutive_failures = 0, next_poll_at = NULL"
                " WHERE id = ? AND disabled_reason IS NOT NULL",
                (source_id,),
            )
            return cursor.rowcount > 0

    def record_redirect(self, source_id: str, target: str | None) -> bool:
        """Note where a successful poll was permanently redirected (None: it was not).

        Returns True when the target has now held long enough and becomes the fetch URL.
        """
        row = self.conn.execute(
            "SELECT moved_to, moved_polls FROM sources WHERE id = ?", (source_id,)
        ).fetchone()
        if row is None:
            return False
        track = track_permanent_redirect(row["moved_to"], row["moved_polls"], target)
        if (track.moved_to, track.polls, track.adopt) == (
            row["moved_to"],
            row["moved_polls"],
            False,
        ):
            return False  # the usual case, no redirect before or now: no write
        with transaction(self.conn) as conn:
            conn.execute(
                "UPDATE sources SET moved_to = ?, moved_polls = ? WHERE id = ?",
                (track.moved_to, track.polls, source_id),
            )
            if track.adopt:
                # The validators belong to the old address's responses; they still hold.
                conn.execute("UPDATE sources SET fetch_url = ? WHERE id = ?", (target, source_id))
            return track.adopt

    def source_history(self, now: datetime) -> dict[str, SourceHistory]:
        """Per source: entries first seen in the last 7 days and its latest publication dates."""
        since = to_db_time(now - timedelta(days=RECENT_DAYS))
        recent = dict(
            self.conn.execute(
                "SELECT source_id, COUNT(*) FROM entries WHERE first_seen >= ? GROUP BY source_id",
                (since,),
            ).fetchall()
        )
        activity: dict[str, SourceHistory] = {}
        for (source_id,) in self.conn.execute("SELECT id FROM sources").fetchall():
            rows = self.conn.execute(
                "SELECT published FROM entries WHERE source_id = ? ORDER BY published DESC LIMIT ?",
                (source_id, HISTORY_SIZE),
            ).fetchall()
            published = tuple(
                moment for (text,) in rows if (moment := from_db_time(text)) is not None
            )
            activity[source_id] = SourceHistory(recent.get(source_id, 0), published)
        return activity


def read_priorities(conn: sqlite3.Connection) -> dict[str, int]:
    """Each source's priority: the order in which a story's members lead."""
    return {row[0]: row[1] for row in conn.execute("SELECT id, priority FROM sources")}


def write_success_state(conn: sqlite3.Connection, write: PollWrite) -> None:
    """A successful poll's source row: new validators and next poll, errors cleared."""
    conn.execute(
        "UPDATE sources SET etag = ?, last_modified = ?, last_status = ?,"
        " last_success_at = ?, last_error = NULL, consecutive_failures = 0,"
        " next_poll_at = ? WHERE id = ?",
        (
            write.etag,
            write.last_modified,
            write.status,
            to_db_time(write.at),
            to_db_time(write.next_poll_at),
            write.source_id,
        ),
    )


def _disable(conn: sqlite3.Connection, source_id: str, at: datetime, reason: str) -> None:
    conn.execute(
        "UPDATE sources SET disabled_reason = ?, disabled_at = ? WHERE id = ?",
        (reason, to_db_time(at), source_id),
    )


def _source_state(row: sqlite3.Row) -> SourceState:
    return SourceState(
        source_id=row["id"],
        url=row["fetch_url"] or row["url"],
        etag=row["etag"],
        last_modified=row["last_modified"],
        last_success_at=from_db_time(row["last_success_at"]),
        last_error=row["last_error"],
        last_error_at=from_db_time(row["last_error_at"]),
        consecutive_failures=row["consecutive_failures"],
        next_poll_at=from_db_time(row["next_poll_at"]),
        configured_url=row["url"],
        moved_to=row["moved_to"],
        moved_polls=row["moved_polls"],
        disabled_reason=row["disabled_reason"],
        disabled_at=from_db_time(row["disabled_at"]),
    )
