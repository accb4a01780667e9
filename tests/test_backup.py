"""`aggregator backup FILE`: online copies taken while a real worker writes are whole."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

from aggregator.store import Store
from tests.servers import FeedServer, Response
from tests.test_worker_kit import (
    Worker,
    config_text,
    entry_keys,
    items,
    rss,
    run_cli,
    ticks,
    wait_for_ticks,
)


def test_backups_while_the_worker_writes_are_consistent(
    http_server: FeedServer, tmp_path: Path
) -> None:
    counter = itertools.count()

    def growing(handler: object) -> Response:
        return Response(200, rss(items("alpha", 2 + next(counter))), {"Content-Type": "text/xml"})

    http_server.routes["/alpha.xml"] = growing
    data_dir = tmp_path / "var"
    path = tmp_path / "feeds.toml"
    path.write_text(config_text(http_server, data_dir, ["alpha"], every="1s"), encoding="utf-8")
    worker = Worker(path)  # the real clock: it polls and writes every second
    sizes = []
    try:
        wait_for_ticks(data_dir, 1, worker)
        for n in range(4):
            wait_for_ticks(data_dir, ticks(data_dir) + 1, worker)
            target = tmp_path / "backups" / f"copy-{n}.db"
            done = run_cli(path, "backup", str(target))
            assert done.returncode == 0, done.stderr
            assert "backed up" in done.stdout
            copy = sqlite3.connect(target)
            try:
                assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
                guids = [r[0] for r in copy.execute("SELECT guid FROM entries ORDER BY rowid")]
            finally:
                copy.close()
            assert sorted(guids) == sorted(f"alpha-{i}" for i in range(len(guids)))
            sizes.append(len(guids))
            assert not list(target.parent.glob(".*.tmp"))
    finally:
        assert worker.stop() == 0
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]  # each a later snapshot

    # Restore: the copy replaces the database while the worker is stopped.
    for suffix in ("", "-wal", "-shm"):
        (data_dir / f"aggregator.db{suffix}").unlink(missing_ok=True)
    (tmp_path / "backups" / "copy-3.db").replace(data_dir / "aggregator.db")
    store = Store(data_dir / "aggregator.db")
    try:
        assert store.count_entries() == sizes[-1]
    finally:
        store.close()
    assert len(entry_keys(data_dir)) == sizes[-1]


def test_backup_refuses_the_database_itself(http_server: FeedServer, tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    path = tmp_path / "feeds.toml"
    path.write_text(config_text(http_server, data_dir, []), encoding="utf-8")
    result = run_cli(path, "backup", str(data_dir / "aggregator.db"))
    assert result.returncode == 3
    assert "is the database itself" in result.stderr and "Traceback" not in result.stderr
