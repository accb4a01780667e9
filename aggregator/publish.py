"""Publishing: stories as Atom, RSS 2.0 and JSON Feed 1.1 (topic, per tag, all) and a static
website, written atomically and only when their bytes change. Input is plain data; no database.

Feed entry ids. A story's entry id is `urn:aggregator:entry:<entry id>` of its *anchor*: the
member first seen (then the smallest entry id). A story only gains members seen later, so its
anchor, and its feed id, stay put as reports join it; when two stories merge, the merged story
keeps the older anchor's id and the other id leaves the feed. An entry id is never given to
another story's anchor, so an id is never reused for different news. A story of one entry keeps
the id that entry had before stories existed.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import math
import os
import re
import struct
import tempfile
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache, partial
from json.encoder import encode_basestring as encode_json_string
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from urllib.parse import quote, urljoin, urlsplit
from zoneinfo import ZoneInfo

import jinja2
import nh3
from feedgen.feed import FeedGenerator
from feedgen.version import version_str as feedgen_version

from aggregator import PROJECT_URL, __version__
from aggregator.checkpoints import checkpoint
from aggregator.errors import AggregatorError
from aggregator.models import SourceHealth, StoredEntry, Story
from aggregator.process import sanitize
from aggregator.process.sanitize import clean_html
from aggregator.settings import Settings

# isort: split
# After feedgen.feed, which imports the lxml.etree that feedgen's extensions use unimported.
from feedgen.ext.dc import DcEntryExtension, DcExtension

TOPIC_FEED = "feed"  # feed.atom, feed.rss, feed.json
ALL_FEED = "all"  # all.atom, all.rss, all.json
ATOM_FILE, RSS_FILE, JSON_FILE = f"{TOPIC_FEED}.atom", f"{TOPIC_FEED}.rss", f"{TOPIC_FEED}.json"
INDEX_FILE = "index.html"
SOURCES_FILE = "sources.html"
ARCHIVE_DIR = "archive"
ARCHIVE_INDEX = f"{ARCHIVE_DIR}/index.html"
TAGS_DIR = "tags"
XSL_FILE = "feed.xsl"
ICON_FILE = "favicon.svg"
MANIFEST_FILE = ".publish-manifest"  # see Manifest: a dot-file, never served; not "*.json"

JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
ENTRY_URN_PREFIX = "urn:aggregator:entry:"
EXCERPT_CHARS = 300
UNTITLED = "(untitled)"
CHART_WEEKS = 12
ARCHIVE_RECENT_WEEKS = 8  # archive pages rebuilt on every publish; older ones only when missing
# How long before its lead's publication a story's tagged entry may be and the story still be
# found among the recent ones (see count_archive): stories join entries published within days.
STORY_SPAN = timedelta(weeks=8)
RECENT_DAYS = 7
WRITER_THREADS = 4  # threads writing, then flushing, the changed files
FLUSH_BATCH = 64  # changed files flushed to disk together while the next outputs render
TEMP_SUFFIX = ".tmp"  # a file being written: ".<name>.<random>.tmp", beside <name>
STALE_TEMP_SECONDS = 3600  # older temporary files were left by a killed publish

# Characters XML 1.0 forbids; lxml refuses to serialize them, so one stray control
# character in a source's title would otherwise fail the whole publish.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# A run of ASCII whitespace that is not a single space, to become one: an ideographic space
# (U+3000) in a Chinese title is meant. (Matching every single space too is several times
# slower on a paragraph and changes nothing.)
_SPACES = re.compile(r" [ \t\n\r\f\v]+|[\t\n\r\f\v][ \t\n\r\f\v]*")
_ASCII_NOT_XML = bytes([*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20)])
# A character XML forbids, or a control character (tab, newline ...).
_NOT_XML_OR_CONTROL = re.compile("[^\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_SAFE_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_WEEK_KEY = re.compile(r"^(\d{4})-W(\d{2})$")
_URN_SAFE = re.compile(r"[A-Za-z0-9:._~-]*")
# An http(s) URL with a plain host name and only printable ASCII that `_web_url` keeps: the
# common case, checked without urlsplit. Anything else takes the full check.
_PLAIN_WEB_URL = re.compile(
    r"[hH][tT][tT][pP][sS]?://[A-Za-z0-9.-]+(?::[0-9]+)?(?:[/?#][!#-;=?-\[\]_a-z~]*)?"
)

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


@dataclass(frozen=True, slots=True)
class PublishReport:
    """What one publish did: the files it rewrote and those whose bytes were already right."""

    written: tuple[Path, ...] = ()
    unchanged: tuple[Path, ...] = ()
    entries: int = 0  # stories in the topic feed


@dataclass(frozen=True, slots=True)
class SiteData:
    """Everything the site is made of, read from the store by `app.publish_site`.

    Story lists are newest first and already limited; `weeks` holds the archive pages to
    (re)write, `week_counts` every ISO week ("2024-W21") that has topic stories.
    """

    topic: Sequence[Story] = ()
    everything: Sequence[Story] = ()
    tags: Mapping[str, Sequence[Story]] = field(default_factory=dict)
    weeks: Mapping[str, Sequence[Story]] = field(default_factory=dict)
    week_counts: Mapping[str, int] = field(default_factory=dict)
    sources: Sequence[SourceHealth] = ()


@dataclass(frozen=True, slots=True)
class FeedMeta:
    """Feed-level facts every format of one feed shares."""

    title: str
    description: str
    home_url: str  # the HTML page showing the same stories
    atom_url: str
    rss_url: str
    json_url: str
    xsl_href: str  # relative to the feed, for the <?xml-stylesheet?> instruction
    updated: datetime  # UTC; the newest story's update, so unchanged stories give unchanged files


# The records built for every story of every output are NamedTuples: as immutable as a frozen
# dataclass and built about three times as fast, which a publish of thousands of stories feels.


class Mention(NamedTuple):
    """One outlet's report of a story: its name and its link (None when it gave none)."""

    source_name: str
    url: str | None


class FeedItem(NamedTuple):
    """One story as every output shows it: identifier, link, text and dates settled once."""

    id: str  # urn:aggregator:entry:..., see the module docstring
    anchor: str  # the HTML id of the story on the pages
    week: str  # ISO week of publication in the configured zone, "2024-W21"
    url: str  # absolute http(s): the lead's own link, else its place in the weekly archive
    has_own_link: bool
    title: str  # plain text, never empty
    source_name: str  # the lead's outlet
    also: tuple[Mention, ...]  # the other members, in lead order
    content_html: str  # summary plus the outlets that reported it, sanitized
    summary_text: str
    published: datetime  # UTC, whole seconds
    updated: datetime  # UTC, whole seconds, never before `published`
    tags: tuple[str, ...]
    published_iso: str  # `published` in ISO 8601, "2024-05-21T09:00:00+00:00", as Atom has it
    updated_iso: str  # `updated` likewise


# --- the stage ------------------------------------------------------------------------------


