"""A summary is cleaned once, when it is stored, and published as it is; publishing cleans again
only what another sanitizer version (or nobody) cleaned."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregator.clock import FixedClock
from aggregator.models import Entry, StoredEntry, Story
from aggregator.parse.feeds import parse_feed
from aggregator.process.normalize import normalize_entry
from aggregator.process.sanitize import SANITIZER_VERSION, clean_html, text_to_html
from aggregator.publish import feed_item
from aggregator.settings import FetchSettings, Settings, SourceSettings
from aggregator.store import PollWrite, Store
from aggregator.update import update
from tests.corpus import CORPUS
from tests.feedmaker import Item, rss
from tests.servers import FeedServer, Response

NOW = datetime(2024, 5, 16, 12, 0, tzinfo=UTC)
HOSTILE = (
    '<p onclick="x()">Joint lab <script>alert(1)</script><img src="x" onerror="alert(2)">'
    '<a href="javascript:alert(3)">more</a> <iframe src="https://evil.example/"></iframe></p>'
)
BASE = "https://feeds.example.org/science/feed.xml"


def hostile_entry(summary_html: str) -> Entry:
    return Entry(
        id="s:1", source_id="s", guid=None, link="https://news.example.org/1",
        canonical_url="https://news.example.org/1", title="Joint lab opens",
        summary_html=summary_html, summary_text="Joint lab more", author=None, published=NOW,
        updated=None, first_seen=NOW, content_hash="h", tags=("science",),
    )  # fmt: skip


def published_html(stored: StoredEntry) -> str:
    story = Story(id=stored.entry.id, lead=stored, others=())
    return feed_item(story, "https://site.example/", ZoneInfo("UTC")).content_html


def test_a_summary_not_known_to_be_cleaned_is_cleaned_at_publish() -> None:
    html = published_html(StoredEntry(hostile_entry(HOSTILE), "Outlet"))
    for bad in ("<script", "onclick", "onerror", "javascript:", "<iframe"):
        assert bad not in html
    assert html.startswith(clean_html(HOSTILE))


def test_a_summary_the_current_sanitizer_cleaned_is_published_as_stored() -> None:
    cleaned = clean_html(HOSTILE, base_url=BASE)
    stored = StoredEntry(hostile_entry(cleaned), "Outlet", sanitized=True)
    assert published_html(stored) == published_html(dataclasses.replace(stored, sanitized=False))
    assert published_html(stored).startswith(cleaned)


def test_the_store_marks_only_what_the_poll_cleaned(
    http_server: FeedServer, tmp_path: Path
) -> None:
    http_server.routes["/feed.xml"] = Response(
        200,
        rss([Item("Joint lab opens", "https://news.example.org/1", description=HOSTILE)]),
        {"Content-Type": "application/rss+xml"},
    )
    settings_ = Settings(
        path=tmp_path / "feeds.toml",
        data_dir=tmp_path,
        fetch=FetchSettings(timeout=5.0, deadline=5.0, concurrency=2, per_host=2),
        sources=(SourceSettings(id="s", url=http_server.url("/feed.xml"), name="S"),),
    )
    store = Store(tmp_path / "aggregator.db")
    try:
        assert update(settings_, store, FixedClock(NOW), force=True).new == 1
        (polled,) = store.entries()
        assert polled.sanitized
        assert "<script" not in polled.entry.summary_html
        assert "<script" not in published_html(polled)
        # Written some other way (an older version, a restored backup): cleaned again.
        raw = dataclasses.replace(hostile_entry(HOSTILE), id="s:2", source_id="s")
        store.apply_poll(PollWrite("s", NOW, 200, None, None, NOW, inserts=(raw,)))
        other = next(e for e in store.entries() if e.entry.id == "s:2")
        assert not other.sanitized and other.entry.summary_html == HOSTILE
        assert "<script" not in published_html(other) and "onerror" not in published_html(other)
        versions = dict(store.conn.execute("SELECT id, sanitized_by FROM entries").fetchall())
        assert versions == {polled.entry.id: SANITIZER_VERSION, "s:2": 0}
    finally:
        store.close()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "<p>",
                "</p>",
                "<b>",
                "</b>",
                "<i>",
                "<a href='/x'>",
                '<a href="https://a.b/c">',
                "</a>",
                "<img src='/i.png'>",
                "<img src=x onerror=y>",
                "<script>",
                "</script>",
                "<table>",
                "<tr>",
                "<td>",
                "</td>",
                "<ul>",
                "<li>",
                "<h1>",
                "<pre>\n",
                "<br>",
                "&amp;",
                "&lt;",
                "&nbsp;",
                "&#0;",
                "\x00",
                "\x0b",
                "\ufffe",
                "香港",
                "Shenzhen",
                " ",
                "\n",
                "<!-- c -->",
                "<div style='x'>",
                "</div>",
                "<svg><a>",
                "<form>",
            ]
        ),
        max_size=30,
    ),
    st.booleans(),
)
def test_cleaning_a_stored_summary_again_changes_nothing(pieces: list[str], plain: bool) -> None:
    """What makes skipping the second pass safe: the store holds clean_html's output, and
    cleaning that again (as publishing did) gives it back unchanged."""
    raw = "".join(pieces)
    stored_html = clean_html(text_to_html(raw) if plain else raw, base_url=BASE)
    assert clean_html(stored_html) == stored_html
    # What publishing does when characters XML cannot hold had to go: clean again.
    stored = StoredEntry(hostile_entry(stored_html), "Outlet", sanitized=True)
    assert published_html(stored) == published_html(dataclasses.replace(stored, sanitized=False))


@pytest.mark.skipif(not CORPUS.is_dir(), reason="the shared corpus is not on this machine")
def test_cleaning_the_corpus_summaries_again_changes_nothing() -> None:
    checked = 0
    for path in sorted(p for p in CORPUS.rglob("*") if p.is_file()):
        try:
            feed = parse_feed(path.read_bytes(), url=BASE)
        except Exception:  # not a feed (listing pages, the manifest)
            continue
        for parsed in feed.entries:
            entry = normalize_entry(parsed, source_id="s", base_url=BASE, first_seen=NOW)
            stored = StoredEntry(entry, "Outlet", sanitized=True)
            cleaned_again = published_html(dataclasses.replace(stored, sanitized=False))
            assert published_html(stored) == cleaned_again, (path.name, entry.summary_html[:200])
            checked += 1
    assert checked > 1000
