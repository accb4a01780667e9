"""How the installation is doing: worker, sources, digest, outbox. `assess` decides (pure);
`health_report` gathers the data for `aggregator status` and `serve`'s /healthz."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aggregator.app import App
from aggregator.digest import SourceWarning, source_warnings
from aggregator.lock import lock_holder
from aggregator.models import SourceState
from aggregator.settings import Settings
from aggregator.store.outbox import FAILED_PERMANENT, FAILED_TEMPORARY, OutboxRow
from aggregator.store.worker import WorkerState
from aggregator.worker import next_digest_at

FAILING_AFTER = 3  # consecutive failures before a failing source makes the status unhealthy
STUCK_AFTER = timedelta(minutes=10)  # a running worker's heartbeat older than this is stuck
CRON_STALE_AFTER = timedelta(hours=2)  # with `run --once` from cron, the last round may be this old

OK, UNHEALTHY, WORKER_DOWN = 0, 1, 3  # exit codes of `aggregator status`


@dataclass(frozen=True, slots=True)
class HealthReport:
    now: datetime
    worker_running: bool
    worker_pid: int | None
    worker_mode: str | None
    started_at: datetime | None
    heartbeat_at: datetime | None
    last_tick_at: datetime | None
    next_digest_at: datetime
    subscribers: int
    sources: int
    sources_warned: tuple[SourceWarning, ...] = ()
    outbox_failures: tuple[OutboxRow, ...] = ()
    worker_problems: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()  # everything that makes the status unhealthy, worker first
    notes: tuple[str, ...] = field(default=())  # worth reading, not worth paging anyone

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        if self.worker_problems:
            return WORKER_DOWN
        return UNHEALTHY if self.problems else OK

    def as_dict(self) -> dict[str, Any]:
        def when(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment else None

        return {
            "healthy": self.healthy,
            "now": when(self.now),
            "worker": {
                "running": self.worker_running,
                "pid": self.worker_pid,
                "mode": self.worker_mode,
                "started_at": when(self.started_at),
                "heartbeat_at": when(self.heartbeat_at),
                "last_tick_at": when(self.last_tick_at),
            },
            "sources": {
                "total": self.sources,
                "warnings": [
                    {"id": w.source_id, "name": w.name, "problem": w.problem}
                    for w in self.sources_warned
                ],
            },
            "digest": {"next_at": when(self.next_digest_at), "subscribers": self.subscribers},
            "outbox_failures": [
                {
                    "subscriber": row.subscriber,
                    "period": row.period,
                    "state": row.state,
                    "attempts": row.attempts,
                    "last_error": row.last_error,
                }
                for row in self.outbox_failures
            ],
            "problems": list(self.problems),
            "notes": list(self.notes),
        }


def assess(
    *,
    settings: Settings,
    now: datetime,
    holder_pid: int | None,
    worker: WorkerState,
    states: Mapping[str, SourceState],
    latest_new: Mapping[str, datetime],
    outbox: Sequence[OutboxRow],
) -> HealthReport:
    """Decide what is wrong from plain data. `holder_pid` is None when no process holds the lock."""
    running = holder_pid is not None
    worker_problems: list[str] = []
    notes: list[str] = []
    if running:
        beat = worker.heartbeat_at
        stuck_after = max(STUCK_AFTER, timedelta(seconds=5 * settings.tick))
        if beat is not None and now - beat > stuck_after:
            worker_problems.append(
                f"the worker (pid {holder_pid}) has not finished a round since {_ago(now, beat)}"
            )
    elif worker.last_tick_at is None:
        worker_problems.append(
            "no worker has run yet: start `aggregator run` (or cron `run --once`)"
        )
    elif worker.mode == "run":
        worker_problems.append(
            f"the worker is not running; its last round was {_ago(now, worker.last_tick_at)}"
        )
    elif now - worker.last_tick_at > CRON_STALE_AFTER:
        worker_problems.append(
            f"no worker is running and the last `run --once` was {_ago(now, worker.last_tick_at)}"
        )

    warned = source_warnings(settings.sources, states, latest_new, now)
    problems = list(worker_problems)
    for warning in warned:
        failures = states[warning.source_id].consecutive_failures
        line = f"source {warning.source_id}: {warning.problem}"
        if failures == 0 or failures >= FAILING_AFTER:
            problems.append(line)
        else:
            notes.append(line)

    failed = tuple(row for row in outbox if row.state in (FAILED_PERMANENT, FAILED_TEMPORARY))
    for row in failed:
        line = f"digest {row.period} to {row.subscriber}: {row.state}: {row.last_error or '?'}"
        (problems if row.state == FAILED_PERMANENT else notes).append(line)

    subscribers = sum(1 for s in settings.digest.subscribers if s.enabled)
    return HealthReport(
        now=now,
        worker_running=running,
        worker_pid=holder_pid or worker.pid if running else None,
        worker_mode=worker.mode,
        started_at=worker.started_at,
        heartbeat_at=worker.heartbeat_at,
        last_tick_at=worker.last_tick_at,
        next_digest_at=next_digest_at(settings, now),
        subscribers=subscribers,
        sources=sum(1 for s in settings.sources if s.enabled),
        sources_warned=warned,
        outbox_failures=failed,
        worker_problems=tuple(worker_problems),
        problems=tuple(problems),
        notes=tuple(notes),
    )


def gather(app: App) -> HealthReport:
    store = app.store
    return assess(
        settings=app.settings,
        now=app.clock.now(),
        holder_pid=lock_holder(app.data_dir),
        worker=store.worker_state(),
        states=store.source_states(),
        latest_new=store.latest_first_seen_by_source(),
        outbox=store.outbox_rows(),
    )


def health_report(app: App) -> dict[str, Any]:
    """The status as JSON-ready data, for /healthz: `healthy` says whether to page someone."""
    return gather(app).as_dict()


def format_report(report: HealthReport, timezone: str) -> list[str]:
    """The human-readable lines of `aggregator status`."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(timezone)

    def local(moment: datetime | None) -> str:
        return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z") if moment else "never"

    if report.worker_running:
        worker = f"running (pid {report.worker_pid}, {report.worker_mode or 'run'})"
    else:
        worker = "not running"
    lines = [
        f"status:      {'ok' if report.healthy else 'UNHEALTHY'}",
        f"worker:      {worker}; started {local(report.started_at)}",
        f"last round:  {local(report.last_tick_at)}",
        f"heartbeat:   {local(report.heartbeat_at)}",
        f"sources:     {report.sources} enabled, {len(report.sources_warned)} failing or silent",
        f"next digest: {local(report.next_digest_at)} to {report.subscribers} subscriber(s)",
        f"outbox:      {len(report.outbox_failures)} failed deliveries",
    ]
    lines += [f"PROBLEM  {line}" for line in report.problems]
    lines += [f"note     {line}" for line in report.notes]
    return lines


def _ago(now: datetime, then: datetime) -> str:
    seconds = int((now - then).total_seconds())
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    if seconds < 2 * 86400:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"
