"""Sending digests end to end: real feed files polled into a real SQLite file, a real aiosmtpd
on 127.0.0.1, the outbox, retries, idempotence under reruns and under SIGKILL of a real
`aggregator digest send` process, dry runs, previews and opt-outs. Only the clock is fixed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from aggregator.app import App
from aggregator.cli import main
from aggregator.clock import FixedClock
from aggregator.config import load
from aggregator.digest import parse_week
from aggregator.digest_run import send_digests, send_due_digests
from aggregator.update import update
from tests.feedmaker import Item, rss
from tests.smtp import DROP, SmtpServer, serving_smtp

HK = ZoneInfo("Asia/Hong_Kong")
POLLED_AT = datetime(2024, 5, 22, 10, 0, tzinfo=HK)  # in 2024-W21
SEND_AT = datetime(2024, 5, 27, 9, 0, tzinfo=HK)  # Monday after, past "mon 08:00"
SECRET = "test-secret-for-unsubscribe"
READERS = ["ann@example.org", "bob@example.org", "cat@example.org"]

ITEMS = [
    Item(
        title="Hong Kong and Shenzhen open a joint technology lab",
        link="https://news.example.org/lab",
        description="The Mainland and Hong Kong partners will share research facilities.",
        pub_date="Wed, 22 May 2024 09:00:00 +0800",
    ),
    Item(
        title="Hong Kong university signs Mainland technology pact",
        link="https://news.example.org/pact",
        description="A pact on technology transfer.",
        pub_date="Tue, 21 May 2024 09:00:00 +0800",
    ),
    Item(
        title="Hong Kong Shenzhen technology\r\nBcc: victim@evil.test =?UTF-8?Q?=0A?=Bcc: x@e.test",
        link="https://news.example.org/evil",
        description="Payload\u2028X-Injected: yes",
        pub_date="Thu, 23 May 2024 09:00:00 +0800",
    ),
]


def write_config(
    tmp_path: Path, port: int, *, readers: list[str] = READERS, extra: str = ""
) -> Path:
    feed = tmp_path / "news.xml"
    feed.write_bytes(rss(ITEMS, title="News"))
    subscribers = "\n".join(
        f'[[digest.subscribers]]\nemail = "{r}"\nname = "{r.split("@")[0].title()}"\n'
        for r in readers
    )
    config = tmp_path / "feeds.toml"
    config.write_text(
        f"""
[aggregator]
data_dir = "{tmp_path / "var"}"
timezone = "Asia/Hong_Kong"

[[sources]]
id = "news"
name = "News Daily"
url = "{feed}"

[tags.hk-mainland-science]
title = "HK–Mainland science"
all = [["Hong Kong"], ["Mainland", "Shenzhen"], ["technology"]]

[publish]
topic = "hk-mainland-science"
title = "Test Watch"
base_url = "https://watch.example.org/"

[digest]
from = "Test Watch <watch@example.org>"
subject = "{{title}}: {{count}} stories, week {{week}}: {{top}}"
{extra}

{subscribers}

