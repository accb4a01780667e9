"""`aggregator serve`: conditional GET, gzip, content types, /healthz, no traversal, unsubscribe
routing; against a real server on 127.0.0.1:0."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from aggregator.app import App
from aggregator.clock import FixedClock
from aggregator.serve import (
    PublicServer,
    accepts_gzip,
    content_type,
    is_fresh,
    make_server,
    resolve,
)
from tests.test_publish import NOW, make_settings, run_publish, site_data

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@dataclass
class Served:
    server: PublicServer
    app: App
    public: Path

    def get(
        self,
        path: str,
        headers: dict[str, str] | None = None,
        method: str = "GET",
        body: bytes | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        host, port = self.server.server_address[:2]
        conn = http.client.HTTPConnection(str(host), int(port), timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            conn.close()


def start(tmp_path: Path) -> Iterator[Served]:
    settings = make_settings(tmp_path)
    run_publish(site_data(), settings, tmp_path / "public")
    app = App(settings=settings, clock=FixedClock(NOW))
    server = make_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Served(server, app, tmp_path / "public")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        app.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from start(tmp_path)


def test_feeds_have_their_content_types(served: Served) -> None:
    expected = {
        "/feed.atom": "application/atom+xml; charset=utf-8",
        "/feed.rss": "application/rss+xml; charset=utf-8",
        "/feed.json": "application/feed+json; charset=utf-8",
        "/tags/official.atom": "application/atom+xml; charset=utf-8",
        "/index.html": "text/html; charset=utf-8",
        "/": "text/html; charset=utf-8",
        "/archive/": "text/html; charset=utf-8",
        "/feed.xsl": "text/xsl; charset=utf-8",
        "/favicon.svg": "image/svg+xml",
    }
    for path, media_type in expected.items():
        status, headers, body = served.get(path, {"Accept": "application/atom+xml, */*"})
        assert (status, headers["content-type"]) == (200, media_type), path
        assert body
    status, headers, body = served.get("/feed.atom")
    assert headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert body == (served.public / "feed.atom").read_bytes()


def test_a_browser_gets_feeds_as_xml_so_the_stylesheet_applies(served: Served) -> None:
    status, headers, _ = served.get("/feed.atom", {"Accept": BROWSER_ACCEPT})
    assert status == 200 and headers["content-type"] == "application/xml; charset=utf-8"
    assert "Accept" in headers["vary"]
    _, reader, _ = served.get("/feed.atom", {"Accept": "application/atom+xml"})
    assert reader["etag"] != headers["etag"]  # each representation its own validator


def test_etag_and_last_modified_give_304(served: Served) -> None:
    status, headers, _ = served.get("/feed.atom")
    assert status == 200 and headers["etag"].startswith('"') and headers["last-modified"]

    status, again, body = served.get("/feed.atom", {"If-None-Match": headers["etag"]})
    assert (status, body) == (304, b"")
    assert again["etag"] == headers["etag"]
    status, _, body = served.get("/feed.atom", {"If-None-Match": '"other", ' + headers["etag"]})
    assert status == 304
    status, _, _ = served.get("/feed.atom", {"If-None-Match": '"stale"'})
    assert status == 200
    status, _, _ = served.get("/feed.atom", {"If-Modified-Since": headers["last-modified"]})
    assert status == 304
    status, _, _ = served.get("/feed.atom", {"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"})
    assert status == 200


def test_an_unchanged_republish_keeps_answering_304(served: Served, tmp_path: Path) -> None:
    _, headers, _ = served.get("/feed.atom")
    run_publish(site_data(), make_settings(tmp_path), served.public)  # same stories again
    status, _, _ = served.get("/feed.atom", {"If-None-Match": headers["etag"]})
    assert status == 304


def test_gzip_when_asked(served: Served) -> None:
    status, headers, body = served.get("/index.html", {"Accept-Encoding": "gzip, deflate"})
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert gzip.decompress(body) == (served.public / "index.html").read_bytes()
    assert int(headers["content-length"]) == len(body)
    status, plain, body = served.get("/index.html", {"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in plain and body.startswith(b"<!doctype html>")
    assert plain["etag"] != headers["etag"]
    status, _, _ = served.get(
        "/index.html", {"Accept-Encoding": "gzip", "If-None-Match": headers["etag"]}
    )
    assert status == 304


def test_head_sends_headers_only(served: Served) -> None:
    status, headers, body = served.get("/feed.json", method="HEAD")
    assert status == 200 and body == b""
    assert int(headers["content-length"]) == (served.public / "feed.json").stat().st_size


def test_pages_forbid_scripts(served: Served) -> None:
    _, headers, _ = served.get("/index.html")
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "path",
    [
        "/../feeds.toml",
        "/%2e%2e/feeds.toml",
        "/%2E%2E%2Ffeeds.toml",
        "/tags/../../feeds.toml",
        "/..%2f..%2fetc%2fpasswd",
        "/%00index.html",
        "/.feed.atom.tmp",
        "/..\\feeds.toml",
        "/%ff%fe",
        "/nope.html",
    ],
)
def test_no_path_leaves_the_public_folder(served: Served, path: str) -> None:
    (served.public.parent / "feeds.toml").write_text("secret = 1")
    (served.public / ".feed.atom.tmp").write_text("partial")
    status, _, body = served.get(path)
    assert status == 404 and b"secret" not in body and b"partial" not in body


def test_raw_request_with_dot_segments_is_refused(served: Served) -> None:
    (served.public.parent / "feeds.toml").write_text("secret = 1")
    host, port = served.server.server_address[:2]
    with socket.create_connection((str(host), int(port)), timeout=5) as sock:
        sock.sendall(b"GET /../feeds.toml HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 404") and b"secret" not in answer


def test_a_symlink_out_of_the_folder_is_refused(served: Served) -> None:
    (served.public.parent / "feeds.toml").write_text("secret = 1")
    (served.public / "link.html").symlink_to(served.public.parent / "feeds.toml")
    status, _, body = served.get("/link.html")
    assert status == 404 and b"secret" not in body


def test_healthz_reports_counts(served: Served) -> None:
    status, headers, body = served.get("/healthz")
    payload = json.loads(body)
    assert status == 200 and headers["content-type"] == "application/json"
    assert payload["ok"] is True and payload["entries"] == 0 and payload["published"] is True
    assert payload["sources"] == 0 and payload["failing_sources"] == 0


def test_unsubscribe_is_404_without_the_module(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "aggregator.unsubscribe", None)  # import fails as if absent
    import importlib

    real = importlib.import_module

    def missing(name: str, package: str | None = None) -> types.ModuleType:
        if name == "aggregator.unsubscribe":
            raise ModuleNotFoundError(name=name)
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", missing)
    assert served.get("/unsubscribe?token=abc")[0] == 404
    assert (
        served.get("/unsubscribe?token=abc", method="POST", body=b"List-Unsubscribe=One-Click")[0]
        == 404
    )


def test_unsubscribe_routes_get_and_one_click_post(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []
    module = types.ModuleType("aggregator.unsubscribe")

    def handle_get(app: App, token: str) -> tuple[int, str]:
        calls.append(("get", token))
        return 200, "<form method=post><button>Unsubscribe</button></form>"

    def handle_post(app: App, token: str) -> tuple[int, str]:
        calls.append(("post", token))
        return 200, "You are unsubscribed."

    module.handle_get = handle_get  # type: ignore[attr-defined]
    module.handle_post = handle_post  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "aggregator.unsubscribe", module)

    status, headers, body = served.get("/unsubscribe?token=t%201")
    assert status == 200 and b"<form" in body and headers["cache-control"] == "no-store"
    assert calls == [("get", "t 1")]  # GET only shows the form
    status, _, body = served.get(
        "/unsubscribe?token=t1",
        method="POST",
        body=b"List-Unsubscribe=One-Click",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200 and body == b"You are unsubscribed."
    status, _, _ = served.get(
        "/unsubscribe",
        method="POST",
        body=b"token=t2",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert calls == [("get", "t 1"), ("post", "t1"), ("post", "t2")]
    assert served.get("/unsubscribe")[0] == 400
    assert served.get("/feed.atom", method="POST", body=b"x")[0] == 405


def test_the_decisions() -> None:
    assert accepts_gzip("gzip") and accepts_gzip("br, gzip;q=0.5") and accepts_gzip("*")
    assert not accepts_gzip("") and not accepts_gzip("gzip;q=0") and not accepts_gzip("br")
    assert content_type(Path("a.atom"), BROWSER_ACCEPT) == "application/xml; charset=utf-8"
    assert (
        content_type(Path("a.atom"), "application/atom+xml,text/html")
        == "application/atom+xml; charset=utf-8"
    )
    assert content_type(Path("a.bin")) == "application/octet-stream"
    assert is_fresh('W/"a"', None, '"a"', 0) and is_fresh("*", None, '"a"', 0)
    assert not is_fresh('"b"', "Thu, 01 Jan 2099 00:00:00 GMT", '"a"', 0)  # ETag decides
    assert not is_fresh(None, "not a date", '"a"', 0)


def test_resolve_maps_folders_to_their_index(tmp_path: Path) -> None:
    (tmp_path / "tags").mkdir()
    (tmp_path / "tags" / "index.html").write_text("x")
    (tmp_path / "a b.html").write_text("x")
    assert resolve(tmp_path, "/tags/") == (tmp_path / "tags" / "index.html").resolve()
    assert resolve(tmp_path, "/a%20b.html") == (tmp_path / "a b.html").resolve()
    assert resolve(tmp_path, "/") is None  # no index.html at the top


def test_serve_command_runs_until_interrupted(tmp_path: Path) -> None:
    """The CLI entry: `aggregator serve --port 0` prints its address and serves."""
    import os

    config = tmp_path / "feeds.toml"
    config.write_text(
        f'[aggregator]\ndata_dir = "{tmp_path}"\n[publish]\ntitle = "T"\n', encoding="utf-8"
    )
    run_publish(site_data(), make_settings(tmp_path), tmp_path / "public")
    with subprocess.Popen(
        [sys.executable, "-m", "aggregator", "--config", str(config), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as process:
        _check_serving(process, tmp_path)


def _check_serving(process: subprocess.Popen[str], tmp_path: Path) -> None:
    import signal

    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(f"serving {tmp_path / 'public'} at http://127.0.0.1:")
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
