"""`aggregator explain` through the command line, on a real store filled by a real poll."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aggregator.cli import main

FEED = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Test press</title><link>https://example.org/</link>
<item><title>港深簽署科研合作安排</title><link>https://example.org/1</link>
<description>香港與深圳在河套合作區共建實驗室。</description>
<pubDate>Thu, 16 May 2024 10:00:00 +0800</pubDate></item>
<item><title>Fire drill at Kai Tak</title><link>https://example.org/2</link>
<description>Firefighters held a drill in Hong Kong.</description>
<pubDate>Thu, 16 May 2024 11:00:00 +0800</pubDate></item>
</channel></rss>
"""

RULES = """
[tags.hk-mainland-science]
title = "HK-Mainland science"
all = [["香港", "Hong Kong"], ["深圳", "内地"], ["科研", "technology"]]
none = ["title:drill"]
min_score = 5
[tags.hk-mainland-science.weights]
title = 3

[tags.gba]
title = "Greater Bay Area"
any = ["大湾区", "河套", "regex:深[圳港]"]
"""


@pytest.fixture
def polled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, dict[str, str]]:
    (tmp_path / "press.xml").write_text(FEED, encoding="utf-8")
    config = tmp_path / "feeds.toml"
    config.write_text(
        f'[aggregator]\ndata_dir = "{tmp_path / "var"}"\n\n'
        '[[sources]]\nid = "press"\nname = "Test press"\nurl = "press.xml"\ntags = ["official"]\n'
        + RULES,
        encoding="utf-8",
    )
    assert main(["--config", str(config), "poll", "--all"]) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "entries", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return config, {r["title"]: r["id"] for r in records}


def test_explain_tagged_entry_term_by_term(
    polled: tuple[Path, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, ids = polled
    assert main(["--config", str(config), "explain", ids["港深簽署科研合作安排"]]) == 0
    out = capsys.readouterr().out
    assert "stored tags: gba, hk-mainland-science, official" in out
    assert "from the source: official" in out
    assert "hk-mainland-science: TAGGED" in out
    assert "  score 5 (min_score 5)" in out  # 科研 in the title 3, 香港 and 深圳 in the body 1 each
    assert "    '科研' in title: '科研'  +3" in out
    assert "    '香港' in summary: '香港'  +1" in out
    assert "    '深圳' in summary: '深圳'  +1" in out
    assert "  none: nothing found among 1 term(s)" in out
    assert "gba: TAGGED" in out
    assert "    '河套' in summary: '河套'  +1" in out
    assert "    'regex:深[圳港]' in summary: '深圳'  +1" in out
    assert "why not" not in out


def test_explain_says_why_a_tag_is_missing(
    polled: tuple[Path, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, ids = polled
    assert main(["--config", str(config), "explain", ids["Fire drill at Kai Tak"]]) == 0
    out = capsys.readouterr().out
    assert "hk-mainland-science: not tagged" in out
    assert "why not: group 2 of all: none of ['深圳', '内地'] found" in out
    assert "why not: group 3 of all: none of ['科研', 'technology'] found" in out
    assert "why not: excluded by none term 'title:drill' in title" in out
    assert "why not: score 1 is below min_score 5" in out
    assert "gba: not tagged" in out
    assert "why not: any: none of ['大湾区', '河套', 'regex:深[圳港]'] found" in out


def test_explain_unknown_entry_is_a_usage_error(
    polled: tuple[Path, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = polled
    assert main(["--config", str(config), "explain", "0000000000000000"]) == 2
    captured = capsys.readouterr()
    assert "no stored entry with id '0000000000000000'" in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""
