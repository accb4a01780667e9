"""Helpers for the worker tests (no tests here): real `aggregator` processes, their JSON logs,
configs pointing at the local HTTP server, and checks on the database and published files."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import feedparser

from tests.feedmaker import Item, rss
from tests.servers import FeedServer, Response

ROOT = Path(__file__).resolve().parent.parent
AGGREGATOR = (sys.executable, "-m", "aggregator")
WAIT = 30.0  # seconds: generous, only reached when something is wrong


def items(source: str, count: int, start: int = 0) -> list[Item]:
    """Items every one of which the topic rule below tags."""
    return [
        Item(
            title=f"Hong Kong Shenzhen technology: {_words(f'{source}-{n}')}",
            link=f"https://{source}.example.org/{n}",
            guid=f"{source}-{n}",
            description=f"Hong Kong and Mainland research: {_words(f'{n}-{source}')}.",
        )
        for n in range(start, start + count)
    ]


def _words(seed: str) -> str:
    """Eight made-up words unique to `seed`, so no two items look like one story."""
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return " ".join(
        "".join(_LETTERS[int(c, 16)] for c in digest[i : i + 6]) for i in range(0, 48, 6)
    )


_LETTERS = "bcdfghjklmnprstv"


def serve_feeds(server: FeedServer, feeds: dict[str, int]) -> None:
    """Route `/<id>.xml` to a feed of `count` items for each source id."""
    for source_id, count in feeds.items():
        body = rss(items(source_id, count), title=source_id)
        server.routes[f"/{source_id}.xml"] = Response(200, body, {"Content-Type": "text/xml"})


def config_text(
    server: FeedServer,
    data_dir: Path,
    sources: list[str],
    *,
    tick: str = "1s",
    every: str = "30m",
    aggregator: str = "",
    digest: str = "",
    smtp_port: int | None = None,
) -> str:
    blocks = "\n".join(
        f'[[sources]]\nid = "{sid}"\nname = "{sid} news"\nurl = "{server.url(f"/{sid}.xml")}"\n'
        f'every = "{every}"\n'
        for sid in sources
    )
    smtp = (
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\nsecurity = "none"\n' if smtp_port else ""
    )
    return f"""
[aggregator]
data_dir = "{data_dir}"
timezone = "Asia/Hong_Kong"
tick = "{tick}"
{aggregator}

{blocks}

[tags.hk-mainland-science]
title = "HK–Mainland science"
all = [["Hong Kong"], ["Shenzhen", "Mainland"], ["technology", "research"]]

[publish]
topic = "hk-mainland-science"
title = "Test Watch"
base_url = "http://localhost:8080/"

[digest]
schedule = "mon 08:00"
from = "Watch <watch@example.org>"
{digest}

{smtp}
"""


def cli_env(fake_now: str | None = None, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AGGREGATOR_") or k == "AGGREGATOR_TEMPLATES"
    }
    env["PYTHONPATH"] = str(ROOT)
    if fake_now:
        env["AGGREGATOR_FAKE_NOW"] = fake_now
    env.update(extra)
    return env


def run_cli(
    config: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aggregator", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=env or cli_env(),
        cwd=config.parent,
        timeout=timeout,
    )


class Worker:
    """A real `aggregator --log-format json run` process; its log events are collected."""

    def __init__(self, config: Path, env: dict[str, str] | None = None, *args: str) -> None:
        self.process = subprocess.Popen(
            [*AGGREGATOR, "--log-format", "json", "--config", str(config), "run", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env or cli_env(),
            cwd=config.parent,
        )
        self.lines: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    @property
    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            lines = list(self.lines)
        found = []
        for line in lines:
            try:
                found.append(json.loads(line))
            except ValueError:
                found.append({"event": "text", "message": line})
        return found

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            for found in self.events:
                if predicate(found):
                    return found
            if self.process.poll() is not None:
                time.sleep(0.2)  # let the reader drain
                for found in self.events:
                    if predicate(found):
                        return found
                raise AssertionError(
                    f"worker exited ({self.process.returncode}) before {what}:\n{self.log}"
                )
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}:\n{self.log}")

    def wait_event(self, name: str, **fields: Any) -> dict[str, Any]:
        return self.wait_for(
            lambda e: e.get("event") == name and all(e.get(k) == v for k, v in fields.items()),
            f"event {name} {fields}",
        )

    @property
    def log(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send `signum` and wait; fails the test if the worker takes longer than `timeout`."""
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the worker did not stop within {timeout}s:\n{self.log}"
            ) from None
        finally:
            self.kill()

    def kill(self) -> None:
        """SIGKILL (if still running), then collect the rest of its output."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)
        self._reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        if self.process.stderr is not None:
            self.process.stderr.close()


def wait_for_file(path: Path, what: str, worker: Worker) -> str:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        if worker.process.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError(f"the worker never reached {what}:\n{worker.log}")


def query(data_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    path = data_dir / "aggregator.db"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30)  # never creates it
    try:
        return [tuple(row) for row in conn.execute(sql, params)]
    finally:
        conn.close()


def ticks(data_dir: Path) -> int:
    if not (data_dir / "aggregator.db").exists():
        return 0
    try:
        return int(query(data_dir, "SELECT ticks FROM worker_state")[0][0])
    except sqlite3.OperationalError:
        return 0


def wait_for_ticks(data_dir: Path, at_least: int, worker: Worker | None = None) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if ticks(data_dir) >= at_least:
            return
        if worker is not None and worker.process.poll() is not None:
            raise AssertionError(f"worker exited:\n{worker.log}")
        time.sleep(0.05)
    raise AssertionError(f"no tick {at_least}:\n{worker.log if worker else ''}")


def integrity(data_dir: Path) -> str:
    return str(query(data_dir, "PRAGMA integrity_check")[0][0])


def entry_keys(data_dir: Path) -> list[tuple[str, str]]:
    return sorted((r[0], r[1]) for r in query(data_dir, "SELECT source_id, guid FROM entries"))


def check_published(public: Path, expected_items: int) -> None:
    """Every feed file parses, whole, with the expected number of curated items."""
    atom = feedparser.parse((public / "feed.atom").read_bytes())
    assert not atom.bozo, atom.bozo_exception
    assert len(atom.entries) == expected_items
    rss_feed = feedparser.parse((public / "feed.rss").read_bytes())
    assert not rss_feed.bozo, rss_feed.bozo_exception
    assert len(rss_feed.entries) == expected_items
    assert len(json.loads((public / "feed.json").read_text(encoding="utf-8"))["items"]) == (
        expected_items
    )
    assert (public / "index.html").read_text(encoding="utf-8").rstrip().endswith("</html>")
