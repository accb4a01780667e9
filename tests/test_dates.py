"""parse_date and date_from_link: the formats HK and Mainland listing pages use, table-driven."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.parse.dates import date_from_link, parse_date

HK = "Asia/Hong_Kong"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


# text -> the UTC instant, when the text is read in Hong Kong time (UTC+8, no DST)
PARSED = [
    ("16 May 2024", utc(2024, 5, 15, 16)),
    ("May 16, 2024", utc(2024, 5, 15, 16)),
    ("2024-05-16", utc(2024, 5, 15, 16)),
    ("2024-05-06", utc(2024, 5, 5, 16)),  # year first: never read as 5 June
    ("2024-05-16 14:38", utc(2024, 5, 16, 6, 38)),
    ("2024-05-16 14:38:20", utc(2024, 5, 16, 6, 38, 20)),
    ("2024/05/16", utc(2024, 5, 15, 16)),
    ("16/05/2024", utc(2024, 5, 15, 16)),
    ("06/05/2024", utc(2024, 5, 5, 16)),  # day first, as in HK
    ("05/16/2024", utc(2024, 5, 15, 16)),  # only one reading is a valid date
    ("16-05-2024", utc(2024, 5, 15, 16)),
    ("2024.05.16", utc(2024, 5, 15, 16)),
    ("2024年5月16日", utc(2024, 5, 15, 16)),
    ("2024年05月16日 14:38", utc(2024, 5, 16, 6, 38)),
    ("2024年5月16日（星期四）下午2:38", utc(2024, 5, 16, 6, 38)),
    ("2024年5月16日 上午9時30分", utc(2024, 5, 16, 1, 30)),
    ("２０２４年５月１６日", utc(2024, 5, 15, 16)),  # full-width digits
    ("發佈日期：2024-05-16", utc(2024, 5, 15, 16)),
    ("Thursday, May 16, 2024 2:38 PM", utc(2024, 5, 16, 6, 38)),
    ("1 Aug 2018 11:33 am", utc(2018, 8, 1, 3, 33)),
    ("  16\n May\t2024  ", utc(2024, 5, 15, 16)),
    ("Posted: 16 May 2024 | CAS", utc(2024, 5, 15, 16)),
    # an explicit offset or zone is kept, not replaced by the configured time zone
    ("2024-05-16T14:38:00+08:00", utc(2024, 5, 16, 6, 38)),
    ("2024-05-16T06:38:00Z", utc(2024, 5, 16, 6, 38)),
    ("2024-05-16T14:38:00.250+08:00", datetime(2024, 5, 16, 6, 38, 0, 250000, tzinfo=UTC)),
    ("Thu, 16 May 2024 02:38:00 -0400", utc(2024, 5, 16, 6, 38)),
    ("16 May 2024 14:38 HKT", utc(2024, 5, 16, 6, 38)),
    ("16 May 2024 06:38 GMT", utc(2024, 5, 16, 6, 38)),
    # compact digits, as in URLs and data attributes
    ("20240516", utc(2024, 5, 15, 16)),
    ("202405161438", utc(2024, 5, 16, 6, 38)),
    ("1715841480", utc(2024, 5, 16, 6, 38)),
    ("1715841480000", utc(2024, 5, 16, 6, 38)),
]

UNPARSED = [
    "",
    "   ",
    "garbage",
    "coming soon",
    "日期待定",
    "12",  # a day alone
    "Fri",  # a weekday alone
    "May 2024",  # no day
    "16 May",  # no year
    "5月16日",  # no year
    "2024-02-30",  # no such day
    "2024年13月1日",
    "0000-00-00",
    "99999999999999999999",
    "16 May 1800",  # out of range
    "Page 3 of 10",
    "x" * 500,
]


@pytest.mark.parametrize(("text", "expected"), PARSED)
def test_parse_date_reads_format(text: str, expected: datetime) -> None:
    parsed = parse_date(text, timezone=HK)
    assert parsed == expected
    assert parsed is not None and parsed.utcoffset() is not None
    assert parsed.tzinfo is UTC


@pytest.mark.parametrize("text", UNPARSED)
def test_parse_date_returns_none_for_non_dates(text: str) -> None:
    assert parse_date(text, timezone=HK) is None


def test_parse_date_uses_the_given_time_zone_for_naive_values() -> None:
    assert parse_date("2024-05-16 14:38", timezone="UTC") == utc(2024, 5, 16, 14, 38)
    # London is on summer time (UTC+1) in May
    assert parse_date("2024-05-16 14:38", timezone="Europe/London") == utc(2024, 5, 16, 13, 38)
    # an explicit offset wins over the configured zone
    assert parse_date("2024-05-16T14:38:00+08:00", timezone="UTC") == utc(2024, 5, 16, 6, 38)


LINKS = [
    (
        "https://english.cas.cn/newsroom/202405/t20240516_123456.shtml",
        r"t(\d{8})_",
        utc(2024, 5, 15, 16),
    ),
    ("https://english.news.cn/20240516/5a1b/c.html", r"/(\d{8})/", utc(2024, 5, 15, 16)),
    ("https://example.org/2024/05/16/story.html", r"\d{4}/\d{2}/\d{2}", utc(2024, 5, 15, 16)),
    (
        "https://example.org/2024/05/16/story.html",
        r"/(\d{4})/(\d{2})/(\d{2})/",
        utc(2024, 5, 15, 16),
    ),
    ("https://example.org/news/20240516a.htm", r"(\d{8})[a-z]\.htm", utc(2024, 5, 15, 16)),
    ("https://example.org/news/?d=202405161438", r"d=(\d{12})", utc(2024, 5, 16, 6, 38)),
    ("https://example.org/news/123.html", r"t(\d{8})_", None),  # no match
    ("https://example.org/t99999999_1.html", r"t(\d{8})_", None),  # not a date
    ("https://example.org/202405/index.html", r"/(\d{6})/", None),  # a month, not a day
    ("https://example.org/t20240516_1.html", r"t(\d{8}", None),  # invalid pattern
]


@pytest.mark.parametrize(("url", "pattern", "expected"), LINKS)
def test_date_from_link(url: str, pattern: str, expected: datetime | None) -> None:
    assert date_from_link(url, pattern, timezone=HK) == expected


@given(st.text(max_size=200))
def test_parse_date_never_raises(text: str) -> None:
    parsed = parse_date(text, timezone=HK)
    assert parsed is None or parsed.tzinfo is UTC


@given(st.text(max_size=100), st.sampled_from([r"(\d+)", r"\d{8}", r"(\d{4})\D(\d{2})", r"(.*)"]))
def test_date_from_link_never_raises(url: str, pattern: str) -> None:
    parsed = date_from_link(url, pattern, timezone=HK)
    assert parsed is None or parsed.tzinfo is UTC
