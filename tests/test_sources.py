"""Managing sources: the silent rule, health lines, autodiscovery, TOML appends, OPML, the CLI."""

from __future__ import annotations

import shutil
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from aggregator import config
from aggregator.cli import main
from aggregator.errors import ConfigError, ParseError
from aggregator.models import SourceState
from aggregator.settings import SourceSettings
from aggregator.sources import (
    NewSource,
    Outline,
    SourceReport,
    append_sources,
    describe_source,
    discover_feeds,
    export_opml,
    parse_opml,
    silent_days,
    source_id_for,
)
from aggregator.store import Store
from tests.feedmaker import Item, rss
from tests.servers import FeedServer, Response

NOW = datetime(2024, 5, 16, 12, 0, tzinfo=UTC)
HK = ZoneInfo("Asia/Hong_Kong")
REPO_CONFIG = Path(__file__).parent.parent / "config" / "feeds.toml"


def days_ago(*days: float) -> list[datetime]:
    return [NOW - timedelta(days=d) for d in days]


# --- the silent rule --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("published", "expected"),
    [
        (days_ago(), None),  # never produced anything
        (days_ago(30, 31), None),  # too few items to know its rhythm
        (days_ago(11, 12, 13, 14), 11),  # daily source, quiet for 11 days (>= 10 gaps)
        (days_ago(8, 9, 10, 11), None),  # daily source, quiet for 8 days (< 10 gaps)
        (days_ago(8, 8 + 1 / 24, 8 + 2 / 24), 8),  # hourly source, quiet for 8 days (>= 7)
        (days_ago(6, 6 + 1 / 24, 6 + 2 / 24), None),  # hourly source, quiet for 6 days (< 7)
        (days_ago(0.5, 1, 1.5), None),  # active
        (days_ago(60, 70, 80, 90), None),  # every 10 days: 60 < 10 x 10
        (days_ago(101, 111, 121, 131), 101),  # every 10 days, quiet for 101
        (list(reversed(days_ago(11, 12, 13, 14))), 11),  # order does not matter
    ],
)
def test_silent_days(published: list[datetime], expected: int | None) -> None:
    assert silent_days(published, NOW) == expected


# --- health lines -----------------------------------------------------------------------------

SOURCE = SourceSettings(id="news", url="https://old.example.org/feed", name="News")


def test_describe_a_healthy_source() -> None:
    state = SourceState(
        "news",
        SOURCE.url,
        last_success_at=NOW,
        next_poll_at=NOW + timedelta(minutes=30),
        configured_url=SOURCE.url,
    )
    lines = describe_source(SourceReport(SOURCE, state, recent_items=12), HK)
    assert lines == [
        "news  feed  enabled  News",
        "    last success: 2024-05-16 20:00   next poll: 2024-05-16 20:30"
        "   items in the last 7 days: 12",
    ]


def test_describe_moved_failing_disabled_and_silent() -> None:
    state = SourceState(
        "news",
        SOURCE.url,
        last_error="HTTP 410 Gone",
        last_error_at=NOW,
        consecutive_failures=3,
        configured_url=SOURCE.url,
        moved_to="https://new.example.org/feed",
        moved_polls=2,
        disabled_reason="HTTP 410 Gone",
    )
    text = "\n".join(describe_source(SourceReport(SOURCE, state, 0, silent_days=12), HK))
    assert "news  feed  disabled: HTTP 410 Gone  News" in text
    assert "last error: HTTP 410 Gone (2024-05-16 20:00), 3 consecutive failure(s)" in text
    assert "re-enable with: aggregator sources enable news" in text
    assert "moved to https://new.example.org/feed (permanent redirect on 2 poll(s)" in text
    assert "silent for 12 days" in text
    assert "next poll: -" in text


def test_describe_an_adopted_move() -> None:
    state = SourceState(
        "news", "https://new.example.org/feed", configured_url=SOURCE.url, last_success_at=NOW
    )
    text = "\n".join(describe_source(SourceReport(SOURCE, state), HK))
    assert "moved to https://new.example.org/feed: fetched from there" in text