def publish(
    site: SiteData,
    *,
    settings: Settings,
    public_dir: Path,
    now: datetime,
    templates_dir: Path,
) -> PublishReport:
    """Write the feeds and pages into `public_dir`; files whose bytes are unchanged stay.

    An output whose inputs have the digest the manifest recorded for its files, and whose files
    are still the ones written then, is not rendered at all (see `Manifest`); the manifest also
    keeps the archive's counts, for the next `read_site`. `now` only dates empty feeds and the
    sources page's "7 days"; every other byte follows from the data.
    """
    renderer = SiteRenderer(site, settings=settings, now=now, templates_dir=templates_dir)
    manifest = Manifest.read(public_dir)
    recorded: dict[str, ManifestEntry] = {}
    digests: dict[Path, str] = {}
    unchanged: list[Path] = []
    try:
        _remove_stale_temporaries(public_dir)
        with StagedWrites() as writes:
            for output in renderer.outputs():
                kept = manifest.still_valid(public_dir, output)
                if kept is not None:
                    recorded.update(kept)
                    unchanged.extend(public_dir / name for name in output.files)
                    continue
                for name, data in output.render().items():
                    digests[public_dir / name] = output.digest
                    writes.stage(public_dir / name, data)
            written, same = writes.commit()
        unchanged += same
        for path, digest in digests.items():
            recorded[path.relative_to(public_dir).as_posix()] = ManifestEntry.of(digest, path)
        # Last: it vouches for files that are now in place.
        Manifest(recorded, _archive_counts(site, settings, now)).write(public_dir)
    except OSError as exc:
        where = exc.filename or public_dir
        raise AggregatorError(f"cannot write {where}: {exc.strerror or exc}") from exc
    return PublishReport(
        written=tuple(written), unchanged=tuple(unchanged), entries=renderer.topic_entries
    )


def _archive_counts(site: SiteData, settings: Settings, now: datetime) -> ArchiveCounts | None:
    """What the next `read_site` may take from this publish: its counts of the older weeks.

    The weeks from `ARCHIVE_RECENT_WEEKS` before `now` on are counted from the stories every
    time; so were they for this publish, whatever its counts of older weeks came from.
    """
    topic = settings.publish.topic
    if not topic:
        return None
    counted_from = _first_recounted_week(now, ZoneInfo(settings.timezone))
    return ArchiveCounts(topic, settings.timezone, counted_from, site.week_counts)


def unique(stories: Sequence[Story]) -> list[Story]:
    """The stories once each, first occurrence kept: a repeated id would repeat a feed id."""
    seen: set[str] = set()
    kept: list[Story] = []
    for story in stories:
        key = story_entry_id(story)
        if key not in seen:
            seen.add(key)
            kept.append(story)
    return kept


def render_site(
    site: SiteData, *, settings: Settings, now: datetime, templates_dir: Path
) -> dict[str, bytes]:
    """Every public file's path (relative, with '/') and bytes; pure but for reading templates."""
    renderer = SiteRenderer(site, settings=settings, now=now, templates_dir=templates_dir)
    return {name: data for output in renderer.outputs() for name, data in output.render().items()}


# --- rendering each output once, and only when its inputs changed ---------------------------


@dataclass(frozen=True, slots=True)
class Output:
    """Files rendered together, and a digest of everything their bytes depend on."""

    files: tuple[str, ...]  # relative paths, with '/'
    digest: str
    render: Callable[[], dict[str, bytes]]


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """What the manifest knows of one file: its inputs' digest and the file it wrote."""

    digest: str
    size: int
    inode: int  # a rewrite (os.replace) makes a new inode; touching the file does not

    @classmethod
    def of(cls, digest: str, path: Path) -> ManifestEntry:
        status = path.stat()
        return cls(digest, status.st_size, status.st_ino)


@dataclass(frozen=True, slots=True)
class Manifest:
    """`public/.publish-manifest`: per file, the digest of the inputs it was rendered from.

    Hidden (serve.py and the nginx example refuse dot-files) and written last, atomically. A
    file is skipped only when its digest matches and it is still the file written then (same
    inode and size), so a publish that died half way, or a file removed or replaced by hand,
    is rendered again. A missing or unreadable manifest just means rendering everything.
    """

    files: Mapping[str, ManifestEntry]
    archive: ArchiveCounts | None = None  # the archive's counts, as published

    FORMAT = 2

    @classmethod
    def read(cls, public_dir: Path) -> Manifest:
        try:
            data = json.loads((public_dir / MANIFEST_FILE).read_bytes())
            if data.get("format") != cls.FORMAT:
                return cls({})
            files = {
                name: ManifestEntry(str(digest), int(size), int(inode))
                for name, (digest, size, inode) in data["files"].items()
            }
        except (OSError, ValueError, TypeError, AttributeError, KeyError):
            return cls({})
        return cls(files, ArchiveCounts.from_json(data.get("archive")))

    def still_valid(self, public_dir: Path, output: Output) -> dict[str, ManifestEntry] | None:
        """The output's entries when none of its files needs rendering, else None."""
        kept = {}
        for name in output.files:
            entry = self.files.get(name)
            if entry is None or entry.digest != output.digest:
                return None
            try:
                status = (public_dir / name).stat()
            except OSError:
                return None
            if (status.st_size, status.st_ino) != (entry.size, entry.inode):
                return None
            kept[name] = entry
        return kept

    def write(self, public_dir: Path) -> None:
        files = {name: [e.digest, e.size, e.inode] for name, e in sorted(self.files.items())}
        archive = self.archive.to_json() if self.archive else None
        content = {"format": self.FORMAT, "files": files, "archive": archive}
        data = json.dumps(content, separators=(",", ":"))
        public_dir.mkdir(parents=True, exist_ok=True)
        write_if_changed(public_dir / MANIFEST_FILE, data.encode("utf-8") + b"\n")


@dataclass(frozen=True, slots=True)
class ArchiveCounts:
    """The archive's stories per ISO week for one topic in one time zone, as one publish
    showed them: the next one counts only the recent weeks again (see `count_archive`)."""

    topic: str
    timezone: str
    counted_from: str  # the first of the weeks that publish counted from the stories
    weeks: Mapping[str, int]

    def to_json(self) -> dict[str, object]:
        return {
            "topic": self.topic,
            "timezone": self.timezone,
            "counted_from": self.counted_from,
            "weeks": dict(sorted(self.weeks.items())),
        }

    @classmethod
    def from_json(cls, data: object) -> ArchiveCounts | None:
        """None for anything but what `to_json` writes: then every week is counted again."""
        if not isinstance(data, dict):
            return None
        try:
            weeks = {str(w): int(n) for w, n in data["weeks"].items() if _WEEK_KEY.match(w)}
            counted_from = str(data["counted_from"])
            if not _WEEK_KEY.match(counted_from):
                return None
            return cls(str(data["topic"]), str(data["timezone"]), counted_from, weeks)
        except (AttributeError, KeyError, TypeError, ValueError):
            return None


class StoryPieces:
    """One story's rendered pieces, built on first use and shared by every output showing it.

    Keyed by the story's feed id, like `unique`: the first occurrence in a publish is the one
    shown everywhere. (Plain lazy attributes: functools.cached_property takes a lock on each
    first use, which thousands of stories times five pieces feel.)
    """

    __slots__ = ("_atom", "_digest", "_item", "_json", "_rss", "_xml", "base_url", "story", "zone")

    def __init__(self, story: Story, base_url: str, zone: tzinfo) -> None:
        self.story = story
        self.base_url = base_url
        self.zone = zone
        self._digest: bytes | None = None
        self._item: FeedItem | None = None
        self._atom: bytes | None = None
        self._rss: bytes | None = None
        self._json: bytes | None = None
        self._xml: XmlTexts | None = None

    @property
    def digest(self) -> bytes:
        """Of every field `feed_item` reads: equal digests give equal pieces."""
        if self._digest is None:
            fields: list[str] = []
            times: list[float] = []  # each an instant (Unix time), NaN for none
            for member in self.story.members:
                entry = member.entry
                fields += (
                    entry.id, entry.source_id, member.source_name, entry.link or "",
                    entry.canonical_url or "", entry.title, entry.summary_html,
                    entry.summary_text, "\x1e".join(entry.tags),
                )  # fmt: skip
                updated = entry.updated.timestamp() if entry.updated else math.nan
                times += (entry.published.timestamp(), updated, entry.first_seen.timestamp())
            # SHA-256 rather than BLAKE2: CPUs with SHA instructions (most servers now) hash
            # a story's kilobyte or two several times faster.
            digest = hashlib.sha256("\x1f".join(fields).encode("utf-8", "surrogatepass"))
            digest.update(struct.pack(f"<{len(times)}d", *times))
            self._digest = digest.digest()[:16]
        return self._digest

    @property
    def item(self) -> FeedItem:
        if self._item is None:
            self._item = feed_item(self.story, self.base_url, self.zone)
        return self._item

    @property
    def xml(self) -> XmlTexts:
        if self._xml is None:
            self._xml = XmlTexts.of(self.item)
        return self._xml

    @property
    def atom(self) -> bytes:
        if self._atom is None:
            self._atom = atom_entry(self.item, self.xml)
        return self._atom

    @property
    def rss(self) -> bytes:
        if self._rss is None:
            self._rss = rss_item(self.item, self.xml)
        return self._rss

    @property
    def json(self) -> bytes:
        if self._json is None:
            self._json = json_item(self.item)
        return self._json


