"""Building and sending the digests: reads the store, renders with digest.py, records each
delivery in the outbox and hands messages to a transport from mail.py.

Send protocol, per (subscriber, period): plan a `pending` row with its Message-ID and commit;
send; after the server's 250, mark it `sent`. A crash before the 250 leaves `pending` (sent on
the next run); a crash between the 250 and the commit resends the same Message-ID, the one
repeat allowed. A lock file keeps two senders from working at once.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import make_msgid, parseaddr
from pathlib import Path

from aggregator.app import App, templates_dir
from aggregator.config import parse_schedule
from aggregator.digest import (
    MAX_ATTEMPTS,
    DigestContent,
    DigestSection,
    Envelope,
    Period,
    Renderer,
    SourceWarning,
    build_message,
    due_period,
    list_id,
    next_attempt_after,
    parse_week,
    select_sections,
    source_warnings,
)
from aggregator.errors import MailError
from aggregator.mail import DeliveryError, FileTransport, Transport, safe_filename, smtp_transport
from aggregator.models import Story
from aggregator.settings import Subscriber
from aggregator.store.outbox import (
    FAILED_PERMANENT,
    FAILED_TEMPORARY,
    SENT,
    OutboxRow,
    PlannedDelivery,
)
from aggregator.unsubscribe import secret_of, unsubscribe_url

log = logging.getLogger(__name__)

PAUSE_ENV = "AGGREGATOR_TEST_PAUSE_AT"


@dataclass(frozen=True, slots=True)
class Delivery:
    """What happened to one subscriber's digest of one period in this run.

    status: sent, written (dry run), failed-temporary, failed-permanent, already-sent,
    waiting (a retry is scheduled later), opted-out, empty (nothing to send), not-attempted.
    """

    email: str
    period: str
    status: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class DigestReport:
    deliveries: tuple[Delivery, ...] = ()

    def with_status(self, *statuses: str) -> tuple[Delivery, ...]:
        return tuple(d for d in self.deliveries if d.status in statuses)

    @property
    def failed(self) -> tuple[Delivery, ...]:
        return self.with_status(FAILED_TEMPORARY, FAILED_PERMANENT, "not-attempted")


def pause_point(name: str) -> None:
    """Test hook: with $AGGREGATOR_TEST_PAUSE_AT=name the process announces the point on
    stderr and sleeps there, so a test can SIGKILL it at exactly that step."""
    if os.environ.get(PAUSE_ENV) == name:
        print(f"paused at {name}", file=sys.stderr, flush=True)
        time.sleep(300)


@dataclass
class _Composer:
    """Per-run context: the week's stories, source health and the renderer, loaded once."""

    app: App
    period: Period
    stories: list[Story]
    renderer: Renderer
    secret: str | None
    warnings: tuple[SourceWarning, ...]
    _sections: dict[tuple[str, ...], tuple[DigestSection, ...]] = field(default_factory=dict)

    @classmethod
    def load(cls, app: App, period: Period, env: Mapping[str, str] | None) -> _Composer:
        store = app.store
        stories = store.stories_by_id(store.story_ids_first_seen_between(period.start, period.end))
        warnings = source_warnings(
            app.settings.sources,
            store.source_states(),
            store.latest_first_seen_by_source(),
            app.clock.now(),
        )
        secret = secret_of(app.settings, env)
        return cls(app, period, stories, Renderer(templates_dir()), secret, warnings)

    def content(self, subscriber: Subscriber) -> DigestContent:
        s = self.app.settings
        tags = tuple(subscriber.tags or ((s.publish.topic,) if s.publish.topic else ()))
        sections = self._sections.get(tags)
        if sections is None:  # subscribers with the same tags share the sections (and render)
            sections = select_sections(
                self.stories,
                self.period,
                tags,
                topic=s.publish.topic,
                tag_titles={t.name: t.title for t in s.tags},
                timezone=s.timezone,
            )
            self._sections[tags] = sections
        return DigestContent(
            title=s.publish.title,
            period=self.period,
            sections=sections,
            warnings=self.warnings,
            archive_url=f"{s.publish.base_url}archive/{self.period.label}.html",
            unsubscribe_url=unsubscribe_url(s, self.secret, subscriber.email),
            recipient_name=subscriber.name,
            home_url=s.publish.base_url,
        )

    def message(
        self, subscriber: Subscriber, message_id: str, content: DigestContent | None = None
    ) -> EmailMessage:
        s = self.app.settings
        content = content or self.content(subscriber)
        rendered = self.renderer.render(content, s.digest.subject)
        sender = parseaddr(s.digest.sender)[1]
        envelope = Envelope(
            sender=s.digest.sender,
            to_email=subscriber.email,
            to_name=subscriber.name,
            message_id=message_id,
            date=self.app.clock.now(),
            list_id=list_id(s.publish.title, s.publish.topic, s.digest.sender),
            unsubscribe_mailto=f"mailto:{sender}?subject=unsubscribe",
            unsubscribe_url=content.unsubscribe_url,
        )
        return build_message(rendered, envelope)


