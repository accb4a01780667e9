"""The weekly digest, pure: which week, which stories per subscriber, the rendered text and HTML,
and the email message with safe headers. No database, no network; digest_run.py does the I/O."""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, parseaddr
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

import css_inline
import jinja2

from aggregator.errors import MailError
from aggregator.models import SourceState, Story
from aggregator.settings import SourceSettings

# SMTP line endings, and a defect in a message we build is a bug to raise, not to paper over.
POLICY = policy.SMTP.clone(raise_on_defect=True)
EXCERPT_CHARS = 200  # two to three lines at 600 px
SUBJECT_CHARS = 200
HEADER_CHARS = 500
SILENT_AFTER = timedelta(days=14)
RETRY_FIRST = timedelta(minutes=5)
RETRY_MAX = timedelta(hours=6)
MAX_ATTEMPTS = 10


# -- the period --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    """One ISO week in the configured timezone; `start` and `end` are the local midnights."""

    year: int
    week: int
    start: datetime
    end: datetime

    @property
    def label(self) -> str:
        return f"{self.year}-W{self.week:02d}"

    @property
    def span(self) -> str:
        """ "13–19 May 2024" (the days, Monday to Sunday)."""
        last = self.end - timedelta(days=1)
        first = "%-d" if self.start.month == last.month else "%-d %b"
        return f"{self.start.strftime(first)}–{last.strftime('%-d %b %Y')}"


def iso_week(year: int, week: int, timezone: str) -> Period:
    zone = ZoneInfo(timezone)
    monday = date.fromisocalendar(year, week, 1)
    start = datetime.combine(monday, time(0), tzinfo=zone)
    end = datetime.combine(monday + timedelta(days=7), time(0), tzinfo=zone)
    return Period(year, week, start, end)


def parse_week(text: str, timezone: str) -> Period:
    """ "2024-W21" -> that week. Raises ValueError."""
    match = re.fullmatch(r"\s*(\d{4})-?W(\d{1,2})\s*", text, flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"{text!r} is not an ISO week; use YYYY-Www, such as 2024-W21")
    try:
        return iso_week(int(match.group(1)), int(match.group(2)), timezone)
    except ValueError:
        raise ValueError(f"{text!r}: that year has no such week") from None


def week_containing(moment: datetime, timezone: str) -> Period:
    year, week, _ = moment.astimezone(ZoneInfo(timezone)).isocalendar()
    return iso_week(year, week, timezone)


def previous_week(period: Period, timezone: str) -> Period:
    return week_containing(period.start - timedelta(days=1), timezone)


def last_complete_week(now: datetime, timezone: str) -> Period:
    """The week a digest sent now covers by default: the last one that has ended."""
    return previous_week(week_containing(now, timezone), timezone)


def due_period(now: datetime, schedule: tuple[int, int, int], timezone: str) -> Period:
    """The period whose digest is due at `now`: last week's once this week's send time has
    passed, else the week before (normally already sent, so a rerun finds nothing to do)."""
    weekday, hour, minute = schedule
    this_week = week_containing(now, timezone)
    send_at = datetime.combine(
        this_week.start.date() + timedelta(days=weekday),
        time(hour, minute),
        tzinfo=ZoneInfo(timezone),
    )
    covered = previous_week(this_week, timezone)
    return covered if now >= send_at else previous_week(covered, timezone)


def next_attempt_after(now: datetime, attempts: int) -> datetime:
    """Backoff after the `attempts`-th temporary failure: 5 min, doubling, at most 6 h."""
    factor = 1 << min(max(attempts - 1, 0), 20)
    return now + min(RETRY_FIRST * factor, RETRY_MAX)


# -- selecting --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Link:
    label: str
    url: str | None


@dataclass(frozen=True, slots=True)
class DigestItem:
    """One story as the digest shows it."""

    story_id: str
    title: str
    url: str | None
    sources: str  # the lead's source name
    date: str  # local, "16 May 2024"
    excerpt: str
    also: tuple[Link, ...] = ()


