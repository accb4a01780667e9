"""Turn a ParsedEntry into a storable Entry: plain titles, safe summaries, clean URLs, UTC dates, ids."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urljoin, urlsplit, urlunsplit

from w3lib.url import canonicalize_url, url_query_cleaner

from aggregator import urls
from aggregator.models import Entry, ParsedEntry
from aggregator.process.sanitize import clean_html, html_to_text, sanitized_text, text_to_html
from aggregator.process.text import fold_name

UNTITLED = "(untitled)"
TITLE_FROM_SUMMARY_CHARS = 80
FUTURE_TOLERANCE = timedelta(days=1)  # clock skew; beyond it a date is a publisher's mistake

# Query parameters that only say where a click came from; compared case-insensitively.
TRACKING_PARAMS = frozenset(
    {
        "fbclid", "gclid", "gclsrc", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "twclid",
        "ttclid", "li_fat_id", "mc_cid", "mc_eid", "igshid", "igsh", "_ga", "_gl", "_hsenc",
        "_hsmi", "__hssc", "__hstc", "__hsfp", "hsctatracking", "mkt_tok", "spm", "ref_src",
        "ref_url", "cmpid", "s_cid", "ncid", "ocid", "vero_id",
        "vero_conv", "oly_anon_id", "oly_enc_id", "rb_clickid", "wt.mc_id", "at_medium",
        "at_campaign", "at_custom1", "at_custom2", "at_custom3", "at_custom4", "sr_share",
    }
)  # fmt: skip
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_", "matomo_")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_WEB_SCHEMES = frozenset(_DEFAULT_PORTS)


def canonical_url(url: str) -> str:
    """The form of an http(s) URL used to recognise the same page under different spellings.

    Scheme and host lowercased, default port, fragment and tracking parameters dropped, the
    remaining query sorted, and non-ASCII paths and queries percent-encoded as UTF-8 (so a
    Chinese path has one spelling whether it came raw or encoded). Anything else, including
    an invalid URL, comes back stripped; this never raises.
    """
    url = url.strip()
    plain = _plain_canonical_url(url)
    return plain if plain is not None else _canonical_url_by_w3lib(url)


# URLs whose canonical form is plain to see: lowercase host names (no port, no userinfo, no
# "--" as in IDNA's "xn--"), paths of unreserved characters with no empty or dot segment,
# queries of unreserved key=value pairs. Nothing to percent-encode, resolve or lowercase; only
# the query to sort and the fragment to drop. tests/test_normalize.py holds this to w3lib.
_PLAIN_URL = re.compile(
    r"(https?://(?:[a-z0-9]+(?:-[a-z0-9]+)*\.)+[a-z][a-z0-9]*(?:-[a-z0-9]+)*)"
    r"((?:/[A-Za-z0-9_~\-][A-Za-z0-9_~.\-]*)*/?)"
    r"(?:\?([A-Za-z0-9_~.\-]+=[A-Za-z0-9_~.\-]*(?:&[A-Za-z0-9_~.\-]+=[A-Za-z0-9_~.\-]*)*))?"
    r"(?:#[\x21-\x7e]*)?"
)
_MAX_LABEL = 63  # IDNA refuses longer labels


def _plain_canonical_url(url: str) -> str | None:
    """canonical_url(url) for a URL of the plainest kind, without w3lib; None for the others."""
    match = _PLAIN_URL.fullmatch(url)
    if match is None:
        return None
    origin, path, query = match.groups()
    if any(len(label) > _MAX_LABEL for label in origin.split("//", 1)[1].split(".")):
        return None
    if not query:
        return origin + (path or "/")
    pairs = sorted(pair.split("=", 1) for pair in query.split("&"))  # [name, value] each
    if any(_is_tracking(name) for name, _ in pairs):
        return None
    return f"{origin}{path or '/'}?{'&'.join(f'{name}={value}' for name, value in pairs)}"


def _canonical_url_by_w3lib(url: str) -> str:
    """canonical_url for any URL, `url` stripped."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _WEB_SCHEMES or not parts.hostname:
            return url
        if parts.port == _DEFAULT_PORTS[scheme]:
            netloc = parts.netloc.rsplit(":", 1)[0]
            url = urlunsplit(parts._replace(netloc=netloc))
        tracking = [
            name for name, _ in parse_qsl(parts.query, keep_blank_values=True) if _is_tracking(name)
        ]
        if tracking:
            url = url_query_cleaner(url, tracking, remove=True, unique=False, keep_fragments=True)
        canonical: str = canonicalize_url(url, keep_blank_values=True, keep_fragments=False)
    except ValueError:  # bad port or IPv6 literal, IDNA failure (UnicodeError is a ValueError)
        return url
    return canonical


