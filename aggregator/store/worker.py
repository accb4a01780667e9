"""The worker's own state (heartbeat, last tick, digest slot done, last prune) and pruning."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

from aggregator.checkpoints import checkpoint
from aggregator.store.database import content_changed, from_db_time, to_db_time, transaction


@dataclass(frozen=True, slots=True)
class WorkerState:
    """What the last worker (`run` or `run --once`) wrote about itself."""

    pid: int | None = None
    started_at: datetime | None = None
    heartbeat_at: datetime | None = None
    last_tick_at: datetime | None = None
    ticks: int = 0
    last_prune_at: datetime | None = None
    digest_slot_done: datetime | None = None  # the latest digest schedule time already handled
    mode: str | None = None  # "run" or "once"


class WorkerStore:
    conn: sqlite3.Connection

    def worker_state(self) -> WorkerState:
        row = self.conn.execute("SELECT * FROM worker_state WHERE id = 1").fetchone()
        if row is None:
            return WorkerState()
        return WorkerState(
            pid=row["pid"],
            started_at=from_db_time(row["started_at"]),
            heartbeat_at=from_db_time(row["heartbeat_at"]),
            last_tick_at=from_db_time(row["last_tick_at"]),
            ticks=row["ticks"],
            last_prune_at=from_db_time(row["last_prune_at"]),
            digest_slot_done=from_db_time(row["digest_slot_done"]),
            mode=row["mode"],
        )

    def worker_started(self, *, pid: int, at: datetime, mode: str) -> None:
        with transaction(self.conn) as conn:
            conn.execute(
                "UPDATE worker_state SET pid = ?, started_at = ?, heartbeat_at = ?, mode = ?"
                " WHERE id = 1",
                (pid, to_db_time(at), to_db_time(at), mode),
            )

    def worker_ticked(self, at: datetime) -> None:
        with transaction(self.conn) as conn:
            checkpoint("heartbeat")
            conn.execute(
                "UPDATE worker_state SET heartbeat_at = ?, last_tick_at = ?, ticks = ticks + 1"
                " WHERE id = 1",
                (to_db_time(at), to_db_time(at)),
            )

    def digest_slot_handled(self, slot: datetime) -> None:
        with transaction(self.conn) as conn:
            conn.execute(
                "UPDATE worker_state SET digest_slot_done = max(coalesce(digest_slot_done, ''), ?)"
                " WHERE id = 1",
                (to_db_time(slot),),
            )

    def content_stamp(self) -> int:
        """Changes whenever entries or their tags are added, changed or deleted, by any process
        (a counter every writer bumps: `content_changed`)."""
        row = self.conn.execute("SELECT content_version FROM worker_state WHERE id = 1").fetchone()
        return int(row[0])

    def prune_entries(self, *, older_than: datetime, at: datetime) -> int:
        """Delete entries both published and first seen before `older_than`; tags go with them."""
        cutoff = to_db_time(older_than)
        with transaction(self.conn) as conn:
            deleted = conn.execute(
                "DELETE FROM entries WHERE published < ? AND first_seen < ?", (cutoff, cutoff)
            ).rowcount
            if deleted:
                content_changed(conn)
            checkpoint("prune")
            conn.execute(
                "UPDATE worker_state SET last_prune_at = ? WHERE id = 1", (to_db_time(at),)
            )
        return int(deleted)
