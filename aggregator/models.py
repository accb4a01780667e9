"""One immutable type per pipeline stage: fetched bytes, parsed entries, stored entries, reports."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class FetchRequest:
    """What the fetcher needs to poll one source: where, and the validators from last time."""

    source_id: str
    url: str
    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What one poll of a source returned. `content` is None when the server said 304."""

    source_id: str
    url: str  # the final URL, after redirects; the base for relative links
    status: int  # HTTP status; 200 for local files
    content: bytes | None
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    permanent_redirect: str | None = None  # set when every hop was 301/308
    max_age: float | None = None  # seconds, from Cache-Control

    @property
    def not_modified(self) -> bool:
        return self.content is None


@dataclass(frozen=True, slots=True)
class ParsedEntry:
    """One item as the source told it, before any cleaning. Dates are timezone-aware UTC."""

    guid: str | None
    link: str | None
    title: str  # may still hold markup or entities
    summary_html: str  # raw, unsanitized
    author: str | None = None
    published: datetime | None = None
    updated: datetime | None = None
    categories: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    """A whole fetched document: feed-level metadata and its entries in document order."""

    title: str
    link: str | None
    entries: tuple[ParsedEntry, ...]
    warning: str | None = None  # a recoverable problem (feedparser's bozo) worth showing


@dataclass(frozen=True, slots=True)
class Entry:
    """An item ready to store: cleaned, identified, dated and tagged."""

    id: str  # stable: derived from source id and the identity key
    source_id: str
    guid: str | None
    link: str | None
    canonical_url: str | None
    title: str  # plain text
    summary_html: str  # sanitized
    summary_text: str  # plain text of the summary
    author: str | None
    published: datetime  # UTC; first_seen when the source gave no date
    updated: datetime | None
    first_seen: datetime
    content_hash: str  # changes when title or summary change
    categories: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    story_id: str | None = None  # the story this entry belongs to; None: its own (= id)

    def __reduce__(self) -> tuple[type[Entry], tuple[object, ...]]:
        # Rebuilt by its constructor: ~30% cheaper to send from a worker process than through
        # dataclass's state functions (written in Python).
        return Entry, tuple(getattr(self, name) for name in _ENTRY_FIELDS)


_ENTRY_FIELDS = tuple(f.name for f in dataclasses.fields(Entry))


@dataclass(frozen=True, slots=True)
class SourceState:
    """What the store remembers about a source between polls."""

    source_id: str
    url: str  # where to fetch: the configured URL, or the permanent redirect target adopted
    etag: str | None = None
    last_modified: str | None = None
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    consecutive_failures: int = 0
    next_poll_at: datetime | None = None
    configured_url: str | None = None  # the config's URL; `url` differs once a move is adopted
    moved_to: str | None = None  # permanent redirect target seen on the last polls
    moved_polls: int = 0  # polls in a row that were permanently redirected to `moved_to`
    disabled_reason: str | None = None  # set when the server said 410 Gone; not polled then
    disabled_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """An entry as read back from the store, with its source's display name."""

    entry: Entry
    source_name: str
    # Its summary was cleaned by this version of the sanitizer when stored (not cleaned again).
    sanitized: bool = False


@dataclass(frozen=True, slots=True)
class Story:
    """One event told by one or more entries: a lead item and the others "also reported by"."""

    id: str
    lead: StoredEntry
    others: tuple[StoredEntry, ...] = ()

    @property
    def members(self) -> tuple[StoredEntry, ...]:
        return (self.lead, *self.others)

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(sorted({tag for m in self.members for tag in m.entry.tags}))

    @property
    def first_seen(self) -> datetime:
        return min(m.entry.first_seen for m in self.members)

    @property
    def published(self) -> datetime:
        return self.lead.entry.published


@dataclass(frozen=True, slots=True)
class SourceOutcome:
    """How the poll of one source went."""

    source_id: str
    status: str  # "ok", "not-modified" or "error"
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    error: str | None = None
    duration: float = 0.0


@dataclass(frozen=True, slots=True)
class UpdateReport:
    """Everything one poll did, source by source."""

    outcomes: tuple[SourceOutcome, ...] = field(default_factory=tuple)

    @property
    def failed(self) -> tuple[SourceOutcome, ...]:
        return tuple(o for o in self.outcomes if o.status == "error")

    @property
    def new(self) -> int:
        return sum(o.new for o in self.outcomes)

    @property
    def updated(self) -> int:
        return sum(o.updated for o in self.outcomes)


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """A source's fetch health as the sources page shows it."""

    source_id: str
    name: str
    url: str
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    consecutive_failures: int = 0
    recent_items: int = 0  # entries first seen in the last 7 days