# --- autodiscovery ----------------------------------------------------------------------------


def test_discover_feeds() -> None:
    page = b"""<html><head><base href="https://example.org/news/">
    <link rel="stylesheet" href="/s.css" type="text/css">
    <link rel="alternate" type="application/rss+xml" title="All news" href="rss.xml">
    <link rel="Alternate" type="application/atom+xml; charset=utf-8" href="/atom.xml">
    <link rel="alternate" type="application/feed+json" href="https://example.org/feed.json">
    <link rel="alternate" hreflang="zh" href="/zh/" type="text/html">
    <link rel="alternate" type="application/rss+xml" href="rss.xml">
    <link rel="alternate" type="application/rss+xml" href="javascript:alert(1)">
    </head><body><a href="/other.xml">not a link element</a></body></html>"""
    found = discover_feeds(page, "https://example.org/", "text/html")
    assert [(f.url, f.title, f.type) for f in found] == [
        ("https://example.org/news/rss.xml", "All news", "application/rss+xml"),
        ("https://example.org/atom.xml", "", "application/atom+xml"),
        ("https://example.org/feed.json", "", "application/feed+json"),
    ]


# --- appending to the TOML ---------------------------------------------------------------------


def test_append_keeps_every_comment_and_line_of_the_shipped_config() -> None:
    text = REPO_CONFIG.read_text(encoding="utf-8")
    new = NewSource(id="added", name='Quote " and 香港', url="https://x.example/feed", tags=("a",))
    result = append_sources(text, [new], comment="Added by a test.")
    # Taking the block out gives back the file byte for byte: comments and layout survive.
    start = result.index("# Added by a test.")
    end = result.index("enabled = true\n", start) + len("enabled = true\n")
    assert result[: start - 1] + result[end:] == text
    data = tomllib.loads(result)
    assert data["sources"][-1] == {
        "id": "added",
        "name": 'Quote " and 香港',
        "url": "https://x.example/feed",
        "type": "feed",
        "every": "30m",
        "tags": ["a"],
        "enabled": True,
    }
    # The block sits after the last source, before the comments that open the next section.
    block_at = result.index("# Added by a test.")
    assert result.index('id = "xinhua-science"') < block_at < result.index("# Tags\n")


def test_append_to_a_file_without_sources_and_without_final_newline() -> None:
    text = '# my config\n[aggregator]\ndata_dir = "var"  # here'
    result = append_sources(text, [NewSource(id="a", name="A", url="https://a.example/")])
    assert result.startswith('# my config\n[aggregator]\ndata_dir = "var"  # here\n')
    assert tomllib.loads(result)["sources"][0]["id"] == "a"


def test_source_id_for() -> None:
    assert source_id_for("SCMP — Hong Kong!", "https://scmp.com/x", []) == "scmp-hong-kong"
    assert source_id_for("香港電台", "https://www.rthk.hk/rss", []) == "rthk-hk"
    assert source_id_for("News", "https://a/", ["news", "news-2"]) == "news-3"


# --- OPML -------------------------------------------------------------------------------------

SOURCES = (
    SourceSettings(id="a", url="https://a.example/rss", name="Alpha & Co", tags=("media",)),
    SourceSettings(id="b", url="https://b.example/atom", name="香港 Beta"),
    SourceSettings(
        id="c", url="https://c.example/page", name="Page", type="html", tags=("institution",)
    ),
)


def test_opml_round_trip() -> None:
    opml = export_opml(SOURCES, title="Watch", now=NOW)
    assert opml.startswith('<?xml version="1.0" encoding="utf-8"?>\n<opml version="2.0">')
    outlines = parse_opml(opml.encode())
    assert outlines == [
        Outline("https://a.example/rss", "Alpha & Co", ("media",)),
        Outline("https://b.example/atom", "香港 Beta", ()),
    ]
    again = [
        SourceSettings(id=str(i), url=o.url, name=o.name, tags=o.tags)
        for i, o in enumerate(outlines)
    ]
    assert export_opml(again, title="Watch", now=NOW) == opml


