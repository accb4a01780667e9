"""The writer's files during a poll: the write-ahead log copied on a connection of its own,
truncated by the writer between its transactions, the writer's automatic checkpoint back
afterwards; the savepoints' undo data in memory meanwhile."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aggregator.clock import FixedClock
from aggregator.models import SourceOutcome
from aggregator.store import Store
from aggregator.store.database import Checkpointer, savepoints_in_memory, transaction
from aggregator.update import update
from tests.servers import FeedServer
from tests.test_prepare import NOW, settings_for


def fill(store: Store, rows: int, start: int = 0) -> None:
    with transaction(store.conn) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS filler (n INTEGER PRIMARY KEY, body BLOB)")
        conn.executemany(
            "INSERT INTO filler VALUES (?, zeroblob(4000))",
            [(n,) for n in range(start, start + rows)],
        )


def log_size(path: Path) -> int:
    log = Path(f"{path}-wal")
    return log.stat().st_size if log.exists() else 0


def test_the_writer_commits_without_checkpointing_and_truncates_a_long_log(
    tmp_path: Path,
) -> None:
    path = tmp_path / "aggregator.db"
    store = Store(path)
    try:
        checkpointer = Checkpointer(store.conn, path)
        checkpointer.TRUNCATE_BYTES = 1 << 20
        assert store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        fill(store, 2000)  # ~8 MB: SQLite's own checkpoint would have copied it by now
        assert log_size(path) > 8_000_000 and path.stat().st_size < 1_000_000
        checkpointer.checkpoint()  # copies the pages into the database, leaves the log as it is
        assert log_size(path) > 8_000_000 and path.stat().st_size > 8_000_000
        checkpointer.after_commit()
        assert log_size(path) == 0
        fill(store, 10, start=2000)
        checkpointer.after_commit()  # a short log is left alone
        assert 0 < log_size(path) < 1 << 20
        checkpointer.close()
        assert store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
        assert store.conn.execute("SELECT count(*) FROM filler").fetchone()[0] == 2010
    finally:
        store.close()


def test_a_poll_gives_the_writer_its_automatic_checkpoint_back(
    http_server: FeedServer, tmp_path: Path
) -> None:
    settings = settings_for(http_server, tmp_path)
    store = Store(tmp_path / "aggregator.db")
    try:
        report = update(settings, store, FixedClock(NOW), force=True)
        assert report.new > 0 and not report.failed
        assert store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    finally:
        store.close()


def test_a_store_in_memory_has_no_checkpointer_to_run(tmp_path: Path) -> None:
    store = Store(":memory:")
    try:
        checkpointer = Checkpointer(store.conn, ":memory:")
        checkpointer.checkpoint()
        checkpointer.after_commit()
        checkpointer.close()
    finally:
        store.close()


def test_a_reader_in_the_way_delays_the_truncation_not_the_poll(tmp_path: Path) -> None:
    """A reader holding an old snapshot (another process publishing, say) keeps the log from
    being truncated; the writer waits only TRUNCATE_WAIT_MS for it, then goes on."""
    import sqlite3
    import time

    path = tmp_path / "aggregator.db"
    store = Store(path)
    reader = sqlite3.connect(str(path), isolation_level=None)
    try:
        checkpointer = Checkpointer(store.conn, path)
        checkpointer.TRUNCATE_BYTES = 1 << 20
        fill(store, 10)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM filler").fetchone()  # holds its snapshot
        fill(store, 2000, start=10)
        started = time.monotonic()
        checkpointer.after_commit()
        assert time.monotonic() - started < 5  # not the 30 s busy timeout
        assert log_size(path) > 1 << 20  # still there: the reader is in the way
        assert store.conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
        reader.execute("COMMIT")
        checkpointer.after_commit()
        assert log_size(path) == 0
        checkpointer.close()
    finally:
        reader.close()
        store.close()


def temp_files() -> list[str]:
    """SQLite's temporary files this process holds open (unlinked, named etilqs_*)."""
    fds = Path("/proc/self/fd")
    found = []
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if "etilqs_" in target:
            found.append(target)
    return found


def undo_a_savepoint_changing_many_pages(store: Store) -> list[str]:
    """Open a savepoint over existing pages, change ~8 MB of them, and say which temporary
    files are open meanwhile."""
    with transaction(store.conn) as conn, transaction(conn):
        conn.execute("UPDATE filler SET body = zeroblob(4001)")
        return temp_files()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc")
def test_a_poll_keeps_savepoint_undo_data_in_memory_then_puts_the_setting_back(
    http_server: FeedServer, tmp_path: Path
) -> None:
    settings = settings_for(http_server, tmp_path)
    store = Store(tmp_path / "aggregator.db")
    try:
        fill(store, 2000)
        if not undo_a_savepoint_changing_many_pages(store):
            pytest.skip("this SQLite keeps temporary files in memory anyway")
        with savepoints_in_memory(store.conn):
            assert undo_a_savepoint_changing_many_pages(store) == []
        assert store.conn.execute("PRAGMA temp_store").fetchone()[0] == 0
        during: list[int] = []

        def look(outcome: SourceOutcome) -> None:
            during.append(store.conn.execute("PRAGMA temp_store").fetchone()[0])

        report = update(settings, store, FixedClock(NOW), force=True, on_outcome=look)
        assert report.new > 0 and not report.failed
        assert set(during) == {2}  # MEMORY
        assert store.conn.execute("PRAGMA temp_store").fetchone()[0] == 0
    finally:
        store.close()
