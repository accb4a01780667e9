"""The worker as users run it: real `aggregator run` processes against a local HTTP server."""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator import config
from aggregator.checkpoints import PAUSE_AT, PAUSE_FILE
from aggregator.worker import digest_due, digest_slot, digest_trigger, prune_due
from tests.servers import FeedServer, Response
from tests.test_worker_kit import (
    Worker,
    check_published,
    cli_env,
    config_text,
    entry_keys,
    integrity,
    items,
    query,
    rss,
    run_cli,
    serve_feeds,
    ticks,
    wait_for_file,
    wait_for_ticks,
)

NOW = "2024-05-16T12:00:00+08:00"  # a Thursday


def setup(server: FeedServer, tmp_path: Path, **kwargs: str) -> tuple[Path, Path]:
    serve_feeds(server, {"alpha": 3, "beta": 2})
    data_dir = tmp_path / "var"
    path = tmp_path / "feeds.toml"
    path.write_text(config_text(server, data_dir, ["alpha", "beta"], **kwargs), encoding="utf-8")
    return path, data_dir


# --- decisions --------------------------------------------------------------------------------


def settings(schedule: str = "mon 08:00", timezone: str = "Asia/Hong_Kong") -> config.Settings:
    from aggregator.settings import DigestSettings, Settings

    return Settings(
        path=Path("x.toml"),
        data_dir=Path("var"),
        timezone=timezone,
        digest=DigestSettings(schedule=schedule),
    )


def hk(text: str) -> datetime:
    return datetime.fromisoformat(text + "+08:00")


@pytest.mark.parametrize(
    ("now", "slot"),
    [
        ("2024-05-20 08:00", "2024-05-20 08:00"),  # at the time itself
        ("2024-05-20 07:59", "2024-05-13 08:00"),  # a minute early: last week's
        ("2024-05-22 12:00", "2024-05-20 08:00"),
        ("2024-05-19 23:59", "2024-05-13 08:00"),
    ],
)
def test_digest_slot_is_the_latest_schedule_time_in_the_timezone(now: str, slot: str) -> None:
    assert digest_slot(settings(), hk(now)) == hk(slot)
    # The same moment seen from UTC gives the same slot.
    assert digest_slot(settings(), hk(now).astimezone(UTC)) == hk(slot)


def test_digest_due_once_within_the_grace() -> None:
    slot, grace = hk("2024-05-20 08:00"), 2 * 86400
    assert digest_due(slot, None, slot, grace)
    assert digest_due(slot, hk("2024-05-13 08:00"), slot + timedelta(days=2), grace)
    assert not digest_due(slot, slot, slot + timedelta(hours=1), grace)  # handled
    assert not digest_due(slot, None, slot + timedelta(days=2, seconds=1), grace)  # too late


def test_digest_trigger_fires_on_the_schedule_in_the_timezone() -> None:
    trigger = digest_trigger(settings("wed 07:30"))
    fire = trigger.get_next_fire_time(None, hk("2024-05-16 12:00"))
    assert fire == hk("2024-05-22 07:30")


def test_prune_runs_once_a_day() -> None:
    now = hk("2024-05-20 08:00")
    assert prune_due(None, now)
    assert not prune_due(now - timedelta(hours=23), now)
    assert prune_due(now - timedelta(hours=24), now)


def test_new_settings_parse_and_default(tmp_path: Path, http_server: FeedServer) -> None:
    path, _ = setup(http_server, tmp_path, aggregator='keep = "30d"', digest='grace = "6h"')
    loaded = config.load(path)
    assert (loaded.keep, loaded.tick, loaded.digest.grace) == (30 * 86400, 1, 6 * 3600)
    path.write_text(path.read_text().replace('keep = "30d"', 'keep = "a year"'))
    with pytest.raises(config.ConfigError, match=r"aggregator.keep: 'a year' is not an interval"):
        config.load(path)


# --- one worker per data directory ------------------------------------------------------------


def test_a_second_worker_and_run_once_exit_3_while_one_runs(
    http_server: FeedServer, tmp_path: Path
) -> None:
    path, data_dir = setup(http_server, tmp_path)
    worker = Worker(path, cli_env(NOW))
    try:
        wait_for_ticks(data_dir, 1, worker)
        second = run_cli(path, "run", env=cli_env(NOW))
        assert second.returncode == 3
        assert "another worker is running" in second.stderr
        assert f"pid {worker.process.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        once = run_cli(path, "run", "--once", env=cli_env(NOW))
        assert once.returncode == 3
        assert "another worker is running" in once.stderr
    finally:
        assert worker.stop() == 0
    # The lock goes with the worker.
    assert run_cli(path, "run", "--once", env=cli_env(NOW)).returncode == 0