def new_message_id(settings_sender: str, period: Period) -> str:
    domain = parseaddr(settings_sender)[1].rpartition("@")[2] or "localhost"
    return make_msgid(idstring=f"digest.{period.label}", domain=domain)


def recipients(app: App, only: str | None = None) -> list[Subscriber]:
    """Enabled subscribers (or the one named by `only`). Raises MailError for an unknown one."""
    subscribers = list(app.settings.digest.subscribers)
    if only is None:
        return [s for s in subscribers if s.enabled]
    found = [s for s in subscribers if s.email.lower() == only.strip().lower()]
    if not found:
        raise MailError(f"{only} is not in [[digest.subscribers]]")
    return found


def send_digests(
    app: App,
    period: Period,
    *,
    only: str | None = None,
    transport: Transport | None = None,
    retry_now: bool = True,
    env: Mapping[str, str] | None = None,
) -> DigestReport:
    """Send `period`'s digest to every enabled subscriber who has not had it (or to `only`).

    `retry_now`: retry temporary failures at once (an explicit `digest send`); the scheduled
    run waits for each row's retry time instead.
    """
    with _send_lock(app):
        return _send_period(app, period, only, transport, retry_now, env)


def send_due_digests(
    app: App, now: datetime, *, transport: Transport | None = None
) -> DigestReport:
    """For the worker: send what is due at `now` and retry what failed, following the outbox.

    Safe to call at any time (each tick, say): it sends the digest of the period due at `now`
    by `[digest] schedule` (last week's once this week's send time has passed) to the
    subscribers who have not had it, and retries earlier periods' temporary failures whose
    backoff has expired. Does nothing, cheaply, when nothing is due.
    """
    s = app.settings
    period = due_period(now, parse_schedule(s.digest.schedule), s.timezone)
    with _send_lock(app):
        report = _send_period(app, period, None, transport, False, None)
        deliveries = list(report.deliveries)
        older = {row.period for row in app.store.due_deliveries(now) if row.period != period.label}
        for label in sorted(older):
            earlier = _send_period(app, parse_week(label, s.timezone), None, transport, False, None)
            deliveries += earlier.deliveries
    return DigestReport(tuple(deliveries))


def _send_period(
    app: App,
    period: Period,
    only: str | None,
    transport: Transport | None,
    retry_now: bool,
    env: Mapping[str, str] | None,
) -> DigestReport:
    s = app.settings
    now = app.clock.now()
    wanted = recipients(app, only)
    opted_out = app.store.opted_out()
    rows = {row.subscriber: row for row in app.store.outbox_rows(period.label)}
    deliveries: list[Delivery] = []
    composer: _Composer | None = None
    to_plan: list[PlannedDelivery] = []
    contents: dict[str, DigestContent] = {}
    for subscriber in wanted:
        key = subscriber.email.lower()
        row = rows.get(key)
        if key in opted_out:
            if row is None or row.state != SENT:
                deliveries.append(Delivery(subscriber.email, period.label, "opted-out"))
            continue
        if row is not None:
            continue  # decided below, from its state
        composer = composer or _Composer.load(app, period, env)
        content = composer.content(subscriber)
        if not content.sections and not s.digest.send_empty:
            deliveries.append(Delivery(subscriber.email, period.label, "empty"))
            continue
        contents[key] = content
        to_plan.append(PlannedDelivery(key, period.label, new_message_id(s.digest.sender, period)))
    if to_plan:
        app.store.plan_deliveries(to_plan, now)
        rows = {row.subscriber: row for row in app.store.outbox_rows(period.label)}
        pause_point("after-plan-commit")

    due: list[tuple[Subscriber, OutboxRow]] = []
    for subscriber in wanted:
        key = subscriber.email.lower()
        row = rows.get(key)
        if row is None or key in opted_out:
            continue
        if row.state == SENT:
            deliveries.append(Delivery(subscriber.email, period.label, "already-sent"))
        elif row.state == FAILED_PERMANENT:
            deliveries.append(
                Delivery(subscriber.email, period.label, FAILED_PERMANENT, row.last_error)
            )
        elif (
            row.state == FAILED_TEMPORARY
            and not retry_now
            and row.next_attempt_at is not None
            and row.next_attempt_at > now
        ):
            deliveries.append(Delivery(subscriber.email, period.label, "waiting", row.last_error))
        else:
            due.append((subscriber, row))
    if not due:
        return DigestReport(tuple(deliveries))

    composer = composer or _Composer.load(app, period, env)
    own_transport = transport is None
    transport = transport or smtp_transport(s.smtp, os.environ if env is None else env)
    try:
        deliveries += _deliver(app, composer, due, contents, transport)
    finally:
        if own_transport:
            transport.close()
    return DigestReport(tuple(deliveries))


