"""Composition root: builds the store, clock and paths from the config; nothing else does."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from aggregator import config
from aggregator.clock import Clock, SystemClock
from aggregator.publish import PublishReport, publish
from aggregator.settings import Settings
from aggregator.store import Store

DEFAULT_CONFIG = "config/feeds.toml"


def config_path(explicit: str | None) -> Path:
    """--config, else $AGGREGATOR_CONFIG, else config/feeds.toml in the working directory."""
    return Path(explicit or os.environ.get("AGGREGATOR_CONFIG") or DEFAULT_CONFIG)


def templates_dir() -> Path:
    """The Jinja2 templates: $AGGREGATOR_TEMPLATES, else `templates/` beside the package."""
    override = os.environ.get("AGGREGATOR_TEMPLATES")
    return Path(override) if override else Path(__file__).resolve().parent.parent / "templates"


@dataclass
class App:
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    _store: Store | None = None

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def public_dir(self) -> Path:
        return self.data_dir / "public"

    @property
    def store(self) -> Store:
        """The database, opened (and migrated) on first use."""
        if self._store is None:
            self._store = Store(self.data_dir / "aggregator.db")
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


def open_app(path: Path, *, clock: Clock | None = None) -> App:
    return App(settings=config.load(path), clock=clock or SystemClock())


def publish_site(app: App) -> PublishReport:
    """Read the curated topic's entries from the store and write the public files."""
    topic = app.settings.publish.topic
    entries = app.store.entries(tag=topic, limit=app.settings.publish.max_items) if topic else []
    return publish(
        entries,
        settings=app.settings,
        public_dir=app.public_dir,
        now=app.clock.now(),
        templates_dir=templates_dir(),
    )
