"""The lxml fast path (parse/fast.py) against feedparser: same entries after normalization.

Every feed of the shared real-world corpus and every fixture goes through both paths; wherever
the fast path accepts a document, the normalized entries (ids, titles, links, dates, sanitized
summaries, authors, categories) must be equal. Documents it rejects must fall back cleanly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from feedparser.datetimes import _parse_date as feedparser_parse_date
from feedparser.html import _cp1252
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.errors import ParseError
from aggregator.models import Entry, ParsedFeed
from aggregator.parse import fast
from aggregator.parse.encoding import decode_xml, strip_doctype
from aggregator.parse.feeds import looks_like_json, parse_feed
from aggregator.process.normalize import normalize_entry
from tests.corpus import corpus_dir

DATA = Path(__file__).parent / "data" / "feeds"
CORPUS = corpus_dir()
BASE = "https://base.example.org/feeds/feed.xml"
FIRST_SEEN = datetime(2030, 1, 1, tzinfo=UTC)  # after every corpus date: no date is "future"

# Well-formed RSS and Atom in the corpus that the fast path must take (not fall back on).
EXPECTED_ACCEPTED_AT_LEAST = 70


def corpus_files() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.name != "MANIFEST.md")


def fixture_files() -> list[Path]:
    return sorted(p for p in DATA.iterdir() if p.is_file())


def via_feedparser(content: bytes, monkeypatch: pytest.MonkeyPatch) -> ParsedFeed:
    """parse_feed with the fast path switched off."""

    def reject(data: bytes, *, url: str) -> ParsedFeed:
        raise fast.Rejected("switched off")

    with monkeypatch.context() as patch:
        patch.setattr(fast, "parse_well_formed", reject)
        return parse_feed(content, url=BASE)


def via_fast_path(content: bytes) -> ParsedFeed:
    """The fast path alone, on the bytes parse_feed would give it; raises fast.Rejected."""
    if looks_like_json(content, None):
        raise fast.Rejected("JSON")
    return fast.parse_well_formed(strip_doctype(decode_xml(content, None)), url=BASE)


def normalized(feed: ParsedFeed) -> list[Entry]:
    # No canonicalizing needed: clean_html sorts attributes, so feedparser's re-serialized
    # summaries (sorted) and lxml's (as written) clean alike, content hash included.
    return [
        normalize_entry(entry, source_id="s", base_url=BASE, first_seen=FIRST_SEEN)
        for entry in feed.entries
    ]


def differences(expected: ParsedFeed, actual: ParsedFeed) -> Iterator[str]:
    if (expected.title, expected.link) != (actual.title, actual.link):
        yield f"feed: {(expected.title, expected.link)} != {(actual.title, actual.link)}"
    want, got = normalized(expected), normalized(actual)
    if len(want) != len(got):
        yield f"{len(want)} entries != {len(got)}"
    for index, (a, b) in enumerate(zip(want, got, strict=False)):
        for field in dataclasses.fields(Entry):
            x, y = getattr(a, field.name), getattr(b, field.name)
            if x != y:
                yield f"entry {index} {field.name}: {x!r:.300} != {y!r:.300}"


def compare(path: Path, monkeypatch: pytest.MonkeyPatch) -> bool:
    """True when the fast path accepted `path` (and agreed); False when it fell back."""
    content = path.read_bytes()
    try:
        actual = via_fast_path(content)
    except fast.Rejected:
        # The fallback must still answer exactly as feedparser does.
        with contextlib.suppress(ParseError):
            assert parse_feed(content, url=BASE) == via_feedparser(content, monkeypatch)
        return False
    expected = via_feedparser(content, monkeypatch)
    problems = list(differences(expected, actual))
    assert not problems, f"{path.name}:\n" + "\n".join(problems[:20])
    assert parse_feed(content, url=BASE) == actual  # parse_feed takes the fast path
    return True


@pytest.mark.parametrize("path", fixture_files(), ids=lambda p: p.name)
def test_fixtures_agree(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    compare(path, monkeypatch)


@pytest.mark.skipif(not corpus_files(), reason="shared corpus not present")
def test_corpus_agrees_and_fast_path_takes_well_formed_feeds(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    accepted: list[str] = []
    rejected: list[str] = []
    for path in corpus_files():
        (accepted if compare(path, monkeypatch) else rejected).append(str(path.relative_to(CORPUS)))
    with capsys.disabled():
        print(f"\nfast path: {len(accepted)} corpus files accepted, {len(rejected)} fell back")
    assert len(accepted) >= EXPECTED_ACCEPTED_AT_LEAST, rejected


@pytest.mark.parametrize(
    "document",
    [
        b"<rss version='2.0'><channel><item><title>a &nbsp; b</title></item></channel></rss>",
        b"<rss><channel><item><title>unclosed</item></channel></rss>",
        b"<html><body>not a feed</body></html>",
        b"<feed xmlns='http://purl.org/atom/ns#'><title>Atom 0.3</title></feed>",
        b"<rss version='2.0'><channel><item><title><b>markup</b></title></item></channel></rss>",
        b"<rss version='2.0'><channel><item><media:title xmlns:media='http://search.yahoo.com/mrss/'"
        b">t</media:title></item></channel></rss>",
    ],
)
def test_rejects_what_it_does_not_model(document: bytes) -> None:
    with pytest.raises(fast.Rejected):
        fast.parse_well_formed(document, url=BASE)


def test_entities_are_never_expanded_or_fetched() -> None:
    # DOCTYPEs are stripped before parsing; an entity reference left behind is an error.
    document = b"<rss version='2.0'><channel><title>&xxe;</title></channel></rss>"
    with pytest.raises(fast.Rejected):
        fast.parse_well_formed(document, url=BASE)


def test_relative_links_and_xml_base() -> None:
    document = b"""<feed xmlns="http://www.w3.org/2005/Atom" xml:base="https://other.example/a/">
      <title>T</title>
      <entry xml:base="sub/"><id>urn:x:1</id><title>One</title>
        <link href="one.html"/><updated>2024-05-01T00:00:00Z</updated></entry>
    </feed>"""
    (entry,) = fast.parse_well_formed(document, url=BASE).entries
    assert entry.link == "https://other.example/a/sub/one.html"
    assert entry.guid == "urn:x:1"
    assert entry.published == datetime(2024, 5, 1, tzinfo=UTC)


def test_generated_bench_feeds_agree(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The benchmark's feeds (RSS and Atom; English, Traditional and Simplified Chinese).
    from bench.corpus import document

    for index in range(6):
        path = tmp_path / f"feed-{index}.xml"
        path.write_bytes(document(index, 20, seed=8))
        assert compare(path, monkeypatch), path.name


_DATE_PIECES = {
    "year": ["2024", "1999", "0000", "0001", "9999", "24", "٢٠٢٤"],
    "month": ["01", "05", "12", "13", "00", "1"],
    "day": ["01", "29", "30", "31", "32", "1", "00"],
    "hour": ["00", "12", "23", "24", "1"],
    "minute": ["00", "59", "60"],
    "second": ["00", "59", "60", "5"],
    "fraction": ["", "", ".5", ".123456789", ".9999999999999999999", ".", ".5z"],
    "zone": ["Z", "z", "", "+08:00", "-05:30", "+0800", "+24:00", "-23:59", " GMT", "+08"],
    "sep": ["T", "t", " "],
    "day_name": ["Wed, ", "Sun, ", "Thu, ", "Sat, ", "wed, ", "Xyz, ", "", "Wed ", "Wednesday, "],
    "month_name": ["May", "Feb", "Oct", "Aug", "may", "Foo", "September"],
    "zone_822": ["+0000", "-0500", "+0800", "GMT", "UT", "UTC", "Z", "EST", "HKT", "gmt", "+08:00"],
}
_PIECE = {name: st.sampled_from(values) for name, values in _DATE_PIECES.items()}
_RFC3339_LIKE = st.builds(
    "{year}-{month}-{day}{sep}{hour}:{minute}:{second}{fraction}{zone}".format_map,
    st.fixed_dictionaries(_PIECE),
)
_RFC822_LIKE = st.builds(
    "{day_name}{day} {month_name} {year} {hour}:{minute}:{second} {zone_822}".format_map,
    st.fixed_dictionaries(_PIECE),
)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(_RFC3339_LIKE, _RFC822_LIKE))
def test_dates_are_read_as_feedparser_reads_them(value: str) -> None:
    assert fast.read_date.__wrapped__(value) == feedparser_parse_date(value)


def test_the_date_shortcut_reads_the_usual_forms() -> None:
    for value in ("Wed, 01 May 2024 10:37:00 +0800", "2024-05-01T10:37:00.123+08:00"):
        assert fast._RFC822.fullmatch(value) or fast._RFC3339.fullmatch(value)
        assert fast.read_date.__wrapped__(value) == feedparser_parse_date(value)


def _fix_text_reference(text: str) -> str:
    """fast._fix_text as first written: a regex looks for C1 controls."""
    if text.isascii():
        return text
    with contextlib.suppress(UnicodeEncodeError, UnicodeDecodeError):
        text = text.encode("iso-8859-1").decode("utf-8")
    return text.translate(_cp1252) if re.search("[\x80-\x9f]", text) else text


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="a é\x80\x85\x9f\xa0\xc2\xc3\xa9香港\ud800\u00bf€", max_size=12))
def test_text_fixes_are_feedparsers(text: str) -> None:
    assert fast._fix_text(text) == _fix_text_reference(text)
