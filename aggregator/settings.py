"""Frozen, typed settings: what `config.load` returns and every stage receives as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class SelectSettings:
    """CSS selectors of an HTML source; "a@href" reads an attribute."""

    item: str
    title: str
    link: str
    date: str | None = None
    summary: str | None = None
    date_regex: str | None = None  # applied to the link when no date selector matches


@dataclass(frozen=True, slots=True)
class SourceSettings:
    id: str
    url: str
    name: str
    type: str = "feed"  # "feed" or "html"
    every: int = 1800  # poll interval, seconds
    tags: tuple[str, ...] = ()
    enabled: bool = True
    language: str | None = None
    priority: int = 0  # higher leads a story
    select: SelectSettings | None = None


TAG_FIELDS = ("title", "summary", "categories", "source")
"""The entry fields tag rules search, in the order explanations name them."""


@dataclass(frozen=True, slots=True)
class TagRule:
    """`[tags.NAME]`: every group of `all` must match a term, at least one `any` term (if given)
    must, no `none` term may, and the weighted score must reach `min_score` (if given).

    Terms are kept as written ("title:香港", "regex:..."); process/tag.py reads their syntax.
    """

    name: str
    title: str
    all: tuple[tuple[str, ...], ...] = ()
    any: tuple[str, ...] = ()
    none: tuple[str, ...] = ()
    fields: tuple[str, ...] = TAG_FIELDS  # where terms without a field prefix are looked for
    weights: tuple[tuple[str, float], ...] = ()  # (field, points per term found); default 1
    min_score: float | None = None


@dataclass(frozen=True, slots=True)
class PublishSettings:
    topic: str | None = None
    title: str = "aggregator"
    base_url: str = "http://localhost:8080/"
    max_items: int = 100
    description: str = ""


@dataclass(frozen=True, slots=True)
class Subscriber:
    email: str
    name: str | None = None
    tags: tuple[str, ...] = ()
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class DigestSettings:
    schedule: str = "mon 08:00"
    sender: str = "aggregator <aggregator@localhost>"
    subject: str = "{title}: {count} stories, week {week}"
    send_empty: bool = False
    grace: int = 2 * 86400  # seconds: a digest missed while the worker was down is sent this late
    subscribers: tuple[Subscriber, ...] = ()
    secret_env: str = "AGGREGATOR_DIGEST_SECRET"  # names the env var holding the unsubscribe key


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str = "localhost"
    port: int = 587
    security: str = "starttls"  # "starttls" | "tls" | "none"
    username_env: str | None = None
    password_env: str | None = None
    timeout: float = 30.0
    ca_file: str | None = None  # extra CA bundle to trust (a private relay's certificate)


@dataclass(frozen=True, slots=True)
class FetchSettings:
    timeout: float = 20.0  # connect and read, seconds
    deadline: float = 60.0  # a whole fetch, seconds
    max_bytes: int = 10 * 1024 * 1024  # decompressed body cap
    concurrency: int = 100  # per_host still bounds each server; see docs/benchmarks.md
    per_host: int = 2
    user_agent: str | None = None  # default names aggregator, its version and URL
    host_spacing: float = 1.0  # least seconds between request starts to one remote host


@dataclass(frozen=True, slots=True)
class StorySettings:
    """`[stories]`: how near-duplicates from different sources are grouped into one story."""

    window: int = 7 * 86400  # seconds: only items published this close are compared
    threshold: float = 0.3  # Jaccard similarity of shingles an item needs to join a story


@dataclass(frozen=True, slots=True)
class Settings:
    path: Path  # the config file this came from
    data_dir: Path
    timezone: str = "Asia/Hong_Kong"
    keep: int = 365 * 86400  # seconds: older entries are pruned
    tick: int = 60  # seconds between the worker's looks for due sources
    sources: tuple[SourceSettings, ...] = ()
    tags: tuple[TagRule, ...] = ()
    publish: PublishSettings = field(default_factory=PublishSettings)
    digest: DigestSettings = field(default_factory=DigestSettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    fetch: FetchSettings = field(default_factory=FetchSettings)
    stories: StorySettings = field(default_factory=StorySettings)

    def source(self, source_id: str) -> SourceSettings | None:
        return next((s for s in self.sources if s.id == source_id), None)

    def tag(self, name: str) -> TagRule | None:
        return next((t for t in self.tags if t.name == name), None)
