"""SMTP transport against a real aiosmtpd on 127.0.0.1: plain, STARTTLS, implicit TLS, AUTH,
connection reuse, and how refusals and drops are classified."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from aggregator.digest import Envelope, RenderedDigest, build_message
from aggregator.mail import DeliveryError, FileTransport, SmtpTransport, smtp_transport
from aggregator.settings import SmtpSettings
from tests.smtp import DROP, Certificate, SmtpServer, make_certificate, serving_smtp


def message(to: str = "reader@example.org", subject: str = "Week 21") -> EmailMessage:
    envelope = Envelope(
        sender="Science Watch <watch@example.org>",
        to_email=to,
        to_name="Reader",
        message_id="<digest.2024-W21.1@example.org>",
        date=datetime(2024, 5, 27, 0, 0, tzinfo=UTC),
        list_id="Watch <hk.example.org>",
        unsubscribe_mailto="mailto:watch@example.org?subject=unsubscribe",
    )
    return build_message(RenderedDigest(subject, "text 香港", "<p>html 香港</p>"), envelope)


def settings(port: int, security: str = "none", ca_file: Path | None = None) -> SmtpSettings:
    return SmtpSettings(
        host="127.0.0.1",
        port=port,
        security=security,
        timeout=10,
        ca_file=str(ca_file) if ca_file else None,
    )


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def plain() -> Iterator[SmtpServer]:
    yield from serving_smtp()


def test_plain_smtp_reuses_one_connection(plain: SmtpServer) -> None:
    transport = SmtpTransport(settings(plain.port))
    try:
        for n in range(3):
            transport.send(message(f"r{n}@example.org"))
    finally:
        transport.close()
    assert transport.connections == 1
    assert len(plain.mailbox.sessions) == 1
    received = plain.mailbox.received
    assert [r.recipients for r in received] == [[f"r{n}@example.org"] for n in range(3)]
    assert {r.sender for r in received} == {"watch@example.org"}
    parsed = received[0].message
    assert parsed.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert parsed["Message-ID"] == "<digest.2024-W21.1@example.org>"


def test_starttls_with_a_self_signed_certificate_trusted_by_ca_file(
    certificate: Certificate,
) -> None:
    for server in serving_smtp(tls=certificate.server_context()):
        transport = SmtpTransport(settings(server.port, "starttls", certificate.cert))
        transport.send(message())
        transport.close()
        assert len(server.mailbox.received) == 1
        # Without the CA file the certificate is not trusted: verification stays on.
        untrusting = SmtpTransport(settings(server.port, "starttls"))
        with pytest.raises(DeliveryError) as caught:
            untrusting.send(message())
        assert caught.value.connection and not caught.value.permanent
        assert "certificate" in str(caught.value).lower()


def test_implicit_tls(certificate: Certificate) -> None:
    for server in serving_smtp(tls=certificate.server_context(), implicit_tls=True):
        transport = SmtpTransport(settings(server.port, "tls", certificate.cert))
        transport.send(message())
        transport.close()
        assert len(server.mailbox.received) == 1


def test_auth_with_credentials_from_the_environment() -> None:
    for server in serving_smtp(credentials=("watch", "s3cret")):
        smtp = SmtpSettings(
            host="127.0.0.1",
            port=server.port,
            security="none",
            username_env="T_USER",
            password_env="T_PASS",
        )
        good = smtp_transport(smtp, {"T_USER": "watch", "T_PASS": "s3cret"})
        good.send(message())
        good.close()
        assert len(server.mailbox.received) == 1
        bad = smtp_transport(smtp, {"T_USER": "watch", "T_PASS": "wrong"})
        with pytest.raises(DeliveryError, match="login refused: 535") as caught:
            bad.send(message())
        assert caught.value.connection
        anonymous = smtp_transport(smtp, {})  # AUTH required, none given: sender refused
        with pytest.raises(DeliveryError) as caught:
            anonymous.send(message())
        assert caught.value.connection and not caught.value.permanent
        assert len(server.mailbox.received) == 1


def test_auth_over_starttls(certificate: Certificate) -> None:
    for server in serving_smtp(tls=certificate.server_context(), credentials=("u", "p")):
        smtp = settings(server.port, "starttls", certificate.cert)
        transport = SmtpTransport(smtp, username="u", password="p")
        transport.send(message())
        transport.close()
        assert len(server.mailbox.received) == 1


def test_refusals_are_classified_and_the_connection_recovers(plain: SmtpServer) -> None:
    plain.mailbox.script = ["421 4.3.0 try later", "550 5.7.1 rejected", DROP, None]
    transport = SmtpTransport(settings(plain.port))
    with pytest.raises(DeliveryError) as temporary:
        transport.send(message("a@example.org"))
    assert not temporary.value.permanent and "421" in str(temporary.value)
    with pytest.raises(DeliveryError) as permanent:
        transport.send(message("b@example.org"))
    assert permanent.value.permanent and "550" in str(permanent.value)
    with pytest.raises(DeliveryError) as dropped:
        transport.send(message("c@example.org"))
    assert not dropped.value.permanent and not dropped.value.connection
    transport.send(message("d@example.org"))  # reconnects after the drop
    transport.close()
    assert [r.recipients for r in plain.mailbox.received] == [["d@example.org"]]
    assert transport.connections >= 2


def test_refused_connection_is_temporary() -> None:
    from tests.smtp import free_port

    transport = SmtpTransport(settings(free_port()))
    with pytest.raises(DeliveryError) as caught:
        transport.send(message())
    assert caught.value.connection and not caught.value.permanent


def test_file_transport_writes_eml(tmp_path: Path) -> None:
    path = FileTransport(tmp_path / "outbox", prefix="2024-W21-").send(message())
    assert Path(path).name == "2024-W21-reader@example.org.eml"
    data = Path(path).read_bytes()
    assert b"\r\nSubject: Week 21\r\n" in data


def test_default_context_verifies() -> None:
    transport = SmtpTransport(settings(25, "starttls"))
    assert transport.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert transport.ssl_context.check_hostname
