"""The digest outbox (one row per subscriber and period, with its delivery state) and opt-outs.

A row is written as `pending`, with its Message-ID, and committed before the message is handed
to the mail server; it becomes `sent` after the server's 250. So a crash can only ever lead to a
resend of the same Message-ID, never to a second digest or a skipped one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from aggregator.store.database import from_db_time, to_db_time, transaction

PENDING, SENT = "pending", "sent"
FAILED_TEMPORARY, FAILED_PERMANENT = "failed-temporary", "failed-permanent"
STATES = (PENDING, SENT, FAILED_TEMPORARY, FAILED_PERMANENT)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    subscriber: str  # lower-cased address
    period: str  # "2024-W21"
    state: str
    message_id: str
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    sent_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PlannedDelivery:
    """A row to create as pending, unless one exists for (subscriber, period)."""

    subscriber: str
    period: str
    message_id: str


class OutboxStore:
    conn: sqlite3.Connection

    def outbox_rows(self, period: str | None = None) -> list[OutboxRow]:
        """Every row of `period` (or all rows), by period and address."""
        where, params = ("WHERE period = ?", (period,)) if period else ("", ())
        query = f"SELECT * FROM outbox {where} ORDER BY period, subscriber"
        return [_row(r) for r in self.conn.execute(query, params)]

    def outbox_row(self, subscriber: str, period: str) -> OutboxRow | None:
        found = self.conn.execute(
            "SELECT * FROM outbox WHERE subscriber = ? AND period = ?",
            (subscriber.lower(), period),
        ).fetchone()
        return _row(found) if found else None

    def plan_deliveries(self, planned: Iterable[PlannedDelivery], now: datetime) -> int:
        """Create pending rows in one transaction; existing rows are kept. Returns rows added."""
        at = to_db_time(now)
        added = 0
        with transaction(self.conn) as conn:
            for item in planned:
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO outbox (subscriber, period, state, message_id,"
                    " created_at, updated_at) VALUES (?, ?, 'pending', ?, ?, ?)",
                    (item.subscriber.lower(), item.period, item.message_id, at, at),
                )
                added += cursor.rowcount
        return added

    def due_deliveries(self, now: datetime, *, period: str | None = None) -> list[OutboxRow]:
        """Pending rows, and temporary failures whose retry time has come, oldest period first."""
        query = (
            "SELECT * FROM outbox WHERE (state = 'pending'"
            " OR (state = 'failed-temporary' AND next_attempt_at <= ?))"
        )
        params: list[object] = [to_db_time(now)]
        if period is not None:
            query += " AND period = ?"
            params.append(period)
        query += " ORDER BY period, subscriber"
        return [_row(r) for r in self.conn.execute(query, params)]

    def mark_sent(self, subscriber: str, period: str, now: datetime) -> None:
        with transaction(self.conn) as conn:
            conn.execute(
                "UPDATE outbox SET state = 'sent', attempts = attempts + 1, last_error = NULL,"
                " next_attempt_at = NULL, sent_at = ?, updated_at = ?"
                " WHERE subscriber = ? AND period = ?",
                (to_db_time(now), to_db_time(now), subscriber.lower(), period),
            )

    def mark_failed(
        self,
        subscriber: str,
        period: str,
        *,
        now: datetime,
        error: str,
        permanent: bool,
        next_attempt_at: datetime | None = None,
        attempted: bool = True,
    ) -> None:
        """Record a failure; `attempted=False` when the message never reached the server."""
        state = FAILED_PERMANENT if permanent else FAILED_TEMPORARY
        with transaction(self.conn) as conn:
            conn.execute(
                "UPDATE outbox SET state = ?, attempts = attempts + ?, last_error = ?,"
                " next_attempt_at = ?, updated_at = ? WHERE subscriber = ? AND period = ?",
                (
                    state,
                    1 if attempted else 0,
                    error[:1000],
                    to_db_time(next_attempt_at),
                    to_db_time(now),
                    subscriber.lower(),
                    period,
                ),
            )

    def opt_out(self, email: str, at: datetime, via: str) -> None:
        with transaction(self.conn) as conn:
            conn.execute(
                "INSERT OR IGNORE INTO digest_optouts (email, at, via) VALUES (?, ?, ?)",
                (email.lower(), to_db_time(at), via),
            )

    def opt_in(self, email: str) -> bool:
        """Remove an opt-out; True when there was one."""
        with transaction(self.conn) as conn:
            cursor = conn.execute("DELETE FROM digest_optouts WHERE email = ?", (email.lower(),))
            return cursor.rowcount > 0

    def opted_out(self) -> set[str]:
        return {row[0] for row in self.conn.execute("SELECT email FROM digest_optouts")}

    def story_ids_first_seen_between(self, start: datetime, end: datetime) -> list[str]:
        """Ids of stories with an entry first seen in [start, end); the caller checks the
        story's own first_seen (its earliest member may be older)."""
        rows = self.conn.execute(
            "SELECT DISTINCT story_id FROM entries WHERE first_seen >= ? AND first_seen < ?"
            " ORDER BY story_id",
            (to_db_time(start), to_db_time(end)),
        )
        return [row[0] for row in rows]

    def latest_first_seen_by_source(self) -> dict[str, datetime]:
        """When each source last brought a new entry.

        One index seek per source (the max of (source_id, first_seen)); grouping the entries
        instead walks the whole index, a million rows for a long history."""
        rows = self.conn.execute(
            "SELECT s.id, (SELECT max(e.first_seen) FROM entries e WHERE e.source_id = s.id)"
            " FROM sources s"
        )
        found = {row[0]: from_db_time(row[1]) for row in rows}
        return {k: v for k, v in found.items() if v is not None}


def _row(row: sqlite3.Row) -> OutboxRow:
    return OutboxRow(
        subscriber=row["subscriber"],
        period=row["period"],
        state=row["state"],
        message_id=row["message_id"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        next_attempt_at=from_db_time(row["next_attempt_at"]),
        sent_at=from_db_time(row["sent_at"]),
    )
