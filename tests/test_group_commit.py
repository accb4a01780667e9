"""A poll's sources are stored many to a transaction (update._Writer), each in a savepoint of its
own; a source's outcome is told once its transaction has committed."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

import aggregator.update as update_module
from aggregator.clock import FixedClock
from aggregator.models import SourceOutcome
from aggregator.store import Store
from aggregator.update import update
from tests.servers import FeedServer
from tests.test_prepare import NOW, SOURCES, settings_for


def stored_sources(path: Path) -> set[str]:
    """The sources with entries, as another connection sees them: committed only."""
    reader = sqlite3.connect(path)
    try:
        return {row[0] for row in reader.execute("SELECT DISTINCT source_id FROM entries")}
    finally:
        reader.close()


def test_the_transaction_waits_for_more_sources_and_commits_with_the_last_one(
    http_server: FeedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(update_module, "COMMIT_SECONDS", 60.0)
    settings = settings_for(http_server, tmp_path)
    path = tmp_path / "aggregator.db"
    store = Store(path)
    commits: list[str] = []

    def trace(sql: str) -> None:
        if sql == "COMMIT" and threading.current_thread().name.startswith("aggregator-store"):
            commits.append(sql)

    store.conn.set_trace_callback(trace)
    told: list[tuple[str, set[str]]] = []

    def on_outcome(outcome: SourceOutcome) -> None:
        told.append((outcome.source_id, stored_sources(path)))

    try:
        started = time.monotonic()
        report = update(settings, store, FixedClock(NOW), force=True, on_outcome=on_outcome)
        assert time.monotonic() - started < 30  # the last source commits at once, no waiting
        assert report.new > 0 and not report.failed
        assert len(commits) == 1  # every source in one transaction: none came 60 s after another
        assert len(told) == SOURCES
        for source_id, committed in told:
            assert source_id in committed  # told after its entries were committed
    finally:
        store.close()


def test_a_transaction_that_cannot_commit_fails_each_of_its_sources(
    http_server: FeedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(http_server, tmp_path)
    path = tmp_path / "aggregator.db"
    store = Store(path)
    process = update_module._process

    def process_then_break_the_commit(*args: object) -> SourceOutcome:
        outcome = process(*args)  # type: ignore[arg-type]
        # A foreign key checked only at COMMIT, which then fails and leaves the transaction open.
        store.conn.execute("PRAGMA defer_foreign_keys = ON")
        store.conn.execute("INSERT OR IGNORE INTO entry_tags VALUES ('no such entry', 'tag', '')")
        return outcome

    monkeypatch.setattr(update_module, "_process", process_then_break_the_commit)
    try:
        report = update(settings, store, FixedClock(NOW), force=True)
        assert len(report.failed) == SOURCES
        assert all("cannot store this poll" in (o.error or "") for o in report.outcomes)
        assert not store.conn.in_transaction  # rolled back, not left open
        assert stored_sources(path) == set()
        assert len(store.band_index) == 0
        monkeypatch.setattr(update_module, "_process", process)
        report = update(settings, store, FixedClock(NOW), force=True)
        assert report.new > 0 and not report.failed
        assert len(stored_sources(path)) == SOURCES
    finally:
        store.close()


def test_a_bug_mid_transaction_fails_each_source_of_the_transaction(
    http_server: FeedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(update_module, "COMMIT_SECONDS", 60.0)  # one transaction
    settings = settings_for(http_server, tmp_path)
    path = tmp_path / "aggregator.db"
    store = Store(path)
    process = update_module._process
    calls: list[object] = []

    def process_then_fail_once(*args: object) -> SourceOutcome:
        outcome = process(*args)  # type: ignore[arg-type]
        calls.append(args[4])
        if len(calls) == 2:
            raise RuntimeError("a bug")
        return outcome

    monkeypatch.setattr(update_module, "_process", process_then_fail_once)
    try:
        report = update(settings, store, FixedClock(NOW), force=True)
        assert len(report.failed) == SOURCES  # the first source's savepoint is rolled back too
        assert not store.conn.in_transaction
        assert stored_sources(path) == set()
    finally:
        store.close()
