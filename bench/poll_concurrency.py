"""Benchmark: one poll of 1,000 sources that each answer after 100 ms, through `update()`.

A small asyncio HTTP/1.1 server (keep-alive, Content-Length) listens on several loopback
addresses (127.0.0.1, 127.0.0.2, ...), so the sources spread over many "hosts" as in real life
and the per-host bound applies. Each source serves its own RSS feed of 5 items, so every poll
parses, normalizes, tags and stores 5,000 entries into a fresh SQLite file.

    .venv/bin/python bench/poll_concurrency.py [--sources 1000] [--hosts 50] [--delay 0.1]
        [--repeats 5] [--concurrency 20 100]

Prints the wall time of each poll and, per concurrency setting, the median and the spread.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aggregator import __version__
from aggregator.clock import SystemClock
from aggregator.fetch import Fetcher
from aggregator.models import FetchRequest
from aggregator.settings import FetchSettings, Settings, SourceSettings
from aggregator.store import Store
from aggregator.update import update


def feed_for(path: str) -> bytes:
    """Five items with distinct wording (like real news), so story grouping sees no duplicates."""
    rng = random.Random(path)

    def word() -> str:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))

    def sentence(length: int) -> str:
        return " ".join(word() for _ in range(length))

    items = "".join(
        f"<item><title>{sentence(8)}</title><link>https://example.org{path}/{n}</link>"
        f"<description>{sentence(30)}</description>"
        f"<pubDate>Thu, 16 May 2024 1{n}:00:00 +0800</pubDate></item>"
        for n in range(5)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>Feed {path}</title><link>https://example.org/</link>{items}</channel></rss>"
    ).encode()


class DelayedServer:
    """Answers every GET after `delay` seconds, on its own event loop in a thread."""

    def __init__(self, hosts: int, delay: float) -> None:
        self.addresses = [f"127.0.0.{i}" for i in range(1, hosts + 1)]
        self.delay = delay
        self.port = 0
        self.requests = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._servers: list[asyncio.Server] = []

    def start(self) -> DelayedServer:
        self._thread.start()
        self._ready.wait()
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._listen())
        self._ready.set()
        self._loop.run_forever()

    async def _listen(self) -> None:
        first = await asyncio.start_server(self._serve, self.addresses[0], 0, backlog=2048)
        self.port = first.sockets[0].getsockname()[1]
        self._servers = [first]
        for address in self.addresses[1:]:
            server = await asyncio.start_server(self._serve, address, self.port, backlog=2048)
            self._servers.append(server)

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                self.requests += 1
                await asyncio.sleep(self.delay)
                body = feed_for(path)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def one_poll(server: DelayedServer, sources: int, concurrency: int) -> float:
    with tempfile.TemporaryDirectory() as directory:
        settings = Settings(
            path=Path(directory) / "feeds.toml",
            data_dir=Path(directory),
            sources=tuple(
                SourceSettings(
                    id=f"s{i}",
                    name=f"Source {i}",
                    url=f"http://{server.addresses[i % len(server.addresses)]}:{server.port}/f{i}",
                )
                for i in range(sources)
            ),
            fetch=FetchSettings(concurrency=concurrency),
        )
        store = Store(Path(directory) / "aggregator.db")
        try:
            started = time.perf_counter()
            report = update(settings, store, SystemClock(), force=True)
            elapsed = time.perf_counter() - started
        finally:
            store.close()
    if report.failed:
        raise SystemExit(f"{len(report.failed)} sources failed, e.g. {report.failed[0].error}")
    assert report.new == sources * 5, report.new
    return elapsed


def fetch_only(server: DelayedServer, sources: int, concurrency: int) -> float:
    """The same fetches without parsing or storing: what the network side alone costs."""
    settings = FetchSettings(concurrency=concurrency)
    urls = [
        f"http://{server.addresses[i % len(server.addresses)]}:{server.port}/f{i}"
        for i in range(sources)
    ]

    async def run() -> None:
        async with Fetcher(settings) as fetcher:
            await asyncio.gather(*(fetcher.fetch(FetchRequest(url, url)) for url in urls))

    started = time.perf_counter()
    asyncio.run(run())
    return time.perf_counter() - started


def memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) // 1024} MiB"
    except OSError:
        pass
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[20, 100])
    args = parser.parse_args()

    import sqlite3

    import httpx

    print(
        f"aggregator {__version__}, Python {platform.python_version()}, httpx {httpx.__version__},"
        f" SQLite {sqlite3.sqlite_version}; nproc {os.cpu_count()}, memory {memory()}"
    )
    print(
        f"{args.sources} sources on {args.hosts} loopback hosts, each answering after"
        f" {args.delay * 1000:g} ms with 5 items; per_host 2 (default), host_spacing not applied"
        " to loopback"
    )
    server = DelayedServer(args.hosts, args.delay).start()
    medians: dict[int, tuple[float, float, float]] = {}
    try:
        for concurrency in args.concurrency:
            floor = args.sources * args.delay / concurrency
            print(
                f"concurrency {concurrency} (floor {floor:.2f} s = sources x delay / concurrency)"
            )
            for label, measure in (("update()", one_poll), ("fetch only", fetch_only)):
                times = [measure(server, args.sources, concurrency) for _ in range(args.repeats)]
                if measure is one_poll:
                    medians[concurrency] = (statistics.median(times), min(times), max(times))
                spread = statistics.stdev(times) if len(times) > 1 else 0.0
                print(
                    f"  {label:<10}: median {statistics.median(times):.2f} s,"
                    f" min {min(times):.2f} s, max {max(times):.2f} s, stdev {spread:.2f} s;"
                    f" runs: {', '.join(f'{t:.2f}' for t in times)}"
                )
    finally:
        server.stop()
    # The last line, for bench/run.py: the default concurrency's full poll.
    median, low, high = medians[args.concurrency[0]]
    record = {
        "name": f"poll {args.sources} sources x {args.delay * 1000:g} ms",
        "unit": "s",
        "median": round(median, 2),
        "min": round(low, 2),
        "max": round(high, 2),
        "target": 60,
        "better": "lower",
        "note": f"concurrency {args.concurrency[0]}, {os.cpu_count()} CPUs",
    }
    print(json.dumps(record))


if __name__ == "__main__":
    main()