@dataclass(frozen=True, slots=True)
class DigestSection:
    tag: str
    title: str
    items: tuple[DigestItem, ...]


@dataclass(frozen=True, slots=True)
class SourceWarning:
    source_id: str
    name: str
    problem: str


@dataclass(frozen=True, slots=True)
class DigestContent:
    """Everything one subscriber's digest says, ready for the templates."""

    title: str  # the publication, [publish].title
    period: Period
    sections: tuple[DigestSection, ...]
    warnings: tuple[SourceWarning, ...] = ()
    archive_url: str | None = None
    unsubscribe_url: str | None = None
    recipient_name: str | None = None
    home_url: str | None = None

    @property
    def story_count(self) -> int:
        return sum(len(s.items) for s in self.sections)

    @property
    def source_count(self) -> int:
        names = {i.sources for s in self.sections for i in s.items}
        names |= {link.label for s in self.sections for i in s.items for link in i.also}
        return len(names)

    @property
    def report_count(self) -> int:
        return sum(1 + len(i.also) for s in self.sections for i in s.items)


def select_sections(
    stories: Iterable[Story],
    period: Period,
    tags: Sequence[str],
    *,
    topic: str | None,
    tag_titles: Mapping[str, str],
    timezone: str,
) -> tuple[DigestSection, ...]:
    """The stories first seen in `period` that carry any of `tags`, grouped by tag with the
    topic first; a story with several of the tags appears once, under the first of them."""
    order = [t for t in tags if t == topic] + [t for t in tags if t != topic]
    zone = ZoneInfo(timezone)
    grouped: dict[str, list[Story]] = {tag: [] for tag in order}
    for story in stories:
        if not period.start <= story.first_seen < period.end:
            continue
        carried = set(story.tags)
        home = next((tag for tag in order if tag in carried), None)
        if home is not None:
            grouped[home].append(story)
    sections = []
    for tag in order:
        found = sorted(grouped[tag], key=lambda s: (-s.published.timestamp(), s.id))
        if found:
            items = tuple(_item(story, zone) for story in found)
            sections.append(DigestSection(tag, clean_text(tag_titles.get(tag, tag)), items))
    return tuple(sections)


def _item(story: Story, zone: ZoneInfo) -> DigestItem:
    lead = story.lead.entry
    excerpt = next((m.entry.summary_text for m in story.members if m.entry.summary_text), "")
    seen: set[str] = {story.lead.source_name}
    also = []
    for other in story.others:
        if other.source_name in seen:
            continue
        seen.add(other.source_name)
        also.append(Link(clean_text(other.source_name), _http(other.entry.link)))
    return DigestItem(
        story_id=story.id,
        title=clean_text(lead.title, limit=300) or "(untitled)",
        url=_http(lead.link),
        sources=clean_text(story.lead.source_name),
        date=lead.published.astimezone(zone).strftime("%-d %b %Y"),
        excerpt=excerpt_of(excerpt),
        also=tuple(also),
    )


def _http(url: str | None) -> str | None:
    """Only web links go into the mail: no javascript:, data: or mailto: from a feed."""
    if url and re.match(r"^https?://", url, flags=re.IGNORECASE):
        return clean_text(url, limit=2000)
    return None


def excerpt_of(text: str, limit: int = EXCERPT_CHARS) -> str:
    """Two or three lines of plain text: cut at a word boundary when the script has words."""
    text = clean_text(text)
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    if space > limit * 0.6:
        cut = cut[:space]
    return cut.rstrip(" ,.;:，。、；：") + "…"


