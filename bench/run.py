"""Run every benchmark and write the results into docs/benchmarks.md. One command:

    python3 bench/run.py            # full size: 200 feeds x 50 items, 3 repeats
    python3 bench/run.py --quick    # 20 feeds x 50 items, 2 repeats: checks the harness
    python3 bench/run.py --profile  # also profile aggregator's first poll (pyinstrument)

It creates bench/.venv on first use (aggregator itself, editable, plus the bench-only tools
pinned in bench/requirements.lock: lemon24/reader, rss2email, fastfeedparser, pyinstrument)
and re-runs itself there. It generates the corpus (bench/corpus.py), serves it from a local
server on 127.0.0.1 (bench/server.py) and measures, with repeats (median, min, max):

- first poll, all items new, end to end (fetch, parse, normalize, dedupe, tag, store): items/s
  for aggregator, reader and rss2email (plain and digest mode), and the ratios;
- second poll, every feed answering 304: feeds/s, same three tools;
- parsing alone: feedparser, aggregator's parse_feed (lxml fast path), bare lxml, fastfeedparser.

Other figures come from sibling scripts (bench/poll_concurrency.py, curation.py, publish.py,
digest.py) when present: each is run as `python -m bench.NAME [--quick]` from the repository
(`--quick` only for scripts that accept it) and prints, on its last line, one JSON object
{"name", "unit", "median", "min", "max", "target"} (or a list of them; optional keys: "better" = "higher" | "lower", "peer", "note"). The summary in docs/benchmarks.md
between the bench:summary markers is regenerated; everything else there is left alone.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENV = BENCH / ".venv"
DOCS = REPO / "docs" / "benchmarks.md"
PEER_SCRIPTS = ("poll_concurrency", "curation", "publish", "digest", "scale")
START_MARK = "<!-- bench:summary:start -->"
END_MARK = "<!-- bench:summary:end -->"
PROFILE_START = "<!-- bench:profile:start -->"
PROFILE_END = "<!-- bench:profile:end -->"


# --- the bench virtualenv --------------------------------------------------------------------


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_venv() -> None:
    """Create and fill bench/.venv when missing or stale, then re-run this script inside it."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    lock = BENCH / "requirements.lock"
    stamp_value = hashlib.sha256(
        lock.read_bytes()
        + (REPO / "pyproject.toml").read_bytes()
        + (REPO / "requirements.lock").read_bytes()
    ).hexdigest()[:16]
    stamp = VENV / f".installed-{stamp_value}"
    if not stamp.exists():
        if not venv_python().exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(venv_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        product_lock = REPO / "requirements.lock"  # the product's own pins apply here too
        subprocess.run(
            [*pip, "-r", str(lock), "-c", str(product_lock), "-e", str(REPO)], check=True
        )
        for old in VENV.glob(".installed-*"):
            old.unlink()
        stamp.touch()
    os.execv(str(venv_python()), [str(venv_python()), *sys.argv])


# --- measuring ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Figure:
    """One measured figure: the convention every bench script's JSON line follows."""

    name: str
    unit: str
    median: float
    min: float
    max: float
    target: str = ""
    better: str = "higher"  # "higher" or "lower"
    peer: str = ""  # the tool, when not aggregator
    note: str = ""

    def json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False)


def rate_figure(name: str, unit: str, count: int, seconds: Sequence[float], **extra: Any) -> Figure:
    """items/s (or feeds/s) from repeated timings of `count` things: median and spread."""
    rates = sorted(count / s for s in seconds)
    return Figure(name, unit, statistics.median(rates), rates[0], rates[-1], **extra)


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