class SiteRenderer:
    """The site as a list of outputs, each with the digest of its inputs, rendered on demand."""

    def __init__(
        self, site: SiteData, *, settings: Settings, now: datetime, templates_dir: Path
    ) -> None:
        self.site = site
        self.settings = settings
        self.now = now
        self.zone = ZoneInfo(settings.timezone)
        self.base_url = settings.publish.base_url
        self.title = _clean_text(settings.publish.title) or "aggregator"
        templates = read_templates(templates_dir)
        self.pages = Pages(settings, self.zone, templates_dir, templates, now)
        self.pages.tag_slugs = {name: tag_slug(name) for name in sorted(site.tags)}
        self._pieces: dict[str, StoryPieces] = {}
        self._version = _render_version(settings, templates, self.pages.tag_slugs)
        self._week_counts = tuple(sorted(site.week_counts.items()))
        self.topic_entries = len(self._pieces_of(site.topic))

    def _pieces_of(self, stories: Sequence[Story]) -> tuple[StoryPieces, ...]:
        """The stories' pieces, once each in first-occurrence order (see `unique`)."""
        result: dict[str, StoryPieces] = {}
        for story in stories:
            key = story_entry_id(story)
            if key not in result:
                pieces = self._pieces.get(key)
                if pieces is None:
                    pieces = self._pieces[key] = StoryPieces(story, self.base_url, self.zone)
                result[key] = pieces
        return tuple(result.values())

    def _digest(self, params: tuple[object, ...], stories: Sequence[StoryPieces] = ()) -> str:
        digest = hashlib.blake2b(self._version, digest_size=16)
        digest.update(repr(params).encode("utf-8", "surrogatepass"))
        for pieces in stories:
            digest.update(pieces.digest)
        return digest.hexdigest()

    def outputs(self) -> list[Output]:
        site, title = self.site, self.title
        description = _clean_text(self.settings.publish.description)
        topic = self._pieces_of(site.topic)
        everything = self._pieces_of(site.everything)
        outputs = [
            self._feed(TOPIC_FEED, title, description, INDEX_FILE, topic),
            self._feed(ALL_FEED, f"{title}: all stories", "", INDEX_FILE, everything),
        ]
        for name, slug in self.pages.tag_slugs.items():
            tagged = self._pieces_of(site.tags[name])
            rule = self.settings.tag(name)
            label = _clean_text(rule.title if rule and rule.title else name) or slug
            page = f"{TAGS_DIR}/{slug}.html"
            outputs.append(self._feed(f"{TAGS_DIR}/{slug}", f"{title}: {label}", "", page, tagged))
            render = partial(self._tag_page, page, name, label, slug, tagged)
            outputs.append(self._page(page, (name, label, slug), tagged, render, dated=True))
        render = partial(self._index, description, topic)
        outputs.append(self._page(INDEX_FILE, (description,), topic, render, dated=True))
        for week, stories in sorted(site.weeks.items()):
            if _WEEK_KEY.match(week):
                path, members = f"{ARCHIVE_DIR}/{week}.html", self._pieces_of(stories)
                render = partial(self._week, week, members)
                outputs.append(self._page(path, (), members, render))
        pages = self.pages
        outputs += [
            self._page(ARCHIVE_INDEX, (), (), partial(pages.archive, site.week_counts)),
            self._page(SOURCES_FILE, tuple(site.sources), (), partial(pages.sources, site.sources)),
            self._page(XSL_FILE, (), (), partial(pages.raw, XSL_FILE)),
            self._page(ICON_FILE, (), (), partial(pages.raw, ICON_FILE)),
        ]
        return outputs

    def _page(
        self,
        path: str,
        params: tuple[object, ...],
        stories: Sequence[StoryPieces],
        render: Callable[[], bytes],
        *,
        dated: bool = False,
    ) -> Output:
        """One page whose bytes depend on `params`, `stories` and the site-wide inputs only.

        Site-wide: the code, templates and settings (in `_version`), the tags (pages link
        them) and the week counts (index chart, archive). A `dated` page shows its newest
        story's time, which is `now` when it has none.
        """
        now = "" if stories or not dated else rfc3339(self.now)
        digest = self._digest((path, *params, self._week_counts, now), stories)
        return Output((path,), digest, lambda: {path: render()})

    def _tag_page(
        self, path: str, name: str, label: str, slug: str, stories: Sequence[StoryPieces]
    ) -> bytes:
        items = [p.item for p in stories]
        meta = self._meta(f"{TAGS_DIR}/{slug}", f"{self.title}: {label}", "", path, items)
        return self.pages.tag_page(name, label, slug, meta, items)

    def _index(self, description: str, stories: Sequence[StoryPieces]) -> bytes:
        items = [p.item for p in stories]
        meta = self._meta(TOPIC_FEED, self.title, description, INDEX_FILE, items)
        hidden = self.settings.publish.topic
        return self.pages.index(meta, items, self.site.week_counts, hidden=hidden)

    def _week(self, week: str, stories: Sequence[StoryPieces]) -> bytes:
        items = [p.item for p in stories if p.item.week == week]
        return self.pages.week(week, items, hidden=self.settings.publish.topic)

    def _meta(
        self, stem: str, title: str, description: str, page: str, items: Sequence[FeedItem]
    ) -> FeedMeta:
        return feed_meta(self.base_url, stem, title, description, page, items, self.now)

    def _feed(
        self, stem: str, title: str, description: str, page: str, stories: Sequence[StoryPieces]
    ) -> Output:
        def render() -> dict[str, bytes]:
            meta = self._meta(stem, title, description, page, [p.item for p in stories])
            return {
                f"{stem}.atom": render_atom(meta, [p.atom for p in stories]),
                f"{stem}.rss": render_rss(meta, [p.rss for p in stories]),
                f"{stem}.json": render_json_feed(meta, [p.json for p in stories]),
            }

        params = ("feed", stem, title, description, page, "" if stories else rfc3339(self.now))
        files = (f"{stem}.atom", f"{stem}.rss", f"{stem}.json")
        return Output(files, self._digest(params, stories), render)


