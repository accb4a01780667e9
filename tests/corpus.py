"""Where the shared real-world corpus is, if anywhere: tests that read it skip without it."""

from __future__ import annotations

import os
from pathlib import Path


def corpus_dir() -> Path:
    """$AGGREGATOR_CORPUS, else ../shared/corpus beside the repository, else /work/shared/corpus."""
    override = os.environ.get("AGGREGATOR_CORPUS")
    if override:
        return Path(override)
    beside = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"
    return beside if beside.is_dir() else Path("/work/shared/corpus")


CORPUS = corpus_dir()
