"""A one-line progress bar for `poll` on a terminal; plain lines when output is not a terminal."""

from __future__ import annotations

import shutil
from typing import TextIO

BAR_WIDTH = 24


def render_bar(done: int, total: int, label: str, width: int) -> str:
    """`[#########---------------]  3/8  hksar-press-en`, cut to `width` columns (pure)."""
    total = max(total, done, 1)
    filled = round(BAR_WIDTH * done / total)
    line = (
        f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {done:>{len(str(total))}}/{total}  {label}"
    )
    return line[: max(width - 1, 0)]


class Progress:
    """Prints each result line; on a terminal, keeps a bar redrawn under them with `\\r`."""

    def __init__(self, stream: TextIO, total: int, *, interactive: bool) -> None:
        self.stream = stream
        self.total = total
        self.done = 0
        self.interactive = interactive
        if interactive and total:
            self._draw("polling ...")

    def line(self, text: str) -> None:
        """One finished item: its line, then the bar again."""
        self.done += 1
        if self.interactive:
            self._clear()
        self.stream.write(text + "\n")
        if self.interactive and self.done < self.total:
            self._draw(f"{self.total - self.done} left")
        self.stream.flush()

    def finish(self) -> None:
        if self.interactive:
            self._clear()
            self.stream.flush()

    def _draw(self, label: str) -> None:
        width = shutil.get_terminal_size((80, 24)).columns
        self.stream.write("\r" + render_bar(self.done, self.total, label, width))
        self.stream.flush()

    def _clear(self) -> None:
        width = shutil.get_terminal_size((80, 24)).columns
        self.stream.write("\r" + " " * (width - 1) + "\r")