def _render_version(
    settings: Settings, templates: Mapping[str, bytes], tag_slugs: Mapping[str, str]
) -> bytes:
    """What every output depends on besides its stories: code, templates and settings."""
    digest = hashlib.blake2b(digest_size=16)
    for module in (__file__, sanitize.__file__):
        digest.update(Path(module).read_bytes())
    for name, data in templates.items():
        digest.update(f"\0{name}\0".encode() + data)
    versions = (__version__, feedgen_version, jinja2.__version__, getattr(nh3, "__version__", ""))
    context = (versions, settings.timezone, settings.publish, PROJECT_URL, sorted(tag_slugs))
    digest.update(repr(context).encode("utf-8", "surrogatepass"))
    return digest.digest()


# --- reading the site's data ---------------------------------------------------------------


class SiteSource(Protocol):
    """What publishing reads from the store (aggregator.store.Store provides it)."""

    def stories(
        self, *, tag: str | None = None, since: datetime | None = None, limit: int | None = None
    ) -> list[Story]: ...

    def stories_by_id(self, story_ids: Sequence[str]) -> list[Story]: ...

    def story_dates(self, tag: str, since: datetime | None = None) -> dict[str, datetime]: ...

    def tag_names(self) -> list[str]: ...

    def source_health(self, since: datetime) -> dict[str, SourceHealth]: ...


def read_site(store: SiteSource, settings: Settings, public_dir: Path, now: datetime) -> SiteData:
    """Everything `publish` needs, read from the store: the edge where publishing does I/O."""
    limit = settings.publish.max_items
    topic = settings.publish.topic
    zone = ZoneInfo(settings.timezone)
    tags = dict.fromkeys([*(rule.name for rule in settings.tags), *store.tag_names()])
    existing = {path.stem for path in (public_dir / ARCHIVE_DIR).glob("*-W*.html")}
    last = Manifest.read(public_dir).archive
    counts, week_ids = count_archive(store, topic, zone, existing, last, now) if topic else ({}, {})
    week_stories = store.stories_by_id([i for ids in week_ids.values() for i in ids])
    by_id = {story.id: story for story in week_stories}
    health = store.source_health(now - timedelta(days=RECENT_DAYS))
    return SiteData(
        topic=store.stories(tag=topic, limit=limit) if topic else (),
        everything=store.stories(limit=limit),
        tags={tag: store.stories(tag=tag, limit=limit) for tag in tags},
        weeks={w: [by_id[i] for i in ids if i in by_id] for w, ids in week_ids.items()},
        week_counts=counts,
        sources=[health[s.id] for s in settings.sources if s.id in health],
    )


def count_archive(
    store: SiteSource,
    topic: str,
    zone: ZoneInfo,
    existing: Collection[str],
    last: ArchiveCounts | None,
    now: datetime,
) -> tuple[dict[str, int], dict[str, list[str]]]:
    """`plan_archive` of the topic's stories, reading only the recent ones when it can.

    With the counts the last publish recorded for this topic and zone, the weeks from
    `ARCHIVE_RECENT_WEEKS` before now (or before that publish, if earlier) on are counted
    again, from the stories with a tagged entry up to `STORY_SPAN` before them; older weeks
    keep the count recorded, as their pages keep their stories (see `plan_archive`), so what
    a publish reads does not grow with the history. Without such counts, or when an older
    week's page is missing and must be written again, every story of the topic is read.
    """
    if last is not None and (last.topic, last.timezone) == (topic, zone.key):
        first_recounted = min(_first_recounted_week(now, zone), last.counted_from)
        since = _week_start_utc(first_recounted, zone)
        kept = {week: n for week, n in last.weeks.items() if week < first_recounted}
        if all(week in existing for week in kept):
            dates = store.story_dates(topic, since=since - STORY_SPAN)
            recent = {story_id: at for story_id, at in dates.items() if _utc(at) >= since}
            counts, wanted = plan_archive(recent, zone, existing)
            return dict(sorted({**kept, **counts}.items(), reverse=True)), wanted
    return plan_archive(store.story_dates(topic), zone, existing)


def _first_recounted_week(now: datetime, zone: ZoneInfo) -> str:
    """The oldest of the `ARCHIVE_RECENT_WEEKS` weeks up to `now`'s, counted on every publish."""
    day = _utc(now).astimezone(zone).date()
    return iso_week(day - timedelta(weeks=ARCHIVE_RECENT_WEEKS - 1))


def _week_start_utc(week: str, zone: ZoneInfo) -> datetime:
    """Monday 00:00 of `week` in `zone`, as UTC."""
    start = week_start(week)
    return datetime(start.year, start.month, start.day, tzinfo=zone).astimezone(UTC)


def plan_archive(
    story_dates: Mapping[str, datetime],
    zone: tzinfo,
    existing: Collection[str],
    recent: int = ARCHIVE_RECENT_WEEKS,
) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Stories per ISO week, and the story ids of each archive page to write.

    `story_dates` maps story ids to their lead's publication time; `existing` names the week
    pages already written. The `recent` newest weeks are always rewritten (stories still join
    them); an older week only when its page is missing, so a publish stays cheap as years pass.
    """
    ids: dict[str, list[str]] = {}
    for story_id, published in sorted(
        story_dates.items(), key=lambda kv: (kv[1], kv[0]), reverse=True
    ):  # newest first, as the pages list them
        ids.setdefault(iso_week(_utc(published).astimezone(zone).date()), []).append(story_id)
    counts = {week: len(members) for week, members in sorted(ids.items(), reverse=True)}
    newest = sorted(counts, reverse=True)[:recent]
    wanted = {w: ids[w] for w in counts if w in newest or w not in existing}
    return counts, wanted


# --- data shared by every output ------------------------------------------------------------


def feed_meta(
    base_url: str,
    stem: str,
    title: str,
    description: str,
    page: str,
    items: Sequence[FeedItem],
    now: datetime,
) -> FeedMeta:
    updated = max((item.updated for item in items), default=None) or _utc(now)
    return FeedMeta(
        title=title,
        description=description,
        home_url=base_url if page == INDEX_FILE else urljoin(base_url, page),
        atom_url=urljoin(base_url, f"{stem}.atom"),
        rss_url=urljoin(base_url, f"{stem}.rss"),
        json_url=urljoin(base_url, f"{stem}.json"),
        xsl_href="../" * stem.count("/") + XSL_FILE,
        updated=updated,
    )


def story_entry_id(story: Story) -> str:
    """The anchor member's entry id: the first seen, then the smallest id (see the docstring)."""
    if not story.others:
        return story.lead.entry.id
    anchor = min(story.members, key=lambda m: (_utc(m.entry.first_seen), m.entry.id))
    return anchor.entry.id


def feed_item(story: Story, base_url: str, zone: tzinfo) -> FeedItem:
    lead = story.lead.entry
    anchor_id = story_entry_id(story)
    anchor = entry_anchor(anchor_id)
    own_link = _entry_link(story.lead)
    summary_text = _xml_chars(lead.summary_text).strip()
    published = _utc(lead.published)
    week = iso_week(published.astimezone(zone).date())
    # A story changes when its lead is edited and when another outlet's report joins it.
    updated = max(published, _utc(lead.updated)) if lead.updated else published
    for other in story.others:
        updated = max(updated, _utc(other.entry.first_seen))
        if other.entry.updated:
            updated = max(updated, _utc(other.entry.updated))
    source_name = _source_name(story.lead)
    also = tuple(Mention(_source_name(m), _entry_link(m)) for m in story.others)
    summary_html = _xml_chars(lead.summary_html).strip()  # sanitized when stored
    return FeedItem(
        id=entry_urn(anchor_id),
        anchor=anchor,
        week=week,
        url=own_link or urljoin(base_url, f"{ARCHIVE_DIR}/{week}.html#{anchor}"),
        has_own_link=own_link is not None,
        title=_clean_text(lead.title) or excerpt(summary_text, 80) or UNTITLED,
        source_name=source_name,
        also=also,
        # A summary the current sanitizer cleaned when it was stored is used as it is, unless
        # characters XML cannot hold had to be taken out of it (a <pre> losing its content may
        # then lose its first newline to the parser): clean_html's output is a fixed point, so
        # a second pass would give it back unchanged, at ~30 µs a story. Any other summary
        # (stored by an older version, restored from a backup, built by hand) is cleaned again.
        # The credits are safe as written.
        content_html=(
            summary_html
            if story.lead.sanitized and summary_html == lead.summary_html
            else clean_html(summary_html)
        )
        + _reported_by_html(source_name, own_link, also),
        summary_text=summary_text,
        published=published,
        updated=updated,
        tags=tuple(dict.fromkeys(filter(None, map(_clean_text, story.tags)))),
        published_iso=published.isoformat(),
        updated_iso=updated.isoformat(),
    )


