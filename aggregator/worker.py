"""APScheduler wiring only: a tick every minute polls what is due and publishes after changes."""

from __future__ import annotations

import logging
import signal
from types import FrameType

from apscheduler.schedulers.blocking import BlockingScheduler

from aggregator.app import App, publish_site
from aggregator.update import OutcomeCallback, update

log = logging.getLogger(__name__)

TICK_SECONDS = 60


def tick(app: App, on_outcome: OutcomeCallback | None = None) -> None:
    """One round: poll the due sources, publish when anything changed."""
    report = update(app.settings, app.store, app.clock, on_outcome=on_outcome)
    if report.new or report.updated:
        publish_site(app)


def run_worker(app: App, *, on_outcome: OutcomeCallback | None = None) -> int:
    """Run until SIGINT or SIGTERM. Due times live in the database; the scheduler keeps time."""
    scheduler = BlockingScheduler(timezone=app.settings.timezone)
    scheduler.add_job(
        tick,
        "interval",
        seconds=TICK_SECONDS,
        args=(app, on_outcome),
        id="tick",
        coalesce=True,
        max_instances=1,
        next_run_time=app.clock.now(),
    )
    publish_site(app)

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("signal %s: stopping", signum)
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    scheduler.start()
    return 0
