"""Numbered schema migrations; `migrate` applies the missing ones in order, each in a transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from aggregator.errors import StoreError


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run statements one by one: `executescript` would commit the migration's transaction."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            conn.execute(statement)
            statement = ""
    if statement.strip():
        raise StoreError(f"incomplete SQL statement in a migration: {statement.strip()[:60]}")


def _v1_initial(conn: sqlite3.Connection) -> None:
    run_script(
        conn,
        """
        CREATE TABLE sources (
            id TEXT PRIMARY KEY,
            url TEXT NOT NULL,
            name TEXT,
            etag TEXT,
            last_modified TEXT,
            last_status INTEGER,
            last_success_at TEXT,
            last_error TEXT,
            last_error_at TEXT,
            consecutive_failures INTEGER NOT NULL DEFAULT 0,
            next_poll_at TEXT,
            created_at TEXT NOT NULL
        );

        CREATE TABLE entries (
            id TEXT PRIMARY KEY,
            source_id TEXT NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
            guid TEXT,
            link TEXT,
            canonical_url TEXT,
            title TEXT NOT NULL,
            summary_html TEXT NOT NULL,
            summary_text TEXT NOT NULL,
            author TEXT,
            published TEXT NOT NULL,
            updated TEXT,
            first_seen TEXT NOT NULL,
            last_changed TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            categories TEXT NOT NULL DEFAULT '[]'
        );
        CREATE INDEX entries_by_published ON entries(published DESC);
        CREATE INDEX entries_by_source ON entries(source_id, published DESC);
        CREATE INDEX entries_by_first_seen ON entries(first_seen);
        CREATE INDEX entries_by_canonical_url ON entries(canonical_url);

        -- One row per (entry, tag); `published` is copied so "latest with tag T" is one index range.
        CREATE TABLE entry_tags (
            entry_id TEXT NOT NULL REFERENCES entries(id) ON DELETE CASCADE,
            tag TEXT NOT NULL,
            published TEXT NOT NULL,
            PRIMARY KEY (entry_id, tag)
        ) WITHOUT ROWID;
        CREATE INDEX entry_tags_by_tag ON entry_tags(tag, published DESC);
        """,
    )


def _v2_stories(conn: sqlite3.Connection) -> None:
    """Stories: every entry belongs to one (its own, until grouped); sources carry a priority."""
    run_script(
        conn,
        """
        ALTER TABLE sources ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE entries ADD COLUMN story_id TEXT;
        UPDATE entries SET story_id = id;
        CREATE INDEX entries_by_story ON entries(story_id);
        """,
    )


def _v5_outbox(conn: sqlite3.Connection) -> None:
    """Digest outbox: one row per (subscriber, period); opt-outs from the unsubscribe link."""
    run_script(
        conn,
        """
        CREATE TABLE outbox (
            subscriber TEXT NOT NULL,          -- the address, lower-cased
            period TEXT NOT NULL,              -- ISO week, 2024-W21
            state TEXT NOT NULL CHECK (state IN
                ('pending', 'sent', 'failed-temporary', 'failed-permanent')),
            message_id TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT,
            next_attempt_at TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            sent_at TEXT,
            PRIMARY KEY (subscriber, period)
        );
        CREATE INDEX outbox_by_state ON outbox(state, next_attempt_at);

        CREATE TABLE digest_optouts (
            email TEXT PRIMARY KEY,            -- lower-cased
            at TEXT NOT NULL,
            via TEXT NOT NULL
        );
        """,
    )


def _v3_source_health(conn: sqlite3.Connection) -> None:
    """Sources: an adopted fetch URL (permanent redirects), the redirect seen, a disabled reason."""
    run_script(
        conn,
        """
        -- `url` stays the configured URL; `fetch_url`, when set, is where it moved to for good.
        ALTER TABLE sources ADD COLUMN fetch_url TEXT;
        ALTER TABLE sources ADD COLUMN moved_to TEXT;
        ALTER TABLE sources ADD COLUMN moved_polls INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE sources ADD COLUMN disabled_reason TEXT;
        ALTER TABLE sources ADD COLUMN disabled_at TEXT;
        """,
    )


def _v6_worker_state(conn: sqlite3.Connection) -> None:
    """The worker's heartbeat, last tick, last prune and the digest slot it has handled."""
    run_script(
        conn,
        """
        CREATE TABLE worker_state (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            pid INTEGER,
            mode TEXT,                       -- "run" or "once"
            started_at TEXT,
            heartbeat_at TEXT,
            last_tick_at TEXT,
            ticks INTEGER NOT NULL DEFAULT 0,
            last_prune_at TEXT,
            digest_slot_done TEXT            -- the latest [digest].schedule time already handled
        );
        INSERT INTO worker_state (id) VALUES (1);
        CREATE INDEX IF NOT EXISTS entries_by_source_first_seen ON entries(source_id, first_seen);
        """,
    )


def _v4_story_keys(conn: sqlite3.Connection) -> None:
    """Story matching: each entry's MinHash band keys (indexed) and signature.

    Finding the candidates of a new entry is one range scan per band key on
    (band_key, published); nothing has to be loaded into memory at start-up.
    """
    run_script(
        conn,
        """
        CREATE TABLE entry_bands (
            band_key INTEGER NOT NULL,
            published TEXT NOT NULL,           -- copied, so the window is part of the index range
            entry_id TEXT NOT NULL REFERENCES entries(id) ON DELETE CASCADE,
            PRIMARY KEY (band_key, published, entry_id)
        ) WITHOUT ROWID;
        CREATE INDEX entry_bands_by_entry ON entry_bands(entry_id);

        CREATE TABLE entry_signatures (
            entry_id TEXT PRIMARY KEY REFERENCES entries(id) ON DELETE CASCADE,
            signature BLOB NOT NULL            -- MinHash values, 4 bytes each, little-endian
        ) WITHOUT ROWID;
        """,
    )


