"""End to end through the command line: real HTTP server, real SQLite file, published files."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import feedparser
import pytest

from aggregator.cli import main
from tests.feedmaker import Item, rss
from tests.servers import FeedServer, Response

COOPERATION = Item(
    title="Hong Kong and Shenzhen universities launch joint technology lab",
    link="https://news.example.org/2024/05/16/joint-lab?utm_source=rss",
    description="<p>The Mainland and Hong Kong partners will share research facilities.</p>"
    "<script>alert(1)</script>",
)
LOCAL = Item(
    title="LegCo meeting on Wednesday",
    link="https://news.example.org/2024/05/16/legco",
    description="The Legislative Council will meet.",
)
BIG5_ITEM = Item(
    title="香港科技大學與深圳合作成立研究中心",
    link="https://big5.example.org/1",
    description="香港與內地科技合作再進一步。",
)
GB_ITEM = Item(
    title="粤港澳大湾区科技创新合作",
    link="https://gb.example.org/1",
    description="香港与内地深化科技合作。",
)


def config_text(server: FeedServer, data_dir: Path) -> str:
    sources = {
        "news": "/news.xml",
        "cached": "/cached.xml",
        "broken": "/broken.xml",
        "garbage": "/garbage.xml",
        "big5": "/big5.xml",
        "gb": "/gb.xml",
    }
    blocks = "\n".join(
        f'[[sources]]\nid = "{sid}"\nname = "{sid.title()} Daily"\nurl = "{server.url(path)}"\nevery = "30m"\n'
        for sid, path in sources.items()
    )
    return f"""
[aggregator]
data_dir = "{data_dir}"

{blocks}

[tags.hk-mainland-science]
title = "HK–Mainland science"
all = [["Hong Kong", "香港"], ["Mainland", "Shenzhen", "內地", "内地", "深圳"], ["technology", "research", "科技"]]

