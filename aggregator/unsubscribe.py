"""Unsubscribe links: signed tokens, and the GET (confirmation page) and POST (opt-out) handlers
that `aggregator serve` mounts at /unsubscribe?token=... . No cookies, no login: the token is
an HMAC of the address, signed with a secret from the environment."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from aggregator.settings import Settings

if TYPE_CHECKING:
    from aggregator.app import App

_CONTEXT = b"aggregator-unsubscribe-v1\x00"


def make_token(secret: str, email: str) -> str:
    """`<address, base64url>.<HMAC-SHA256, base64url>`; the address is lower-cased."""
    address = email.strip().lower().encode("utf-8")
    mac = hmac.new(secret.encode("utf-8"), _CONTEXT + address, hashlib.sha256).digest()
    return f"{_b64(address)}.{_b64(mac)}"


def verify_token(secret: str, token: str) -> str | None:
    """The address a token was made for, or None when it is malformed or not ours."""
    if not secret or token.count(".") != 1 or len(token) > 1000:
        return None
    encoded, _, signature = token.partition(".")
    try:
        address = _unb64(encoded).decode("utf-8")
        given = _unb64(signature)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    expected = make_token(secret, address).partition(".")[2]
    if not hmac.compare_digest(_unb64(expected), given) or address != address.lower():
        return None
    return address


def secret_of(settings: Settings, env: Mapping[str, str] | None = None) -> str | None:
    """The signing secret from the environment variable `[digest] secret_env` names."""
    value = (os.environ if env is None else env).get(settings.digest.secret_env, "")
    return value or None


def unsubscribe_url(settings: Settings, secret: str | None, email: str) -> str | None:
    if not secret:
        return None
    return f"{settings.publish.base_url}unsubscribe?token={make_token(secret, email)}"


def handle_get(app: App, token: str) -> tuple[int, str]:
    """A confirmation page with a POST form. A GET never unsubscribes: mail scanners follow
    links. Returns (HTTP status, HTML)."""
    email = _email(app, token)
    if email is None:
        return 400, _page(app, "Link not valid", "<p>This unsubscribe link is not valid.</p>")
    escaped_token = html.escape(token, quote=True)
    body = (
        f"<p>Stop sending the weekly digest to <strong>{html.escape(email)}</strong>?</p>"
        f'<form method="post" action="unsubscribe?token={escaped_token}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return 200, _page(app, "Unsubscribe", body)


def handle_post(app: App, token: str) -> tuple[int, str]:
    """Record the opt-out (RFC 8058 one-click; idempotent). Returns (HTTP status, HTML)."""
    email = _email(app, token)
    if email is None:
        return 400, _page(app, "Link not valid", "<p>This unsubscribe link is not valid.</p>")
    app.store.opt_out(email, app.clock.now(), via="link")
    body = (
        f"<p><strong>{html.escape(email)}</strong> will receive no more digests.</p>"
        "<p>Changed your mind? Ask the sender to run "
        "<code>aggregator digest resubscribe</code> for you.</p>"
    )
    return 200, _page(app, "Unsubscribed", body)


def _email(app: App, token: str) -> str | None:
    secret = secret_of(app.settings)
    return verify_token(secret, token) if secret else None


def _page(app: App, heading: str, body: str) -> str:
    title = html.escape(app.settings.publish.title)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(heading)} · {title}</title></head>"
        '<body style="font-family: system-ui, sans-serif; max-width: 36rem; margin: 2rem auto;'
        ' padding: 0 1rem; line-height: 1.5">'
        f"<h1>{html.escape(heading)}</h1>{body}<p><small>{title}</small></p></body></html>"
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text or not all(c.isalnum() or c in "-_" for c in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
