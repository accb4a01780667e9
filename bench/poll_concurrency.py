"""Benchmark: a poll cycle of 1,000 sources that each answer after 100 ms, through `update()`.

A small asyncio HTTP/1.1 server (keep-alive, Content-Length, ETag) in its own process listens on
several loopback addresses (127.0.0.1, 127.0.0.2, ...), so the sources spread over many "hosts"
as in real life and the per-host bound applies. Each source serves its own RSS feed of 5 items.
Per repeat, into a fresh SQLite file:

- "first poll": every source new, so 5,000 entries are parsed, normalized, tagged, grouped
  and stored;
- "cycle": the next poll, where every source answers 304 after its delay (issue 8, point 3:
  at most 3 s);
- "fetch only" (not with --quick): the first poll's fetches through `Fetcher` alone.

    .venv/bin/python -m bench.poll_concurrency [--quick] [--sources 1000] [--hosts 50]
        [--delay 0.1] [--repeats 5] [--concurrency N ...]

Prints wall and CPU seconds (this process; the server runs in another) per run and the median
per concurrency setting; the last line is the JSON figure for bench/run.py: the 304 cycle at
the first concurrency given (the default: the shipped setting).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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


async def serve(hosts: int, delay: float) -> None:
    """Answer every GET after `delay` seconds: 200 with the path's feed, or 304 when its ETag
    is sent back. Prints `listening PORT` once every address listens."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                body = feed_for(path)
                etag = '"' + hashlib.sha1(body).hexdigest() + '"'
                await asyncio.sleep(delay)
                if f"if-none-match: {etag}".encode() in head.lower():
                    writer.write(f"HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\n\r\n".encode())
                else:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
                        + f"ETag: {etag}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                        + body
                    )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    addresses = [f"127.0.0.{i}" for i in range(1, hosts + 1)]
    first = await asyncio.start_server(answer, addresses[0], 0, backlog=4096)
    port = first.sockets[0].getsockname()[1]
    for address in addresses[1:]:
        await asyncio.start_server(answer, address, port, backlog=4096)
    print(f"listening {port}", flush=True)
    await asyncio.Event().wait()


class DelayedServer:
    """`serve` in a child process, so its CPU is not counted (or contended for by the GIL)."""

    def __init__(self, hosts: int, delay: float) -> None:
        self.addresses = [f"127.0.0.{i}" for i in range(1, hosts + 1)]
        command = [sys.executable, __file__, "--serve", "--hosts", str(hosts)]
        self._process = subprocess.Popen(
            [*command, "--delay", str(delay)], stdout=subprocess.PIPE, text=True
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().split()
        if len(line) != 2 or line[0] != "listening":
            self.stop()
            raise SystemExit("bench server did not start")
        self.port = int(line[1])

    def url(self, index: int) -> str:
        return f"http://{self.addresses[index % len(self.addresses)]}:{self.port}/f{index}"

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)


class Timing:
    """Wall and CPU seconds (this process, all threads) of one measured run."""

    def __init__(self, action: Callable[[], object]) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        action()
        self.wall = time.perf_counter() - wall
        self.cpu = time.process_time() - cpu


def polls(server: DelayedServer, sources: int, concurrency: int) -> tuple[Timing, Timing]:
    """A first poll (all new) and the next one (all 304), on a fresh store."""
    with tempfile.TemporaryDirectory() as directory:
        settings = Settings(
            path=Path(directory) / "feeds.toml",
            data_dir=Path(directory),
            sources=tuple(
                SourceSettings(id=f"s{i}", name=f"Source {i}", url=server.url(i))
                for i in range(sources)
            ),
            fetch=FetchSettings(concurrency=concurrency),
        )
        store = Store(Path(directory) / "aggregator.db")
        reports = []
        try:
            timings = tuple(
                Timing(lambda: reports.append(update(settings, store, SystemClock(), force=True)))
                for _ in range(2)
            )
        finally:
            store.close()
    first, cycle = reports
    for report in reports:
        if report.failed:
            failed = report.failed
            raise SystemExit(f"{len(failed)} sources failed, e.g. {failed[0].error}")
    assert first.new == sources * 5, first.new
    assert {o.status for o in cycle.outcomes} == {"not-modified"}
    return timings[0], timings[1]


def fetch_only(server: DelayedServer, sources: int, concurrency: int) -> Timing:
    """The first poll's fetches without parsing or storing: what the network side costs."""
    settings = FetchSettings(concurrency=concurrency)
    urls = [server.url(i) for i in range(sources)]

    async def run() -> None:
        async with Fetcher(settings) as fetcher:
            await asyncio.gather(*(fetcher.fetch(FetchRequest(url, url)) for url in urls))

    return Timing(lambda: asyncio.run(run()))


def describe(label: str, timings: list[Timing]) -> str:
    walls = [t.wall for t in timings]
    cpus = [t.cpu for t in timings]
    spread = statistics.stdev(walls) if len(walls) > 1 else 0.0
    return (
        f"  {label:<11}: median {statistics.median(walls):.2f} s (min {min(walls):.2f}, max"
        f" {max(walls):.2f}, stdev {spread:.2f}), CPU median {statistics.median(cpus):.2f} s;"
        f" runs: {', '.join(f'{t.wall:.2f}' for t in timings)}"
    )


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
    parser.add_argument("--quick", action="store_true", help="2 repeats, shipped concurrency")
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, help="5; --quick 2")
    parser.add_argument("--concurrency", type=int, nargs="+", help="default: shipped, 200")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.hosts, args.delay))
        return
    shipped = FetchSettings().concurrency
    repeats = args.repeats or (2 if args.quick else 5)
    levels = args.concurrency or ([shipped] if args.quick else [shipped, 200])

    import sqlite3

    print(
        f"aggregator {__version__}, Python {platform.python_version()},"
        f" SQLite {sqlite3.sqlite_version}; nproc {os.cpu_count()}, memory {memory()},"
        f" load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(
        f"{args.sources} sources on {args.hosts} loopback hosts, each answering after"
        f" {args.delay * 1000:g} ms (5 new items, then 304); per_host 2 (default),"
        " host_spacing not applied to loopback"
    )
    server = DelayedServer(args.hosts, args.delay)
    cycles: dict[int, list[Timing]] = {}
    try:
        for concurrency in levels:
            floor = args.sources * args.delay / min(concurrency, 2 * args.hosts)
            print(f"concurrency {concurrency} (floor {floor:.2f} s = sources x delay / slots)")
            runs = [polls(server, args.sources, concurrency) for _ in range(repeats)]
            cycles[concurrency] = [cycle for _, cycle in runs]
            print(describe("first poll", [first for first, _ in runs]))
            print(describe("cycle (304)", cycles[concurrency]))
            if not args.quick:
                fetches = [fetch_only(server, args.sources, concurrency) for _ in range(repeats)]
                print(describe("fetch only", fetches))
    finally:
        server.stop()
    # The last line, for bench/run.py: the 304 cycle at the first concurrency measured.
    walls = [t.wall for t in cycles[levels[0]]]
    cpu = statistics.median(t.cpu for t in cycles[levels[0]])
    record = {
        "name": f"{args.sources:,} sources × {args.delay * 1000:g} ms",
        "unit": "s",
        "median": round(statistics.median(walls), 2),
        "min": round(min(walls), 2),
        "max": round(max(walls), 2),
        "target": 3,
        "better": "lower",
        "note": f"poll cycle, all 304; concurrency {levels[0]}, CPU {cpu:.2f} s",
    }
    print(json.dumps(record, ensure_ascii=False))


if __name__ == "__main__":
    main()