@contextmanager
def corpus_server(directory: Path, delay: float = 0.0) -> Iterator[str]:
    """bench/server.py in its own process (so it has its own core); yields the base URL."""
    process = subprocess.Popen(
        [sys.executable, str(BENCH / "server.py"), str(directory), "--delay", str(delay)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().split()
        if len(line) != 2 or line[0] != "listening":
            raise RuntimeError("bench server did not start")
        yield f"http://127.0.0.1:{line[1]}/"
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- aggregator ------------------------------------------------------------------------------


def aggregator_settings(urls: Sequence[str], data_dir: Path) -> Any:
    """The shipped config's rules and settings, with the bench feeds as sources."""
    from aggregator import config
    from aggregator.settings import SourceSettings

    settings = config.load(REPO / "config" / "feeds.toml")
    sources = tuple(
        SourceSettings(id=f"feed-{i:03d}", url=url, name=f"Bench feed {i}")
        for i, url in enumerate(urls)
    )
    # Every bench feed is on one host; real sources are on many. Per-host politeness would
    # measure the limit, not the code: allow as many per host as overall.
    fetch = dataclasses.replace(settings.fetch, per_host=settings.fetch.concurrency)
    return dataclasses.replace(settings, data_dir=data_dir, sources=sources, fetch=fetch)


def aggregator_polls(urls: Sequence[str], items: int, repeats: int, work: Path) -> list[Figure]:
    from aggregator.clock import SystemClock
    from aggregator.store import Store
    from aggregator.update import update

    first, second = [], []
    for repeat in range(repeats):
        data_dir = work / f"aggregator-{repeat}"
        settings = aggregator_settings(urls, data_dir)
        store = Store(data_dir / "aggregator.db")
        try:
            started = time.perf_counter()
            report = update(settings, store, SystemClock(), force=True)
            first.append(time.perf_counter() - started)
            check(report.new == items, f"aggregator stored {report.new} of {items} items")
            started = time.perf_counter()
            again = update(settings, store, SystemClock(), force=True)
            second.append(time.perf_counter() - started)
            statuses = {o.status for o in again.outcomes}
            check(statuses == {"not-modified"}, f"second poll statuses {statuses}")
        finally:
            store.close()
            shutil.rmtree(data_dir, ignore_errors=True)
    return [
        rate_figure("first poll", "items/s", items, first, target=">= 5x reader (aim 10x)"),
        rate_figure("second poll (all 304)", "feeds/s", len(urls), second, target=">= 2x reader"),
    ]


POLL_MEMORY = """
import json, resource, sys
from pathlib import Path
sys.path.insert(0, {bench!r})
import run
from aggregator.clock import SystemClock
from aggregator.store import Store
from aggregator.update import update

if __name__ == "__main__":
    urls = json.loads(Path({urls!r}).read_text())
    settings = run.aggregator_settings(urls, Path({data!r}))
    before = run.peak_rss_mb()
    report = update(settings, Store(settings.data_dir / "aggregator.db"), SystemClock(), force=True)
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({{"new": report.new, "before": before, "main": run.peak_rss_mb(),
                      "worker": workers}}))
"""


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def first_poll_memory(urls: Sequence[str], items: int, repeats: int, work: Path) -> list[Figure]:
    """Peak resident memory of a first poll, in a fresh process each time: the main process
    (fetching, storing, the band index) and the largest worker process (reading bodies)."""
    main, worker = [], []
    (work / "urls.json").write_text(json.dumps(list(urls)))
    for repeat in range(repeats):
        data_dir = work / f"aggregator-memory-{repeat}"
        code = POLL_MEMORY.format(
            bench=str(BENCH), urls=str(work / "urls.json"), data=str(data_dir)
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
        )
        result = json.loads(done.stdout.splitlines()[-1])
        check(result["new"] == items, f"memory run stored {result['new']} of {items} items")
        main.append(result["main"])
        worker.append(result["worker"])
        shutil.rmtree(data_dir, ignore_errors=True)
    return [
        Figure(
            "first poll, peak memory of the main process",
            "MB",
            statistics.median(main),
            min(main),
            max(main),
            target="< 150 MB",
            better="lower",
            note="VmHWM; interpreter and imports included",
        ),
        Figure(
            "first poll, peak memory of a worker process",
            "MB",
            statistics.median(worker),
            min(worker),
            max(worker),
            better="lower",
            note="largest of the worker processes that read bodies (one per core)",
        ),
    ]


class InlineExecutor(concurrent.futures.Executor):
    """Runs submitted work at once in the calling thread: pyinstrument sees one thread only,
    and update.py stores (and, without worker processes, reads bodies) on a worker thread."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:
            future.set_exception(error)
        return future


def profile_first_poll(urls: Sequence[str], work: Path) -> str:
    """pyinstrument's text report of one first poll, all of it on the event loop's thread:
    bodies read inline (no worker processes), storing inlined too."""
    from pyinstrument import Profiler

    from aggregator import update as update_module
    from aggregator.clock import SystemClock
    from aggregator.prepare import Preparer
    from aggregator.store import Store

    data_dir = work / "aggregator-profile"
    settings = aggregator_settings(urls, data_dir)
    store = Store(data_dir / "aggregator.db")
    profiler = Profiler(interval=0.001, async_mode="disabled")
    original = getattr(update_module, "ThreadPoolExecutor", None)
    try:
        if original is not None:
            update_module.ThreadPoolExecutor = InlineExecutor  # type: ignore[attr-defined]
        with profiler:
            inline = Preparer(processes=1)
            update_module.update(settings, store, SystemClock(), force=True, preparer=inline)
    finally:
        if original is not None:
            update_module.ThreadPoolExecutor = original  # type: ignore[attr-defined]
        store.close()
        shutil.rmtree(data_dir, ignore_errors=True)
    return str(profiler.output_text(unicode=True, color=False, show_all=False))


# --- peers -----------------------------------------------------------------------------------


def reader_polls(urls: Sequence[str], items: int, repeats: int, work: Path) -> list[Figure]:
    from reader import make_reader

    first, second = [], []
    for repeat in range(repeats):
        path = work / f"reader-{repeat}.sqlite"
        reader = make_reader(str(path))
        try:
            for url in urls:
                reader.add_feed(url)
            first.append(timed(lambda r=reader: r.update_feeds(scheduled=False)))
            stored = reader.get_entry_counts().total
            check(stored == items, f"reader stored {stored} of {items} items")
            second.append(timed(lambda r=reader: r.update_feeds(scheduled=False)))
        finally:
            reader.close()
            path.unlink(missing_ok=True)
    version = package_version("reader")
    return [
        rate_figure("first poll", "items/s", items, first, peer=f"reader {version}"),
        rate_figure(
            "second poll (all 304)", "feeds/s", len(urls), second, peer=f"reader {version}"
        ),
    ]


def rss2email_polls(
    urls: Sequence[str], items: int, repeats: int, work: Path, *, digest: bool
) -> list[Figure]:
    """`r2e run --no-send` (builds every message, sends none) on a fresh database each time."""
    r2e = [str(Path(sys.executable).parent / "r2e")]
    first, second = [], []
    for repeat in range(repeats):
        home = work / f"r2e-{repeat}"
        home.mkdir(parents=True, exist_ok=True)
        config, data = home / "r2e.cfg", home / "r2e.json"
        env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home)}
        files = ["-c", str(config), "-d", str(data)]
        quiet_run([*r2e, *files, "new", "bench@example.org"], env)
        text = config.read_text(encoding="utf-8")
        if digest:
            text = text.replace("\ndigest = False\n", "\ndigest = True\n")
            check("\ndigest = True\n" in text, "cannot switch rss2email to digest mode")
        text += "".join(f"\n[feed.bench-{i:03d}]\nurl = {url}\n" for i, url in enumerate(urls))
        config.write_text(text, encoding="utf-8")
        run = [*r2e, *files, "run", "--no-send"]
        first.append(timed(functools.partial(quiet_run, run, env)))
        second.append(timed(functools.partial(quiet_run, run, env)))
        shutil.rmtree(home, ignore_errors=True)
    peer = f"rss2email {package_version('rss2email')}" + (" (digest)" if digest else "")
    note = "includes r2e start-up (~0.3 s)"
    figures = [rate_figure("first poll", "items/s", items, first, peer=peer, note=note)]
    if not digest:
        figures.append(
            rate_figure("second poll (all 304)", "feeds/s", len(urls), second, peer=peer, note=note)
        )
    return figures


def quiet_run(command: Sequence[str], env: dict[str, str]) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    tail = "\n".join(done.stderr.strip().splitlines()[-5:])
    check(done.returncode == 0, f"{' '.join(command[-2:])} failed:\n{tail}")


# --- parsing alone ---------------------------------------------------------------------------


def parser_figures(paths: Sequence[Path], repeats: int) -> list[Figure]:
    import fastfeedparser
    import feedparser
    from lxml import etree

    from aggregator.parse.feeds import parse_feed

    documents = [p.read_bytes() for p in paths]
    url = "https://news.example.org/feed.xml"

    def lxml_bare(document: bytes) -> int:
        root = etree.fromstring(document)
        count = 0
        for item in root.iter("item", "{http://www.w3.org/2005/Atom}entry"):
            fields = {child.tag: child.text for child in item}
            count += bool(fields)
        return count

    parsers: dict[str, tuple[str, Callable[[bytes], int]]] = {
        "feedparser": (
            f"feedparser {package_version('feedparser')}",
            lambda d: len(feedparser.parse(d)["entries"]),
        ),
        "aggregator": ("", lambda d: len(parse_feed(d, url=url).entries)),
        "lxml": (f"lxml {package_version('lxml')} (bare)", lxml_bare),
        "fastfeedparser": (
            f"fastfeedparser {package_version('fastfeedparser')}",
            lambda d: len(fastfeedparser.parse(d)["entries"]),
        ),
    }
    figures = []
    for label, (peer, parse) in parsers.items():
        seconds, count = [], 0
        for _ in range(repeats):
            started = time.perf_counter()
            count = sum(parse(d) for d in documents)
            seconds.append(time.perf_counter() - started)
        note = "parse_feed: decode + lxml fast path" if label == "aggregator" else ""
        figures.append(rate_figure("parse alone", "items/s", count, seconds, peer=peer, note=note))
    return figures


# --- sibling bench scripts -------------------------------------------------------------------


def sibling_figures(quick: bool) -> list[Figure]:
    figures = []
    for name in PEER_SCRIPTS:
        script = BENCH / f"{name}.py"
        if not script.exists():
            continue
        takes_quick = '"--quick"' in script.read_text(encoding="utf-8")
        command = [
            sys.executable,
            "-m",
            f"bench.{name}",
            *(["--quick"] if quick and takes_quick else []),
        ]
        print(f"== {name}", flush=True)
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        try:
            loaded = json.loads(lines[-1]) if done.returncode == 0 and lines else None
        except json.JSONDecodeError:
            loaded = None
        if loaded is None:
            reason = (done.stderr.strip().splitlines() or ["no JSON line"])[-1][:200]
            print(f"   {name} failed: {reason}", file=sys.stderr)
            figures.append(Figure(name, "", float("nan"), float("nan"), float("nan"), note=reason))
            continue
        for item in loaded if isinstance(loaded, list) else [loaded]:
            known = {f.name for f in dataclasses.fields(Figure)}
            figures.append(Figure(**{k: v for k, v in item.items() if k in known}))
    return figures


# --- report ----------------------------------------------------------------------------------


def package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def machine() -> str:
    memory = "?"
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return f"{os.cpu_count()} cores, {memory} RAM, {platform.platform()}"


def fmt(value: float) -> str:
    if value != value:  # NaN
        return "failed"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def summary_markdown(figures: Sequence[Figure], context: dict[str, str]) -> str:
    ours = {f.name: f for f in figures if not f.peer}
    lines = [
        f"Run {context['date']} with `{context['command']}`{context['load']}.",
        "",
        f"- Machine: {context['machine']}",
        f"- Python {platform.python_version()}; {context['versions']}",
        f"- Corpus: {context['corpus']}; {context['repeats']} repeats, median (min–max)",
        "",
        "| figure | tool | median | min–max | unit | vs aggregator | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for figure in figures:
        tool = figure.peer or "aggregator"
        ratio = ""
        mine = ours.get(figure.name)
        if figure.peer and mine and figure.median and figure.median == figure.median:
            factor = mine.median / figure.median
            if figure.better == "lower":
                factor = 1 / factor
            ratio = f"aggregator {factor:.1f}×"
        note = f" ({figure.note})" if figure.note else ""
        lines.append(
            f"| {figure.name} | {tool}{note} | {fmt(figure.median)} | "
            f"{fmt(figure.min)}–{fmt(figure.max)} | {figure.unit} | {ratio} | {figure.target} |"
        )
    return "\n".join(lines)


def replace_between(text: str, start: str, end: str, body: str, heading: str) -> str:
    block = f"{start}\n{body}\n{end}"
    if start in text and end in text:
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        return head + block + tail
    return text.rstrip("\n") + f"\n\n## {heading}\n\n{block}\n"


def write_docs(summary: str, profile: str | None) -> None:
    text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else "# Benchmarks\n"
    text = replace_between(text, START_MARK, END_MARK, summary, "Summary")
    if profile is not None:
        text = replace_between(text, PROFILE_START, PROFILE_END, profile, "Profile")
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(text, encoding="utf-8")


def profile_markdown(report: str, urls: int) -> str:
    top = "\n".join(report.splitlines()[:60])
    return f"pyinstrument, one first poll of {urls} feeds (raw report, top):\n\n```text\n{top}\n```"


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"bench: {message}")


# --- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: check the harness")
    parser.add_argument("--feeds", type=int, help="feeds in the corpus (200; --quick 20)")
    parser.add_argument("--items", type=int, default=50, help="items per feed")
    parser.add_argument("--repeats", type=int, help="repeats per figure (3; --quick 2)")
    parser.add_argument("--profile", action="store_true", help="profile the first poll")
    parser.add_argument("--no-peers", action="store_true", help="skip reader and rss2email")
    parser.add_argument("--no-siblings", action="store_true", help="skip the sibling scripts")
    parser.add_argument("--no-docs", action="store_true", help="print, do not write docs/")
    parser.add_argument("--load", default="", help="a note on machine load for the report")
    args = parser.parse_args()
    ensure_venv()

    feeds = args.feeds or (20 if args.quick else 200)
    repeats = args.repeats or (2 if args.quick else 3)
    items = feeds * args.items
    figures: list[Figure] = []
    profile = None
    with tempfile.TemporaryDirectory(prefix="aggregator-bench-") as tmp:
        work = Path(tmp)
        sys.path.insert(0, str(BENCH))
        from corpus import generate

        paths = generate(work / "corpus", feeds=feeds, items_per_feed=args.items)
        size = sum(p.stat().st_size for p in paths) / 1e6
        with corpus_server(work / "corpus") as base:
            urls = [base + p.name for p in paths]
            print(f"== corpus: {feeds} feeds x {args.items} items, {size:.1f} MB at {base}")
            print("== aggregator", flush=True)
            figures += aggregator_polls(urls, items, repeats, work)
            figures += first_poll_memory(urls, items, repeats, work)
            if not args.no_peers:
                print("== reader", flush=True)
                figures += reader_polls(urls, items, repeats, work)
                print("== rss2email", flush=True)
                figures += rss2email_polls(urls, items, repeats, work, digest=False)
                figures += rss2email_polls(urls, items, repeats, work, digest=True)
            if args.profile:
                print("== profile", flush=True)
                report = profile_first_poll(urls, work)
                (VENV / "profile-first-poll.txt").write_text(report, encoding="utf-8")
                profile = profile_markdown(report, feeds)
        print("== parsers", flush=True)
        figures += parser_figures(paths, repeats)
    if not args.no_siblings:
        figures += sibling_figures(args.quick)
    figures.sort(key=lambda f: (f.name, bool(f.peer)))
    for figure in figures:
        print(figure.json())
    versions = ", ".join(
        f"{name} {package_version(name)}"
        for name in ("aggregator", "feedparser", "lxml", "aiohttp", "reader", "rss2email")
    )
    context = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python3 bench/run.py" + (" --quick" if args.quick else ""),
        "machine": machine(),
        "versions": versions,
        "corpus": f"{feeds} feeds × {args.items} items ({size:.1f} MB), RSS 2.0 and Atom",
        "repeats": str(repeats),
        "load": f" ({args.load})" if args.load else "",
    }
    summary = summary_markdown(figures, context)
    print(summary)
    if not args.no_docs:
        write_docs(summary, profile)


if __name__ == "__main__":
    main()
