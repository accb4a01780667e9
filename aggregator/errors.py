"""The one tree of errors aggregator raises on purpose; anything else is a bug."""

from __future__ import annotations


class AggregatorError(Exception):
    """Base of every error aggregator reports to the user without a traceback."""


class ConfigError(AggregatorError):
    """The configuration file is unreadable or invalid.

    `str()` gives the whole message, `path:LINE: key.path: what is wrong`.
    """

    def __init__(self, message: str, *, file: str = "", line: int | None = None, key: str = ""):
        self.file = file
        self.line = line
        self.key = key
        self.detail = message
        super().__init__(self._format())

    def _format(self) -> str:
        where = self.file
        if where and self.line is not None:
            where = f"{where}:{self.line}"
        parts = [p for p in (where, self.key) if p]
        return ": ".join([*parts, self.detail])


class FetchError(AggregatorError):
    """A source could not be fetched (network, HTTP status, limits, policy)."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ):
        self.status = status
        self.retry_after = retry_after
        super().__init__(message)


class ParseError(AggregatorError):
    """Fetched bytes could not be turned into entries."""


class StoreError(AggregatorError):
    """The database could not be opened, migrated or written."""


class MailError(AggregatorError):
    """A message could not be built or handed to the mail transport."""


class LockError(AggregatorError):
    """Another worker already holds the data directory's lock."""