def _deliver(
    app: App,
    composer: _Composer,
    due: Sequence[tuple[Subscriber, OutboxRow]],
    contents: Mapping[str, DigestContent],
    transport: Transport,
) -> list[Delivery]:
    store, label = app.store, composer.period.label
    deliveries: list[Delivery] = []
    for index, (subscriber, row) in enumerate(due):
        email = subscriber.email
        try:
            message = composer.message(
                subscriber, row.message_id, contents.get(subscriber.email.lower())
            )
        except MailError as error:  # a message we cannot build safely: record, go on
            log.error("digest for %s not built: %s", email, error)
            now = app.clock.now()
            store.mark_failed(
                email, label, now=now, error=str(error), permanent=True, attempted=False
            )
            deliveries.append(Delivery(email, label, FAILED_PERMANENT, str(error)))
            continue
        pause_point("before-smtp")
        try:
            transport.send(message)
        except DeliveryError as error:
            now = app.clock.now()
            attempts = row.attempts + 1
            permanent = error.permanent or attempts >= MAX_ATTEMPTS
            detail = (
                str(error)
                if not permanent or error.permanent
                else (f"gave up after {attempts} attempts: {error}")
            )
            store.mark_failed(
                email,
                label,
                now=now,
                error=detail,
                permanent=permanent,
                next_attempt_at=None if permanent else next_attempt_after(now, attempts),
            )
            state = FAILED_PERMANENT if permanent else FAILED_TEMPORARY
            deliveries.append(Delivery(email, label, state, detail))
            if error.connection:
                deliveries += _not_attempted(app, label, due[index + 1 :], str(error))
                break
            continue
        pause_point("after-smtp-250")
        store.mark_sent(email, label, app.clock.now())
        deliveries.append(Delivery(email, label, SENT))
    return deliveries


def _not_attempted(
    app: App, label: str, rest: Sequence[tuple[Subscriber, OutboxRow]], reason: str
) -> list[Delivery]:
    """After a connection failure: the rest wait for the retry too, without an attempt counted."""
    now = app.clock.now()
    deliveries = []
    for subscriber, row in rest:
        app.store.mark_failed(
            subscriber.email,
            label,
            now=now,
            error=f"not attempted: {reason}",
            permanent=False,
            next_attempt_at=next_attempt_after(now, row.attempts + 1),
            attempted=False,
        )
        deliveries.append(Delivery(subscriber.email, label, "not-attempted", reason))
    return deliveries


def write_dry_run(
    app: App, period: Period, *, only: str | None = None, env: Mapping[str, str] | None = None
) -> DigestReport:
    """--dry-run: write each digest `send` would send as .eml in <data_dir>/outbox/; the
    outbox table is not touched, so a real send afterwards still sends everything."""
    composer = _Composer.load(app, period, env)
    opted_out = app.store.opted_out()
    transport = FileTransport(app.data_dir / "outbox", prefix=f"{period.label}-")
    deliveries = []
    for subscriber in recipients(app, only):
        key = subscriber.email.lower()
        if key in opted_out:
            deliveries.append(Delivery(subscriber.email, period.label, "opted-out"))
            continue
        content = composer.content(subscriber)
        if not content.sections and not app.settings.digest.send_empty:
            deliveries.append(Delivery(subscriber.email, period.label, "empty"))
            continue
        row = app.store.outbox_row(key, period.label)
        message_id = row.message_id if row else new_message_id(app.settings.digest.sender, period)
        message = composer.message(subscriber, message_id, content)
        path = transport.send(message)
        deliveries.append(Delivery(subscriber.email, period.label, "written", path))
    return DigestReport(tuple(deliveries))


def preview(
    app: App, period: Period, *, to: str | None = None, env: Mapping[str, str] | None = None
) -> tuple[Path, Path]:
    """Write the HTML and text of one subscriber's digest (`to`, else the first enabled one,
    else a reader of the topic) to <data_dir>/outbox/; return both paths."""
    s = app.settings
    subscriber = next(
        (x for x in s.digest.subscribers if to is None or x.email.lower() == to.lower()),
        None,
    )
    if subscriber is None:
        default_tags = (s.publish.topic,) if s.publish.topic else ()
        subscriber = Subscriber(email=to or "preview@localhost", tags=default_tags)
    composer = _Composer.load(app, period, env)
    content = composer.content(subscriber)
    rendered = composer.renderer.render(content, s.digest.subject)
    outbox = app.data_dir / "outbox"
    outbox.mkdir(parents=True, exist_ok=True)
    stem = f"preview-{period.label}-{safe_filename(subscriber.email)}"
    paths = (outbox / f"{stem}.html", outbox / f"{stem}.txt")
    for path, text in zip(paths, (rendered.html, rendered.text), strict=True):
        path.write_text(text, encoding="utf-8")
    return paths


@contextmanager
def _send_lock(app: App) -> Iterator[None]:
    """One sender at a time per data directory (the worker and a manual `digest send`)."""
    path = app.data_dir / "outbox" / ".send.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MailError("another digest send is running; try again when it is done") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