def source_warnings(
    sources: Sequence[SourceSettings],
    states: Mapping[str, SourceState],
    latest_new: Mapping[str, datetime],
    now: datetime,
) -> tuple[SourceWarning, ...]:
    """Enabled sources that are failing (their last poll failed) or silent (nothing new for
    SILENT_AFTER). Sources never polled yet are left out."""
    warnings = []
    for source in sources:
        state = states.get(source.id)
        if not source.enabled or state is None:
            continue
        if state.consecutive_failures > 0:
            error = clean_text(state.last_error or "unknown error", limit=120)
            times = "s" if state.consecutive_failures > 1 else ""
            problem = f"failing ({state.consecutive_failures} poll{times}): {error}"
        else:
            latest = latest_new.get(source.id)
            if latest is not None and now - latest < SILENT_AFTER:
                continue
            if latest is None and state.last_success_at is None:
                continue
            days = (now - latest).days if latest else None
            problem = f"no new items for {days} days" if days else "no items yet"
        warnings.append(SourceWarning(source.id, clean_text(source.name), problem))
    return tuple(warnings)


# -- text safety ---------------------------------------------------------------------------------

_LINE_BREAKS = {"\r", "\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"}


def clean_text(text: str, *, limit: int | None = None) -> str:
    """One line of printable text: control characters, line and paragraph separators, lone
    surrogates and NULs become spaces; runs of white space become one; cut to `limit`."""
    chars = []
    for char in text:
        unsafe = char in _LINE_BREAKS or unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp")
        chars.append(" " if unsafe else char)
    cleaned = " ".join("".join(chars).split())
    if limit is not None and len(cleaned) > limit:
        cleaned = cleaned[: limit - 1].rstrip() + "…"
    return cleaned


def header_value(text: str, limit: int = HEADER_CHARS) -> str:
    """A value safe to put in any header: one line, bounded, and no RFC 2047 encoded-word
    syntax, so nothing can decode into a line break later (CVE-2024-6923 on Python < 3.13)."""
    cleaned = clean_text(text, limit=limit)
    return cleaned.replace("=?", "= ?").replace("?=", "? =")


# -- rendering ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RenderedDigest:
    subject: str
    text: str
    html: str


@dataclass
class Renderer:
    """The digest templates and the CSS inliner, loaded once and reused for every subscriber.

    Rendering and inlining are done once per distinct content (same sections, warnings and
    period): the per-subscriber values (subject, unsubscribe URL, name) are rendered as random
    slot tokens, and each is replaced in the inlined HTML, escaped for where it appears, and
    in the text as is. Values that the HTML parser would rewrite (control characters, lone
    surrogates) take the full render instead, so the output is the same either way."""

    templates_dir: Path
    _env: jinja2.Environment = field(init=False)
    _inliner: css_inline.CSSInliner = field(init=False)
    _slots: tuple[str, str, str] = field(init=False)
    _shapes: dict[DigestContent, _Shape] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(self.templates_dir),
            autoescape=jinja2.select_autoescape(["html"]),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        # @media rules cannot be inlined; they stay in a <style> for clients that read it.
        self._inliner = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)
        # Letters and digits only: nothing for Jinja or the inliner to escape or split.
        nonce = secrets.token_hex(12)
        self._slots = (f"zslotsubj{nonce}z", f"zsloturl{nonce}z", f"zslotname{nonce}z")

    def render(self, content: DigestContent, subject_template: str) -> RenderedDigest:
        subject = subject_of(subject_template, content)
        values = (subject, content.unsubscribe_url, content.recipient_name)
        if not all(v is None or _fill_safe(v, self._slots) for v in values):
            return self._render_full(content, subject)
        subject_slot, url_slot, name_slot = self._slots
        shared = replace(
            content,
            unsubscribe_url=None if content.unsubscribe_url is None else url_slot,
            recipient_name=None if content.recipient_name is None else name_slot,
        )
        shape = self._shapes.get(shared)
        if shape is None:
            html = self._env.get_template("digest.html").render(digest=shared, subject=subject_slot)
            text = self._env.get_template("digest.txt").render(digest=shared, subject=subject_slot)
            shape = _Shape.of(self._inliner.inline(html), text, self._slots)
            if len(self._shapes) >= 256:
                self._shapes.clear()
            self._shapes[shared] = shape
        filled = {slot: value or "" for slot, value in zip(self._slots, values, strict=True)}
        return RenderedDigest(subject, shape.fill_text(filled), shape.fill_html(filled))

    def _render_full(self, content: DigestContent, subject: str) -> RenderedDigest:
        values = {"digest": content, "subject": subject}
        html = self._env.get_template("digest.html").render(values)
        text = self._env.get_template("digest.txt").render(values)
        return RenderedDigest(subject, text, self._inliner.inline(html))


