"""Managing the watch list: source health, feed autodiscovery, OPML, appending to the TOML.

Pure pieces (the "silent" rule, the health lines, OPML, autodiscovery, TOML editing) take and
return data; `probe` is the one function here that does I/O (it fetches to validate a URL).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import statistics
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import format_datetime
from urllib.parse import urljoin, urlsplit
from zoneinfo import ZoneInfo

import tomlkit
from bs4 import BeautifulSoup, Tag

from aggregator.errors import AggregatorError, ConfigError, ParseError
from aggregator.fetch import ADOPT_REDIRECT_AFTER, Fetcher
from aggregator.models import FetchRequest, FetchResult, ParsedFeed, SourceState
from aggregator.parse.encoding import strip_doctype
from aggregator.parse.feeds import parse_feed
from aggregator.parse.pages import decode_html
from aggregator.settings import FetchSettings, SourceSettings

FEED_TYPES = frozenset(
    {
        "application/rss+xml",
        "application/atom+xml",
        "application/feed+json",
        "application/json",
        "application/rdf+xml",
    }
)
SILENT_AFTER_MIN = timedelta(days=7)
SILENT_GAP_FACTOR = 10  # silent after 10 of the source's usual gaps (and at least 7 days)
SILENT_MIN_ITEMS = 3  # a source "used to produce items" when it has at least this many

# --- health -----------------------------------------------------------------------------------


def silent_days(published: Sequence[datetime], now: datetime) -> int | None:
    """Days since a source that used to publish last did, when that is unusually long; else None.

    `published` holds its latest publication dates (any order). Silent means: at least
    SILENT_MIN_ITEMS items, and no new one for max(7 days, 10 x the median gap between them).
    """
    if len(published) < SILENT_MIN_ITEMS:
        return None
    dates = sorted(published, reverse=True)
    gaps = [(newer - older).total_seconds() for newer, older in itertools.pairwise(dates)]
    usual_gap = timedelta(seconds=statistics.median(gaps))
    quiet = now - dates[0]
    if quiet < max(SILENT_AFTER_MIN, usual_gap * SILENT_GAP_FACTOR):
        return None
    return quiet.days


@dataclass(frozen=True, slots=True)
class SourceReport:
    """Everything `aggregator sources` shows about one source."""

    source: SourceSettings
    state: SourceState | None
    recent_items: int = 0
    silent_days: int | None = None


def source_report(
    source: SourceSettings,
    state: SourceState | None,
    *,
    recent_items: int,
    published: Sequence[datetime],
    now: datetime,
) -> SourceReport:
    return SourceReport(source, state, recent_items, silent_days(published, now))


def describe_source(report: SourceReport, zone: ZoneInfo) -> list[str]:
    """The lines `aggregator sources` prints for one source: a heading, then indented facts."""
    source, state = report.source, report.state

    def when(moment: datetime | None) -> str:
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M") if moment else "never"

    if state is not None and state.disabled_reason:
        status = "disabled: " + state.disabled_reason
    elif not source.enabled:
        status = "disabled in the config"
    else:
        status = "enabled"
    lines = [f"{source.id}  {source.type}  {status}  {source.name}"]
    if state is None:
        lines.append("    never polled")
        return lines
    next_poll = "-" if state.disabled_reason or not source.enabled else when(state.next_poll_at)
    if next_poll == "never":
        next_poll = "at the next poll"
    lines.append(
        f"    last success: {when(state.last_success_at)}   next poll: {next_poll}"
        f"   items in the last 7 days: {report.recent_items}"
    )
    if state.last_error:
        lines.append(
            f"    last error: {state.last_error} ({when(state.last_error_at)}),"
            f" {state.consecutive_failures} consecutive failure(s)"
        )
    if state.disabled_reason:
        lines.append(f"    re-enable with: aggregator sources enable {source.id}")
    if state.moved_to:
        lines.append(
            f"    moved to {state.moved_to} (permanent redirect on {state.moved_polls} poll(s)"
            f" in a row; adopted after {ADOPT_REDIRECT_AFTER}; update `url` in the config)"
        )
    if state.configured_url and state.url != state.configured_url:
        lines.append(
            f"    moved to {state.url}: fetched from there since it redirected permanently"
            " (update `url` in the config)"
        )
    if report.silent_days is not None:
        lines.append(f"    silent for {report.silent_days} days")
    return lines


# --- autodiscovery ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiscoveredFeed:
    url: str
    title: str
    type: str


def discover_feeds(content: bytes, base_url: str, content_type: str | None) -> list[DiscoveredFeed]:
    """Feeds an HTML page names with <link rel="alternate" type="application/rss+xml" ...>."""
    soup = BeautifulSoup(decode_html(content, content_type), "html.parser")
    base = base_url
    base_tag = soup.find("base", href=True)
    if isinstance(base_tag, Tag):
        base = urljoin(base_url, str(base_tag["href"]))
    found: dict[str, DiscoveredFeed] = {}
    for link in soup.find_all("link", href=True):
        if not isinstance(link, Tag):
            continue
        rel: str | list[str] = link.get("rel") or []
        rels = {r.lower() for r in (rel.split() if isinstance(rel, str) else rel)}
        media_type = str(link.get("type") or "").split(";")[0].strip().lower()
        if "alternate" not in rels or media_type not in FEED_TYPES:
            continue
        url = urljoin(base, str(link["href"]).strip())
        if urlsplit(url).scheme in ("http", "https") and url not in found:
            found[url] = DiscoveredFeed(url, str(link.get("title") or "").strip(), media_type)
    return list(found.values())


# --- validating a URL (I/O) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Probe:
    """A URL checked by fetching it: the feed to add, and other feeds the page named."""

    url: str
    title: str
    entries: int
    others: tuple[DiscoveredFeed, ...] = ()


async def probe(url: str, settings: FetchSettings) -> Probe:
    """Fetch `url`; a feed is taken as it is, an HTML page for the first feed it names that works.

    Raises FetchError or ParseError (with what to do next) when neither works.
    """
    async with Fetcher(settings) as fetcher:
        result = await fetcher.fetch(FetchRequest("new", url))
        try:
            feed = _parsed(result)
        except ParseError as not_a_feed:
            candidates = discover_feeds(result.content or b"", result.url, result.content_type)
            if not candidates:
                raise ParseError(
                    f'{url} is not a feed and its page names no feed (<link rel="alternate">);'
                    f' for a page without a feed, add a type = "html" source with selectors'
                    f" by hand ({not_a_feed})"
                ) from None
            problems = []
            for index, candidate in enumerate(candidates):
                try:
                    found = await fetcher.fetch(FetchRequest("new", candidate.url))
                    feed = _parsed(found)
                except AggregatorError as error:
                    problems.append(f"{candidate.url}: {error}")
                    continue
                others = tuple(c for i, c in enumerate(candidates) if i != index)
                return Probe(
                    _lasting_url(candidate.url, found), feed.title, len(feed.entries), others
                )
            raise ParseError(
                f"{url} names {len(candidates)} feed(s) but none works: " + "; ".join(problems)
            ) from None
        return Probe(_lasting_url(url, result), feed.title, len(feed.entries))


def probe_sync(url: str, settings: FetchSettings) -> Probe:
    return asyncio.run(probe(url, settings))


def _parsed(result: FetchResult) -> ParsedFeed:
    return parse_feed(result.content or b"", url=result.url, content_type=result.content_type)


def _lasting_url(url: str, result: FetchResult) -> str:
    """Where to poll: the permanent redirect target if every hop was permanent, else `url`."""
    return result.permanent_redirect or url


# --- new sources and the TOML file ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewSource:
    """A `[[sources]]` block to append to the config."""

    id: str
    name: str
    url: str
    type: str = "feed"
    every: str = "30m"
    tags: tuple[str, ...] = ()
    enabled: bool = True


def source_id_for(name: str, url: str, taken: Iterable[str]) -> str:
    """A new id from the name (else the URL's host): lower-case letters, digits and '-'; unique."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-")
    if not slug:
        host = (urlsplit(url).hostname or "").removeprefix("www.")
        slug = re.sub(r"[^a-z0-9]+", "-", host.lower()).strip("-") or "source"
    used = set(taken)
    candidate, n = slug, 2
    while candidate in used:
        candidate, n = f"{slug}-{n}", n + 1
    return candidate


_SOURCES_HEADER = re.compile(r"^\s*\[\[\s*sources\s*\]\]")
_OTHER_HEADER = re.compile(r"^\[\[?\s*(?!sources\s*[\].])[A-Za-z0-9_\"']")


def append_sources(text: str, sources: Sequence[NewSource], *, comment: str | None = None) -> str:
    """The config text with `[[sources]]` blocks added after the last one, all else untouched.

    Blocks are rendered by tomlkit (quoting is always right); they go after the last existing
    source, before the comments that introduce the next section, or at the end of the file.
    The result is checked to parse to the old data plus the new sources.
    """
    if not sources:
        return text
    rendered = _render(sources, comment)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    insert_at = _after_last_source(lines)
    candidates = []
    if insert_at is not None:
        candidates.append("".join([*lines[:insert_at], "\n", rendered, *lines[insert_at:]]))
    candidates.append("".join(lines).rstrip("\n") + "\n\n" + rendered)
    for candidate in candidates:
        if _adds_exactly(text, candidate, sources):
            return candidate
    raise ConfigError("cannot append a [[sources]] block to this file; add it by hand")


def _render(sources: Sequence[NewSource], comment: str | None) -> str:
    blocks = []
    for source in sources:
        table = tomlkit.table()
        table.add("id", source.id)
        table.add("name", source.name)
        table.add("url", source.url)
        table.add("type", source.type)
        table.add("every", source.every)
        table.add("tags", list(source.tags))
        table.add("enabled", source.enabled)
        document = tomlkit.document()
        array = tomlkit.aot()
        array.append(table)
        document.append("sources", array)
        prefix = f"# {comment}\n" if comment else ""
        blocks.append(prefix + tomlkit.dumps(document).strip("\n") + "\n")
    return "\n".join(blocks)


def _after_last_source(lines: Sequence[str]) -> int | None:
    """The line index after the last [[sources]] block and its sub-tables, minus the comments
    and blank lines that lead into the next section."""
    last = max((i for i, line in enumerate(lines) if _SOURCES_HEADER.match(line)), default=None)
    if last is None:
        return None
    end = next(
        (i for i in range(last + 1, len(lines)) if _OTHER_HEADER.match(lines[i])), len(lines)
    )
    while end > last + 1 and (
        not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")
    ):
        end -= 1
    return end


def _adds_exactly(old_text: str, new_text: str, sources: Sequence[NewSource]) -> bool:
    try:
        old, new = tomllib.loads(old_text), tomllib.loads(new_text)
    except tomllib.TOMLDecodeError:
        return False
    added = new.get("sources", [])[len(old.get("sources", [])) :]
    new_without = {**new, "sources": new.get("sources", [])[: len(old.get("sources", []))]}
    old_with = {**old, "sources": old.get("sources", [])}
    return new_without == old_with and [s.get("id") for s in added] == [s.id for s in sources]


# --- OPML -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outline:
    """One feed of an OPML file."""

    url: str
    name: str
    tags: tuple[str, ...] = field(default=())


def export_opml(sources: Sequence[SourceSettings], *, title: str, now: datetime) -> str:
    """OPML 2.0 listing the feed sources (HTML sources have no feed URL to give)."""
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = title
    ET.SubElement(head, "dateCreated").text = format_datetime(now)
    body = ET.SubElement(root, "body")
    for source in sources:
        if source.type != "feed":
            continue
        attributes = {"type": "rss", "text": source.name, "title": source.name}
        attributes["xmlUrl"] = source.url
        if source.tags:
            attributes["category"] = ",".join(f"/{tag}" for tag in source.tags)
        ET.SubElement(body, "outline", attributes)
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def parse_opml(content: bytes) -> list[Outline]:
    """The feeds of an OPML file (any nesting); a folder's title becomes a tag of its feeds."""
    try:
        root = ET.fromstring(strip_doctype(content))
    except ET.ParseError as error:
        raise ParseError(f"not an OPML file: {error}") from None
    if root.tag != "opml" or root.find("body") is None:
        raise ParseError("not an OPML file: no <opml><body>")
    outlines: list[Outline] = []
    seen: set[str] = set()

    def walk(element: ET.Element, folders: tuple[str, ...]) -> None:
        for child in element.findall("outline"):
            url = (child.get("xmlUrl") or "").strip()
            name = (child.get("title") or child.get("text") or "").strip()
            if url:
                if urlsplit(url).scheme in ("http", "https") and url not in seen:
                    seen.add(url)
                    categories = _opml_categories(child.get("category"))
                    tags = tuple(dict.fromkeys((*folders, *categories)))
                    outlines.append(Outline(url, name or url, tags))
            else:
                folder = _tag_name(name)
                walk(child, (*folders, folder) if folder else folders)

    body = root.find("body")
    assert body is not None
    walk(body, ())
    return outlines


def _opml_categories(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    names = (_tag_name(part.strip().strip("/").split("/")[-1]) for part in value.split(","))
    return tuple(name for name in names if name)


def _tag_name(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-")


# --- the commands' work, on the config file ---------------------------------------------------


def add_source(
    config_text: str,
    configured: Sequence[SourceSettings],
    probe_result: Probe,
    *,
    source_id: str | None = None,
    name: str | None = None,
    every: str = "30m",
    tags: Sequence[str] = (),
    now: datetime,
) -> tuple[str, NewSource]:
    """The config text with a block for the probed feed, and that block; ConfigError on clash."""
    if any(s.url == probe_result.url for s in configured):
        taken = next(s.id for s in configured if s.url == probe_result.url)
        raise ConfigError(f"{probe_result.url} is already a source ({taken!r})")
    ids = {s.id for s in configured}
    if source_id is not None and source_id in ids:
        raise ConfigError(f"a source with id {source_id!r} exists already")
    display = (name or probe_result.title or urlsplit(probe_result.url).hostname or "").strip()
    new = NewSource(
        id=source_id or source_id_for(display, probe_result.url, ids),
        name=display or probe_result.url,
        url=probe_result.url,
        every=every,
        tags=tuple(tags),
    )
    comment = f"Added by `aggregator sources add` on {now:%Y-%m-%d}."
    return append_sources(config_text, [new], comment=comment), new


def import_outlines(
    config_text: str,
    configured: Sequence[SourceSettings],
    outlines: Sequence[Outline],
    now: datetime,
) -> tuple[str, list[NewSource], list[Outline]]:
    """The config text with a block per new outline; also the blocks, and the outlines skipped
    because their URL is a source already."""
    known_urls = {s.url for s in configured}
    ids = {s.id for s in configured}
    added: list[NewSource] = []
    skipped: list[Outline] = []
    for outline in outlines:
        if outline.url in known_urls:
            skipped.append(outline)
            continue
        new = NewSource(
            id=source_id_for(outline.name, outline.url, ids),
            name=outline.name,
            url=outline.url,
            tags=outline.tags,
        )
        ids.add(new.id)
        known_urls.add(new.url)
        added.append(new)
    comment = f"Imported by `aggregator sources import` on {now:%Y-%m-%d}."
    return append_sources(config_text, added, comment=comment), added, skipped
