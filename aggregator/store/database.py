"""Opening the SQLite database: WAL, foreign keys, busy timeout, migrations, transactions."""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from aggregator.errors import StoreError
from aggregator.store.schema import migrate

BUSY_TIMEOUT_MS = 30_000


def connect(path: Path | str) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the database at `path` (":memory:" works too)."""
    try:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), never implicit.
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        migrate(conn)
    except sqlite3.Error as error:
        raise StoreError(f"cannot open the database {path}: {error}") from None
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction taken up front (IMMEDIATE), so writers queue on the busy timeout.

    Inside another transaction it is a savepoint: it rolls back alone and commits with the
    outer one (a poll stores many sources in one transaction, each all or nothing)."""
    if conn.in_transaction:
        name = f"nested_{next(_savepoints)}"
        conn.execute(f"SAVEPOINT {name}")
        try:
            yield conn
        except BaseException:
            conn.execute(f"ROLLBACK TO {name}")
            conn.execute(f"RELEASE {name}")
            raise
        conn.execute(f"RELEASE {name}")
        return
    begin(conn)
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


_savepoints = itertools.count()


def begin(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, for a transaction that `transaction` cannot scope (it spans calls)."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as error:
        raise StoreError(f"cannot start a transaction: {error}") from None


@contextmanager
def savepoints_in_memory(conn: sqlite3.Connection) -> Iterator[None]:
    """Meanwhile (outside a transaction), SQLite keeps what it needs to undo a savepoint in
    memory, not in a temporary file: a poll stores each source in a savepoint of its own, and
    a first poll of 10,000 items wrote ~170,000 times to that file (the pages each savepoint
    changes, ~2 MB a source). Other temporary storage (large sorts) would follow too: only for
    a poll, whose statements sort nothing big."""
    (previous,) = conn.execute("PRAGMA temp_store").fetchone()
    conn.execute("PRAGMA temp_store = MEMORY")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA temp_store = {int(previous)}")


def content_changed(conn: sqlite3.Connection) -> None:
    """Entries or their tags changed: bump the counter the worker reads to decide whether to
    publish (inside the caller's transaction). Every write to entries or entry_tags calls it
    (tests/test_store.py checks each path)."""
    conn.execute("UPDATE worker_state SET content_version = content_version + 1 WHERE id = 1")


def to_db_time(value: datetime | None) -> str | None:
    """UTC, fixed width, so text order is time order."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    if value.year < 1000:  # strftime does not pad the year to four digits: keep what it wrote
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    # The same text as that strftime, ~4x faster (a poll writes several per entry).
    return value.isoformat(timespec="seconds")[:19] + "Z"


def from_db_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value)  # ~10x faster than strptime; "Z" reads as UTC


class Checkpointer:
    """Copies the write-ahead log into the database on a connection of its own while a poll
    writes: SQLite's automatic checkpoint would run inside the writer's commits, and a first
    poll spent more time there (copying pages, waiting for fsync) than committing.

    `checkpoint` runs on a thread of its own (SQLite works without the GIL) and is PASSIVE: it
    never waits for the writer nor makes it wait. A log that is always being appended to is
    never started over, though, so the writer truncates it between two of its transactions
    once it passes TRUNCATE_BYTES (`after_commit`; the pages are mostly copied already, so
    that is short). The writer's automatic checkpoint is off meanwhile, back on at `close`.
    """

    DEFAULT_PAGES = 1000  # SQLite's default wal_autocheckpoint
    TRUNCATE_BYTES = 16 << 20
    TRUNCATE_WAIT_MS = 20

    def __init__(self, writer: sqlite3.Connection, path: Path | str) -> None:
        self._writer = writer
        self._own: sqlite3.Connection | None = None
        self._log: Path | None = None
        if str(path) != ":memory:":
            writer.execute("PRAGMA wal_autocheckpoint = 0")
            self._own = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._own.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._log = Path(f"{path}-wal")

    def checkpoint(self) -> None:
        if self._own is not None:
            # On an error, the writer's automatic checkpoint takes over once the poll is done.
            with contextlib.suppress(sqlite3.Error):
                self._own.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def after_commit(self) -> None:
        """On the writer's thread, outside a transaction: truncate a long log."""
        if self._log is None:
            return
        with contextlib.suppress(OSError, sqlite3.Error):
            if self._log.stat().st_size > self.TRUNCATE_BYTES:
                # Truncating waits for readers to move on (another process publishing, say):
                # briefly, then the poll goes on and tries again after its next transaction.
                self._writer.execute(f"PRAGMA busy_timeout = {self.TRUNCATE_WAIT_MS}")
                try:
                    self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                finally:
                    self._writer.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    def close(self) -> None:
        """Close this connection and give the writer its automatic checkpoint back (call it on
        the writer's thread)."""
        if self._own is not None:
            self._own.close()
            self._own = None
            self._writer.execute(f"PRAGMA wal_autocheckpoint = {self.DEFAULT_PAGES}")
