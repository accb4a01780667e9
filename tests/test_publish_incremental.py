"""Publishing cheaply: entries spliced into feedgen's documents are what feedgen writes, the
credits appended to cleaned HTML are what cleaning the whole gives, the manifest skips only
outputs whose inputs and files are unchanged, and the store's site reads use indexes."""

from __future__ import annotations

import html
import os
import tempfile
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from aggregator.models import Entry
from aggregator.process.sanitize import clean_html
from aggregator.publish import (
    ATOM_FILE,
    INDEX_FILE,
    MANIFEST_FILE,
    FeedItem,
    Mention,
    _clean_text,
    _feed_generator,
    _reported_by_html,
    _web_url,
    _with_stylesheet,
    atom_entry,
    feed_item,
    feed_meta,
    render_atom,
    render_rss,
    rss_item,
)
from aggregator.settings import Settings
from aggregator.store import Store
from tests.test_publish import (
    BASE_URL,
    NOW,
    TEMPLATES,
    all_files,
    run_publish,
    sample_stories,
    site_data,
    stored,
    story,
)
from tests.test_xss import PAYLOADS

ZONE = __import__("zoneinfo").ZoneInfo("Asia/Hong_Kong")


# --- entries as feedgen writes them ---------------------------------------------------------


def feedgen_reference(items: list[FeedItem], atom: bool) -> bytes:
    """The whole feed built through feedgen, as publishing did before splicing entries in."""
    meta = feed_meta(BASE_URL, "feed", "Watch & <co>", "d", INDEX_FILE, items, NOW)
    fg = _feed_generator(
        meta,
        self_url=meta.atom_url if atom else meta.rss_url,
        self_type="application/atom+xml" if atom else "application/rss+xml",
    )
    for item in items:
        fe = fg.add_entry(order="append")
        fe.id(item.id)
        fe.title(item.title)
        fe.link(href=item.url, rel="alternate", type="text/html")
        fe.published(item.published)
        fe.updated(item.updated)
        fe.author(name=item.source_name)
        fe.dc.dc_creator(item.source_name)
        fe.content(item.content_html, type="html")
        for tag in item.tags:
            fe.category(term=tag)
    document = fg.atom_str(pretty=True) if atom else fg.rss_str(pretty=True)
    return _with_stylesheet(bytes(document), meta.xsl_href)


def hostile_items() -> list[FeedItem]:
    stories = sample_stories()
    for n, payload in enumerate(PAYLOADS[:40]):
        awkward = f'{payload} \r\t"quoted" & ]]> \xa0 中文'
        entry = stored(
            f"x:{n}", title=awkward, published=NOW - timedelta(hours=n),
            link=f"https://e.example/{n}?a=1&b=\"2\"", summary_html=payload,
            source_name=awkward, tags=(awkward, "plain"),
        )  # fmt: skip
        stories.append(story(entry))
    return [feed_item(s, BASE_URL, ZONE) for s in stories]


@pytest.mark.parametrize("atom", [True, False], ids=["atom", "rss"])
def test_spliced_entries_are_byte_for_byte_what_feedgen_writes(atom: bool) -> None:
    items = hostile_items()
    meta = feed_meta(BASE_URL, "feed", "Watch & <co>", "d", INDEX_FILE, items, NOW)
    ours = (
        render_atom(meta, [atom_entry(i) for i in items])
        if atom
        else render_rss(meta, [rss_item(i) for i in items])
    )
    assert ours == feedgen_reference(items, atom)


@pytest.mark.parametrize("atom", [True, False], ids=["atom", "rss"])
def test_an_empty_feed_is_what_feedgen_writes(atom: bool) -> None:
    meta = feed_meta(BASE_URL, "feed", "Watch & <co>", "d", INDEX_FILE, [], NOW)
    ours = render_atom(meta, []) if atom else render_rss(meta, [])
    assert ours == feedgen_reference([], atom)


# --- the credits need no cleaning -----------------------------------------------------------


