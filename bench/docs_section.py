"""Each bench script owns one marked section of docs/benchmarks.md and rewrites only that."""

from __future__ import annotations

import os
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def memory_gib() -> float:
    """This machine's physical memory, for the record beside each result."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def write_section(lines: list[str], start: str, end: str, path: Path = DOCS) -> None:
    """Replace the text between the `start` and `end` markers (markers included) with `lines`,
    which begin with `start` and end with `end`; append them when the markers are missing."""
    block = "\n".join(lines)
    text = path.read_text(encoding="utf-8")
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")
