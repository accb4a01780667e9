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

import hashlib
import html
import json
import os
import re
import tempfile
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import cached_property, partial
from pathlib import Path
from typing import Any, Protocol
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
RECENT_DAYS = 7
WRITER_THREADS = 4  # concurrent fsyncs share the file system's journal commits

# Characters XML 1.0 forbids; lxml refuses to serialize them, so one stray control
# character in a source's title would otherwise fail the whole publish.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# ASCII whitespace only: an ideographic space (U+3000) in a Chinese title is meant.
_SPACES = re.compile(r"[ \t\n\r\f\v]+")
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_SAFE_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_WEEK_KEY = re.compile(r"^(\d{4})-W(\d{2})$")

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


@dataclass(frozen=True, slots=True)
class Mention:
    """One outlet's report of a story: its name and its link (None when it gave none)."""

    source_name: str
    url: str | None


@dataclass(frozen=True, slots=True)
class FeedItem:
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
    are still the ones written then, is not rendered at all (see `Manifest`). `now` only dates
    empty feeds and the sources page's "7 days"; every other byte follows from the data.
    """
    renderer = SiteRenderer(site, settings=settings, now=now, templates_dir=templates_dir)
    manifest = Manifest.read(public_dir)
    recorded: dict[str, ManifestEntry] = {}
    writes: list[tuple[Path, str, Future[bool]]] = []
    unchanged: list[Path] = []
    try:
        # Writes (mostly waiting for fsync) overlap with rendering the next outputs.
        with ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="publish") as writer:
            for output in renderer.outputs():
                kept = manifest.still_valid(public_dir, output)
                if kept is not None:
                    recorded.update(kept)
                    unchanged.extend(public_dir / name for name in output.files)
                    continue
                for name, data in output.render().items():
                    path = public_dir / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write = writer.submit(write_if_changed, path, data, sync_directory=False)
                    writes.append((path, output.digest, write))
        written: list[Path] = []
        for path, digest, write in writes:
            (written if write.result() else unchanged).append(path)
            recorded[path.relative_to(public_dir).as_posix()] = ManifestEntry.of(digest, path)
        for directory in dict.fromkeys(path.parent for path in written):
            _fsync_directory(directory)  # once per folder, not once per file
        # Last: it vouches for files that are now in place.
        Manifest(recorded).write(public_dir)
    except OSError as exc:
        where = exc.filename or public_dir
        raise AggregatorError(f"cannot write {where}: {exc.strerror or exc}") from exc
    return PublishReport(
        written=tuple(written), unchanged=tuple(unchanged), entries=renderer.topic_entries
    )


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

    FORMAT = 1

    @classmethod
    def read(cls, public_dir: Path) -> Manifest:
        try:
            data = json.loads((public_dir / MANIFEST_FILE).read_bytes())
            if data.get("format") != cls.FORMAT:
                return cls({})
            return cls(
                {
                    name: ManifestEntry(str(digest), int(size), int(inode))
                    for name, (digest, size, inode) in data["files"].items()
                }
            )
        except (OSError, ValueError, TypeError, AttributeError, KeyError):
            return cls({})

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
        data = json.dumps({"format": self.FORMAT, "files": files}, separators=(",", ":"))
        public_dir.mkdir(parents=True, exist_ok=True)
        write_if_changed(public_dir / MANIFEST_FILE, data.encode("utf-8") + b"\n")


class StoryPieces:
    """One story's rendered pieces, built on first use and shared by every output showing it.

    Keyed by the story's feed id, like `unique`: the first occurrence in a publish is the one
    shown everywhere.
    """

    def __init__(self, story: Story, base_url: str, zone: tzinfo) -> None:
        self.story = story
        self.base_url = base_url
        self.zone = zone

    @cached_property
    def digest(self) -> bytes:
        """Of every field `feed_item` reads: equal digests give equal pieces."""
        fields: list[str] = []
        for member in self.story.members:
            entry = member.entry
            fields += (
                entry.id, entry.source_id, member.source_name, entry.link or "",
                entry.canonical_url or "", entry.title, entry.summary_html, entry.summary_text,
                str(entry.published), str(entry.updated), str(entry.first_seen),
                "\x1e".join(entry.tags),
            )  # fmt: skip
        text = "\x1f".join(fields).encode("utf-8", "surrogatepass")
        return hashlib.blake2b(text, digest_size=16).digest()

    @cached_property
    def item(self) -> FeedItem:
        return feed_item(self.story, self.base_url, self.zone)

    @cached_property
    def atom(self) -> str:
        return atom_entry(self.item)

    @cached_property
    def rss(self) -> str:
        return rss_item(self.item)

    @cached_property
    def json(self) -> str:
        return json.dumps(_json_item(self.item), ensure_ascii=False)


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
        self.pages = Pages(settings, self.zone, templates_dir, now)
        self.pages.tag_slugs = {name: tag_slug(name) for name in sorted(site.tags)}
        self._pieces: dict[str, StoryPieces] = {}
        self._version = _render_version(settings, templates_dir, self.pages.tag_slugs)
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
        counts = tuple(sorted(self.site.week_counts.items()))
        now = "" if stories or not dated else rfc3339(self.now)
        digest = self._digest((path, *params, counts, now), stories)
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


def _render_version(settings: Settings, templates_dir: Path, tag_slugs: Mapping[str, str]) -> bytes:
    """What every output depends on besides its stories: code, templates and settings."""
    digest = hashlib.blake2b(digest_size=16)
    for module in (__file__, sanitize.__file__):
        digest.update(Path(module).read_bytes())
    if templates_dir.is_dir():
        for path in sorted(templates_dir.iterdir()):
            if path.is_file():
                digest.update(f"\0{path.name}\0".encode() + path.read_bytes())
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

    def story_dates(self, tag: str) -> dict[str, datetime]: ...

    def tag_names(self) -> list[str]: ...

    def source_health(self, since: datetime) -> dict[str, SourceHealth]: ...


def read_site(store: SiteSource, settings: Settings, public_dir: Path, now: datetime) -> SiteData:
    """Everything `publish` needs, read from the store: the edge where publishing does I/O."""
    limit = settings.publish.max_items
    topic = settings.publish.topic
    zone = ZoneInfo(settings.timezone)
    tags = dict.fromkeys([*(rule.name for rule in settings.tags), *store.tag_names()])
    existing = {path.stem for path in (public_dir / ARCHIVE_DIR).glob("*-W*.html")}
    counts, week_ids = plan_archive(store.story_dates(topic) if topic else {}, zone, existing)
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
    anchor = min(story.members, key=lambda m: (_utc(m.entry.first_seen), m.entry.id))
    return anchor.entry.id


def feed_item(story: Story, base_url: str, zone: tzinfo) -> FeedItem:
    lead = story.lead.entry
    anchor_id = story_entry_id(story)
    anchor = entry_anchor(anchor_id)
    own_link = _entry_link(story.lead)
    summary_text = _NOT_XML_CHAR.sub("", lead.summary_text).strip()
    published = _utc(lead.published)
    week = iso_week(published.astimezone(zone).date())
    # A story changes when its lead is edited and when another outlet's report joins it.
    changes = [published, *([_utc(lead.updated)] if lead.updated else [])]
    for other in story.others:
        changes.append(_utc(other.entry.first_seen))
        if other.entry.updated:
            changes.append(_utc(other.entry.updated))
    source_name = _source_name(story.lead)
    also = tuple(Mention(_source_name(m), _entry_link(m)) for m in story.others)
    summary_html = _NOT_XML_CHAR.sub("", lead.summary_html).strip()  # sanitized when stored
    return FeedItem(
        id=entry_urn(anchor_id),
        anchor=anchor,
        week=week,
        url=own_link or urljoin(base_url, f"{ARCHIVE_DIR}/{week}.html#{anchor}"),
        has_own_link=own_link is not None,
        title=_clean_text(lead.title) or excerpt(summary_text, 80) or UNTITLED,
        source_name=source_name,
        also=also,
        # The summary is cleaned again so that every output is sanitized whatever the store
        # holds (one nh3 pass when it is clean already); the credits are safe as written.
        content_html=clean_html(summary_html) + _reported_by_html(source_name, own_link, also),
        summary_text=summary_text,
        published=published,
        updated=max(changes),
        tags=tuple(dict.fromkeys(t for t in map(_clean_text, story.tags) if t)),
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
    text = _SPACES.sub(" ", text).strip()
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
    return _SPACES.sub(" ", _NOT_XML_CHAR.sub("", text or "")).strip()


def _web_url(url: str | None) -> str | None:
    """`url` if it is an absolute http(s) URL; anything else (javascript:, relative) is dropped."""
    if not url:
        return None
    url = url.strip()
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
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def rfc3339(moment: datetime) -> str:
    return _utc(moment).isoformat().replace("+00:00", "Z")


# --- Atom, RSS and JSON Feed ----------------------------------------------------------------
#
# feedgen writes each document and its feed-level elements; the entries, the bulk of every
# feed, are written once per story (atom_entry, rss_item) and spliced in, since building them
# through feedgen for each of the ~50 feeds a story can appear in cost most of a publish.
# They are byte for byte what feedgen 1.0 writes for the same FeedItem (pretty-printed by
# lxml): tests/test_publish_feedgen.py checks that against feedgen itself.

_ATOM_END = b"</feed>\n"
_RSS_END = b"  </channel>\n</rss>\n"
_RFC822_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def render_atom(meta: FeedMeta, entries: Sequence[str]) -> bytes:
    """The Atom feed around `entries`, each an `atom_entry`."""
    generator = _feed_generator(meta, self_url=meta.atom_url, self_type="application/atom+xml")
    return _with_entries(bytes(generator.atom_str(pretty=True)), _ATOM_END, entries, meta)


def render_rss(meta: FeedMeta, entries: Sequence[str]) -> bytes:
    """The RSS 2.0 feed around `entries`, each an `rss_item`."""
    generator = _feed_generator(meta, self_url=meta.rss_url, self_type="application/rss+xml")
    return _with_entries(bytes(generator.rss_str(pretty=True)), _RSS_END, entries, meta)


def _with_entries(document: bytes, end: bytes, entries: Sequence[str], meta: FeedMeta) -> bytes:
    if not document.endswith(end):
        raise AggregatorError("feedgen wrote a feed of unexpected shape")
    body = "".join(entries).encode("utf-8")
    return _with_stylesheet(document[: -len(end)] + body + end, meta.xsl_href)


def _with_stylesheet(xml: bytes, href: str) -> bytes:
    """Insert an <?xml-stylesheet?> after the XML declaration; feedgen cannot write one."""
    declaration_end = xml.index(b"?>") + 2 if xml.startswith(b"<?xml") else 0
    instruction = f'\n<?xml-stylesheet type="text/xsl" href="{html.escape(href)}"?>'.encode()
    return xml[:declaration_end] + instruction + xml[declaration_end:]


def _feed_generator(meta: FeedMeta, *, self_url: str, self_type: str) -> Any:
    """A FeedGenerator for one output: Atom and RSS each name themselves in their self link."""
    fg = FeedGenerator()
    fg.load_extension("dc", atom=False, rss=True)  # dc:creator: RSS <author> demands an email
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


def atom_entry(item: FeedItem) -> str:
    """The item as feedgen writes an Atom <entry> (its entry <link> loses rel and type there)."""
    categories = "".join(f'    <category term="{_xml_attribute(t)}"/>\n' for t in item.tags)
    return (
        "  <entry>\n"
        f"    <id>{_xml_text(item.id)}</id>\n"
        f"    <title>{_xml_text(item.title)}</title>\n"
        f"    <updated>{item.updated.isoformat()}</updated>\n"
        "    <author>\n"
        f"      <name>{_xml_text(item.source_name)}</name>\n"
        "    </author>\n"
        f'    <content type="html">{_xml_text(item.content_html)}</content>\n'
        f'    <link href="{_xml_attribute(item.url)}"/>\n'
        f"{categories}"
        f"    <published>{item.published.isoformat()}</published>\n"
        "  </entry>\n"
    )


def rss_item(item: FeedItem) -> str:
    """The item as feedgen writes an RSS <item>, with the dc extension loaded for RSS."""
    categories = "".join(f"      <category>{_xml_text(t)}</category>\n" for t in item.tags)
    return (
        "    <item>\n"
        f"      <title>{_xml_text(item.title)}</title>\n"
        f"      <link>{_xml_text(item.url)}</link>\n"
        f"      <description>{_xml_text(item.content_html)}</description>\n"
        f'      <guid isPermaLink="false">{_xml_text(item.id)}</guid>\n'
        f"{categories}"
        f"      <pubDate>{rfc822(item.published)}</pubDate>\n"
        f"      <dc:creator>{_xml_text(item.source_name)}</dc:creator>\n"
        "    </item>\n"
    )


def rfc822(moment: datetime) -> str:
    """ "Fri, 24 May 2024 09:00:00 +0000", in English whatever the locale (as feedgen writes)."""
    moment = _utc(moment)
    return (
        f"{_RFC822_DAYS[moment.weekday()]}, {moment.day:02d} {_MONTHS[moment.month - 1][:3]} "
        f"{moment.year:04d} {moment:%H:%M:%S} +0000"
    )


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


def render_json_feed(meta: FeedMeta, items: Sequence[str]) -> bytes:
    """The JSON Feed around `items`, each a serialized `_json_item`: as json.dumps of it all."""
    feed: dict[str, Any] = {
        "version": JSON_FEED_VERSION,
        "title": meta.title,
        "home_page_url": meta.home_url,
        "feed_url": meta.json_url,
    }
    if meta.description:
        feed["description"] = meta.description
    # No indent: the indenting encoder is pure Python and several times slower than the C one.
    head = json.dumps(feed, ensure_ascii=False)
    return f'{head[:-1]}, "items": [{", ".join(items)}]}}\n'.encode()


def _json_item(item: FeedItem) -> dict[str, Any]:
    data: dict[str, Any] = {"id": item.id, "url": item.url, "title": item.title}
    data["content_html"] = item.content_html
    data["content_text"] = item.summary_text
    data["date_published"] = rfc3339(item.published)
    if item.updated != item.published:
        data["date_modified"] = rfc3339(item.updated)
    data["authors"] = [{"name": item.source_name}] + [{"name": m.source_name} for m in item.also]
    if item.tags:
        data["tags"] = list(item.tags)
    return data


# --- the HTML pages -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PageLink:
    label: str
    href: str


@dataclass(frozen=True, slots=True)
class PageStory:
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


class Pages:
    """Renders the site's HTML from the Jinja2 templates; one instance per publish."""

    def __init__(self, settings: Settings, zone: ZoneInfo, templates_dir: Path, now: datetime):
        self.settings = settings
        self.zone = zone
        self.now = now
        self.templates_dir = templates_dir
        self.tag_slugs: dict[str, str] = {}
        self.title = _clean_text(settings.publish.title) or "aggregator"
        self.environment = jinja2.Environment(
            loader=jinja2.FileSystemLoader(templates_dir),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )

    def raw(self, name: str) -> bytes:
        try:
            return (self.templates_dir / name).read_bytes()
        except OSError:
            raise AggregatorError(f"template {name} not found in {self.templates_dir}") from None

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

    def _weeks(
        self, items: Sequence[FeedItem], root: str, hidden: str | None
    ) -> tuple[PageWeek, ...]:
        """The items grouped by ISO week in the configured zone, in the order given.

        `hidden` is left off the tag labels: the page's own tag is on every story.
        """
        groups: dict[str, list[PageStory]] = {}
        for item in items:
            local = item.published.astimezone(self.zone)
            groups.setdefault(item.week, []).append(
                PageStory(
                    anchor=item.anchor,
                    url=item.url if item.has_own_link else f"{root}{ARCHIVE_DIR}/{item.week}.html#{item.anchor}",
                    has_own_link=item.has_own_link,
                    title=item.title,
                    lang="zh" if _HAN.search(item.title) else None,
                    source_name=item.source_name,
                    also=tuple(PageLink(m.source_name, m.url or "") for m in item.also),
                    time_iso=rfc3339(item.published),
                    time_label=f"{_day_label(local)}, {local:%H:%M}",
                    excerpt=excerpt(item.summary_text),
                    tags=tuple(
                        PageLink(tag, f"{root}{TAGS_DIR}/{self.tag_slugs[tag]}.html")
                        for tag in item.tags
                        if tag != hidden and tag in self.tag_slugs
                    ),
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


def write_if_changed(path: Path, data: bytes, *, sync_directory: bool = True) -> bool:
    """Replace `path` with `data` atomically unless it already holds exactly those bytes.

    Readers see the old file or the new one, never a part; returns whether it wrote.
    `sync_directory=False` leaves making the rename durable to the caller (one fsync per folder).
    """
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as temp:
            temp.write(data)
            temp.flush()
            os.fchmod(temp.fileno(), 0o644)  # mkstemp makes 0600; a web server must read it
            os.fsync(temp.fileno())
        checkpoint("publish")  # crash tests: a kill here must leave the old file whole
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    if sync_directory:
        _fsync_directory(path.parent)
    return True


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
