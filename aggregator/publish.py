"""Publishing: the curated entries as Atom, RSS 2.0, JSON Feed 1.1 and one HTML page, written
atomically and only when their bytes change. Input is plain data; no database here."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit
from zoneinfo import ZoneInfo

import jinja2
from feedgen.feed import FeedGenerator

from aggregator import PROJECT_URL, __version__
from aggregator.errors import AggregatorError
from aggregator.models import StoredEntry
from aggregator.settings import Settings

ATOM_FILE = "feed.atom"
RSS_FILE = "feed.rss"
JSON_FILE = "feed.json"
INDEX_FILE = "index.html"
PAGE_TEMPLATE = "page.html"

JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
ENTRY_URN_PREFIX = "urn:aggregator:entry:"
EXCERPT_CHARS = 300
UNTITLED = "(untitled)"

# Characters XML 1.0 forbids; lxml refuses to serialize them, so one stray control
# character in a source's title would otherwise fail the whole publish.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# ASCII whitespace only: an ideographic space (U+3000) in a Chinese title is meant.
_SPACES = re.compile(r"[ \t\n\r\f\v]+")
_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

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
    entries: int = 0


@dataclass(frozen=True, slots=True)
class FeedMeta:
    """Feed-level facts every output shares."""

    title: str
    description: str
    home_url: str  # the index page
    atom_url: str
    rss_url: str
    json_url: str
    updated: datetime  # UTC; the newest entry's date, so unchanged entries give unchanged files


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One entry as every output shows it: identifier, link, text and dates settled once."""

    id: str  # urn:aggregator:entry:..., stable across publishes
    anchor: str  # the HTML id of the entry on the index page
    url: str  # absolute http(s): the entry's own link, else its anchor on the index page
    has_own_link: bool
    title: str  # plain text, never empty
    source_name: str
    summary_html: str  # sanitized upstream
    summary_text: str
    published: datetime  # UTC, whole seconds
    updated: datetime  # UTC, whole seconds, never before `published`
    tags: tuple[str, ...]


# --- the stage ------------------------------------------------------------------------------


def publish(
    entries: Sequence[StoredEntry],
    *,
    settings: Settings,
    public_dir: Path,
    now: datetime,
    templates_dir: Path,
) -> PublishReport:
    """Write feed.atom, feed.rss, feed.json and index.html into `public_dir`.

    `entries` are the curated topic's entries, newest first, already limited. `now` only
    dates a feed that has no entries; otherwise every byte follows from the entries.
    """
    unique = unique_entries(entries)
    files = render_site(unique, settings=settings, now=now, templates_dir=templates_dir)
    written: list[Path] = []
    unchanged: list[Path] = []
    try:
        public_dir.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            path = public_dir / name
            (written if write_if_changed(path, data) else unchanged).append(path)
    except OSError as exc:
        where = exc.filename or public_dir
        raise AggregatorError(f"cannot write {where}: {exc.strerror or exc}") from exc
    return PublishReport(written=tuple(written), unchanged=tuple(unchanged), entries=len(unique))


def unique_entries(entries: Sequence[StoredEntry]) -> list[StoredEntry]:
    """The entries once each, first occurrence kept: a repeated id would repeat a feed id."""
    seen: set[str] = set()
    unique: list[StoredEntry] = []
    for stored in entries:
        if stored.entry.id not in seen:
            seen.add(stored.entry.id)
            unique.append(stored)
    return unique


def render_site(
    entries: Sequence[StoredEntry], *, settings: Settings, now: datetime, templates_dir: Path
) -> dict[str, bytes]:
    """Every public file's name and bytes, for entries with distinct ids; pure but for reading
    the template."""
    base_url = settings.publish.base_url
    items = tuple(feed_item(stored, base_url) for stored in entries)
    meta = feed_meta(settings, items, now)
    return {
        ATOM_FILE: render_atom(meta, items),
        RSS_FILE: render_rss(meta, items),
        JSON_FILE: render_json_feed(meta, items),
        INDEX_FILE: render_index(
            meta,
            items,
            zone=ZoneInfo(settings.timezone),
            templates_dir=templates_dir,
            hidden_tags=(settings.publish.topic,) if settings.publish.topic else (),
        ),
    }


