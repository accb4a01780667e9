"""Crash safety: SIGKILL a real worker at named points (mid-fetch, mid-store, mid-publish,
mid-send ...), restart it, and check the database, the entries, the files and the mail."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from aggregator.checkpoints import PAUSE_AT, PAUSE_FILE
from tests.servers import FeedServer, Response
from tests.smtp import SmtpServer, serving_smtp
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
    serve_feeds,
    ticks,
    wait_for_file,
    wait_for_ticks,
)

FEEDS = {"alpha": 3, "beta": 2}
EXPECTED = sorted((sid, f"{sid}-{n}") for sid, count in FEEDS.items() for n in range(count))
# Monday 09:00 in Hong Kong: the "mon 08:00" digest of last week is due, within the grace.
MONDAY = "2024-05-20T09:00:00+08:00"


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    yield from serving_smtp()


def setup(server: FeedServer, tmp_path: Path, smtp_port: int) -> tuple[Path, Path]:
    serve_feeds(server, FEEDS)
    data_dir = tmp_path / "var"
    config = tmp_path / "feeds.toml"
    digest = (
        'send_empty = true\n[[digest.subscribers]]\nemail = "a@example.org"\n'
        '[[digest.subscribers]]\nemail = "b@example.org"\n'
    )
    config.write_text(
        config_text(server, data_dir, list(FEEDS), digest=digest, smtp_port=smtp_port),
        encoding="utf-8",
    )
    return config, data_dir


def check_recovered(data_dir: Path, smtp: SmtpServer) -> None:
    assert integrity(data_dir) == "ok"
    assert entry_keys(data_dir) == EXPECTED  # nothing lost, nothing twice
    check_published(data_dir / "public", len(EXPECTED))
    # One digest per subscriber; a resend may only repeat the same Message-ID.
    ids: dict[str, set[str]] = {}
    for message in smtp.mailbox.messages():
        ids.setdefault(str(message["To"]), set()).add(str(message["Message-ID"]))
    assert sorted(ids) == ["a@example.org", "b@example.org"], ids
    assert all(len(found) == 1 for found in ids.values()), ids


# Our checkpoints (the file-announced kind) and the digest sender's pause points (announced on
# stderr as "paused at NAME"). `#N`: the Nth time the point is reached.
KILL_POINTS = [
    "store",  # inside the first source's transaction, entries written, not committed
    "store#2",  # the second source's
    "tick.updated",  # everything stored, nothing published yet
    "publish",  # the first file's new version written to a temp file, not renamed
    "publish#4",
    "publish#9",
    "heartbeat",  # the tick's last transaction
    "digest:after-plan-commit",  # outbox rows committed as pending, nothing sent
    "digest:before-smtp",
    "digest:after-smtp-250",  # the server accepted, the outbox not yet updated
    "digest.sent",  # all sent, the slot not yet recorded as handled
]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_sigkill_at_a_named_point_then_restart(
    point: str, http_server: FeedServer, smtp: SmtpServer, tmp_path: Path
) -> None:
    config, data_dir = setup(http_server, tmp_path, smtp.port)
    marker = tmp_path / "paused"
    if point.startswith("digest:"):
        name = point.removeprefix("digest:")
        worker = Worker(config, cli_env(MONDAY, **{PAUSE_AT: name}))
        worker.wait_for(lambda e: f"paused at {name}" in e.get("message", ""), point)
    else:
        worker = Worker(config, cli_env(MONDAY, **{PAUSE_AT: point, PAUSE_FILE: str(marker)}))
        wait_for_file(marker, point, worker)
    worker.kill()
    assert integrity(data_dir) == "ok"

    restarted = Worker(config, cli_env(MONDAY))
    try:
        wait_for_ticks(data_dir, 1, restarted)
        check_recovered(data_dir, smtp)
        before = len(smtp.mailbox.received)
    finally:
        assert restarted.stop() == 0
    # A further restart, still inside the grace window, sends nothing again.
    again = Worker(config, cli_env(MONDAY))
    try:
        wait_for_ticks(data_dir, ticks(data_dir) + 1, again)
    finally:
        assert again.stop() == 0
    check_recovered(data_dir, smtp)
    assert len(smtp.mailbox.received) == before
    assert not any(e.get("level") == "error" for e in again.events), again.log


def test_sigkill_mid_fetch_then_restart(
    http_server: FeedServer, smtp: SmtpServer, tmp_path: Path
) -> None:
    """The server holds `beta`'s response open; the worker dies waiting for it."""
    config, data_dir = setup(http_server, tmp_path, smtp.port)
    release = threading.Event()
    body = rss(items("beta", FEEDS["beta"]), title="beta")

    def slow(handler: BaseHTTPRequestHandler) -> Response:
        release.wait(20)
        return Response(200, body, {"Content-Type": "text/xml"})

    http_server.routes["/beta.xml"] = slow
    worker = Worker(config, cli_env(MONDAY))
    deadline = time.monotonic() + 30
    while not http_server.hits_for("/beta.xml") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert http_server.hits_for("/beta.xml"), worker.log
    worker.kill()
    release.set()
    assert integrity(data_dir) == "ok"

    restarted = Worker(config, cli_env(MONDAY))
    try:
        wait_for_ticks(data_dir, 1, restarted)
    finally:
        assert restarted.stop() == 0
    check_recovered(data_dir, smtp)


def test_sigkill_at_random_moments(
    http_server: FeedServer, smtp: SmtpServer, tmp_path: Path
) -> None:
    """Random kills while responses come slowly: every restart recovers, every time."""
    config, data_dir = setup(http_server, tmp_path, smtp.port)
    chosen = random.Random(7)
    routes = dict(http_server.routes)

    def delayed(path: str) -> object:
        def answer(handler: BaseHTTPRequestHandler) -> Response:
            time.sleep(chosen.uniform(0, 0.3))
            route = routes[path]
            assert isinstance(route, Response)
            return route

        return answer

    for path in routes:
        http_server.routes[path] = delayed(path)  # type: ignore[assignment]
    kills = Counter[str]()
    for _run in range(6):
        worker = Worker(config, cli_env(MONDAY))
        time.sleep(chosen.uniform(0.3, 2.0))
        kills["before the first tick" if ticks(data_dir) == 0 else "later"] += 1
        worker.kill()
        if ticks(data_dir) == 0 and not query(data_dir, "SELECT name FROM sqlite_master"):
            continue  # killed before the database was created
        assert integrity(data_dir) == "ok"
        keys = entry_keys(data_dir)
        assert len(keys) == len(set(keys))
    final = Worker(config, cli_env(MONDAY))
    try:
        wait_for_ticks(data_dir, ticks(data_dir) + 1, final)
    finally:
        assert final.stop(signal.SIGINT) == 0
    check_recovered(data_dir, smtp)