def _is_tracking(name: str) -> bool:
    name = name.lower()
    return name in TRACKING_PARAMS or name.startswith(TRACKING_PREFIXES)


def absolute_link(link: str | None, base_url: str) -> str | None:
    """`link` resolved against `base_url`, or None unless it ends up an http(s) URL with a host."""
    link = (link or "").strip()
    if not link:
        return None
    base_url = base_url.strip()
    if urls.plain_absolute(link) and urls.base_parses(base_url):
        return link  # urljoin gives it back; it has an http(s) scheme and a host
    try:
        absolute = urljoin(base_url, link)
        parts = urlsplit(absolute)
        if parts.scheme.lower() not in _WEB_SCHEMES or not parts.hostname:
            return None
    except ValueError:
        return None
    return absolute


def entry_id(source_id: str, identity: str) -> str:
    """A short id, stable across polls, for the entry `identity` names within a source."""
    return _sha256(source_id + "\x00" + identity)[:16]


def identity_key(
    parsed: ParsedEntry, canonical_link: str | None, title_text: str, summary_text: str
) -> str:
    """What makes an entry the same one next poll: its guid, else its link, else its text."""
    guid = (parsed.guid or "").strip()
    if guid:
        return guid
    if canonical_link:
        return canonical_link
    return "hash:" + _sha256(title_text + "\x00" + summary_text)


def content_hash(title: str, summary_html: str) -> str:
    """Changes whenever the title or the (sanitized) summary does."""
    return _sha256(title + "\x00" + summary_html)


def normalize_entry(
    parsed: ParsedEntry, *, source_id: str, base_url: str, first_seen: datetime
) -> Entry:
    """Clean, identify and date one entry. `base_url` is the feed's final URL."""
    first_seen = _as_utc(first_seen)
    summary_html = clean_html(text_to_html(parsed.summary_html), base_url=base_url)
    summary_text = sanitized_text(summary_html)
    title_text = html_to_text(parsed.title)
    title = title_text or summary_text[:TITLE_FROM_SUMMARY_CHARS].rstrip() or UNTITLED
    link = absolute_link(parsed.link, base_url)
    canonical = canonical_url(link) if link else None
    identity = identity_key(parsed, canonical, title_text, summary_text)
    published = _not_future(_as_utc(parsed.published or parsed.updated or first_seen), first_seen)
    updated = _not_future(_as_utc(parsed.updated), first_seen) if parsed.updated else None
    return Entry(
        id=entry_id(source_id, identity),
        source_id=source_id,
        guid=(parsed.guid or "").strip() or None,
        link=link,
        canonical_url=canonical,
        title=title,
        summary_html=summary_html,
        summary_text=summary_text,
        author=html_to_text(parsed.author or "") or None,
        published=published,
        updated=updated,
        first_seen=first_seen,
        content_hash=content_hash(title, summary_html),
        categories=_plain_unique(parsed.categories),
        tags=(),
    )


def _plain_unique(values: tuple[str, ...]) -> tuple[str, ...]:
    """Plain-text values, empty ones dropped, duplicates (after folding) after the first too."""
    seen: set[str] = set()
    kept: list[str] = []
    for value in values:
        text = html_to_text(value)
        key = fold_name(text)
        if text and key not in seen:
            seen.add(key)
            kept.append(text)
    return tuple(kept)


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:  # the parser promises aware datetimes; read a naive one as UTC
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _not_future(moment: datetime, first_seen: datetime) -> datetime:
    return first_seen if moment > first_seen + FUTURE_TOLERANCE else moment


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
