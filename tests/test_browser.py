"""A real browser (headless Debian Chromium, driven by Playwright) reads the site and the
XSL-styled feed from `aggregator serve`, follows a tag link, sees no console errors, and saves
the screenshots in docs/screenshots/."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aggregator.app import App
from aggregator.clock import FixedClock
from aggregator.models import SourceHealth, Story
from aggregator.serve import make_server
from tests.browser import CHROMIUM, LAUNCH_ARGS, needs_chromium
from tests.test_publish import make_settings, run_publish, site_data, stored, story

SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
NOW = datetime(2024, 5, 24, 9, 0, tzinfo=UTC)

pytestmark = needs_chromium

HEADLINES = [
    (
        "hksar-press-en",
        "HKSAR Government press releases",
        "Hong Kong and Shenzhen sign pact on cross-boundary research data flows",
        0,
    ),
    ("rthk-zh", "RTHK 即時新聞", "港深創科園首座大樓落成　料明年投入使用", 1),
    ("scmp", "SCMP", "Hong Kong universities to open joint AI lab in Qianhai", 2),
    (
        "chinadaily-hk",
        "China Daily Hong Kong",
        "Greater Bay Area life sciences fund draws Mainland investors",
        4,
    ),
    ("hksar-press-zh", "香港特區政府新聞公報", "創新科技及工業局局長出席大灣區科技合作論壇", 8),
    (
        "hksar-press-en",
        "HKSAR Government press releases",
        "Loop park welcomes first Mainland tenants",
        9,
    ),
    ("scmp", "SCMP", "Shenzhen-Hong Kong quantum computing centre announced", 15),
    ("rthk-en", "RTHK English", "HKUST and Tsinghua sign microelectronics partnership", 22),
]


def demo_stories() -> list[Story]:
    stories = []
    for n, (source, name, title, days) in enumerate(HEADLINES):
        when = NOW - timedelta(days=days, hours=n)
        lead = stored(
            f"{source}:{n}",
            title=title,
            link=f"https://news.example.org/{source}/{n}",
            summary_html=f"<p>{title}. Officials from both sides of the boundary met on the day.</p>",
            summary_text=f"{title}. Officials from both sides of the boundary met on the day.",
            published=when,
            source_name=name,
            tags=("hk-mainland-science", "official" if source.startswith("hksar") else "media"),
        )
        others = []
        if n == 0:
            others = [
                stored("scmp:x0", title="Data pact", link="https://news.example.org/scmp/x0",
                       published=when + timedelta(hours=2), source_name="SCMP", tags=()),
                stored("rthk-en:x0", title="Data pact", link="https://news.example.org/rthk/x0",
                       published=when + timedelta(hours=3), source_name="RTHK English", tags=()),
            ]  # fmt: skip
        stories.append(story(lead, *others))
    return stories


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp_path = tmp_path_factory.mktemp("browser")
    settings = make_settings(tmp_path)
    data = site_data(demo_stories())
    sources = [
        SourceHealth("hksar-press-en", "HKSAR Government press releases",
                     "https://www.info.gov.hk/gia/rss/general_en.xml",
                     last_success_at=NOW - timedelta(minutes=12), recent_items=41),
        SourceHealth("rthk-zh", "RTHK 即時新聞", "https://rthk.hk/rthk/news/rss/c_expressnews_clocal.xml",
                     last_success_at=NOW - timedelta(minutes=5), recent_items=230),
        SourceHealth("scmp", "SCMP", "https://www.scmp.com/rss/2/feed",
                     last_success_at=NOW - timedelta(hours=7), last_error="HTTP 503 Service Unavailable",
                     last_error_at=NOW - timedelta(minutes=30), consecutive_failures=2, recent_items=17),
    ]  # fmt: skip
    run_publish(
        data.__class__(**{**_fields(data), "sources": sources}),
        settings,
        tmp_path / "public",
        now=NOW,
    )
    app = App(settings=settings, clock=FixedClock(NOW))
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        app.close()


def _fields(data: Any) -> dict[str, Any]:
    return {name: getattr(data, name) for name in data.__dataclass_fields__}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser: Any, width: int = 1024) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(viewport={"width": width, "height": 800}, locale="en-GB")
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    # Failed answers, not failed requests: Chromium reports its XSLT's stylesheet load as
    # aborted once the transformed document replaces the feed.
    page.on(
        "response", lambda r: errors.append(f"{r.status}: {r.url}") if r.status >= 400 else None
    )
    return context, page, errors


def test_the_index_shows_the_stories_and_a_tag_link_leads_to_its_page(
    browser: Any, site: str
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    context, page, errors = open_page(browser)
    try:
        response = page.goto(site + "index.html")
        assert response.status == 200
        assert page.locator("h1").inner_text() == "HK–Mainland Science Watch"
        titles = page.locator("article.story h3").all_inner_texts()
        assert titles == [h[2] for h in HEADLINES]
        assert page.locator("section.week h2").count() == 4
        assert (
            "Also reported by: SCMP, RTHK English"
            in page.locator("article.story").first.inner_text()
        )
        assert page.locator("figure.chart svg[role=img]").count() == 1
        assert page.locator('link[rel=alternate][type="application/atom+xml"]').count() == 1
        page.screenshot(path=str(SCREENSHOTS / "index.png"), full_page=True)

        page.locator("article.story ul.tags a", has_text="official").first.click()
        page.wait_for_url("**/tags/official.html")
        assert page.locator("h1").inner_text() == "official"
        official = page.locator("article.story h3").all_inner_texts()
        assert official == [h[2] for h in HEADLINES if h[0].startswith("hksar")]
        page.screenshot(path=str(SCREENSHOTS / "tag.png"), full_page=True)

        page.goto(site + "sources.html")
        assert "failing (2 in a row)" in page.locator("table").inner_text()
        page.screenshot(path=str(SCREENSHOTS / "sources.png"), full_page=True)
        assert errors == []
    finally:
        context.close()


def test_the_index_reads_at_phone_width(browser: Any, site: str) -> None:
    context, page, errors = open_page(browser, width=375)
    try:
        page.goto(site)
        widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1]  # nothing wider than the phone: no sideways scrolling
        assert page.locator("article.story").count() == len(HEADLINES)
        page.screenshot(path=str(SCREENSHOTS / "index-375.png"), full_page=True)
        assert errors == []
    finally:
        context.close()


def test_the_feed_is_readable_through_the_stylesheet(browser: Any, site: str) -> None:
    context, page, errors = open_page(browser)
    try:
        response = page.goto(site + "feed.atom")
        assert response.headers["content-type"].startswith("application/xml")
        assert page.locator("h1").inner_text() == "HK–Mainland Science Watch"
        items = page.locator("article.item h2 a")
        assert items.all_inner_texts() == [h[2] for h in HEADLINES]
        assert items.first.get_attribute("href") == "https://news.example.org/hksar-press-en/0"
        # Chromium shows a banner about XSLT's coming removal over the page; not ours to keep.
        page.evaluate("document.querySelector('xslt-warning-banner')?.remove()")
        page.screenshot(path=str(SCREENSHOTS / "feed.png"), full_page=True)

        page.goto(site + "feed.rss")
        assert page.locator("article.item h2 a").all_inner_texts() == [h[2] for h in HEADLINES]
        page.goto(site + "tags/official.atom")  # the stylesheet found relative to the tag feed
        assert page.locator("h1").inner_text() == "HK–Mainland Science Watch: official"
        assert errors == []
    finally:
        context.close()