def _reported_by_html(source_name: str, url: str | None, also: Sequence[Mention]) -> str:
    """ "Reported by X. Also reported by: Y, Z." as the sanitizer would write it.

    Names are escaped and links (absolute http(s), see `_web_url`) carry rel="noopener
    noreferrer", exactly as nh3 serializes them, so appending this to cleaned HTML gives what
    cleaning the whole would (tests/test_publish.py checks that).
    """

    def mention(name: str, link: str | None) -> str:
        text = _html_text(name)
        if not link:
            return text
        return f'<a href="{_html_attribute(link)}" rel="noopener noreferrer">{text}</a>'

    parts = [f"<p>Reported by {mention(source_name, url)}."]
    if also:
        others = ", ".join(mention(m.source_name, m.url) for m in also)
        parts.append(f" Also reported by: {others}.")
    return "".join(parts) + "</p>"


def _html_text(text: str) -> str:
    """Escaped as html5ever (nh3) escapes text."""
    return (
        text.replace("&", "&amp;")
        .replace("\xa0", "&nbsp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
    )


def _html_attribute(value: str) -> str:
    """Escaped as html5ever (nh3) escapes a double-quoted attribute value."""
    return _html_text(value).replace('"', "&quot;")


def entry_urn(entry_id: str) -> str:
    """The feed id for an entry id: derived from Entry.id only, so it never changes."""
    if _URN_SAFE.fullmatch(entry_id):
        return ENTRY_URN_PREFIX + entry_id  # what quote() leaves alone
    return ENTRY_URN_PREFIX + quote(entry_id, safe=":-._~")


def entry_anchor(entry_id: str) -> str:
    """A short HTML id for the entry, safe whatever characters Entry.id holds."""
    return "e-" + hashlib.sha256(entry_id.encode("utf-8")).hexdigest()[:16]


def tag_slug(tag: str) -> str:
    """The file name stem for a tag: the tag itself when it is a safe name, else a hash."""
    if _SAFE_SLUG.match(tag):
        return tag
    return "t-" + hashlib.sha256(tag.encode("utf-8")).hexdigest()[:12]


def iso_week(day: date) -> str:
    """ "2024-W21": the ISO year and week, the archive's page name."""
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


def week_start(week: str) -> date:
    match = _WEEK_KEY.match(week)
    if not match:
        raise ValueError(f"not an ISO week: {week!r}")
    return date.fromisocalendar(int(match[1]), int(match[2]), 1)


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """`text` on one line, cut to about `limit` characters at a word boundary when there is one."""
    text = _collapse_spaces(text).strip()
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    if space > limit * 0.7:  # Chinese has no spaces: cut mid-run rather than lose half the text
        cut = cut[:space]
    return cut.rstrip(" ,;:.-–—、，。") + "…"


def _source_name(stored: StoredEntry) -> str:
    return _clean_text(stored.source_name) or stored.entry.source_id


def _entry_link(stored: StoredEntry) -> str | None:
    return _web_url(stored.entry.link) or _web_url(stored.entry.canonical_url)


def _clean_text(text: str | None) -> str:
    if not text:
        return ""
    if "  " not in text and not _NOT_XML_OR_CONTROL.search(text):
        return text.strip()  # the common case: nothing to remove or collapse
    return _collapse_spaces(_NOT_XML_CHAR.sub("", text)).strip()


def _xml_chars(text: str) -> str:
    """`text` without the characters XML 1.0 forbids."""
    if text.isascii():  # then only C0 controls can be wrong: a bytes pass finds them faster
        raw = text.encode()
        if len(raw.translate(None, _ASCII_NOT_XML)) == len(raw):
            return text
    return _NOT_XML_CHAR.sub("", text)


def _collapse_spaces(text: str) -> str:
    """Each run of ASCII whitespace as one space. (`in` is many times faster than a regex.)"""
    if "  " in text or "\n" in text or "\t" in text or "\r" in text or "\f" in text or "\v" in text:
        return _SPACES.sub(" ", text)
    return text


def _web_url(url: str | None) -> str | None:
    """`url` if it is an absolute http(s) URL; anything else (javascript:, relative) is dropped."""
    if not url:
        return None
    url = url.strip()
    if _PLAIN_WEB_URL.fullmatch(url):  # what urlsplit and the checks below surely accept
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    web = parts.scheme.lower() in ("http", "https") and bool(parts.netloc)
    if web and url.isprintable() and not any(c in url for c in ' "<>`\\{}|^'):
        return url
    return None


def _utc(moment: datetime) -> datetime:
    """`moment` in UTC to the second; a naive value is taken to be UTC already."""
    if moment.tzinfo is UTC and not moment.microsecond:
        return moment  # as the store gives them
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def rfc3339(moment: datetime) -> str:
    return _zulu(_utc(moment).isoformat())


def _zulu(iso: str) -> str:
    """An ISO 8601 UTC time with "Z" for "+00:00", as JSON Feed and the pages write it."""
    return iso[:-6] + "Z" if iso.endswith("+00:00") else iso


# --- Atom, RSS and JSON Feed ----------------------------------------------------------------
#
# feedgen writes each document and its feed-level elements; the entries, the bulk of every
# feed, are written once per story (atom_entry, rss_item) and spliced in, since building them
# through feedgen for each of the ~50 feeds a story can appear in cost most of a publish.
# They are byte for byte what feedgen 1.0 writes for the same FeedItem (pretty-printed by
# lxml): tests/test_publish_feedgen.py checks that against feedgen itself.

_ATOM_END = b"</feed>\n"
_JSON = json.JSONEncoder(ensure_ascii=False)  # as json.dumps(..., ensure_ascii=False), made once
_RSS_END = b"  </channel>\n</rss>\n"
_RFC822_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def render_atom(meta: FeedMeta, entries: Sequence[bytes]) -> bytes:
    """The Atom feed around `entries`, each an `atom_entry`."""
    generator = _feed_generator(meta, self_url=meta.atom_url, self_type="application/atom+xml")
    return _with_entries(bytes(generator.atom_str(pretty=True)), _ATOM_END, entries, meta)


def render_rss(meta: FeedMeta, entries: Sequence[bytes]) -> bytes:
    """The RSS 2.0 feed around `entries`, each an `rss_item`."""
    generator = _feed_generator(meta, self_url=meta.rss_url, self_type="application/rss+xml")
    return _with_entries(bytes(generator.rss_str(pretty=True)), _RSS_END, entries, meta)


def _with_entries(document: bytes, end: bytes, entries: Sequence[bytes], meta: FeedMeta) -> bytes:
    if not document.endswith(end):
        raise AggregatorError("feedgen wrote a feed of unexpected shape")
    head = _with_stylesheet(document[: -len(end)], meta.xsl_href)
    return b"".join((head, *entries, end))  # one copy of the entries, already UTF-8


def _with_stylesheet(xml: bytes, href: str) -> bytes:
    """Insert an <?xml-stylesheet?> after the XML declaration; feedgen cannot write one."""
    declaration_end = xml.index(b"?>") + 2 if xml.startswith(b"<?xml") else 0
    instruction = f'\n<?xml-stylesheet type="text/xsl" href="{html.escape(href)}"?>'.encode()
    return xml[:declaration_end] + instruction + xml[declaration_end:]


def _feed_generator(meta: FeedMeta, *, self_url: str, self_type: str) -> Any:
    """A FeedGenerator for one output: Atom and RSS each name themselves in their self link."""
    fg = FeedGenerator()
    # dc:creator, as RSS <author> demands an email. Registered, not loaded by name: feedgen's
    # load_extension tries to import a module that does not exist, a path search each time.
    fg.register_extension("dc", DcExtension, DcEntryExtension, atom=False, rss=True)
    fg.id(meta.atom_url)
    fg.title(meta.title)
    fg.author(name=meta.title)  # Atom wants a feed author when an entry lacks one
    # The self link first: feedgen takes the RSS <link> from the last link, the home page.
    fg.link(href=self_url, rel="self", type=self_type)
    fg.link(href=meta.home_url, rel="alternate", type="text/html")
    fg.description(meta.description or meta.title)
    if meta.description:
        fg.subtitle(meta.description)
    fg.generator("aggregator", version=__version__, uri=PROJECT_URL)
    # Sets Atom <updated> and RSS <lastBuildDate>; feedgen would otherwise stamp the clock.
    fg.updated(meta.updated)
    fg.lastBuildDate(meta.updated)
    return fg


class XmlTexts(NamedTuple):
    """An item's texts escaped for XML once, for its Atom entry and its RSS item alike.

    The content, the bulk of an entry, is kept as UTF-8 and joined as bytes: an entry written
    as one string with a Chinese title would be widened to two bytes a character first, then
    encoded from there, several times the work for English text.
    """

    id: str
    title: str
    source_name: str
    content: bytes  # content_html, escaped and encoded

    @classmethod
    def of(cls, item: FeedItem) -> XmlTexts:
        return cls(
            _xml_text(item.id),
            _xml_text(item.title),
            _xml_text(item.source_name),
            _xml_text(item.content_html).encode(),
        )


def atom_entry(item: FeedItem, text: XmlTexts | None = None) -> bytes:
    """The item as feedgen writes an Atom <entry> (its entry <link> loses rel and type there)."""
    text = text or XmlTexts.of(item)
    categories = "".join(f'    <category term="{_xml_attribute(t)}"/>\n' for t in item.tags)
    head = (
        "  <entry>\n"
        f"    <id>{text.id}</id>\n"
        f"    <title>{text.title}</title>\n"
        f"    <updated>{item.updated_iso}</updated>\n"
        "    <author>\n"
        f"      <name>{text.source_name}</name>\n"
        "    </author>\n"
        '    <content type="html">'
    )
    tail = (
        "</content>\n"
        f'    <link href="{_xml_attribute(item.url)}"/>\n'
        f"{categories}"
        f"    <published>{item.published_iso}</published>\n"
        "  </entry>\n"
    )
    return b"".join((head.encode(), text.content, tail.encode()))


def rss_item(item: FeedItem, text: XmlTexts | None = None) -> bytes:
    """The item as feedgen writes an RSS <item>, with the dc extension loaded for RSS."""
    text = text or XmlTexts.of(item)
    categories = "".join(f"      <category>{_xml_text(t)}</category>\n" for t in item.tags)
    head = (
        "    <item>\n"
        f"      <title>{text.title}</title>\n"
        f"      <link>{_xml_text(item.url)}</link>\n"
        "      <description>"
    )
    tail = (
        "</description>\n"
        f'      <guid isPermaLink="false">{text.id}</guid>\n'
        f"{categories}"
        f"      <pubDate>{rfc822(item.published)}</pubDate>\n"
        f"      <dc:creator>{text.source_name}</dc:creator>\n"
        "    </item>\n"
    )
    return b"".join((head.encode(), text.content, tail.encode()))


def rfc822(moment: datetime) -> str:
    """ "Fri, 24 May 2024 09:00:00 +0000", in English whatever the locale (as feedgen writes)."""
    moment = _utc(moment)
    return (
        f"{_RFC822_DAYS[moment.weekday()]}, {moment.day:02d} {_MONTHS[moment.month - 1][:3]} "
        f"{moment.year:04d} {moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} +0000"
    )  # not "{moment:%H:%M:%S}": strftime costs as much as the rest of an RSS item


def _xml_text(text: str) -> str:
    """Escaped as libxml2 escapes element text."""
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if "\r" in text:
        text = text.replace("\r", "&#13;")
    return text


def _xml_attribute(value: str) -> str:
    """Escaped as libxml2 escapes a double-quoted attribute value."""
    value = _xml_text(value)
    if '"' in value:
        value = value.replace('"', "&quot;")
    if "\n" in value:
        value = value.replace("\n", "&#10;")
    if "\t" in value:
        value = value.replace("\t", "&#9;")
    return value


def render_json_feed(meta: FeedMeta, items: Sequence[bytes]) -> bytes:
    """The JSON Feed around `items`, each a `json_item`: as json.dumps of it all."""
    feed: dict[str, Any] = {
        "version": JSON_FEED_VERSION,
        "title": meta.title,
        "home_page_url": meta.home_url,
        "feed_url": meta.json_url,
    }
    if meta.description:
        feed["description"] = meta.description
    # No indent: the indenting encoder is pure Python and several times slower than the C one.
    head = _JSON.encode(feed)
    return b"".join((f'{head[:-1]}, "items": ['.encode(), b", ".join(items), b"]}\n"))


def json_item(item: FeedItem) -> bytes:
    """The item as json.dumps(..., ensure_ascii=False) writes its JSON Feed object.

    Written out, each string serialized alone: serializing a dict of it costs three times as
    much; the two long texts are encoded apart (see `XmlTexts`).
    tests/test_publish_fast_paths.py checks it against json.dumps.
    """
    text = encode_json_string  # what json.dumps(..., ensure_ascii=False) does with a str
    head = f'{{"id": {text(item.id)}, "url": {text(item.url)}, "title": {text(item.title)}'
    tail = [f', "date_published": {text(_zulu(item.published_iso))}']
    if item.updated != item.published:
        tail.append(f', "date_modified": {text(_zulu(item.updated_iso))}')
    names = (item.source_name, *(m.source_name for m in item.also))
    authors = ", ".join(['{"name": ' + text(name) + "}" for name in names])
    tail.append(f', "authors": [{authors}]')
    if item.tags:
        tail.append(f', "tags": [{", ".join(map(text, item.tags))}]')
    tail.append("}")
    return b"".join(
        (
            head.encode(),
            b', "content_html": ',
            text(item.content_html).encode(),
            b', "content_text": ',
            text(item.summary_text).encode(),
            "".join(tail).encode(),
        )
    )


# --- the HTML pages -------------------------------------------------------------------------


class PageLink(NamedTuple):
    label: str
    href: str


class PageStory(NamedTuple):
    anchor: str
    url: str
    has_own_link: bool
    title: str
    lang: str | None  # "zh" when the title is Chinese, so browsers pick CJK fonts
    source_name: str
    also: tuple[PageLink, ...]  # other outlets; href "" when an outlet gave no link
    time_iso: str
    time_label: str
    excerpt: str
    tags: tuple[PageLink, ...]


class StoryFacts(NamedTuple):
    """What every page shows of a story, whatever its folder and the tag it hides."""

    lang: str | None  # "zh" when the title is Chinese, so browsers pick CJK fonts
    also: tuple[PageLink, ...]  # other outlets; href "" when an outlet gave no link
    time_iso: str
    time_label: str
    excerpt: str


@dataclass(frozen=True, slots=True)
class PageWeek:
    key: str  # "2024-W21"
    label: str  # "Week 21, 2024: 20–26 May"
    href: str  # the archive page, relative to the page showing it
    stories: tuple[PageStory, ...]


@dataclass(frozen=True, slots=True)
class ChartBar:
    week: str
    label: str  # "20 May"
    count: int
    x: int
    y: int
    height: int


@dataclass(frozen=True, slots=True)
class SourceRow:
    name: str
    source_id: str
    url: str | None
    ok: bool
    status: str
    last_success: str
    last_error: str
    last_error_at: str
    failures: int
    recent: int


def read_templates(templates_dir: Path) -> dict[str, bytes]:
    """Every file in the templates folder by relative path ('/'): read once per publish, for the
    digest of the outputs' inputs and for rendering alike."""
    if not templates_dir.is_dir():
        return {}
    return {
        path.relative_to(templates_dir).as_posix(): path.read_bytes()
        for path in sorted(templates_dir.rglob("*"))
        if path.is_file()
    }


@lru_cache(maxsize=4)
def _environment(
    templates_dir: Path, templates: tuple[tuple[str, bytes], ...]
) -> jinja2.Environment:
    """Jinja2 over exactly these template sources, compiled on first use.

    Kept while the sources stay the same: a worker publishes every few minutes, and compiling
    the page templates takes some 20 ms each time.
    """
    sources = dict(templates)

    def load(name: str) -> tuple[str, str, Callable[[], bool]] | None:
        data = sources.get(name)
        if data is None:
            return None
        return data.decode("utf-8"), str(templates_dir / name), lambda: True

    return jinja2.Environment(
        loader=jinja2.FunctionLoader(load),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
    )


class Pages:
    """Renders the site's HTML from the Jinja2 templates; one instance per publish."""

    def __init__(
        self,
        settings: Settings,
        zone: ZoneInfo,
        templates_dir: Path,
        templates: Mapping[str, bytes],
        now: datetime,
    ):
        self.settings = settings
        self.zone = zone
        self.now = now
        self.templates_dir = templates_dir
        self.templates = templates
        self.tag_slugs: dict[str, str] = {}
        self._facts: dict[str, StoryFacts] = {}  # by feed id, for every page showing it
        self.title = _clean_text(settings.publish.title) or "aggregator"
        self.environment = _environment(templates_dir, tuple(templates.items()))

    def raw(self, name: str) -> bytes:
        data = self.templates.get(name)
        if data is None:
            raise AggregatorError(f"template {name} not found in {self.templates_dir}")
        return data

    def _render(self, template_name: str, depth: int, **context: Any) -> bytes:
        try:
            template = self.environment.get_template(template_name)
        except jinja2.TemplateNotFound:
            raise AggregatorError(
                f"template {template_name} not found in {self.templates_dir}"
            ) from None
        root = "../" * depth
        feeds = context.pop("feeds", None) or self._feeds(root, TOPIC_FEED, self.title)
        html_text = template.render(
            site_title=self.title,
            description=_clean_text(self.settings.publish.description),
            root=root,
            feeds=feeds,
            timezone=self.zone.key,
            project_url=PROJECT_URL,
            **context,
        )
        return html_text.encode("utf-8")

    def _feeds(self, root: str, stem: str, title: str) -> list[dict[str, str]]:
        return [
            {"type": "application/atom+xml", "title": f"{title} (Atom)", "href": f"{root}{stem}.atom", "label": "Atom"},
            {"type": "application/rss+xml", "title": f"{title} (RSS)", "href": f"{root}{stem}.rss", "label": "RSS"},
            {"type": "application/feed+json", "title": f"{title} (JSON Feed)", "href": f"{root}{stem}.json", "label": "JSON Feed"},
        ]  # fmt: skip

    def _updated(self, meta: FeedMeta) -> dict[str, str]:
        local = meta.updated.astimezone(self.zone)
        return {
            "updated_iso": rfc3339(meta.updated),
            "updated_label": f"{_day_label(local)}, {local:%H:%M}",
        }

    def index(
        self,
        meta: FeedMeta,
        items: Sequence[FeedItem],
        counts: Mapping[str, int],
        hidden: str | None,
    ) -> bytes:
        return self._render(
            "index.html",
            0,
            page_title=self.title,
            count=len(items),
            weeks=self._weeks(items, "", hidden),
            chart=chart_bars(counts),
            **self._updated(meta),
        )

    def tag_page(
        self, name: str, label: str, slug: str, meta: FeedMeta, items: Sequence[FeedItem]
    ) -> bytes:
        return self._render(
            "tag.html",
            1,
            page_title=f"{label} · {self.title}",
            tag_name=name,
            tag_label=label,
            count=len(items),
            weeks=self._weeks(items, "../", name),
            feeds=self._feeds("../", f"{TAGS_DIR}/{slug}", meta.title)
            + self._feeds("../", TOPIC_FEED, self.title),
            **self._updated(meta),
        )

    def week(self, week: str, items: Sequence[FeedItem], hidden: str | None) -> bytes:
        start = week_start(week)
        weeks = self._weeks(items, "../", hidden)
        return self._render(
            "week.html",
            1,
            page_title=f"{_week_label(week)} · {self.title}",
            week_label=_week_label(week),
            start_iso=start.isoformat(),
            previous=f"{iso_week(start - timedelta(days=7))}.html",
            next=f"{iso_week(start + timedelta(days=7))}.html",
            count=len(items),
            stories=weeks[0].stories if weeks else (),
        )

    def archive(self, counts: Mapping[str, int]) -> bytes:
        weeks = [
            {"key": w, "label": _week_label(w), "href": f"{w}.html", "count": counts[w]}
            for w in sorted(counts, reverse=True)
            if _WEEK_KEY.match(w)
        ]
        return self._render("archive.html", 1, page_title=f"Archive · {self.title}", weeks=weeks)

    def sources(self, sources: Sequence[SourceHealth]) -> bytes:
        rows = [self._source_row(s) for s in sources]
        return self._render(
            "sources.html",
            0,
            page_title=f"Sources · {self.title}",
            rows=rows,
            failing=sum(1 for r in rows if not r.ok),
            recent_days=RECENT_DAYS,
        )

    def _source_row(self, health: SourceHealth) -> SourceRow:
        failing = health.consecutive_failures > 0
        if failing:
            status = f"failing ({health.consecutive_failures} in a row)"
        elif health.last_success_at:
            status = "ok"
        else:
            status = "not polled yet"
        return SourceRow(
            name=_clean_text(health.name) or health.source_id,
            source_id=health.source_id,
            url=_web_url(health.url),
            ok=not failing,
            status=status,
            last_success=self._moment(health.last_success_at),
            last_error=_clean_text(health.last_error) if failing else "",
            last_error_at=self._moment(health.last_error_at) if failing else "",
            failures=health.consecutive_failures,
            recent=health.recent_items,
        )

    def _moment(self, moment: datetime | None) -> str:
        if moment is None:
            return "never"
        local = _utc(moment).astimezone(self.zone)
        return f"{local:%Y-%m-%d %H:%M}"

    def _story_facts(self, item: FeedItem) -> StoryFacts:
        local = item.published.astimezone(self.zone)
        return StoryFacts(
            "zh" if _HAN.search(item.title) else None,
            tuple([PageLink(m.source_name, m.url or "") for m in item.also]),
            _zulu(item.published_iso),
            f"{_day_label(local)}, {local.hour:02d}:{local.minute:02d}",
            excerpt(item.summary_text),
        )

    def _weeks(
        self, items: Sequence[FeedItem], root: str, hidden: str | None
    ) -> tuple[PageWeek, ...]:
        """The items grouped by ISO week in the configured zone, in the order given.

        `hidden` is left off the tag labels: the page's own tag is on every story.
        """
        groups: dict[str, list[PageStory]] = {}
        archive = f"{root}{ARCHIVE_DIR}/"
        tag_links: dict[str, PageLink | None] = {}
        for item in items:
            facts = self._facts.get(item.id)
            if facts is None:
                facts = self._facts[item.id] = self._story_facts(item)
            tags = []
            for tag in item.tags:
                if tag not in tag_links:
                    slug = self.tag_slugs.get(tag) if tag != hidden else None
                    href = f"{root}{TAGS_DIR}/{slug}.html"
                    tag_links[tag] = PageLink(tag, href) if slug is not None else None
                link = tag_links[tag]
                if link is not None:
                    tags.append(link)
            groups.setdefault(item.week, []).append(
                PageStory(
                    anchor=item.anchor,
                    url=item.url if item.has_own_link else f"{archive}{item.week}.html#{item.anchor}",
                    has_own_link=item.has_own_link,
                    title=item.title,
                    lang=facts.lang,
                    source_name=item.source_name,
                    also=facts.also,
                    time_iso=facts.time_iso,
                    time_label=facts.time_label,
                    excerpt=facts.excerpt,
                    tags=tuple(tags),
                )
            )  # fmt: skip
        return tuple(
            PageWeek(week, _week_label(week), f"{root}{ARCHIVE_DIR}/{week}.html", tuple(stories))
            for week, stories in groups.items()
        )


def chart_bars(counts: Mapping[str, int], weeks: int = CHART_WEEKS) -> tuple[ChartBar, ...]:
    """Bars for the last `weeks` ISO weeks up to the newest week with stories, zeros included."""
    known = [w for w in counts if _WEEK_KEY.match(w)]
    if not known:
        return ()
    newest = week_start(max(known))
    top = max(max(counts[w] for w in known), 1)
    bars = []
    for n in range(weeks):
        start = newest - timedelta(days=7 * (weeks - 1 - n))
        key = iso_week(start)
        count = counts.get(key, 0)
        height = round(80 * count / top)
        bars.append(
            ChartBar(key, f"{start.day} {_MONTHS[start.month - 1][:3]}", count, n * 30, 90 - height, height)
        )  # fmt: skip
    return tuple(bars)


def _day_label(local: datetime | date) -> str:
    # Our own names, not strftime's: the page must not change with the process locale.
    return f"{_WEEKDAYS[local.weekday()]}, {local.day} {_MONTHS[local.month - 1]} {local.year}"


def _week_label(week: str) -> str:
    start = week_start(week)
    end = start + timedelta(days=6)
    first = (
        f"{start.day} {_MONTHS[start.month - 1]}" if start.month != end.month else f"{start.day}"
    )
    if start.year != end.year:
        first += f" {start.year}"
    return (
        f"Week {int(week[-2:])}, {week[:4]}: {first}–{end.day} {_MONTHS[end.month - 1]} {end.year}"
    )


# --- atomic writes --------------------------------------------------------------------------


class StagedWrites:
    """Files replaced whole, many at once: readers, and the disk after a crash, find each
    one old or new, never a part.

    `stage` writes the new bytes to a temporary file beside the file (in threads, while the
    caller renders the next ones) and, every `FLUSH_BATCH` files, starts flushing them to disk,
    their fsyncs at once: the file system commits them together, where one fsync after another
    waits for a journal commit each. `commit` waits for the flushes, then renames every file
    into place; leaving the block early removes the temporary files.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="publish")
        self._staged: list[tuple[Path, Future[str | None]]] = []
        self._unflushed: list[Future[str | None]] = []
        self._flushing: list[Future[None]] = []

    def __enter__(self) -> StagedWrites:
        return self

    def __exit__(self, kind: type[BaseException] | None, *details: object) -> None:
        self._pool.shutdown(wait=True)
        if kind is not None:
            for _, future in self._staged:  # those renamed are gone already
                if not future.cancelled() and future.exception() is None:
                    temporary = future.result()
                    if temporary is not None:
                        _discard_file(temporary)

    def stage(self, path: Path, data: bytes) -> None:
        future = self._pool.submit(_stage, path, data)
        self._staged.append((path, future))
        self._unflushed.append(future)
        if len(self._unflushed) >= FLUSH_BATCH:
            self._flush()

    def _flush(self) -> None:
        self._flushing += [self._pool.submit(_flush, future) for future in self._unflushed]
        self._unflushed = []

    def commit(self) -> tuple[list[Path], list[Path]]:
        """Put every staged file in place: the paths written, and those that held the bytes."""
        self._flush()
        for flushing in self._flushing:
            flushing.result()
        written: list[Path] = []
        unchanged: list[Path] = []
        for path, future in self._staged:
            temporary = future.result()
            if temporary is None:
                unchanged.append(path)
            else:
                _replace(temporary, path)
                written.append(path)
        for directory in dict.fromkeys(path.parent for path in written):
            _fsync_directory(directory)  # once per folder, not once per file
        return written, unchanged


def write_if_changed(path: Path, data: bytes) -> bool:
    """Replace `path` with `data` atomically unless it already holds exactly those bytes.

    Readers see the old file or the new one, never a part, and so does the disk after a crash;
    returns whether it wrote. `publish` does the same steps for many files at once.
    """
    temporary = _stage(path, data)
    if temporary is None:
        return False
    try:
        _fsync_file(temporary)
        _replace(temporary, path)
    except BaseException:
        _discard_file(temporary)
        raise
    _fsync_directory(path.parent)
    return True


def _stage(path: Path, data: bytes) -> str | None:
    """A new temporary file beside `path` holding `data`, not yet flushed to disk; None when
    `path` already holds exactly those bytes."""
    try:
        if path.read_bytes() == data:
            return None
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            os.fchmod(file.fileno(), 0o644)  # mkstemp makes 0600; a web server must read it
    except BaseException:
        _discard_file(temporary)
        raise
    return temporary


def _flush(staged: Future[str | None]) -> None:
    """Flush a staged temporary file to disk, once it is written."""
    temporary = staged.result()
    if temporary is not None:
        _fsync_file(temporary)


def _fsync_file(name: str) -> None:
    fd = os.open(name, os.O_WRONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace(temporary: str, path: Path) -> None:
    """Put the flushed temporary file in the place of `path`, in one step."""
    checkpoint("publish")  # crash tests: a kill here must leave the old file whole
    os.replace(temporary, path)


def _discard_file(temporary: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(temporary)


def _remove_stale_temporaries(public_dir: Path) -> None:
    """Remove the temporary files of a publish killed before it renamed them.

    Only those older than `STALE_TEMP_SECONDS`: a younger one may belong to a publish running
    now (`aggregator publish` beside the worker).
    """
    stale_before = time.time() - STALE_TEMP_SECONDS
    for directory in (public_dir, public_dir / TAGS_DIR, public_dir / ARCHIVE_DIR):
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX):
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime < stale_before:
                        os.unlink(entry.path)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable. Some file systems refuse to fsync a directory; the rename stands."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