# --- data shared by every output ------------------------------------------------------------


def feed_meta(settings: Settings, items: Sequence[FeedItem], now: datetime) -> FeedMeta:
    base_url = settings.publish.base_url
    updated = max((item.updated for item in items), default=None) or _utc(now)
    return FeedMeta(
        title=_clean_text(settings.publish.title) or "aggregator",
        description=_clean_text(settings.publish.description),
        home_url=base_url,
        atom_url=urljoin(base_url, ATOM_FILE),
        rss_url=urljoin(base_url, RSS_FILE),
        json_url=urljoin(base_url, JSON_FILE),
        updated=updated,
    )


def feed_item(stored: StoredEntry, base_url: str) -> FeedItem:
    entry = stored.entry
    anchor = entry_anchor(entry.id)
    own_link = _web_url(entry.link) or _web_url(entry.canonical_url)
    summary_text = _NOT_XML_CHAR.sub("", entry.summary_text).strip()
    published = _utc(entry.published)
    updated = max(published, _utc(entry.updated)) if entry.updated else published
    return FeedItem(
        id=entry_urn(entry.id),
        anchor=anchor,
        url=own_link or urljoin(base_url, f"#{anchor}"),
        has_own_link=own_link is not None,
        title=_clean_text(entry.title) or excerpt(summary_text, 80) or UNTITLED,
        source_name=_clean_text(stored.source_name) or entry.source_id,
        summary_html=_NOT_XML_CHAR.sub("", entry.summary_html).strip(),
        summary_text=summary_text,
        published=published,
        updated=updated,
        tags=tuple(dict.fromkeys(t for t in map(_clean_text, entry.tags) if t)),
    )


def entry_urn(entry_id: str) -> str:
    """The entry's feed id: derived from Entry.id only, so it never changes and never repeats."""
    return ENTRY_URN_PREFIX + quote(entry_id, safe=":-._~")


def entry_anchor(entry_id: str) -> str:
    """A short HTML id for the entry, safe whatever characters Entry.id holds."""
    return "e-" + hashlib.sha256(entry_id.encode("utf-8")).hexdigest()[:16]


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


def _clean_text(text: str | None) -> str:
    return _SPACES.sub(" ", _NOT_XML_CHAR.sub("", text or "")).strip()


def _web_url(url: str | None) -> str | None:
    """`url` if it is an absolute http(s) URL; anything else (javascript:, relative) is dropped."""
    if not url:
        return None
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme.lower() in ("http", "https") and parts.netloc and url.isprintable():
        return url
    return None


