"""A real SMTP server on 127.0.0.1 for tests (aiosmtpd), scriptable per DATA command, plus a
self-signed certificate made with the openssl command line."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

DROP = "drop"  # a DATA script step: close the connection instead of answering


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = BytesParser(policy=policy.default).parsebytes(self.data)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class Mailbox:
    """The handler: keeps accepted messages; `script` answers successive DATA commands
    (None accepts, "421 ..." or "550 ..." refuses, DROP closes the connection)."""

    script: list[str | None] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    sessions: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    require_auth: bool = False

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.require_auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.sessions.add(id(session))
            step = self.script.pop(0) if self.script else None
            if step == DROP:
                server.transport.close()
                return "421 gone"
            if step is not None:
                return step
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)
            )
        return "250 OK queued"

    def messages(self) -> list[EmailMessage]:
        with self.lock:
            return [r.message for r in self.received]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class SmtpServer:
    mailbox: Mailbox
    controller: Controller
    port: int


def start_smtp(
    *,
    tls: ssl.SSLContext | None = None,
    implicit_tls: bool = False,
    credentials: tuple[str, str] | None = None,
) -> SmtpServer:
    """Start a server; `tls` enables STARTTLS (required), or implicit TLS with `implicit_tls`;
    `credentials` requires AUTH with that user and password."""
    mailbox = Mailbox()
    port = free_port()
    kwargs: dict[str, Any] = {}
    if tls is not None and not implicit_tls:
        kwargs.update(tls_context=tls, require_starttls=True)
    if tls is not None and implicit_tls:
        kwargs.update(ssl_context=tls)
    if credentials is not None:

        def authenticate(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> AuthResult:
            ok = (
                isinstance(data, LoginPassword)
                and (
                    data.login.decode(),
                    data.password.decode(),
                )
                == credentials
            )
            return AuthResult(success=ok, handled=False)

        # auth_required with auth_require_tls=False warns; handle_MAIL requires AUTH instead.
        kwargs.update(
            authenticator=authenticate,
            auth_require_tls=tls is not None,
            auth_exclude_mechanism=["LOGIN"],  # smtplib retries LOGIN after PLAIN fails
        )
        mailbox.require_auth = True
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=port, server_hostname="mail.test", **kwargs
    )
    controller.start()
    return SmtpServer(mailbox, controller, port)


def serving_smtp(**kwargs: Any) -> Iterator[SmtpServer]:
    server = start_smtp(**kwargs)
    try:
        yield server
    finally:
        server.controller.stop()


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


def make_certificate(directory: Path) -> Certificate:
    """A self-signed certificate for 127.0.0.1 (IP subject alternative name)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return Certificate(cert, key)