def reported_by_before(source_name: str, url: str | None, also: list[Mention]) -> str:
    """The credits as first written: html.escape, then cleaned with the summary."""

    def mention(name: str, link: str | None) -> str:
        text = html.escape(name)
        return f'<a href="{html.escape(link)}">{text}</a>' if link else text

    parts = [f"<p>Reported by {mention(source_name, url)}."]
    if also:
        parts.append(
            f" Also reported by: {', '.join(mention(m.source_name, m.url) for m in also)}."
        )
    return "".join(parts) + "</p>"


NAME_PARTS = [*"ab &<>\"'\xa0;#=中/", "&amp;", "&lt;", "<script>", "&#106;"]
NAMES = st.lists(st.sampled_from(NAME_PARTS), max_size=12).map("".join)
URL_PARTS = [*'a&=?;%#x/"<>', "&amp;"]
URLS = st.lists(st.sampled_from(URL_PARTS), max_size=8).map(
    lambda parts: _web_url("https://e.org/" + "".join(parts))
)
SUMMARIES = st.sampled_from(
    ["", "<p>x</p>", "plain & text", '<p><a href="https://q/" rel="noopener noreferrer">b</a></p>',
     "<ul><li>x</li></ul>", *PAYLOADS[:20]]
)  # fmt: skip


@hypothesis_settings(max_examples=300, deadline=None)
@given(SUMMARIES, NAMES, URLS, st.lists(st.tuples(NAMES, URLS), max_size=3))
def test_credits_appended_to_a_cleaned_summary_equal_cleaning_the_whole(
    summary: str, name: str, url: str | None, others: list[tuple[str, str | None]]
) -> None:
    name = _clean_text(name) or "x"
    also = [Mention(_clean_text(n) or "y", u) for n, u in others]
    cleaned = clean_html(summary)
    whole = clean_html(cleaned + reported_by_before(name, url, also))
    assert clean_html(cleaned) + _reported_by_html(name, url, also) == whole


# --- the manifest ---------------------------------------------------------------------------