def _fill_safe(value: str, slots: Sequence[str]) -> bool:
    """Whether `value` comes out of the HTML parser and serializer exactly as escaped by
    _escape_html: no control characters (CR, NUL, ...) or lone surrogates, and no slot."""
    if any(slot in value for slot in slots):
        return False
    return not any(unicodedata.category(c) in ("Cc", "Cs") for c in value if not c.isalnum())


# As the inliner's serializer (html5ever) writes text and double-quoted attribute values; where a
# slot appears in both, or somewhere else, every one of these characters is escaped.
_TEXT_ESCAPES = {"&": "&amp;", "\xa0": "&nbsp;", "<": "&lt;", ">": "&gt;"}
_ATTR_ESCAPES = {"&": "&amp;", "\xa0": "&nbsp;", '"': "&quot;"}
_ALL_ESCAPES = {**_TEXT_ESCAPES, **_ATTR_ESCAPES}


def _escape_html(value: str, escapes: Mapping[str, str]) -> str:
    return "".join(escapes.get(c, c) for c in value)


class _SlotFinder(HTMLParser):
    """Where each slot occurs in inlined HTML: in text, in attribute values, or elsewhere."""

    def __init__(self, slots: Sequence[str]) -> None:
        super().__init__(convert_charrefs=True)
        self.slots = slots
        self.seen: dict[str, set[str]] = {slot: set() for slot in slots}

    def _note(self, where: str, data: str | None) -> None:
        for slot in self.slots:
            if data and slot in data:
                self.seen[slot].add(where)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._note("other", tag)
        for name, value in attrs:
            self._note("other", name)
            self._note("attr", value)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        self._note("text" if self.cdata_elem is None else "other", data)

    def handle_endtag(self, tag: str) -> None:
        self._note("other", tag)

    def handle_comment(self, data: str) -> None:
        self._note("other", data)

    def handle_decl(self, decl: str) -> None:
        self._note("other", decl)

    def handle_pi(self, data: str) -> None:
        self._note("other", data)

    def unknown_decl(self, data: str) -> None:
        self._note("other", data)


@dataclass(frozen=True, slots=True)
class _Shape:
    """One rendered and inlined digest with slots for the per-subscriber values."""

    html: str
    text: str
    escapes: Mapping[str, Mapping[str, str]]  # slot -> the escaping its places need
    pattern: re.Pattern[str]

    @classmethod
    def of(cls, html: str, text: str, slots: Sequence[str]) -> _Shape:
        finder = _SlotFinder(slots)
        finder.feed(html)
        finder.close()
        escapes: dict[str, Mapping[str, str]] = {}
        for slot, seen in finder.seen.items():
            if seen == {"text"}:
                escapes[slot] = _TEXT_ESCAPES
            elif seen == {"attr"}:
                escapes[slot] = _ATTR_ESCAPES
            else:
                escapes[slot] = _ALL_ESCAPES
        pattern = re.compile("|".join(re.escape(slot) for slot in slots))
        return cls(html, text, escapes, pattern)

    def fill_html(self, values: Mapping[str, str]) -> str:
        escaped = {slot: _escape_html(values[slot], self.escapes[slot]) for slot in values}
        return self.pattern.sub(lambda m: escaped[m.group()], self.html)

    def fill_text(self, values: Mapping[str, str]) -> str:
        return self.pattern.sub(lambda m: values[m.group()], self.text)


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def subject_of(template: str, content: DigestContent) -> str:
    """The subject from `[digest].subject`: {title}, {count}, {week}, {name} and {top} (the
    first story's title) are filled in; the result is made header-safe and bounded."""
    top = content.sections[0].items[0].title if content.sections else ""
    values = _Blank(
        title=content.title,
        count=str(content.story_count),
        week=content.period.label,
        name=content.recipient_name or "",
        top=top,
    )
    try:
        subject = template.format_map(values)
    except (ValueError, IndexError, AttributeError):
        subject = f"{content.title}: week {content.period.label}"
    return header_value(subject, SUBJECT_CHARS)


