"""`aggregator backup FILE`: an online, consistent copy of the database (SQLite's backup API)."""

from __future__ import annotations

import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from aggregator.errors import StoreError


@dataclass(frozen=True, slots=True)
class BackupReport:
    path: Path
    size: int  # bytes
    entries: int
    schema_version: int


def backup_database(source: sqlite3.Connection, target: Path) -> BackupReport:
    """Copy the open database into `target`, atomically, and check the copy.

    One backup step copies every page under a single read transaction, so the copy is a
    consistent snapshot even while the worker writes (WAL lets it go on writing meanwhile).
    The copy is written to a temporary file beside `target`, checked with integrity_check,
    then renamed over it: an interrupted backup never leaves a half-written FILE.
    """
    target = target.resolve()
    database = source.execute("PRAGMA database_list").fetchone()[2]
    if database and Path(database).resolve() == target:
        raise StoreError(f"{target} is the database itself; back up to another file")
    if target.is_dir():
        raise StoreError(f"{target} is a directory; give a file name, such as backup.db")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        copy = sqlite3.connect(temp_name, isolation_level=None)
        try:
            source.backup(copy)
            # A standalone file: no -wal beside it is needed to read the copy.
            copy.execute("PRAGMA journal_mode = DELETE")
            check = copy.execute("PRAGMA integrity_check").fetchone()[0]
            if check != "ok":
                raise StoreError(f"the backup failed its integrity check: {check}")
            version = int(copy.execute("PRAGMA user_version").fetchone()[0])
            entries = int(copy.execute("SELECT count(*) FROM entries").fetchone()[0])
        finally:
            copy.close()
        with open(temp_name, "rb") as file:
            os.fsync(file.fileno())
        os.replace(temp_name, target)
    except sqlite3.Error as error:
        raise StoreError(f"cannot back up the database to {target}: {error}") from None
    except OSError as error:
        raise StoreError(f"cannot write {target}: {error.strerror}") from None
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
    return BackupReport(target, target.stat().st_size, entries, version)
