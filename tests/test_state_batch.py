"""Source rows of 304s and failures are written many to a transaction (update.StateBatch)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from aggregator.settings import SourceSettings
from aggregator.store import PollWrite, Store
from aggregator.store.sources import SourceFailure
from aggregator.update import StateBatch

NOW = datetime(2024, 5, 16, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=30)


def test_a_batch_is_one_transaction_and_keeps_each_sources_state(tmp_path: Path) -> None:
    store = Store(tmp_path / "aggregator.db")
    sources = [
        SourceSettings(id=f"s{n}", url=f"https://s{n}.example/", name=f"S{n}") for n in range(5)
    ]
    store.sync_sources(sources, NOW)
    begun: list[str] = []
    store.conn.set_trace_callback(
        lambda sql: begun.append(sql) if sql.startswith("BEGIN") else None
    )
    batch = StateBatch(store, size=4, seconds=3600)
    for n in range(3):
        batch.add(PollWrite(f"s{n}", NOW, 304, f'"e{n}"', None, LATER))
    assert begun == []  # nothing written yet
    batch.add(SourceFailure("s3", NOW, "HTTP 500 Internal Server Error", 500, LATER))
    assert len(begun) == 1  # the fourth filled the batch
    batch.add(SourceFailure("s4", NOW, "HTTP 410 Gone", 410, LATER, disable=True))
    batch.flush()
    batch.flush()  # nothing pending: no empty transaction
    assert len(begun) == 2
    states = store.source_states()
    assert [states[f"s{n}"].etag for n in range(3)] == ['"e0"', '"e1"', '"e2"']
    assert states["s0"].last_success_at == NOW and states["s0"].next_poll_at == LATER
    assert (
        states["s3"].consecutive_failures == 1
        and states["s3"].last_error == "HTTP 500 Internal Server Error"
    )
    assert states["s3"].disabled_reason is None
    assert states["s4"].disabled_reason == "HTTP 410 Gone"
    store.close()
