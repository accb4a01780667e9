"""The worker: APScheduler keeps the clock; the tick, the digest, the lock, signals, reload.

    tick = reload config if changed | update (due sources) | publish if changed | prune daily
           | heartbeat

Due times live in the database (schedule.py); APScheduler only fires the tick every
`[aggregator].tick` and the digest on `[digest].schedule`. Jobs run one at a time on one thread,
because they share one database connection.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from zoneinfo import ZoneInfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from aggregator import config
from aggregator.app import App, publish_site
from aggregator.checkpoints import checkpoint
from aggregator.errors import AggregatorError, ConfigError
from aggregator.lock import WorkerLock
from aggregator.logs import event, show_events
from aggregator.models import SourceOutcome, UpdateReport
from aggregator.prepare import Preparer
from aggregator.settings import Settings
from aggregator.update import OutcomeCallback, update

log = logging.getLogger(__name__)

SIGNAL_POLL = 0.5  # seconds: how soon a signal is handled at the latest
STOP_GRACE = 7.0  # seconds a running job gets to finish after SIGTERM; systemd waits 10+
PRUNE_EVERY = timedelta(days=1)
_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

DigestSender = Callable[[App, datetime], object]


# --- decisions (pure) -------------------------------------------------------------------------


def digest_slot(settings: Settings, now: datetime) -> datetime:
    """The latest `[digest].schedule` moment at or before `now`, in the configured timezone."""
    weekday, hour, minute = config.parse_schedule(settings.digest.schedule)
    local = now.astimezone(ZoneInfo(settings.timezone))
    day = local.date() - timedelta(days=(local.weekday() - weekday) % 7)
    slot = datetime(day.year, day.month, day.day, hour, minute, tzinfo=local.tzinfo)
    if slot > local:
        slot -= timedelta(days=7)
    return slot


def digest_due(slot: datetime, done: datetime | None, now: datetime, grace: int) -> bool:
    """Send the digest of `slot` unless it was handled already or is older than the grace."""
    return (done is None or slot > done) and timedelta(0) <= now - slot <= timedelta(seconds=grace)


def prune_due(last_prune_at: datetime | None, now: datetime) -> bool:
    return last_prune_at is None or now - last_prune_at >= PRUNE_EVERY


def digest_trigger(settings: Settings) -> CronTrigger:
    weekday, hour, minute = config.parse_schedule(settings.digest.schedule)
    return CronTrigger(
        day_of_week=_DAY_NAMES[weekday], hour=hour, minute=minute, timezone=settings.timezone
    )


def next_digest_at(settings: Settings, now: datetime) -> datetime:
    """The next scheduled digest after `now`, in the configured timezone."""
    return digest_slot(settings, now) + timedelta(days=7)


# --- one round --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TickReport:
    update: UpdateReport = field(default_factory=UpdateReport)
    published: int = 0  # files written
    pruned: int = 0
    digest_sent: bool = False


def log_outcome(outcome: SourceOutcome) -> None:
    """The worker's one line per source per poll."""
    fields = {
        "event": "poll",
        "source": outcome.source_id,
        "outcome": outcome.status,
        "new": outcome.new,
        "updated": outcome.updated,
        "unchanged": outcome.unchanged,
        "duration": round(outcome.duration, 3),
    }
    if outcome.status == "error":
        event(
            log,
            logging.WARNING,
            f"poll {outcome.source_id}: failed: {outcome.error} ({outcome.duration:.1f}s)",
            error=outcome.error,
            **fields,
        )
        return
    what = (
        "not modified"
        if outcome.status == "not-modified"
        else f"ok, {outcome.new} new, {outcome.updated} updated, {outcome.unchanged} unchanged"
    )
    event(
        log, logging.INFO, f"poll {outcome.source_id}: {what} ({outcome.duration:.1f}s)", **fields
    )


