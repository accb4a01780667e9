"""Mail transports behind one `send()`: SMTP (one connection reused for every recipient) and
.eml files in a directory (for --dry-run). Errors say whether a retry later can help."""

from __future__ import annotations

import logging
import os
import re
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import parseaddr
from pathlib import Path
from typing import Protocol

from aggregator.digest import as_bytes
from aggregator.errors import MailError
from aggregator.settings import SmtpSettings

log = logging.getLogger(__name__)


class DeliveryError(MailError):
    """One message was not accepted.

    `permanent`: the server refused it for good (5xx); retrying will not help.
    `connection`: the connection itself failed (connect, TLS, login, sender refused); every
    following message would fail the same way, so the run stops here.
    """

    def __init__(self, message: str, *, permanent: bool = False, connection: bool = False):
        self.permanent = permanent
        self.connection = connection
        super().__init__(message)


class Transport(Protocol):
    def send(self, message: EmailMessage) -> str:
        """Hand over one message addressed in its To header; return where it went."""
        ...

    def close(self) -> None: ...


class SmtpTransport:
    """SMTP through smtplib: security "starttls", "tls" or "none", AUTH when credentials are
    given. Connects on the first send and reuses the connection; reconnects after a drop."""

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self.username = username
        self.password = password
        self.ssl_context = ssl_context or ssl.create_default_context(cafile=settings.ca_file)
        self._conn: smtplib.SMTP | None = None
        self.connections = 0  # opened so far; the tests check reuse with it

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        try:
            conn: smtplib.SMTP
            if s.security == "tls":
                conn = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=self.ssl_context)
            else:
                conn = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            try:
                conn.ehlo()
                if s.security == "starttls":
                    conn.starttls(context=self.ssl_context)
                    conn.ehlo()
                if self.username is not None:
                    conn.login(self.username, self.password or "")
            except BaseException:
                conn.close()
                raise
        except smtplib.SMTPAuthenticationError as error:
            raise DeliveryError(
                f"SMTP login refused: {_reply(error.smtp_code, error.smtp_error)}", connection=True
            ) from None
        except smtplib.SMTPNotSupportedError as error:
            raise DeliveryError(
                f"{s.host}:{s.port}: {error} (check [smtp] security)", connection=True
            ) from None
        except (smtplib.SMTPException, ssl.SSLError, OSError) as error:
            raise DeliveryError(
                f"cannot connect to {s.host}:{s.port}: {_describe(error)}", connection=True
            ) from None
        self.connections += 1
        return conn

    def send(self, message: EmailMessage) -> str:
        recipient = parseaddr(str(message["To"]))[1]
        sender = parseaddr(str(message["From"]))[1]
        if self._conn is None:
            self._conn = self._connect()
        try:
            self._conn.sendmail(sender, [recipient], as_bytes(message))
        except smtplib.SMTPRecipientsRefused as error:
            code, text = error.recipients.get(recipient, (450, b"refused"))
            self._drop_if(code == 421)
            raise DeliveryError(
                f"recipient refused: {_reply(code, text)}", permanent=code >= 500
            ) from None
        except smtplib.SMTPSenderRefused as error:
            self._drop_if(True)
            raise DeliveryError(
                f"sender {sender} refused: {_reply(error.smtp_code, error.smtp_error)}",
                connection=True,
            ) from None
        except smtplib.SMTPResponseException as error:
            self._drop_if(error.smtp_code == 421 or error.smtp_code < 400)
            raise DeliveryError(
                _reply(error.smtp_code, error.smtp_error), permanent=error.smtp_code >= 500
            ) from None
        except (smtplib.SMTPException, OSError) as error:
            self._drop_if(True)
            raise DeliveryError(f"connection lost: {_describe(error)}") from None
        return f"{self.settings.host}:{self.settings.port}"

    def _drop_if(self, condition: bool) -> None:
        if condition and self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.quit()
            except (smtplib.SMTPException, OSError):
                pass
            finally:
                self._drop_if(True)


class FileTransport:
    """Writes each message as `<period>-<address>.eml` in a directory, atomically."""

    def __init__(self, directory: Path, *, prefix: str = "") -> None:
        self.directory = directory
        self.prefix = prefix

    def send(self, message: EmailMessage) -> str:
        recipient = parseaddr(str(message["To"]))[1]
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{self.prefix}{safe_filename(recipient)}.eml"
        tmp = path.with_suffix(".eml.tmp")
        tmp.write_bytes(as_bytes(message))
        os.replace(tmp, path)
        return str(path)

    def close(self) -> None:
        pass


def smtp_transport(settings: SmtpSettings, env: Mapping[str, str]) -> SmtpTransport:
    """The SMTP transport with credentials from the environment variables [smtp] names."""
    username = env.get(settings.username_env) if settings.username_env else None
    password = env.get(settings.password_env) if settings.password_env else None
    if settings.username_env and username is None:
        log.info("$%s is not set: sending without SMTP AUTH", settings.username_env)
    if username is not None and settings.security == "none":
        log.warning("SMTP AUTH over an unencrypted connection ([smtp] security = none)")
    return SmtpTransport(settings, username=username, password=password)


def safe_filename(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9@._+-]+", "_", text)[:120] or "message"


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(text.split())}"[:300]


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return " ".join(text.split())[:300]