def _utc(moment: datetime) -> datetime:
    """`moment` in UTC to the second; a naive value is taken to be UTC already."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def rfc3339(moment: datetime) -> str:
    return _utc(moment).isoformat().replace("+00:00", "Z")


# --- Atom and RSS ---------------------------------------------------------------------------


def render_atom(meta: FeedMeta, items: Sequence[FeedItem]) -> bytes:
    generator = _feed_generator(
        meta, items, self_url=meta.atom_url, self_type="application/atom+xml"
    )
    return bytes(generator.atom_str(pretty=True))


def render_rss(meta: FeedMeta, items: Sequence[FeedItem]) -> bytes:
    generator = _feed_generator(meta, items, self_url=meta.rss_url, self_type="application/rss+xml")
    return bytes(generator.rss_str(pretty=True))


def _feed_generator(
    meta: FeedMeta, items: Sequence[FeedItem], *, self_url: str, self_type: str
) -> Any:
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
    for item in items:
        fe = fg.add_entry(order="append")
        fe.id(item.id)  # also the RSS guid, isPermaLink="false"
        fe.title(item.title)
        fe.link(href=item.url, rel="alternate", type="text/html")
        fe.published(item.published)
        fe.updated(item.updated)
        fe.author(name=item.source_name)
        fe.dc.dc_creator(item.source_name)
        if item.summary_html:
            fe.content(item.summary_html, type="html")
        for tag in item.tags:
            fe.category(term=tag)
    return fg


# --- JSON Feed ------------------------------------------------------------------------------


def render_json_feed(meta: FeedMeta, items: Sequence[FeedItem]) -> bytes:
    feed: dict[str, Any] = {
        "version": JSON_FEED_VERSION,
        "title": meta.title,
        "home_page_url": meta.home_url,
        "feed_url": meta.json_url,
    }
    if meta.description:
        feed["description"] = meta.description
    feed["items"] = [_json_item(item) for item in items]
    return (json.dumps(feed, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def _json_item(item: FeedItem) -> dict[str, Any]:
    data: dict[str, Any] = {"id": item.id, "url": item.url, "title": item.title}
    if item.summary_html:
        data["content_html"] = item.summary_html
    data["content_text"] = item.summary_text  # always present: an item needs one of the two
    data["date_published"] = rfc3339(item.published)
    if item.updated != item.published:
        data["date_modified"] = rfc3339(item.updated)
    data["authors"] = [{"name": item.source_name}]
    if item.tags:
        data["tags"] = list(item.tags)
    return data


# --- the HTML page --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PageEntry:
    anchor: str
    url: str
    has_own_link: bool
    title: str
    lang: str | None  # "zh" when the title is Chinese, so browsers pick CJK fonts
    source_name: str
    time_iso: str
    time_label: str
    excerpt: str
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PageDay:
    date_iso: str
    label: str
    entries: tuple[PageEntry, ...]


def page_days(
    items: Sequence[FeedItem], zone: tzinfo, *, hidden_tags: Collection[str] = ()
) -> tuple[PageDay, ...]:
    """The items grouped by their publication day in `zone`, in the order given.

    `hidden_tags` are left off the labels: the topic tag is on every entry and says nothing.
    """
    groups: dict[str, list[PageEntry]] = {}
    labels: dict[str, str] = {}
    for item in items:
        local = item.published.astimezone(zone)
        day = local.date().isoformat()
        labels.setdefault(day, _day_label(local))
        groups.setdefault(day, []).append(
            PageEntry(
                anchor=item.anchor,
                # the page's own anchor stays relative, so it works wherever the page is opened
                url=item.url if item.has_own_link else f"#{item.anchor}",
                has_own_link=item.has_own_link,
                title=item.title,
                lang="zh" if _HAN.search(item.title) else None,
                source_name=item.source_name,
                time_iso=rfc3339(item.published),
                time_label=local.strftime("%H:%M"),
                excerpt=excerpt(item.summary_text),
                tags=tuple(tag for tag in item.tags if tag not in hidden_tags),
            )
        )
    return tuple(PageDay(day, labels[day], tuple(entries)) for day, entries in groups.items())


def _day_label(local: datetime) -> str:
    # Our own names, not strftime's: the page must not change with the process locale.
    return f"{_WEEKDAYS[local.weekday()]}, {local.day} {_MONTHS[local.month - 1]} {local.year}"


def render_index(
    meta: FeedMeta,
    items: Sequence[FeedItem],
    *,
    zone: ZoneInfo,
    templates_dir: Path,
    hidden_tags: Collection[str] = (),
) -> bytes:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    try:
        template = environment.get_template(PAGE_TEMPLATE)
    except jinja2.TemplateNotFound:
        raise AggregatorError(f"template {PAGE_TEMPLATE} not found in {templates_dir}") from None
    updated_local = meta.updated.astimezone(zone)
    html = template.render(
        title=meta.title,
        description=meta.description,
        updated_iso=rfc3339(meta.updated),
        updated_label=f"{_day_label(updated_local)}, {updated_local:%H:%M}",
        timezone=zone.key,
        days=page_days(items, zone, hidden_tags=hidden_tags),
        count=len(items),
        atom_href=ATOM_FILE,
        rss_href=RSS_FILE,
        json_href=JSON_FILE,
        project_url=PROJECT_URL,
    )
    return html.encode("utf-8")


# --- atomic writes --------------------------------------------------------------------------


def write_if_changed(path: Path, data: bytes) -> bool:
    """Replace `path` with `data` atomically unless it already holds exactly those bytes.

    Readers see the old file or the new one, never a part; returns whether it wrote.
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
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
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
