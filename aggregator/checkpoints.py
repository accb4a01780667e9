"""Named pause points for crash tests: `checkpoint("store")` sleeps when a test asks for it.

A test sets `AGGREGATOR_TEST_PAUSE_AT=NAME` (or `NAME#N`: the Nth time NAME is reached) and
`AGGREGATOR_TEST_PAUSE_FILE=PATH`; the process writes NAME to PATH when it gets there and then
sleeps until it is killed. Unset, a checkpoint costs one dictionary lookup. This is the only
module that reads these variables; nothing in production sets them.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

PAUSE_AT = "AGGREGATOR_TEST_PAUSE_AT"
PAUSE_FILE = "AGGREGATOR_TEST_PAUSE_FILE"

_reached: Counter[str] = Counter()
_guard = threading.Lock()


def checkpoint(name: str) -> None:
    """Pause here forever if a test asked to stop at this point (see the module docstring)."""
    wanted = os.environ.get(PAUSE_AT)
    if not wanted:
        return
    point, _, nth = wanted.partition("#")
    if point != name:
        return
    with _guard:
        _reached[name] += 1
        count = _reached[name]
    if count != (int(nth) if nth else 1):
        return
    marker = os.environ.get(PAUSE_FILE)
    if marker:
        with open(marker, "w", encoding="utf-8") as file:
            file.write(f"{name}#{count}\n")
    while True:  # until SIGKILL (or a hard stop)
        time.sleep(0.05)
