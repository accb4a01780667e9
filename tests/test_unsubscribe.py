"""Unsubscribe tokens and handlers, and one-click unsubscribe through a real `serve`."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from aggregator.app import App
from aggregator.clock import FixedClock
from aggregator.config import load
from aggregator.digest_run import send_digests
from aggregator.serve import make_server
from aggregator.unsubscribe import handle_get, handle_post, make_token, verify_token
from tests.smtp import SmtpServer, serving_smtp
from tests.test_digest_send import READERS, SECRET, SEND_AT, W21, polled_app, write_config


def test_tokens_round_trip_and_reject_forgeries() -> None:
    token = make_token("k", "Ann@Example.org")
    assert verify_token("k", token) == "ann@example.org"
    assert verify_token("other", token) is None
    address, _, mac = token.partition(".")
    forged = make_token("k", "bob@example.org").partition(".")[0] + "." + mac
    assert verify_token("k", forged) is None
    for junk in ("", ".", "abc", "a.b.c", "%%%.%%%", address + ".", "é." + mac):
        assert verify_token("k", junk) is None
    assert verify_token("", token) is None


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    yield from serving_smtp()


@pytest.fixture
def app(smtp: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    monkeypatch.setenv("AGGREGATOR_DIGEST_SECRET", SECRET)
    application = polled_app(write_config(tmp_path, smtp.port))
    yield application
    application.close()


def test_get_confirms_and_post_unsubscribes(app: App) -> None:
    token = make_token(SECRET, "bob@example.org")
    status, page = handle_get(app, token)
    assert status == 200 and 'method="post"' in page and "bob@example.org" in page
    assert app.store.opted_out() == set()  # a GET alone never unsubscribes
    status, page = handle_post(app, token)
    assert status == 200 and "no more digests" in page
    assert app.store.opted_out() == {"bob@example.org"}
    assert handle_post(app, token)[0] == 200  # idempotent
    assert handle_post(app, token + "x")[0] == 400
    assert handle_get(app, "<script>")[0] == 400


def test_without_a_secret_no_link_is_valid(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    token = make_token(SECRET, "bob@example.org")
    monkeypatch.delenv("AGGREGATOR_DIGEST_SECRET")
    assert handle_post(app, token)[0] == 400


def test_one_click_through_serve(app: App, smtp: SmtpServer, tmp_path: Path) -> None:
    send_digests(app, W21)
    first = {r.recipients[0]: r.message for r in smtp.mailbox.received}
    url = next(
        part.strip(" <>")
        for part in str(first["bob@example.org"]["List-Unsubscribe"]).split(",")
        if "https://" in part
    )
    token = url.partition("token=")[2]
    served = App(settings=load(app.settings.path), clock=FixedClock(SEND_AT))
    server = make_server(served, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        local = f"{server.url}unsubscribe?token={token}"
        with urllib.request.urlopen(local) as response:  # GET: a page, no opt-out
            assert response.status == 200 and b'method="post"' in response.read()
        assert app.store.opted_out() == set()
        one_click = urllib.request.Request(
            local,
            data=b"List-Unsubscribe=One-Click",
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        with urllib.request.urlopen(one_click) as response:
            assert response.status == 200
            assert "cookie" not in {k.lower() for k in response.headers}
        bad = urllib.request.Request(local + "x", data=b"List-Unsubscribe=One-Click")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(bad)
        assert caught.value.code == 400
        caught.value.close()
    finally:
        server.shutdown()
        server.server_close()
        served.close()
    assert app.store.opted_out() == {"bob@example.org"}
    # Next week Bob gets nothing; the others do.
    smtp.mailbox.received.clear()
    w22 = W21.__class__(2024, 22, W21.start, W21.end)  # same stories, a new period label
    report = send_digests(app, w22)
    assert {d.email: d.status for d in report.deliveries}["bob@example.org"] == "opted-out"
    assert sorted(r.recipients[0] for r in smtp.mailbox.received) == [
        r for r in READERS if r != "bob@example.org"
    ]