class Worker:
    """One worker's rounds over an App; `run` adds the scheduler, signals and the lock around."""

    def __init__(
        self,
        app: App,
        *,
        on_outcome: OutcomeCallback | None = log_outcome,
        send_digests: DigestSender | None = None,
    ) -> None:
        self.app = app
        self.on_outcome = on_outcome
        self.send_digests = send_digests or _send_due_digests
        self.reload_requested = False
        self._config_stamp = _stamp(app.settings.path)
        self._published_stamp: int | None = None
        self.preparer = Preparer()  # its worker processes, once started, serve every tick

    # The tick ---------------------------------------------------------------------------------

    def tick(self, *, publish_always: bool = False, mode: str = "run") -> TickReport:
        """Poll what is due, publish after changes, prune once a day, record the heartbeat."""
        reloaded = self.reload_if_changed()
        app = self.app
        report = update(
            app.settings, app.store, app.clock, on_outcome=self.on_outcome, preparer=self.preparer
        )
        checkpoint("tick.updated")
        now = app.clock.now()
        pruned = 0
        if prune_due(app.store.worker_state().last_prune_at, now):
            pruned = self.prune(now)
        published = 0
        # Changes by anyone count: a `poll` or `retag` beside the worker is published too.
        stamp = app.store.content_stamp()
        if publish_always or reloaded or stamp != self._published_stamp:
            published = len(publish_site(app).written)
            self._published_stamp = stamp
        digest_sent = self.digests(scheduled=mode == "once")
        app.store.worker_ticked(now)
        result = TickReport(report, published, pruned, digest_sent)
        level = logging.INFO if report.outcomes or published or pruned else logging.DEBUG
        event(
            log,
            level,
            f"tick: {len(report.outcomes)} source(s) polled, {report.new} new,"
            f" {report.updated} updated, {len(report.failed)} failed;"
            f" {published} file(s) published",
            event="tick",
            polled=len(report.outcomes),
            new=report.new,
            updated=report.updated,
            failed=len(report.failed),
            published=published,
        )
        return result

    def prune(self, now: datetime) -> int:
        cutoff = now - timedelta(seconds=self.app.settings.keep)
        pruned = self.app.store.prune_entries(older_than=cutoff, at=now)
        if pruned:
            event(
                log,
                logging.INFO,
                f"pruned {pruned} entries older than {cutoff:%Y-%m-%d}",
                event="prune",
                pruned=pruned,
                cutoff=cutoff.isoformat(),
            )
        return pruned

    # The digest -------------------------------------------------------------------------------

    def digest_if_due(self) -> bool:
        """Send the digest of the latest schedule time unless done or past the grace window."""
        app = self.app
        now = app.clock.now()
        slot = digest_slot(app.settings, now)
        if not digest_due(
            slot, app.store.worker_state().digest_slot_done, now, app.settings.digest.grace
        ):
            return False
        event(
            log,
            logging.INFO,
            f"digest: sending the digest due {slot:%Y-%m-%d %H:%M %Z}",
            event="digest",
            slot=slot.isoformat(),
        )
        self.send_digests(app, now)
        checkpoint("digest.sent")
        app.store.digest_slot_handled(slot)
        return True

    def digests(self, *, scheduled: bool) -> bool:
        """The scheduled digest if `scheduled` and due, then retries of earlier deliveries.

        A mail problem is logged and never stops the tick; the outbox keeps what is owed.
        """
        sent = False
        try:
            if scheduled:
                sent = self.digest_if_due()
            if self.app.store.due_deliveries(self.app.clock.now()):
                self.send_digests(self.app, self.app.clock.now())
        except AggregatorError as error:
            event(log, logging.ERROR, f"digest: {error}", event="digest-error", error=str(error))
        return sent

    def digest_job(self) -> None:
        self.digests(scheduled=True)

    # Config reload ----------------------------------------------------------------------------

    def reload_if_changed(self) -> bool:
        """Reload the config after SIGHUP or a change of the file; keep the old one if invalid."""
        stamp = _stamp(self.app.settings.path)
        if not self.reload_requested and stamp == self._config_stamp:
            return False
        self.reload_requested = False
        self._config_stamp = stamp
        old = self.app.settings
        try:
            new = config.load(old.path)
        except ConfigError as error:
            event(
                log,
                logging.ERROR,
                f"config not reloaded, the old one keeps running: {error}",
                event="config-invalid",
                error=str(error),
            )
            return False
        if new.data_dir != old.data_dir:
            event(
                log,
                logging.ERROR,
                f"config not reloaded: data_dir changed ({old.data_dir} -> {new.data_dir});"
                " restart the worker to move it",
                event="config-invalid",
                error="data_dir changed",
            )
            return False
        self.app.settings = new
        event(
            log,
            logging.INFO,
            f"config reloaded from {new.path}: {len(new.sources)} source(s)",
            event="config-reloaded",
            sources=len(new.sources),
        )
        return True

    # Running ----------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM or SIGINT; SIGHUP reloads the config. Holds the data_dir lock."""
        show_events()
        with WorkerLock(self.app.data_dir):
            try:
                return self._run_locked()
            finally:
                self.preparer.close()

    def _run_locked(self) -> int:
        app = self.app
        app.store.worker_started(pid=os.getpid(), at=app.clock.now(), mode="run")
        wake = threading.Event()
        signals: list[int] = []

        def on_signal(signum: int, frame: FrameType | None) -> None:
            signals.append(signum)
            wake.set()

        for handled in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(handled, on_signal)

        busy = threading.Lock()
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=1)},
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone=app.settings.timezone,
        )
        settings = app.settings

        def guarded(job: Callable[[], object]) -> Callable[[], None]:
            def run_job() -> None:
                with busy:
                    try:
                        job()
                    except AggregatorError as error:
                        event(log, logging.ERROR, f"{error}", event="error", error=str(error))
                    except Exception:
                        log.exception("unexpected error in the worker; it keeps running")

            return run_job

        def first_tick() -> None:
            self.digests(scheduled=True)  # a digest missed while the worker was down
            self.tick(publish_always=True)  # complete files after any crash or upgrade

        def tick() -> None:
            before = app.settings
            self.tick()
            if app.settings is not before:
                self._reschedule(scheduler, before, app.settings)

        scheduler.add_job(guarded(first_tick), id="start", name="start", misfire_grace_time=None)
        scheduler.add_job(
            guarded(tick),
            "interval",
            seconds=settings.tick,
            id="tick",
            name="tick",
            misfire_grace_time=None,
        )
        scheduler.add_job(
            guarded(self.digest_job),
            digest_trigger(settings),
            id="digest",
            name="digest",
            misfire_grace_time=settings.digest.grace,
        )
        scheduler.start()
        event(
            log,
            logging.INFO,
            f"worker started (pid {os.getpid()}): {len(settings.sources)} source(s),"
            f" tick every {settings.tick}s, digest {settings.digest.schedule}"
            f" {settings.timezone}",
            event="started",
            pid=os.getpid(),
        )
        try:
            while True:
                # With a timeout: a signal delivered to another thread only sets a flag, and
                # the main thread runs the handler when it next wakes; unbounded, it might not.
                wake.wait(timeout=SIGNAL_POLL)
                wake.clear()
                while signals:
                    received = signals.pop(0)
                    if received == signal.SIGHUP:
                        event(log, logging.INFO, "SIGHUP: reloading the config", event="sighup")
                        self.reload_requested = True
                        scheduler.modify_job("tick", next_run_time=datetime.now(scheduler.timezone))
                    else:
                        return self._stop(scheduler, busy, signal.Signals(received).name)
        finally:
            for handled in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(handled, signal.SIG_DFL)

    def _stop(self, scheduler: BackgroundScheduler, busy: threading.Lock, why: str) -> int:
        event(log, logging.INFO, f"{why}: stopping", event="stopping", signal=why)
        scheduler.shutdown(wait=False)
        if busy.acquire(timeout=STOP_GRACE):
            busy.release()
            event(log, logging.INFO, "worker stopped", event="stopped")
            return 0
        # The job is stuck in a slow fetch or paused. Leaving now is safe: SQLite rolls back an
        # open transaction, and published files are replaced atomically or not at all.
        event(
            log,
            logging.WARNING,
            f"a job did not finish within {STOP_GRACE:.0f}s; stopping anyway, its open"
            " transaction is rolled back",
            event="stopped",
            forced=True,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(0)

    def _reschedule(self, scheduler: BackgroundScheduler, old: Settings, new: Settings) -> None:
        if new.tick != old.tick:
            scheduler.reschedule_job("tick", trigger="interval", seconds=new.tick)
        if (new.digest.schedule, new.timezone) != (old.digest.schedule, old.timezone):
            scheduler.reschedule_job("digest", trigger=digest_trigger(new))
            scheduler.modify_job("digest", misfire_grace_time=new.digest.grace)


def run_worker(app: App, *, on_outcome: OutcomeCallback | None = log_outcome) -> int:
    return Worker(app, on_outcome=on_outcome).run()


def run_once(app: App, *, on_outcome: OutcomeCallback | None = None) -> TickReport:
    """`run --once` (cron): the lock, one tick that always publishes, a due digest, a prune."""
    with WorkerLock(app.data_dir):
        app.store.worker_started(pid=os.getpid(), at=app.clock.now(), mode="once")
        worker = Worker(app, on_outcome=on_outcome)
        try:
            return worker.tick(publish_always=True, mode="once")
        finally:
            worker.preparer.close()


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


def _send_due_digests(app: App, now: datetime) -> object:
    """digest_run's sender: idempotent per subscriber and week, it follows the outbox."""
    from aggregator.digest_run import send_due_digests

    return send_due_digests(app, now)
