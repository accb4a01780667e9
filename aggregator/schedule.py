"""When to poll a source next: interval, server hints, and backoff after failures (pure)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta

from aggregator.models import SourceState
from aggregator.settings import SourceSettings

MAX_BACKOFF = 24 * 3600.0
MAX_SERVER_HINT = 7 * 24 * 3600.0
JITTER = 0.1  # spread polls by up to ±10% so sources of one host don't stay in lockstep


def next_poll_after_success(
    now: datetime, every: int, *, max_age: float | None = None, rng: random.Random | None = None
) -> datetime:
    """The next poll after a success: the interval, or longer if the server asked (max-age)."""
    wait = float(every)
    if max_age is not None:
        wait = max(wait, min(max_age, MAX_SERVER_HINT))
    return now + timedelta(seconds=_jittered(wait, rng))


def next_poll_after_failure(
    now: datetime,
    every: int,
    failures: int,
    *,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> datetime:
    """Exponential backoff from the interval, capped at 24 h; Retry-After wins when longer.

    `failures` counts this failure too (1 after the first).
    """
    wait = min(float(every) * 2 ** max(failures - 1, 0), MAX_BACKOFF)
    wait = min(_jittered(wait, rng), MAX_BACKOFF)
    if retry_after is not None:
        wait = max(wait, min(retry_after, MAX_SERVER_HINT))
    return now + timedelta(seconds=wait)


def due_sources(
    sources: Sequence[SourceSettings],
    states: dict[str, SourceState],
    now: datetime,
    *,
    only: Sequence[str] = (),
    force: bool = False,
) -> list[SourceSettings]:
    """Sources to poll now: the named ones (`only`), every enabled one (`force`), or the due ones.

    A source disabled by the server (410 Gone) is never polled, not even by name, until its URL
    changes in the config or `aggregator sources enable ID`.
    """
    sources = [s for s in sources if not _gone(states.get(s.id))]
    if only:
        wanted = set(only)
        return [s for s in sources if s.id in wanted]
    enabled = [s for s in sources if s.enabled]
    if force:
        return enabled
    due = []
    for source in enabled:
        state = states.get(source.id)
        if state is None or state.next_poll_at is None or state.next_poll_at <= now:
            due.append(source)
    return due


def _gone(state: SourceState | None) -> bool:
    return state is not None and state.disabled_reason is not None


def _jittered(seconds: float, rng: random.Random | None) -> float:
    spread = (rng or random).uniform(-JITTER, JITTER)
    return seconds * (1 + spread)