def test_cli_commands_beside_a_busy_worker(http_server: FeedServer, tmp_path: Path) -> None:
    """The worker polls every second while `poll --all` and `publish` run again and again."""
    counter = itertools.count()

    def growing(handler: object) -> Response:
        n = next(counter)
        return Response(200, rss(items("alpha", 3 + n // 4)), {"Content-Type": "text/xml"})

    path, data_dir = setup(http_server, tmp_path, every="1s")
    http_server.routes["/alpha.xml"] = growing
    worker = Worker(path)  # the real clock: sources fall due every second
    try:
        wait_for_ticks(data_dir, 1, worker)
        commands = [("poll", "--all"), ("publish",), ("poll", "beta"), ("poll", "--all")] * 2
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda args: run_cli(path, *args), commands))
        for args, result in zip(commands, results, strict=True):
            assert result.returncode == 0, (args, result.stdout, result.stderr)
            assert "database is locked" not in result.stderr + result.stdout
        # The worker publishes what the commands stored, too.
        wait_for_ticks(data_dir, ticks(data_dir) + 2, worker)
    finally:
        assert worker.stop() == 0
    assert "database is locked" not in worker.log
    assert integrity(data_dir) == "ok"
    keys = entry_keys(data_dir)
    assert len(keys) == len(set(keys))
    alpha = [k for k in keys if k[0] == "alpha"]
    assert alpha == sorted(("alpha", f"alpha-{n}") for n in range(len(alpha)))
    check_published(data_dir / "public", len(keys))


# --- graceful stop ----------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_worker_cleanly(
    signum: int, http_server: FeedServer, tmp_path: Path
) -> None:
    path, data_dir = setup(http_server, tmp_path)
    worker = Worker(path, cli_env(NOW))
    wait_for_ticks(data_dir, 1, worker)
    assert worker.stop(signum, timeout=10) == 0
    assert [e["event"] for e in worker.events][-2:] == ["stopping", "stopped"]
    assert integrity(data_dir) == "ok"
    check_published(data_dir / "public", 5)
    assert not list((data_dir / "public").glob(".*.tmp"))


def test_sigterm_mid_transaction_rolls_it_back_within_10s(
    http_server: FeedServer, tmp_path: Path
) -> None:
    path, data_dir = setup(http_server, tmp_path)
    marker = tmp_path / "paused"
    worker = Worker(path, cli_env(NOW, **{PAUSE_AT: "store", PAUSE_FILE: str(marker)}))
    wait_for_file(marker, "store", worker)
    assert worker.stop(signal.SIGTERM, timeout=10) == 0
    assert worker.events[-1]["event"] == "stopped" and worker.events[-1]["forced"] is True
    assert integrity(data_dir) == "ok"
    assert entry_keys(data_dir) == []  # the open poll rolled back: nothing half-stored
    restarted = Worker(path, cli_env(NOW))
    try:
        wait_for_ticks(data_dir, 1, restarted)
    finally:
        restarted.stop()
    assert len(entry_keys(data_dir)) == 5


# --- config reload ----------------------------------------------------------------------------


def test_config_edits_are_picked_up_and_bad_ones_reported(
    http_server: FeedServer, tmp_path: Path
) -> None:
    path, data_dir = setup(http_server, tmp_path)
    serve_feeds(http_server, {"gamma": 4})
    worker = Worker(path, cli_env(NOW))
    try:
        wait_for_ticks(data_dir, 1, worker)
        good = path.read_text()
        # A broken edit: reported with the key path and line, the old config keeps running.
        path.write_text(good.replace('every = "30m"', 'every = "30x"', 1))
        bad = worker.wait_event("config-invalid")
        assert "sources[0].every: '30x' is not an interval" in bad["error"]
        assert bad["level"] == "error"
        # A good edit on disk, announced by the file change: a new source, polled at once.
        path.write_text(
            good
            + f'[[sources]]\nid = "gamma"\nurl = "{http_server.url("/gamma.xml")}"\nevery = "30m"\n'
        )
        worker.wait_event("config-reloaded", sources=3)
        worker.wait_event("poll", source="gamma", new=4)
        # SIGHUP reloads even when the file looks unchanged.
        worker.send(signal.SIGHUP)
        worker.wait_event("sighup")
        reloads = [e for e in worker.events if e.get("event") == "config-reloaded"]
        deadline = time.monotonic() + 20
        while len(reloads) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            reloads = [e for e in worker.events if e.get("event") == "config-reloaded"]
        assert len(reloads) == 2, worker.log
        assert worker.process.poll() is None
    finally:
        assert worker.stop() == 0
    assert len(entry_keys(data_dir)) == 9


