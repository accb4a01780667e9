"""The only place with SQL. `Store` joins one class per concern, each in its own module:
sources (fetch state), entries (entries, tags, stories)."""

from __future__ import annotations

from pathlib import Path

from aggregator.store.database import connect
from aggregator.store.entries import EntriesStore, PollWrite
from aggregator.store.outbox import OutboxStore
from aggregator.store.site import SiteStore
from aggregator.store.sources import SourcesStore
from aggregator.store.stories import BandIndex, StoriesStore
from aggregator.store.worker import WorkerStore

__all__ = ["PollWrite", "Store"]


class Store(SourcesStore, EntriesStore, OutboxStore, SiteStore, WorkerStore, StoriesStore):
    """SQLite-backed storage. One instance per process; writes are short IMMEDIATE transactions."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self.conn = connect(path)
        self.band_index = BandIndex()

    def close(self) -> None:
        self.conn.close()
