"""Benchmark (not a test): build and send one week's digest to N subscribers through a local
aiosmtpd on 127.0.0.1, timing the build (render + inline + headers) and the whole send.

    .venv/bin/python -m bench.digest [--subscribers 1000] [--stories 40]
    .venv/bin/python -m bench.digest --screenshots   # docs/screenshots/digest-{375,600}.png
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from aggregator.app import App
from aggregator.clock import FixedClock
from aggregator.config import load
from aggregator.digest import parse_week
from aggregator.digest_run import _Composer, preview, send_digests
from aggregator.update import update
from tests.feedmaker import Item, rss
from tests.smtp import serving_smtp

HK = ZoneInfo("Asia/Hong_Kong")
ROOT = Path(__file__).resolve().parent.parent

TITLES = [
    ("Hong Kong and Shenzhen open a joint technology lab in the Loop", "News Daily"),
    ("香港科技大學與深圳合作成立人工智能研究中心", "港聞"),
    ("Mainland and Hong Kong universities sign technology transfer pact", "Science Post"),
    ("HKSAR Government welcomes Shenzhen–Hong Kong innovation zone plan", "HKSAR Press"),
    ("Hong Kong startups join Mainland technology fair in Guangzhou", "Business Daily"),
]


WORDS = [
    "quantum",
    "biotech",
    "semiconductor",
    "robotics",
    "battery",
    "genomics",
    "satellite",
    "vaccine",
    "fintech",
    "drone",
    "materials",
    "photonics",
    "climate",
    "ocean",
    "chip",
    "sensor",
    "hydrogen",
    "microscope",
    "archive",
    "dataset",
    "clinic",
    "laboratory",
    "incubator",
    "patent",
    "venture",
    "campus",
    "fellowship",
    "scholarship",
    "telescope",
    "algorithm",
    "graphene",
    "polymer",
    "enzyme",
    "protein",
    "network",
    "cloud",
    "compiler",
    "wafer",
    "lidar",
]


def make_config(directory: Path, port: int, subscribers: int, stories: int) -> Path:
    rng = random.Random(7)
    sources = []
    for n, (_, source) in enumerate(TITLES):
        items = [
            Item(
                title=f"{TITLES[n][0]}: {' '.join(rng.sample(WORDS, 6))}",
                link=f"https://news{n}.example.org/{k}",
                description=f"Hong Kong and Mainland partners in Shenzhen: {' '.join(rng.sample(WORDS, 30))}"
                " technology cooperation.",
                pub_date=f"Wed, 22 May 2024 {9 + k % 10:02d}:00:00 +0800",
            )
            for k in range(max(1, stories // len(TITLES)))
        ]
        feed = directory / f"feed{n}.xml"
        feed.write_bytes(rss(items, title=source))
        sources.append(f'[[sources]]\nid = "s{n}"\nname = "{source}"\nurl = "{feed}"\n')
    readers = "".join(
        f'[[digest.subscribers]]\nemail = "reader{i}@example.org"\nname = "Reader {i}"\n'
        for i in range(subscribers)
    )
    config = directory / "feeds.toml"
    config.write_text(
        f"""[aggregator]
data_dir = "{directory / "var"}"
{"".join(sources)}
[tags.hk-mainland-science]
title = "Hong Kong–Mainland science & technology cooperation"
all = [["Hong Kong", "香港"], ["Mainland", "Shenzhen", "深圳", "Guangzhou"], ["technology", "科技", "innovation", "研究"]]
[publish]
topic = "hk-mainland-science"
title = "HK–Mainland Science Watch"
base_url = "https://watch.example.org/"
[digest]
from = "Science Watch <watch@example.org>"
{readers}
[smtp]
host = "127.0.0.1"
port = {port}
security = "none"
""",
        encoding="utf-8",
    )
    return config


def prepare(directory: Path, port: int, subscribers: int, stories: int) -> App:
    os.environ.setdefault("AGGREGATOR_DIGEST_SECRET", "bench-secret")
    config = make_config(directory, port, subscribers, stories)
    app = App(settings=load(config), clock=FixedClock(datetime(2024, 5, 22, 10, tzinfo=HK)))
    update(app.settings, app.store, app.clock)
    app.clock = FixedClock(datetime(2024, 5, 27, 9, tzinfo=HK))
    return app


def bench(subscribers: int, stories: int) -> None:
    week = parse_week("2024-W21", "Asia/Hong_Kong")
    with tempfile.TemporaryDirectory() as tmp:
        for server in serving_smtp():
            app = prepare(Path(tmp), server.port, subscribers, stories)
            started = time.perf_counter()
            composer = _Composer.load(app, week, None)
            for subscriber in app.settings.digest.subscribers:
                composer.message(subscriber, "<bench@example.org>")
            built = time.perf_counter() - started
            started = time.perf_counter()
            report = send_digests(app, week)
            sent = time.perf_counter() - started
            count = len(report.with_status("sent"))
            shown = composer.content(app.settings.digest.subscribers[0]).story_count
            size = len(server.mailbox.received[0].data) if server.mailbox.received else 0
            app.close()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPU, Python {platform.python_version()}"
    )
    print(f"stories in the digest: {shown}; message size {size / 1024:.0f} KiB")
    print(
        f"build only: {subscribers} digests in {built:.2f}s ({built / subscribers * 1000:.1f} ms each)"
    )
    print(f"build + outbox + SMTP: {count} sent in {sent:.2f}s ({count / sent:.0f}/s)")
    # One run, so median, min and max coincide; bench/run.py reads this last line.
    figure = {
        "name": f"digest to {subscribers} subscribers (build + outbox + SMTP)",
        "unit": "s",
        "median": round(sent, 2),
        "min": round(sent, 2),
        "max": round(sent, 2),
        "target": 10,
        "better": "lower",
        "note": f"build alone {built:.2f} s; {count} sent to a local aiosmtpd",
    }
    print(json.dumps(figure, ensure_ascii=False))


def screenshots() -> None:
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM, LAUNCH_ARGS

    week = parse_week("2024-W21", "Asia/Hong_Kong")
    with tempfile.TemporaryDirectory() as tmp:
        app = prepare(Path(tmp), 25, 1, 12)
        html, _ = preview(app, week)
        app.close()
        out = ROOT / "docs" / "screenshots"
        out.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
            for width in (375, 600):
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.goto(html.as_uri())
                page.screenshot(path=str(out / f"digest-{width}.png"), full_page=True)
                page.close()
            browser.close()
    print(f"wrote {out}/digest-375.png and digest-600.png")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--stories", type=int, default=40)
    parser.add_argument("--screenshots", action="store_true")
    args = parser.parse_args()
    if args.screenshots:
        screenshots()
    else:
        bench(args.subscribers, args.stories)