[publish]
topic = "hk-mainland-science"
title = "Test Watch"
base_url = "http://localhost:8080/"
"""


@pytest.fixture
def setup(http_server: FeedServer, tmp_path: Path) -> tuple[FeedServer, Path, Path]:
    news = rss([COOPERATION, LOCAL])

    def with_etag(handler: object) -> Response:
        if handler.headers.get("If-None-Match") == '"v1"':
            return Response(304, headers={"ETag": '"v1"'})
        return Response(200, news, {"ETag": '"v1"', "Content-Type": "application/rss+xml"})

    last_modified = "Thu, 16 May 2024 06:00:00 GMT"

    def with_last_modified(handler: object) -> Response:
        if handler.headers.get("If-Modified-Since") == last_modified:
            return Response(304)
        body = rss([LOCAL], title="Cached")
        return Response(200, body, {"Last-Modified": last_modified})

    http_server.routes.update(
        {
            "/news.xml": with_etag,
            "/cached.xml": with_last_modified,
            "/broken.xml": Response(500, b"oops"),
            "/garbage.xml": Response(
                200, b"<html><body>Not a feed <b>at all", {"Content-Type": "text/html"}
            ),
            "/big5.xml": Response(
                200,
                rss([BIG5_ITEM], encoding="big5hkscs", declare="big5"),
                {"Content-Type": "application/xml"},
            ),
            "/gb.xml": Response(
                200,
                rss([GB_ITEM], encoding="gb18030", declare="gb2312"),
                {"Content-Type": "text/xml; charset=gb2312"},
            ),
        }
    )
    data_dir = tmp_path / "var"
    config = tmp_path / "feeds.toml"
    config.write_text(config_text(http_server, data_dir), encoding="utf-8")
    return http_server, config, data_dir


def run_cli(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def test_poll_stores_entries_and_isolates_failures(
    setup: tuple[FeedServer, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    server, config, data_dir = setup
    assert run_cli(config, "poll") == 1  # two sources fail: partial failure
    out = capsys.readouterr().out
    assert "ok    news: 2 new" in out
    assert "FAIL  broken: HTTP 500" in out
    assert "FAIL  garbage: " in out and "not a feed" in out
    assert "ok    big5: 1 new" in out and "ok    gb: 1 new" in out
    assert "6 source(s): 4 ok, 2 failed; 5 new" in out

    db = sqlite3.connect(data_dir / "aggregator.db")
    titles = {row[0] for row in db.execute("SELECT title FROM entries")}
    assert BIG5_ITEM.title in titles and GB_ITEM.title in titles
    row = db.execute(
        "SELECT canonical_url, summary_html FROM entries WHERE title = ?", (COOPERATION.title,)
    ).fetchone()
    assert row[0] == "https://news.example.org/2024/05/16/joint-lab"
    assert "<script" not in row[1]
    failures = dict(db.execute("SELECT id, consecutive_failures FROM sources"))
    assert failures == {"news": 0, "cached": 0, "broken": 1, "garbage": 1, "big5": 0, "gb": 0}
    tagged = {row[0] for row in db.execute("SELECT tag FROM entry_tags")}
    assert tagged == {"hk-mainland-science"}
    assert db.execute("SELECT count(*) FROM entry_tags").fetchone()[0] == 3

    # The second poll is conditional: 304s store nothing and duplicate nothing.
    assert run_cli(config, "poll", "--all") == 1
    out = capsys.readouterr().out
    assert "ok    news: not modified" in out and "ok    cached: not modified" in out
    assert server.hits_for("/news.xml")[-1].headers.get("if-none-match") == '"v1"'
    assert server.hits_for("/cached.xml")[-1].headers.get("if-modified-since")
    assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == 5
    ua = server.hits_for("/news.xml")[0].headers["user-agent"]
    assert ua.startswith("aggregator/") and "http" in ua


def test_changed_entry_is_updated_in_place(setup: tuple[FeedServer, Path, Path]) -> None:
    server, config, data_dir = setup
    server.routes["/news.xml"] = Response(200, rss([COOPERATION]))
    assert run_cli(config, "poll", "news") == 0
    edited = Item(title=COOPERATION.title + " (updated)", link=COOPERATION.link)
    server.routes["/news.xml"] = Response(200, rss([edited]))
    assert run_cli(config, "poll", "news") == 0
    db = sqlite3.connect(data_dir / "aggregator.db")
    assert db.execute("SELECT title FROM entries").fetchall() == [(edited.title,)]


def test_publish_writes_feeds_that_parse_back(setup: tuple[FeedServer, Path, Path]) -> None:
    _, config, data_dir = setup
    run_cli(config, "poll")
    assert run_cli(config, "publish") == 0
    public = data_dir / "public"
    expected = {COOPERATION.title, BIG5_ITEM.title, GB_ITEM.title}
    for name in ("feed.atom", "feed.rss"):
        parsed = feedparser.parse((public / name).read_bytes())
        assert parsed.bozo == 0, parsed.get("bozo_exception")
        assert {e.title for e in parsed.entries} == expected
    feed = json.loads((public / "feed.json").read_text(encoding="utf-8"))
    assert feed["version"] == "https://jsonfeed.org/version/1.1"
    assert {item["title"] for item in feed["items"]} == expected
    assert all(isinstance(item["id"], str) and item["id"] for item in feed["items"])
    assert all("content_html" in item or "content_text" in item for item in feed["items"])
    index = (public / "index.html").read_text(encoding="utf-8")
    assert BIG5_ITEM.title in index and "LegCo" not in index


def test_entries_command(
    setup: tuple[FeedServer, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, config, _ = setup
    run_cli(config, "poll")
    capsys.readouterr()
    assert run_cli(config, "entries", "--tag", "hk-mainland-science", "--json") == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["title"] for r in records} == {COOPERATION.title, BIG5_ITEM.title, GB_ITEM.title}
    assert all("hk-mainland-science" in r["tags"] for r in records)
    assert run_cli(config, "entries", "--since", "2030-01-01") == 0
    assert capsys.readouterr().out == ""


def test_check_prints_a_summary(
    setup: tuple[FeedServer, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, config, _ = setup
    assert run_cli(config, "check") == 0
    out = capsys.readouterr().out
    assert "sources: 6 (6 feed; 6 enabled)" in out
    assert "tags: hk-mainland-science" in out


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "feeds.toml"
    config.write_text('[[sources]]\nid = "a"\nurl = "https://example.org/feed"\nevery = "30x"\n')
    done = subprocess.run(
        [sys.executable, "-m", "aggregator", "--config", str(config), "check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: {config}:4: sources[0].every: '30x' is not an interval;"
        " use a number and s, m, h or d, such as '30m'"
    )
    assert "Traceback" not in done.stderr


def test_unknown_source_id_is_a_usage_error(setup: tuple[FeedServer, Path, Path]) -> None:
    _, config, _ = setup
    assert run_cli(config, "poll", "nope") == 2


def test_run_once_polls_and_publishes(
    setup: tuple[FeedServer, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, config, data_dir = setup
    assert run_cli(config, "run", "--once") == 1
    assert (data_dir / "public" / "feed.atom").exists()
    assert "published" in capsys.readouterr().out


def test_dead_server_is_reported_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "feeds.toml"
    config.write_text(
        f'[aggregator]\ndata_dir = "{tmp_path / "var"}"\n'
        '[[sources]]\nid = "dead"\nurl = "http://127.0.0.1:9/feed.xml"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "aggregator", "--config", str(config), "run", "--once"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "FAIL  dead:" in done.stdout
    assert "Traceback" not in done.stderr + done.stdout
