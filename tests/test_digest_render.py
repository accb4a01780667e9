"""The digest HTML in a real browser (Chromium): no sideways scrolling at 375 px, the 600 px
column at 600 px, and no request leaves the page (no external CSS, fonts or scripts)."""

from __future__ import annotations

from pathlib import Path

from aggregator.app import templates_dir
from aggregator.digest import DigestContent, Renderer, select_sections
from tests.browser import CHROMIUM, LAUNCH_ARGS, needs_chromium
from tests.test_digest import PAYLOADS, TZ, W21, stored, story

pytestmark = needs_chromium


def test_digest_fits_phone_and_desktop_widths(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    stories = [
        story(
            stored("a", "Hong Kong and Shenzhen open a joint technology lab", text="x " * 200),
            stored("b", "Same", source="Source B", link="https://b.example/1"),
        ),
        story(
            stored("c", "香港科技大學與深圳合作成立人工智能研究中心" * 3, link="https://c.example/")
        ),
        story(stored("d", PAYLOADS[7], link="https://d.example/" + "x" * 300)),
    ]
    sections = select_sections(stories, W21, ("topic",), topic="topic", tag_titles={}, timezone=TZ)
    content = DigestContent(
        title="HK–Mainland Science Watch",
        period=W21,
        sections=sections,
        archive_url="https://watch.example.org/archive/2024-W21.html",
        unsubscribe_url="https://watch.example.org/unsubscribe?token=abc.def",
    )
    html = Renderer(templates_dir()).render(content, "{title}").html
    page_file = tmp_path / "digest.html"
    page_file.write_text(html, encoding="utf-8")
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            for width in (375, 600):
                page = browser.new_page(viewport={"width": width, "height": 800})
                page.on("request", lambda r: requests.append(r.url))
                page.goto(page_file.as_uri())
                scroll_width = page.evaluate("document.documentElement.scrollWidth")
                assert scroll_width <= width, f"sideways scrolling at {width}px: {scroll_width}"
                column = page.evaluate("document.querySelector('table.page').offsetWidth")
                assert column == min(width, 600)
                page.close()
        finally:
            browser.close()
    assert [r for r in requests if not r.startswith("file://")] == []