# --- logs -------------------------------------------------------------------------------------


def test_one_log_line_per_source_per_poll(http_server: FeedServer, tmp_path: Path) -> None:
    path, data_dir = setup(http_server, tmp_path)
    http_server.routes["/beta.xml"] = Response(500, b"oops")
    worker = Worker(path, cli_env(NOW))
    try:
        wait_for_ticks(data_dir, 1, worker)
    finally:
        worker.stop()
    polls = {e["source"]: e for e in worker.events if e.get("event") == "poll"}
    assert sorted(polls) == ["alpha", "beta"]
    assert len([e for e in worker.events if e.get("event") == "poll"]) == 2
    assert polls["alpha"]["outcome"] == "ok" and polls["alpha"]["new"] == 3
    assert polls["alpha"]["duration"] >= 0 and polls["alpha"]["level"] == "info"
    assert polls["beta"]["outcome"] == "error" and "500" in polls["beta"]["error"]


def test_human_readable_log_lines_by_default(http_server: FeedServer, tmp_path: Path) -> None:
    path, data_dir = setup(http_server, tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "--config", str(path), "run"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=cli_env(NOW),
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 30
        while ticks(data_dir) < 1 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=10)
    lines = [line for line in err.splitlines() if " poll " in line]
    assert len(lines) == 2, err
    alpha = next(line for line in lines if "poll alpha:" in line)
    assert alpha.split()[2] == "INFO"
    assert "ok, 3 new, 0 updated, 0 unchanged (" in alpha
    assert not err.lstrip().startswith("{")


# --- pruning and migrations -------------------------------------------------------------------


def test_old_entries_are_pruned_on_a_fake_clock(http_server: FeedServer, tmp_path: Path) -> None:
    path, data_dir = setup(http_server, tmp_path, aggregator='keep = "90d"')
    first = run_cli(path, "run", "--once", env=cli_env("2024-01-01T12:00:00+08:00"))
    assert first.returncode == 0, first.stderr
    assert len(entry_keys(data_dir)) == 5
    # 100 days on, alpha gives one new item only; beta answers 304-like with nothing new.
    http_server.routes["/alpha.xml"] = Response(200, rss(items("alpha", 1, start=10)))
    http_server.routes["/beta.xml"] = Response(200, rss([]))
    later = run_cli(path, "run", "--once", env=cli_env("2024-04-10T12:00:00+08:00"))
    assert later.returncode == 0, later.stderr
    assert "pruned 5 entries" in later.stdout
    assert entry_keys(data_dir) == [("alpha", "alpha-10")]
    assert query(
        data_dir, "SELECT count(*) FROM entry_tags WHERE entry_id NOT IN (SELECT id FROM entries)"
    ) == [(0,)]
    check_published(data_dir / "public", 1)
    # Once a day: a second round the same day prunes nothing more and says nothing.
    again = run_cli(path, "run", "--once", env=cli_env("2024-04-10T13:00:00+08:00"))
    assert again.returncode == 0 and "entries older than" not in again.stdout
    assert query(data_dir, "SELECT last_prune_at FROM worker_state") == [("2024-04-10T04:00:00Z",)]


def test_an_older_database_is_migrated_on_open(tmp_path: Path) -> None:
    import sqlite3

    from aggregator.store import Store
    from aggregator.store.schema import LATEST, MIGRATIONS

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for version in (1, 2):
        MIGRATIONS[version](conn)
    conn.execute("PRAGMA user_version = 2")
    conn.execute(
        "INSERT INTO sources (id, url, created_at) VALUES ('s', 'http://x/', '2024-01-01T00:00:00Z')"
    )
    conn.close()
    store = Store(path)
    try:
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
        assert store.worker_state().ticks == 0
        assert list(store.source_states()) == ["s"]
    finally:
        store.close()
    assert os.path.getsize(path) > 0