def test_parse_opml_folders_become_tags_and_bad_input_is_a_parse_error() -> None:
    opml = b"""<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>
    <opml version="1.0"><body>
      <outline text="Science News">
        <outline text="One" xmlUrl="https://one.example/rss" category="/lab"/>
        <outline text="Dup" xmlUrl="https://one.example/rss"/>
        <outline text="Bad" xmlUrl="file:///etc/passwd"/>
      </outline>
      <outline title="Two" xmlUrl="https://two.example/rss"/>
    </body></opml>"""
    assert parse_opml(opml) == [
        Outline("https://one.example/rss", "One", ("science-news", "lab")),
        Outline("https://two.example/rss", "Two", ()),
    ]
    with pytest.raises(ParseError):
        parse_opml(b"<html><body/></html>")
    with pytest.raises(ParseError):
        parse_opml(b"\x00garbage")


# --- through the command line -----------------------------------------------------------------

CONFIG = """# Watch list of a test.  Comments must survive.
[aggregator]
data_dir = "{data}"   # the data

[[sources]]
id = "existing"       # an existing source
url = "{existing}"

# --- tags ---
[tags.science]
title = "Science"     # kept
any = ["science"]
"""


@pytest.fixture
def cli_config(http_server: FeedServer, tmp_path: Path) -> Path:
    http_server.routes["/existing.xml"] = Response(
        200, rss([Item("Existing", "https://e/1")]), {"Content-Type": "application/rss+xml"}
    )
    path = tmp_path / "feeds.toml"
    path.write_text(
        CONFIG.format(data=tmp_path / "var", existing=http_server.url("/existing.xml")),
        encoding="utf-8",
    )
    return path


def run_cli(path: Path, *args: str) -> int:
    return main(["--config", str(path), *args])


