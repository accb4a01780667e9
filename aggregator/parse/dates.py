"""Dates as HK and Mainland listing pages write them (English and Chinese) -> aware UTC datetimes."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta, tzinfo
from datetime import timezone as fixed_offset
from functools import lru_cache
from zoneinfo import ZoneInfo

from dateutil import parser as dateutil_parser

__all__ = ["date_from_link", "parse_date"]

# Dates outside this range are misreadings (a page number, an id), not publication dates;
# the bound also keeps astimezone() away from datetime's limits.
_MIN_YEAR = 1900
_MAX_YEAR = 2200

# Longer text is a paragraph, not a date; fuzzy parsing it would find dates that are not there.
_MAX_FUZZY_LENGTH = 120

_CHINESE_DATE = re.compile(
    r"(?P<year>\d{4})\s*年\s*(?P<month>\d{1,2})\s*月\s*(?P<day>\d{1,2})\s*[日號号]?"
    r"(?:\s*[(\[]?\s*(?:星期|禮拜|礼拜|週|周)[一二三四五六日天]\s*[)\]]?)?"
    r"(?:\s*(?P<period>上午|下午|早上|中午|晚上|凌晨|AM|PM|am|pm)?"
    r"\s*(?P<hour>\d{1,2})\s*[:時时点點]\s*(?P<minute>\d{1,2})\s*分?"
    r"(?:\s*:\s*(?P<second>\d{1,2}))?)?"
)
_AFTERNOON = frozenset({"下午", "晚上", "PM", "pm"})
_MIDDAY = "中午"

_YEAR_FIRST = re.compile(r"\d{4}\s*[-/.]\s*\d{1,2}")
_DIGITS_ONLY = re.compile(r"\d+")

# Abbreviations dateutil does not know; CST on a Chinese page means China Standard Time.
_ZONE_ABBREVIATIONS = {
    "HKT": 8 * 3600,
    "CST": 8 * 3600,
    "BJT": 8 * 3600,
    "CCT": 8 * 3600,
    "SGT": 8 * 3600,
    "JST": 9 * 3600,
    "KST": 9 * 3600,
    "UTC": 0,
    "GMT": 0,
    "UT": 0,
    "Z": 0,
}

# Two different defaults: a field the text did not give comes out differently from each.
_DEFAULT_A = datetime(2001, 1, 1)
_DEFAULT_B = datetime(2002, 2, 2)


def parse_date(text: str, *, timezone: str) -> datetime | None:
    """Read one date (and maybe a time) from `text`; naive values are local to `timezone`.

    Returns an aware UTC datetime, or None when `text` holds no complete date (year, month and
    day). Never raises for any text; `timezone` must be a valid IANA name (config checks it).
    """
    cleaned = " ".join(unicodedata.normalize("NFKC", text).split())
    if not cleaned:
        return None
    parsed = _parse_digits(cleaned) or _parse_chinese(cleaned) or _parse_with_dateutil(cleaned)
    if parsed is None or not _MIN_YEAR <= parsed.year <= _MAX_YEAR:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=_zone(timezone))
    return parsed.astimezone(UTC)


def date_from_link(url: str, pattern: str, *, timezone: str) -> datetime | None:
    """The date a URL carries, found by `pattern`: its groups joined, or the whole match.

    `t(\\d{8})_` reads 2024-05-16 from `.../202405/t20240516_123456.shtml`; a pattern with
    several groups, such as `/(\\d{4})/(\\d{2})/(\\d{2})/`, has them joined with "-".
    Returns None when the pattern is invalid, does not match, or what it matched is not a date.
    """
    try:
        match = re.search(pattern, url)
    except re.error:
        return None
    if match is None:
        return None
    groups = [group for group in match.groups() if group]
    value = "-".join(groups) if groups else match.group(0)
    return parse_date(value, timezone=timezone)


@lru_cache(maxsize=32)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _parse_digits(text: str) -> datetime | None:
    """Compact forms from URLs and data attributes: 20240516, 202405161438, epoch seconds."""
    if not _DIGITS_ONLY.fullmatch(text):
        return None
    formats = {8: "%Y%m%d", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}
    try:
        if len(text) in formats:
            return datetime.strptime(text, formats[len(text)])
        if len(text) in (10, 13):  # Unix time in seconds or milliseconds
            seconds = int(text) / (1000 if len(text) == 13 else 1)
            return datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _parse_chinese(text: str) -> datetime | None:
    """2024年5月16日, 2024年05月16日 14:38, 2024年5月16日（星期四）下午2:38."""
    match = _CHINESE_DATE.search(text)
    if match is None:
        return None
    hour = int(match["hour"] or 0)
    period = match["period"]
    afternoon = period in _AFTERNOON or (period == _MIDDAY and hour < 11)
    if afternoon and hour < 12:
        hour += 12
    elif period == "凌晨" and hour == 12:
        hour = 0
    try:
        return datetime(
            int(match["year"]),
            int(match["month"]),
            int(match["day"]),
            hour,
            int(match["minute"] or 0),
            int(match["second"] or 0),
        )
    except ValueError:
        return None


def _parse_with_dateutil(text: str) -> datetime | None:
    """English and numeric forms; a leading year means Y-M-D, otherwise day first, as in HK."""
    year_first = _YEAR_FIRST.search(text) is not None
    for fuzzy in (False, True):
        if fuzzy and len(text) > _MAX_FUZZY_LENGTH:
            return None
        first = _dateutil(text, _DEFAULT_A, year_first=year_first, fuzzy=fuzzy)
        if first is None:
            continue
        second = _dateutil(text, _DEFAULT_B, year_first=year_first, fuzzy=fuzzy)
        if second is None or (first.year, first.month, first.day) != (
            second.year,
            second.month,
            second.day,
        ):
            return None  # the text lacks a year, month or day
        return first
    return None


def _dateutil(text: str, default: datetime, *, year_first: bool, fuzzy: bool) -> datetime | None:
    try:
        return dateutil_parser.parse(
            text,
            default=default,
            dayfirst=not year_first,
            yearfirst=year_first,
            fuzzy=fuzzy,
            tzinfos=_zone_for,
        )
    except (ValueError, OverflowError, TypeError):
        # ParserError is a ValueError; huge numbers overflow.
        return None


def _zone_for(name: str | None, offset: int | None) -> tzinfo | None:
    """dateutil's tzinfos hook; returning None keeps the value naive instead of warning."""
    if offset is not None:
        return fixed_offset(timedelta(seconds=offset))
    if name is not None and name.upper() in _ZONE_ABBREVIATIONS:
        return fixed_offset(timedelta(seconds=_ZONE_ABBREVIATIONS[name.upper()]))
    return None