# -- the message ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Envelope:
    """Who a message is from and to, and its list headers; every field becomes a header."""

    sender: str  # "Name <addr>" from the config
    to_email: str
    to_name: str | None
    message_id: str
    date: datetime
    list_id: str  # "Title <topic.example.org>"
    unsubscribe_mailto: str
    unsubscribe_url: str | None = None  # one-click (RFC 8058), when a secret is set


def build_message(rendered: RenderedDigest, envelope: Envelope) -> EmailMessage:
    """multipart/alternative, text then HTML, UTF-8, with the list headers; then checked: the
    serialized message must parse back to exactly these headers, or MailError."""
    message = EmailMessage(policy=POLICY)
    name, addr = parseaddr(envelope.sender)
    message["From"] = _address(name, addr)
    message["To"] = _address(envelope.to_name or "", envelope.to_email)
    message["Subject"] = header_value(rendered.subject, SUBJECT_CHARS)
    message["Date"] = format_datetime(envelope.date)
    message["Message-ID"] = header_value(envelope.message_id, 250)
    message["List-Id"] = envelope.list_id
    unsubscribe = [f"<{envelope.unsubscribe_mailto}>"]
    if envelope.unsubscribe_url:
        unsubscribe.append(f"<{envelope.unsubscribe_url}>")
    message["List-Unsubscribe"] = ", ".join(unsubscribe)
    if envelope.unsubscribe_url:
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(rendered.text, charset="utf-8", cte="quoted-printable")
    message.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
    verify_headers(message)
    return message


def _address(name: str, addr: str) -> Address:
    try:
        return Address(display_name=header_value(name, 200), addr_spec=addr)
    except (ValueError, IndexError) as error:
        raise MailError(f"{addr!r} is not a usable address: {error}") from None


_EXPECTED = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Auto-Submitted",
    "MIME-Version",
    "Content-Type",
)


def verify_headers(message: EmailMessage) -> None:
    """Serialize, parse back, and compare: the top-level headers must be exactly the ones we
    set, each once, with the same (unfolded) values. Catches any injection we did not foresee."""
    wanted = [(k, str(v)) for k, v in message.items()]
    if any(k not in _EXPECTED for k, _ in wanted):
        raise MailError("unexpected header in a digest")
    parsed = BytesParser(policy=policy.default).parsebytes(as_bytes(message), headersonly=True)
    wanted_names = [k.lower() for k, _ in wanted]
    got_names = [k.lower() for k in parsed]
    if sorted(got_names) != sorted(wanted_names):
        raise MailError(f"digest headers changed in serializing: {got_names}")
    for name, value in wanted:
        if name == "Content-Type":  # the boundary is chosen while serializing
            continue
        got = str(parsed[name])
        if " ".join(got.split()) != " ".join(value.split()) or "\n" in got or "\r" in got:
            raise MailError(f"digest header {name} changed in serializing")


def as_bytes(message: EmailMessage) -> bytes:
    return message.as_bytes(policy=POLICY)


def list_id(title: str, topic: str | None, sender: str) -> str:
    """`Title <topic.sender-domain>` (RFC 2919)."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    label = re.sub(r"[^a-z0-9-]+", "-", (topic or "digest").lower()).strip("-") or "digest"
    return f"{header_value(title, 100)} <{label}.{domain.lower()}>"