def test_an_unchanged_republish_renders_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    public = tmp_path / "public"
    run_publish(site_data(), settings, public)
    assert (public / MANIFEST_FILE).exists()

    def no_rendering(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("rendered")

    monkeypatch.setattr("aggregator.publish.feed_item", no_rendering)
    monkeypatch.setattr("aggregator.publish.render_atom", no_rendering)
    monkeypatch.setattr("aggregator.publish.Pages._render", no_rendering)
    report = run_publish(site_data(), settings, public, now=NOW + timedelta(hours=2))
    assert report.written == () and len(report.unchanged) > 20


def test_a_changed_story_rewrites_only_the_outputs_showing_it(
    tmp_path: Path, settings: Settings
) -> None:
    public = tmp_path / "public"
    first = run_publish(site_data(), settings, public)
    stories = sample_stories()
    lead = stories[3].lead
    edited: Entry = replace(lead.entry, title="A corrected title", content_hash="new")
    stories[3] = replace(stories[3], lead=replace(lead, entry=edited))

    report = run_publish(site_data(stories), settings, public)

    changed = {p.relative_to(public).as_posix() for p in report.written}
    assert {ATOM_FILE, "all.atom", INDEX_FILE} <= changed
    assert "feed.xsl" not in changed and "sources.html" not in changed
    assert len(report.written) + len(report.unchanged) == len(first.written)
    assert "A corrected title" in (public / ATOM_FILE).read_text(encoding="utf-8")


def test_a_file_removed_or_replaced_by_hand_is_rendered_again(
    tmp_path: Path, settings: Settings
) -> None:
    public = tmp_path / "public"
    run_publish(site_data(), settings, public)
    expected = all_files(public)
    (public / ATOM_FILE).unlink()
    index = public / INDEX_FILE
    replacement = index.with_name("replacement")
    replacement.write_text("defaced")
    os.replace(replacement, index)  # a new file, as an editor or a half-done publish leaves

    report = run_publish(site_data(), settings, public)

    assert {public / ATOM_FILE, index} <= set(report.written)
    again = all_files(public)
    assert again.pop(MANIFEST_FILE) != expected.pop(MANIFEST_FILE)  # new inodes recorded
    assert again == expected


def test_changed_templates_or_settings_render_everything_again(
    tmp_path: Path, settings: Settings
) -> None:
    public = tmp_path / "public"
    run_publish(site_data(), settings, public)
    templates = tmp_path / "templates"
    templates.mkdir()
    for path in TEMPLATES.iterdir():
        (templates / path.name).write_bytes(path.read_bytes())
    page = templates / "page.html"
    page.write_text(page.read_text(encoding="utf-8").replace("<main", "<main data-x"))
    from aggregator.publish import publish

    report = publish(
        site_data(), settings=settings, public_dir=public, now=NOW, templates_dir=templates
    )
    assert public / INDEX_FILE in report.written
    assert b"data-x" in (public / INDEX_FILE).read_bytes()

    renamed = replace(settings, publish=replace(settings.publish, title="Renamed"))
    report = run_publish(site_data(), renamed, public)
    assert public / ATOM_FILE in report.written and public / INDEX_FILE in report.written


def test_a_template_edited_in_place_is_used_by_the_next_publish(
    tmp_path: Path, settings: Settings
) -> None:
    """Compiled templates are kept between publishes, keyed by their bytes: an edit shows at
    once, even one that leaves the file's modification time as it was."""
    from aggregator.publish import publish

    templates = tmp_path / "templates"
    templates.mkdir()
    for path in TEMPLATES.iterdir():
        (templates / path.name).write_bytes(path.read_bytes())
    page = templates / "page.html"
    for n, public in enumerate((tmp_path / "one", tmp_path / "two")):
        stamp = page.stat().st_mtime_ns
        text = page.read_text(encoding="utf-8").replace("<main", f"<main data-edit-{n}", 1)
        page.write_text(text, encoding="utf-8")
        os.utime(page, ns=(stamp, stamp))
        publish(site_data(), settings=settings, public_dir=public, now=NOW, templates_dir=templates)
        assert f"data-edit-{n}".encode() in (public / INDEX_FILE).read_bytes()


def test_a_broken_manifest_only_means_rendering_everything(
    tmp_path: Path, settings: Settings
) -> None:
    public = tmp_path / "public"
    run_publish(site_data(), settings, public)
    expected = all_files(public)
    (public / MANIFEST_FILE).write_text('{"format": 1, "files": {"feed.atom": 3}}')
    report = run_publish(site_data(), settings, public)
    assert report.written == () and all_files(public) == expected


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    from tests.test_publish import make_settings

    return make_settings(tmp_path)


# --- the store's reads for publishing -------------------------------------------------------


def query_plan(store: Store, query: str, *args: object) -> str:
    return "\n".join(row[-1] for row in store.conn.execute("EXPLAIN QUERY PLAN " + query, args))


def test_tag_names_seek_the_index_instead_of_reading_every_tag_row() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "a.db")
        try:
            assert store.tag_names() == []
            store.conn.execute("PRAGMA foreign_keys = OFF")  # tags without their entries
            store.conn.executemany(
                "INSERT INTO entry_tags (entry_id, tag, published) VALUES (?, ?, ?)",
                [(f"e{n}", tag, "2024-05-01T00:00:00Z") for n in range(50) for tag in "bca"],
            )
            assert store.tag_names() == ["a", "b", "c"]
            plan = query_plan(store, "SELECT DISTINCT tag FROM entry_tags ORDER BY tag")
            assert "SCAN entry_tags" in plan  # what tag_names no longer does
            traced: list[str] = []
            store.conn.set_trace_callback(traced.append)
            store.tag_names()
            store.conn.set_trace_callback(None)
            plan = query_plan(store, traced[-1])
            assert (
                "SCAN entry_tags" not in plan and "USING COVERING INDEX entry_tags_by_tag" in plan
            )
            health = "SELECT count(*) FROM entries e WHERE e.source_id = ? AND e.first_seen >= ?"
            assert "entries_by_source_first_seen" in query_plan(store, health, "s", "x")
        finally:
            store.close()