def test_sources_add_a_feed_url(
    http_server: FeedServer, cli_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    feed = rss([Item("One", "https://x/1"), Item("Two", "https://x/2")], title="Science Daily")
    http_server.routes["/science.xml"] = Response(
        200, feed, {"Content-Type": "application/rss+xml"}
    )
    before = cli_config.read_text(encoding="utf-8")
    assert (
        run_cli(cli_config, "sources", "add", http_server.url("/science.xml"), "--tag", "lab") == 0
    )
    assert "added science-daily" in capsys.readouterr().out
    after = cli_config.read_text(encoding="utf-8")
    assert after.startswith(before.split("# --- tags ---")[0].rstrip("\n"))
    for comment in ("# Watch list of a test.", "# the data", "# an existing source", "# kept"):
        assert comment in after
    added = config.load(cli_config).source("science-daily")
    assert added is not None
    assert (added.url, added.name, added.tags) == (
        http_server.url("/science.xml"),
        "Science Daily",
        ("lab",),
    )
    # The same URL again is refused, and the file is left alone.
    assert run_cli(cli_config, "sources", "add", http_server.url("/science.xml")) == 2
    assert cli_config.read_text(encoding="utf-8") == after


def test_sources_add_a_page_finds_its_feed(
    http_server: FeedServer, cli_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    http_server.routes["/home"] = Response(
        200,
        b'<html><head><link rel="alternate" type="application/atom+xml" href="/broken.atom">'
        b'<link rel="alternate" type="application/rss+xml" href="/feed.xml"></head></html>',
        {"Content-Type": "text/html"},
    )
    http_server.routes["/feed.xml"] = Response(
        200, rss([Item("A", "https://x/a")], title="Home feed"), {"Content-Type": "text/xml"}
    )
    assert run_cli(cli_config, "sources", "add", http_server.url("/home"), "--id", "home") == 0
    assert config.load(cli_config).source("home").url == http_server.url("/feed.xml")  # type: ignore[union-attr]
    assert "/broken.atom" in capsys.readouterr().out  # the other feed the page named


def test_sources_add_a_page_without_feeds_explains(
    http_server: FeedServer, cli_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    http_server.routes["/plain"] = Response(
        200, b"<html><p>hi</p></html>", {"Content-Type": "text/html"}
    )
    before = cli_config.read_text(encoding="utf-8")
    assert run_cli(cli_config, "sources", "add", http_server.url("/plain")) == 1
    error = capsys.readouterr().err
    assert "names no feed" in error and 'type = "html"' in error
    assert cli_config.read_text(encoding="utf-8") == before


def test_sources_import_and_export_round_trip(
    cli_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    opml = tmp_path / "in.opml"
    opml.write_text(export_opml(SOURCES, title="t", now=NOW), encoding="utf-8")
    assert run_cli(cli_config, "sources", "import", str(opml)) == 0
    assert "2 source(s) added" in capsys.readouterr().out
    assert "# Watch list of a test.  Comments must survive." in cli_config.read_text("utf-8")
    loaded = config.load(cli_config)
    assert [(s.name, s.url, s.tags) for s in loaded.sources[1:]] == [
        ("Alpha & Co", "https://a.example/rss", ("media",)),
        ("香港 Beta", "https://b.example/atom", ()),
    ]
    assert run_cli(cli_config, "sources", "export") == 0
    exported = parse_opml(capsys.readouterr().out.encode())
    assert exported[1:] == parse_opml(opml.read_bytes())
    assert run_cli(cli_config, "sources", "import", str(opml)) == 0  # again: nothing new
    assert "0 source(s) added" in capsys.readouterr().out


def test_sources_list_and_enable(
    http_server: FeedServer, cli_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    http_server.routes["/existing.xml"] = Response(410, b"gone")
    assert run_cli(cli_config, "poll") == 1
    capsys.readouterr()
    assert run_cli(cli_config, "sources") == 0
    listing = capsys.readouterr().out
    assert "existing  feed  disabled: HTTP 410 Gone" in listing
    assert "1 consecutive failure(s)" in listing
    assert run_cli(cli_config, "sources", "enable", "existing") == 0
    assert "enabled" in capsys.readouterr().out
    store = Store(cli_config.parent / "var" / "aggregator.db")
    try:
        assert store.source_states()["existing"].disabled_reason is None
    finally:
        store.close()
    assert run_cli(cli_config, "sources", "enable", "nope") == 2


def test_append_refuses_what_it_cannot_place() -> None:
    with pytest.raises(ConfigError):
        append_sources("sources = 1\n", [NewSource(id="a", name="A", url="https://a/")])


def test_shipped_config_copy_accepts_an_added_source(tmp_path: Path) -> None:
    copy = tmp_path / "feeds.toml"
    shutil.copy(REPO_CONFIG, copy)
    text = append_sources(
        copy.read_text("utf-8"), [NewSource(id="extra", name="Extra", url="https://e.example/")]
    )
    copy.write_text(text, "utf-8")
    assert config.load(copy).sources[-1].id == "extra"


def test_sources_list_shows_recent_items_and_silence(
    http_server: FeedServer, cli_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import email.utils

    now = datetime.now(UTC)
    items = [
        Item(
            f"Old {n}",
            f"https://e/{n}",
            pub_date=email.utils.format_datetime(now - timedelta(days=d)),
        )
        for n, d in enumerate((30.1, 31.1, 32.1))
    ]
    http_server.routes["/existing.xml"] = Response(200, rss(items), {"Content-Type": "text/xml"})
    assert run_cli(cli_config, "poll") == 0
    capsys.readouterr()
    assert run_cli(cli_config, "sources", "list") == 0
    listing = capsys.readouterr().out
    assert "items in the last 7 days: 3" in listing  # first seen now
    assert "silent for 30 days" in listing
