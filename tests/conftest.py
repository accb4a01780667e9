"""Shared fixtures: a real HTTP server on 127.0.0.1 and a fixed clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import FeedServer, serving


@pytest.fixture
def http_server() -> Iterator[FeedServer]:
    yield from serving()
