"""Composition root: builds the store, clock and paths from the config; nothing else does."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aggregator import config
from aggregator.clock import Clock, FixedClock, SystemClock
from aggregator.errors import ConfigError
from aggregator.publish import PublishReport, publish, read_site
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


FAKE_NOW = "AGGREGATOR_FAKE_NOW"


def open_app(path: Path, *, clock: Clock | None = None) -> App:
    return App(settings=config.load(path), clock=clock or default_clock())


def default_clock() -> Clock:
    """The system clock; tests of real processes pin the time with $AGGREGATOR_FAKE_NOW.

    `AGGREGATOR_FAKE_NOW=2024-05-20T09:00:00+08:00` makes every command and the worker see that
    moment forever (a FixedClock). It is read here only; production never sets it.
    """
    fake = os.environ.get(FAKE_NOW)
    if not fake:
        return SystemClock()
    try:
        moment = datetime.fromisoformat(fake)
    except ValueError:
        raise ConfigError(f"${FAKE_NOW}: {fake!r} is not an ISO 8601 time") from None
    return FixedClock(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def publish_site(app: App) -> PublishReport:
    """Read the stories, tags and source health from the store and write the public files."""
    now = app.clock.now()
    site = read_site(app.store, app.settings, app.public_dir, now)
    return publish(
        site,
        settings=app.settings,
        public_dir=app.public_dir,
        now=now,
        templates_dir=templates_dir(),
    )