def _v7_compact_story_keys(conn: sqlite3.Connection) -> None:
    """Story matching keeps each entry's whole fingerprint, compactly, so candidates are
    compared without being fingerprinted again: the signature, the shingle hashes, the numbers
    of the title and the dates named. Band rows shrink: 31-bit keys, the publication time as
    Unix seconds and an integer reference instead of two texts. Entries that had keys are
    fingerprinted again here, once."""
    from aggregator.store.stories import rebuild_story_keys  # the store imports this module

    run_script(
        conn,
        """
        DROP TABLE entry_bands;
        ALTER TABLE entry_signatures RENAME TO old_entry_signatures;

        CREATE TABLE entry_signatures (
            fp_id INTEGER PRIMARY KEY,
            entry_id TEXT NOT NULL UNIQUE REFERENCES entries(id) ON DELETE CASCADE,
            signature BLOB NOT NULL,           -- MinHash values, 4 bytes each, little-endian
            shingles BLOB NOT NULL,            -- sorted CRC-32 of each shingle, 4 bytes each
            title_numbers TEXT NOT NULL,       -- space-separated digit strings
            dates TEXT NOT NULL                -- space-separated month-day pairs: "5-16 5-17"
        );
        CREATE TABLE entry_bands (
            band_key INTEGER NOT NULL,
            published INTEGER NOT NULL,        -- Unix seconds, so the window is an index range
            fp_id INTEGER NOT NULL REFERENCES entry_signatures(fp_id) ON DELETE CASCADE,
            PRIMARY KEY (band_key, published, fp_id)
        ) WITHOUT ROWID;
        CREATE INDEX entry_bands_by_fp ON entry_bands(fp_id);
        """,
    )
    rebuild_story_keys(conn)
    conn.execute("DROP TABLE old_entry_signatures")


# Schema version -> the migration that reaches it. Add new ones with the next number; never
# edit one that has shipped.
def _v8_band_keys_on_the_fingerprint(conn: sqlite3.Connection) -> None:
    """Band keys move from 32 rows per entry (each in two B-trees) to one blob on the entry's
    fingerprint row, beside its publication time, which is indexed: the store reads the band
    keys of the days a window covers into memory (store/stories.py `BandIndex`), so storing an
    entry writes one row where it wrote 33."""
    from aggregator.store.stories import fill_band_keys  # the store imports this module

    run_script(
        conn,
        """
        ALTER TABLE entry_signatures ADD COLUMN published INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE entry_signatures ADD COLUMN bands BLOB NOT NULL DEFAULT x'';
        DROP TABLE entry_bands;
        """,
    )
    fill_band_keys(conn)
    conn.execute("CREATE INDEX entry_signatures_by_published ON entry_signatures(published)")


def _v9_content_version(conn: sqlite3.Connection) -> None:
    """A counter that every change to entries or their tags bumps, by any writer: the worker
    asks it whether to publish instead of counting every entry."""
    run_script(
        conn,
        """
        ALTER TABLE worker_state ADD COLUMN content_version INTEGER NOT NULL DEFAULT 0;
        CREATE TRIGGER entries_inserted AFTER INSERT ON entries BEGIN
            UPDATE worker_state SET content_version = content_version + 1 WHERE id = 1;
        END;
        CREATE TRIGGER entries_updated AFTER UPDATE ON entries BEGIN
            UPDATE worker_state SET content_version = content_version + 1 WHERE id = 1;
        END;
        CREATE TRIGGER entries_deleted AFTER DELETE ON entries BEGIN
            UPDATE worker_state SET content_version = content_version + 1 WHERE id = 1;
        END;
        CREATE TRIGGER entry_tags_inserted AFTER INSERT ON entry_tags BEGIN
            UPDATE worker_state SET content_version = content_version + 1 WHERE id = 1;
        END;
        CREATE TRIGGER entry_tags_deleted AFTER DELETE ON entry_tags BEGIN
            UPDATE worker_state SET content_version = content_version + 1 WHERE id = 1;
        END;
        """,
    )


def _v10_content_version_by_the_writers(conn: sqlite3.Connection) -> None:
    """The writers bump the content version once per change (store/database.py
    `content_changed`) instead of a trigger per row, which cost a quarter of storing an entry."""
    for trigger in (
        "entries_inserted",
        "entries_updated",
        "entries_deleted",
        "entry_tags_inserted",
        "entry_tags_deleted",
    ):
        conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")


def _v11_sanitizer_version(conn: sqlite3.Connection) -> None:
    """Which version of the sanitizer cleaned each entry's summary (0: unknown, as for every
    entry stored before): publishing skips cleaning again what the current one cleaned."""
    conn.execute("ALTER TABLE entries ADD COLUMN sanitized_by INTEGER NOT NULL DEFAULT 0")


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _v1_initial,
    2: _v2_stories,
    3: _v3_source_health,
    4: _v4_story_keys,
    5: _v5_outbox,
    6: _v6_worker_state,
    7: _v7_compact_story_keys,
    8: _v8_band_keys_on_the_fingerprint,
    9: _v9_content_version,
    10: _v10_content_version_by_the_writers,
    11: _v11_sanitizer_version,
}
LATEST = max(MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to the latest schema version; return that version."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > LATEST:
        raise StoreError(
            f"the database has schema version {current}, newer than this aggregator knows "
            f"({LATEST}); upgrade aggregator"
        )
    for version in sorted(v for v in MIGRATIONS if v > current):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[version](conn)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return LATEST