[smtp]
host = "127.0.0.1"
port = {port}
security = "none"
timeout = 10
""",
        encoding="utf-8",
    )
    return config


def polled_app(config: Path, at: datetime = SEND_AT) -> App:
    app = App(settings=load(config), clock=FixedClock(POLLED_AT))
    update(app.settings, app.store, app.clock)
    app.clock = FixedClock(at)
    return app


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    yield from serving_smtp()


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGGREGATOR_DIGEST_SECRET", SECRET)


W21 = parse_week("2024-W21", "Asia/Hong_Kong")


def states(config: Path) -> dict[str, tuple[str, int]]:
    db = sqlite3.connect(Path(load(config).data_dir) / "aggregator.db")
    rows = db.execute("SELECT subscriber, state, attempts FROM outbox").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_send_delivers_once_and_a_rerun_sends_nothing(smtp: SmtpServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, smtp.port)
    app = polled_app(config)
    report = send_digests(app, W21)
    assert [d.status for d in report.deliveries] == ["sent"] * 3
    received = smtp.mailbox.received
    assert sorted(r.recipients[0] for r in received) == READERS
    again = send_digests(app, W21)
    assert [d.status for d in again.deliveries] == ["already-sent"] * 3
    assert len(smtp.mailbox.received) == 3
    assert states(config) == {r: ("sent", 1) for r in READERS}

    message = received[0].message
    assert message.get_content_type() == "multipart/alternative"
    assert message["List-Id"] == "Test Watch <hk-mainland-science.example.org>"
    unsubscribe = " ".join(str(message["List-Unsubscribe"]).split())
    assert unsubscribe.startswith("<mailto:watch@example.org?subject=unsubscribe>, <https://")
    assert "https://watch.example.org/unsubscribe?token=" in unsubscribe
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert str(message["Subject"]).startswith("Test Watch: 3 stories, week 2024-W21: ")
    assert "Bcc" not in [k for k in message]  # the hostile title stayed in the Subject
    assert len(message["To"].addresses) == 1
    html = message.get_body(("html",))
    assert html is not None
    assert "https://watch.example.org/archive/2024-W21.html" in html.get_content()
    app.close()


def test_empty_week_sends_nothing_unless_asked(smtp: SmtpServer, tmp_path: Path) -> None:
    app = polled_app(write_config(tmp_path, smtp.port))
    w20 = parse_week("2024-W20", "Asia/Hong_Kong")
    report = send_digests(app, w20)
    assert [d.status for d in report.deliveries] == ["empty"] * 3
    assert smtp.mailbox.received == []
    app.close()
    config = write_config(tmp_path, smtp.port, extra="send_empty = true")
    app = polled_app(config)
    assert [d.status for d in send_digests(app, w20).deliveries] == ["sent"] * 3
    text = smtp.mailbox.received[0].message.get_body(("plain",))
    assert text is not None and "No new stories" in text.get_content()
    app.close()


def test_421_is_retried_with_backoff_and_sent_once(smtp: SmtpServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, smtp.port, readers=["ann@example.org"])
    app = polled_app(config)
    smtp.mailbox.script = ["421 4.7.0 try again later"]
    report = send_due_digests(app, SEND_AT)
    assert [(d.period, d.status) for d in report.deliveries] == [("2024-W21", "failed-temporary")]
    assert states(config) == {"ann@example.org": ("failed-temporary", 1)}
    # Before the backoff is over the scheduled run waits ...
    app.clock = FixedClock(SEND_AT + timedelta(minutes=4))
    waiting = send_due_digests(app, SEND_AT + timedelta(minutes=4))
    assert [d.status for d in waiting.deliveries] == ["waiting"]
    # ... after it, the retry goes through: exactly one message.
    later = SEND_AT + timedelta(minutes=6)
    app.clock = FixedClock(later)
    assert [d.status for d in send_due_digests(app, later).deliveries] == ["sent"]
    assert len(smtp.mailbox.received) == 1
    assert states(config) == {"ann@example.org": ("sent", 2)}
    # Even a week later the next scheduled run does not send W21 again.
    next_week = SEND_AT + timedelta(days=7)
    app.clock = FixedClock(next_week)
    send_due_digests(app, next_week)
    assert len(smtp.mailbox.received) == 1
    app.close()


def test_550_is_permanent_and_the_others_still_get_theirs(smtp: SmtpServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, smtp.port)
    app = polled_app(config)
    smtp.mailbox.script = ["550 5.1.1 no such user"]
    report = send_digests(app, W21)
    assert [d.status for d in report.deliveries] == ["failed-permanent", "sent", "sent"]
    assert report.deliveries[0].detail == "550 5.1.1 no such user"
    assert states(config)["ann@example.org"] == ("failed-permanent", 1)
    rerun = send_digests(app, W21)
    assert rerun.deliveries[0].status == "failed-permanent"
    assert len(smtp.mailbox.received) == 2
    app.close()


def test_dropped_connection_during_data_is_retried(smtp: SmtpServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, smtp.port)
    app = polled_app(config)
    smtp.mailbox.script = [None, DROP]
    report = send_digests(app, W21)
    assert [d.status for d in report.deliveries] == ["sent", "failed-temporary", "sent"]
    assert send_digests(app, W21).with_status("sent")[0].email == "bob@example.org"
    assert sorted(r.recipients[0] for r in smtp.mailbox.received) == READERS
    app.close()


def test_refused_connection_leaves_everyone_for_the_retry(tmp_path: Path) -> None:
    from tests.smtp import free_port

    config = write_config(tmp_path, free_port())
    app = polled_app(config)
    report = send_digests(app, W21)
    assert [d.status for d in report.deliveries] == [
        "failed-temporary",
        "not-attempted",
        "not-attempted",
    ]
    assert set(states(config).values()) == {("failed-temporary", 1), ("failed-temporary", 0)}
    app.close()


def test_opt_out_and_resubscribe(smtp: SmtpServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, smtp.port)
    app = polled_app(config)
    app.store.opt_out("BOB@example.org", SEND_AT, via="test")
    report = send_digests(app, W21)
    assert {d.email: d.status for d in report.deliveries} == {
        "ann@example.org": "sent",
        "bob@example.org": "opted-out",
        "cat@example.org": "sent",
    }
    assert len(smtp.mailbox.received) == 2
    app.close()
    assert main(["--config", str(config), "digest", "resubscribe", "bob@example.org"]) == 0
    assert main(["--config", str(config), "digest", "send", "--week", "2024-W21"]) == 0
    assert sorted(r.recipients[0] for r in smtp.mailbox.received) == READERS


def test_cli_dry_run_preview_and_send(
    smtp: SmtpServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, smtp.port)
    polled_app(config).close()
    run = ["--config", str(config), "digest"]
    assert main([*run, "send", "--dry-run", "--week", "2024-W21"]) == 0
    outbox = tmp_path / "var" / "outbox"
    assert sorted(p.name for p in outbox.glob("*.eml")) == [f"2024-W21-{r}.eml" for r in READERS]
    assert smtp.mailbox.received == [] and states(config) == {}
    capsys.readouterr()
    assert main([*run, "preview", "--week", "2024-W21", "--to", "bob@example.org"]) == 0
    paths = [Path(line) for line in capsys.readouterr().out.split()]
    assert [p.suffix for p in paths] == [".html", ".txt"]
    assert "Hong Kong and Shenzhen open a joint technology lab" in paths[1].read_text()
    assert main([*run, "send", "--week", "2024-W21", "--to", "cat@example.org"]) == 0
    assert [r.recipients for r in smtp.mailbox.received] == [["cat@example.org"]]
    assert main([*run, "send", "--to", "nobody@example.org"]) == 2
    assert main([*run, "send", "--week", "2024-W99"]) == 2
    assert main([*run, "send", "--week", "2024-W21"]) == 0
    assert len(smtp.mailbox.received) == 3


# -- killed mid-send ---------------------------------------------------------------------------


def run_until_paused(config: Path, point: str) -> None:
    """Start a real `aggregator digest send`, wait until it pauses at `point`, SIGKILL it."""
    env = {
        **os.environ,
        "AGGREGATOR_TEST_PAUSE_AT": point,
        "AGGREGATOR_FAKE_NOW": SEND_AT.isoformat(),
    }
    with subprocess.Popen(
        [sys.executable, "-m", "aggregator", "--config", str(config), "digest", "send"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stderr is not None
        try:
            line = process.stderr.readline()
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        assert line.strip() == f"paused at {point}", line + process.stderr.read()
    assert process.returncode == -signal.SIGKILL


@pytest.mark.parametrize(
    ("point", "repeats"),
    [("after-plan-commit", 0), ("before-smtp", 0), ("after-smtp-250", 1)],
)
def test_killed_send_never_skips_and_never_doubles(
    smtp: SmtpServer, tmp_path: Path, point: str, repeats: int
) -> None:
    config = write_config(tmp_path, smtp.port)
    polled_app(config).close()
    run_until_paused(config, point)
    after_kill = len(smtp.mailbox.received)
    env = {**os.environ, "AGGREGATOR_FAKE_NOW": SEND_AT.isoformat()}
    done = subprocess.run(
        [sys.executable, "-m", "aggregator", "--config", str(config), "digest", "send"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    received = smtp.mailbox.received
    assert sorted({r.recipients[0] for r in received}) == READERS  # nobody skipped
    assert len(received) == 3 + repeats  # only the allowed repeat
    by_reader: dict[str, set[str]] = {}
    for r in received:
        by_reader.setdefault(r.recipients[0], set()).add(str(r.message["Message-ID"]))
    assert all(len(ids) == 1 for ids in by_reader.values())  # a repeat has the same Message-ID
    assert after_kill == repeats
    assert states(config) == {r: ("sent", 1) for r in READERS}


def test_a_bad_subscriber_address_is_a_config_error_naming_the_entry(tmp_path: Path) -> None:
    from aggregator.errors import ConfigError

    config = write_config(tmp_path, 25, readers=["ann@example.org", "bob@@example.org"])
    with pytest.raises(ConfigError) as caught:
        load(config)
    line = config.read_text().splitlines().index('email = "bob@@example.org"') + 1
    assert str(caught.value).startswith(f"{config}:{line}: digest.subscribers[1].email: ")
    assert "not a valid email address" in str(caught.value)
