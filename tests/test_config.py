"""Config loading: every mistake names the file, the line and the key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator import config
from aggregator.errors import ConfigError

GOOD = """\
[aggregator]
data_dir = "var"
timezone = "Asia/Hong_Kong"

[[sources]]
id = "hksar-press-en"
name = "HKSAR press releases"
url = "https://www.info.gov.hk/gia/rss/general_en.xml"
every = "30m"
tags = ["official"]
priority = 10

[[sources]]
id = "local-file"
url = "feeds/sample.xml"
every = "1h30m"

[[sources]]
id = "cas-news"
url = "https://english.cas.cn/newsroom/"
type = "html"
enabled = false
[sources.select]
item = "ul.news > li"
title = "a"
link = "a@href"
date_regex = "t(\\\\d{8})_"

[tags.hk-mainland-science]
title = "HK–Mainland science"
all = [["Hong Kong", "香港"], ["Mainland", "內地", "Shenzhen", "深圳"], ["technology", "科技"]]
none = ["horse racing"]

[publish]
topic = "hk-mainland-science"
title = "Watch"
base_url = "http://localhost:8080"

[digest]
schedule = "mon 08:00"
from = "Science Watch <watch@example.org>"

[[digest.subscribers]]
email = "reader@example.org"

[smtp]
host = "localhost"
port = 587
security = "starttls"
username_env = "AGGREGATOR_SMTP_USER"
password_env = "AGGREGATOR_SMTP_PASSWORD"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "feeds.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_for(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        config.load(write(tmp_path, text))
    return caught.value


def test_good_config_loads_into_typed_settings(tmp_path: Path) -> None:
    settings = config.load(write(tmp_path, GOOD))
    assert [s.id for s in settings.sources] == ["hksar-press-en", "local-file", "cas-news"]
    first, local, html = settings.sources
    assert first.every == 1800 and first.tags == ("official",) and first.priority == 10
    assert local.every == 5400
    assert local.url == str((tmp_path / "feeds" / "sample.xml").resolve())
    assert html.type == "html" and html.select is not None and html.select.link == "a@href"
    assert html.select.date_regex == r"t(\d{8})_"
    assert not html.enabled
    rule = settings.tag("hk-mainland-science")
    assert rule is not None and rule.all[1] == ("Mainland", "內地", "Shenzhen", "深圳")
    assert settings.publish.base_url == "http://localhost:8080/"
    assert settings.digest.subscribers[0].tags == ("hk-mainland-science",)
    assert settings.smtp.password_env == "AGGREGATOR_SMTP_PASSWORD"


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = config.load(write(tmp_path, GOOD))
    with pytest.raises(AttributeError):
        settings.sources[0].url = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('every = "30m"', 'every = "30x"', ":9: sources[0].every: '30x' is not an interval"),
        ("priority = 10", 'priority = "high"', ":11: sources[0].priority: expected an integer"),
        (
            'tags = ["official"]',
            'tags = "official"',
            ":10: sources[0].tags: expected a list of strings",
        ),
        ('id = "local-file"', 'id = "hksar-press-en"', ":14: sources[1].id: duplicate source id"),
        ('id = "local-file"', 'id = "local file"', ":14: sources[1].id: 'local file': use letters"),
        (
            'url = "https://www.info.gov.hk/gia/rss/general_en.xml"',
            'url = "htp://www.info.gov.hk/x.xml"',
            ":8: sources[0].url: 'htp://www.info.gov.hk/x.xml': expected an http(s) URL",
        ),
        (
            'url = "https://english.cas.cn/newsroom/"',
            'url = "https://"',
            ":20: sources[2].url: 'https://' is not a valid URL",
        ),
        ('every = "1h30m"', 'evry = "1h30m"', ":16: sources[1].evry: unknown key 'evry'"),
        ('link = "a@href"', 'lnk = "a@href"', ":26: sources[2].select.lnk: unknown key 'lnk'"),
        (
            'topic = "hk-mainland-science"',
            'topic = "nope"',
            ":35: publish.topic: 'nope' names no [tags] rule",
        ),
        (
            'timezone = "Asia/Hong_Kong"',
            'timezone = "Mars/Base"',
            ":3: aggregator.timezone: unknown time zone",
        ),
        (
            'schedule = "mon 08:00"',
            'schedule = "someday"',
            ":40: digest.schedule: 'someday' is not a weekly schedule",
        ),
        (
            'email = "reader@example.org"',
            'email = "reader at example"',
            ":44: digest.subscribers[0].email:",
        ),
        ('security = "starttls"', 'security = "ssl"', ":49: smtp.security: 'ssl': expected"),
        (
            'none = ["horse racing"]',
            'none = [""]',
            ":32: tags.hk-mainland-science.none: holds an empty string",
        ),
        (
            'type = "html"',
            'type = "rss"',
            ':21: sources[2].type: \'rss\': expected "feed" or "html"',
        ),
    ],
)
def test_mistakes_name_the_line_and_key(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in GOOD
    error = error_for(tmp_path, GOOD.replace(old, new, 1))
    assert str(error).startswith(str(tmp_path / "feeds.toml"))
    assert expected in str(error), str(error)


def test_toml_syntax_error_has_the_line(tmp_path: Path) -> None:
    error = error_for(tmp_path, GOOD.replace('every = "30m"', "every = 30m"))
    assert ":9: TOML syntax error" in str(error)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        config.load(tmp_path / "missing.toml")


def test_html_source_needs_selectors(tmp_path: Path) -> None:
    text = GOOD.replace(
        '[sources.select]\nitem = "ul.news > li"\ntitle = "a"\nlink = "a@href"\ndate_regex = "t(\\\\d{8})_"\n',
        "",
    )
    error = error_for(tmp_path, text)
    assert 'sources[2]: type = "html" needs a [sources.select] table' in str(error)
    assert ":18:" in str(error)


def test_unknown_top_level_table(tmp_path: Path) -> None:
    error = error_for(tmp_path, GOOD + "\n[publsh]\ntitle = 'x'\n")
    assert "publsh: unknown key 'publsh'" in str(error)
    assert f":{GOOD.count(chr(10)) + 2}:" in str(error)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("1h30m", 5400), ("45s", 45), ("1d", 86400), ("2h", 7200)]
)
def test_parse_interval(text: str, seconds: int) -> None:
    assert config.parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["30x", "", "m", "0m", "1.5h", "30"])
def test_parse_interval_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        config.parse_interval(text)


def test_parse_schedule() -> None:
    assert config.parse_schedule("mon 08:00") == (0, 8, 0)
    assert config.parse_schedule("Sunday 23:59") == (6, 23, 59)
    with pytest.raises(ValueError):
        config.parse_schedule("mon 25:00")


def test_shipped_and_demo_configs_are_valid() -> None:
    root = Path(__file__).resolve().parent.parent
    for path in (root / "config" / "feeds.toml", root / "examples" / "demo.toml"):
        settings = config.load(path)
        assert settings.publish.topic is not None
        assert settings.sources


def test_lines_inside_a_multiline_array_are_not_table_headers(tmp_path: Path) -> None:
    text = GOOD.replace(
        'none = ["horse racing"]',
        'any = [\n  ["x"]\n]\nnone = [\n  "horse racing",\n  "[sic]",\n]\nevry = 1',
    )
    error = error_for(tmp_path, text)
    line = text.splitlines().index("evry = 1") + 1
    assert f":{line}: tags.hk-mainland-science.evry: unknown key" in str(error)
