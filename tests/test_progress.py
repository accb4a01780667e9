"""`poll`'s progress: a bar redrawn in place on a terminal, plain lines otherwise."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from pathlib import Path

from aggregator.progress import Progress, render_bar
from tests.servers import FeedServer
from tests.test_worker_kit import ROOT, cli_env, config_text, run_cli, serve_feeds


def test_render_bar() -> None:
    assert render_bar(0, 4, "x", 80) == "[------------------------] 0/4  x"
    assert render_bar(2, 4, "half", 80).startswith("[############------------] 2/4  half")
    assert len(render_bar(1, 3, "a very long label " * 10, 40)) == 39


def test_plain_lines_when_not_interactive() -> None:
    out = io.StringIO()
    progress = Progress(out, 2, interactive=False)
    progress.line("ok    a")
    progress.line("ok    b")
    progress.finish()
    assert out.getvalue() == "ok    a\nok    b\n"


def test_poll_draws_a_bar_on_a_terminal_only(http_server: FeedServer, tmp_path: Path) -> None:
    serve_feeds(http_server, {"alpha": 2, "beta": 1})
    path = tmp_path / "feeds.toml"
    path.write_text(config_text(http_server, tmp_path / "var", ["alpha", "beta"]), "utf-8")
    piped = run_cli(path, "poll", "--all")
    assert piped.returncode == 0
    assert "\r" not in piped.stdout and "[#" not in piped.stdout
    assert "ok    alpha: 2 new" in piped.stdout

    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "aggregator", "--config", str(path), "poll", "--all"],
        stdout=terminal,
        stderr=subprocess.DEVNULL,
        env=cli_env(),
        cwd=ROOT,
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the process is done
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(timeout=30) == 0
    text = output.decode()
    assert "\r[" in text and "/2" in text
    assert "ok    alpha: 0 new, 0 updated, 2 unchanged" in text
