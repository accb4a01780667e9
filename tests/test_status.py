"""`aggregator status`: the decisions on plain data, and the command against real processes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aggregator.models import SourceState
from aggregator.settings import Settings, SourceSettings
from aggregator.status import assess
from aggregator.store.outbox import OutboxRow
from aggregator.store.worker import WorkerState
from tests.servers import FeedServer, Response
from tests.test_worker_kit import Worker, cli_env, config_text, run_cli, serve_feeds, wait_for_ticks

NOW = datetime(2024, 5, 16, 4, 0, tzinfo=UTC)
SETTINGS = Settings(
    path=Path("x.toml"),
    data_dir=Path("var"),
    sources=(SourceSettings("a", "http://a/", "A"), SourceSettings("b", "http://b/", "B")),
)
HEALTHY = {"a": SourceState("a", "http://a/", last_success_at=NOW)}


def report(**changes: object):  # type: ignore[no-untyped-def]
    data: dict[str, object] = {
        "settings": SETTINGS,
        "now": NOW,
        "holder_pid": 42,
        "worker": WorkerState(pid=42, mode="run", heartbeat_at=NOW, last_tick_at=NOW, ticks=9),
        "states": HEALTHY,
        "latest_new": {"a": NOW - timedelta(days=1)},
        "outbox": [],
    }
    data.update(changes)
    return assess(**data)  # type: ignore[arg-type]


def test_a_running_worker_with_fresh_heartbeat_is_healthy() -> None:
    found = report()
    assert found.healthy and found.exit_code == 0
    assert found.next_digest_at == datetime.fromisoformat("2024-05-20T08:00:00+08:00")


def test_worker_problems_exit_3() -> None:
    stuck = report(worker=WorkerState(mode="run", heartbeat_at=NOW - timedelta(minutes=11)))
    assert stuck.exit_code == 3 and "has not finished a round" in stuck.problems[0]
    assert report(holder_pid=None, worker=WorkerState()).exit_code == 3
    died = report(holder_pid=None)  # its last mode was "run", and no one holds the lock
    assert died.exit_code == 3 and "not running" in died.problems[0]
    # With cron (`run --once`), no live worker is normal while the last round is recent.
    cron = WorkerState(mode="once", last_tick_at=NOW - timedelta(minutes=20))
    assert report(holder_pid=None, worker=cron).healthy
    late = WorkerState(mode="once", last_tick_at=NOW - timedelta(hours=3))
    assert report(holder_pid=None, worker=late).exit_code == 3


def test_failing_and_silent_sources_and_outbox_failures_exit_1() -> None:
    once = {"a": SourceState("a", "http://a/", consecutive_failures=1, last_error="HTTP 500")}
    found = report(states=once)
    assert found.healthy and "HTTP 500" in found.notes[0]  # one failure is a note
    thrice = {"a": SourceState("a", "http://a/", consecutive_failures=3, last_error="HTTP 500")}
    assert report(states=thrice).exit_code == 1
    silent = report(latest_new={"a": NOW - timedelta(days=30)})
    assert silent.exit_code == 1 and "no new items for 30 days" in silent.problems[0]
    bounced = OutboxRow("r@example.org", "2024-W19", "failed-permanent", "<m@x>", 1, "550 no")
    outbox = report(outbox=[bounced])
    assert outbox.exit_code == 1 and "550 no" in outbox.problems[0]
    assert outbox.as_dict()["outbox_failures"][0]["state"] == "failed-permanent"


def test_status_command_follows_the_worker(http_server: FeedServer, tmp_path: Path) -> None:
    serve_feeds(http_server, {"alpha": 2})
    http_server.routes["/beta.xml"] = Response(500, b"down")
    data_dir = tmp_path / "var"
    path = tmp_path / "feeds.toml"
    path.write_text(config_text(http_server, data_dir, ["alpha", "beta"]), encoding="utf-8")
    env = cli_env("2024-05-16T12:00:00+08:00")

    never = run_cli(path, "status", env=env)
    assert never.returncode == 3 and "no worker has run yet" in never.stdout

    worker = Worker(path, env)
    try:
        wait_for_ticks(data_dir, 1, worker)
        running = run_cli(path, "status", "--json", env=env)
        assert running.returncode == 0, running.stdout
        data = json.loads(running.stdout)
        assert data["worker"]["running"] and data["worker"]["pid"] == worker.process.pid
        assert data["worker"]["last_tick_at"] == "2024-05-16T04:00:00+00:00"
        assert data["sources"]["warnings"][0]["id"] == "beta"  # failing once: a note
        assert data["digest"]["next_at"] == "2024-05-20T08:00:00+08:00"
    finally:
        assert worker.stop() == 0
    stopped = run_cli(path, "status", env=env)
    assert stopped.returncode == 3
    assert "worker:      not running" in stopped.stdout
    assert "PROBLEM  the worker is not running" in stopped.stdout
