"""The command line: parses arguments, calls the app, prints results; no logic of its own."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from aggregator import __version__
from aggregator.app import App, config_path, open_app, publish_site
from aggregator.errors import AggregatorError, ConfigError
from aggregator.models import SourceOutcome, UpdateReport
from aggregator.update import update

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_FATAL = 0, 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aggregator",
        description="A self-hosted news watch: polls feeds and pages, publishes a curated feed.",
    )
    parser.add_argument("--version", action="version", version=f"aggregator {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $AGGREGATOR_CONFIG or config/feeds.toml)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("check", help="validate the config and print a summary")

    poll = commands.add_parser("poll", help="poll due sources (or all, or the named ones)")
    poll.add_argument("--all", action="store_true", help="poll every enabled source, due or not")
    poll.add_argument("ids", nargs="*", metavar="ID", help="poll only these sources")

    commands.add_parser("publish", help="write the feeds and pages into <data_dir>/public/")

    run = commands.add_parser("run", help="run the worker (or one round with --once)")
    run.add_argument("--once", action="store_true", help="poll what is due, publish, exit")

    entries = commands.add_parser("entries", help="list stored entries")
    entries.add_argument("--tag", help="only entries with this tag")
    entries.add_argument("--since", type=_date, metavar="DATE", help="published on or after DATE")
    entries.add_argument("--limit", type=int, default=50, help="at most N entries (default 50)")
    entries.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser


def _date(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        app = open_app(config_path(args.config))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return int(COMMANDS[args.command](app, args))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except AggregatorError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FATAL
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        app.close()


def cmd_check(app: App, args: argparse.Namespace) -> int:
    s = app.settings
    kinds = Counter(source.type for source in s.sources)
    enabled = sum(1 for source in s.sources if source.enabled)
    print(f"{s.path}: ok")
    by_type = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "none"
    print(f"sources: {len(s.sources)} ({by_type}; {enabled} enabled)")
    print(f"tags: {', '.join(t.name for t in s.tags) or 'none'}")
    topic = s.publish.topic or "(none: nothing is curated)"
    print(f"publish: topic {topic}, {s.publish.title!r} at {s.publish.base_url}")
    subscribers = sum(1 for sub in s.digest.subscribers if sub.enabled)
    print(f"digest: {s.digest.schedule} {s.timezone}, {subscribers} subscriber(s)")
    print(f"data: {s.data_dir}")
    return EXIT_OK


def cmd_poll(app: App, args: argparse.Namespace) -> int:
    unknown = [i for i in args.ids if app.settings.source(i) is None]
    if unknown:
        print(f"error: no source with id {', '.join(map(repr, unknown))}", file=sys.stderr)
        return EXIT_USAGE
    report = update(
        app.settings, app.store, app.clock, only=args.ids, force=args.all, on_outcome=_print_outcome
    )
    _print_total(report)
    return EXIT_PARTIAL if report.failed else EXIT_OK


def cmd_publish(app: App, args: argparse.Namespace) -> int:
    report = publish_site(app)
    print(
        f"published {len(report.written)} changed file(s), {len(report.unchanged)} unchanged, in {app.public_dir}"
    )
    return EXIT_OK


def cmd_run(app: App, args: argparse.Namespace) -> int:
    if args.once:
        report = update(app.settings, app.store, app.clock, on_outcome=_print_outcome)
        _print_total(report)
        published = publish_site(app)
        print(f"published {len(published.written)} changed file(s) in {app.public_dir}")
        return EXIT_PARTIAL if report.failed else EXIT_OK
    from aggregator.worker import run_worker

    return run_worker(app, on_outcome=_print_outcome)


def cmd_entries(app: App, args: argparse.Namespace) -> int:
    zone = ZoneInfo(app.settings.timezone)
    for stored in app.store.entries(tag=args.tag, since=args.since, limit=args.limit):
        entry = stored.entry
        if args.json:
            record = {
                "id": entry.id,
                "source": entry.source_id,
                "source_name": stored.source_name,
                "title": entry.title,
                "link": entry.link,
                "published": entry.published.isoformat(),
                "first_seen": entry.first_seen.isoformat(),
                "tags": list(entry.tags),
            }
            print(json.dumps(record, ensure_ascii=False))
        else:
            when = entry.published.astimezone(zone).strftime("%Y-%m-%d %H:%M")
            tags = f"  [{', '.join(entry.tags)}]" if entry.tags else ""
            print(f"{entry.id}  {when}  {entry.source_id}  {entry.title}{tags}")
    return EXIT_OK


def _print_outcome(outcome: SourceOutcome) -> None:
    if outcome.status == "error":
        print(f"FAIL  {outcome.source_id}: {outcome.error}", flush=True)
    elif outcome.status == "not-modified":
        print(f"ok    {outcome.source_id}: not modified ({outcome.duration:.1f}s)", flush=True)
    else:
        print(
            f"ok    {outcome.source_id}: {outcome.new} new, {outcome.updated} updated,"
            f" {outcome.unchanged} unchanged ({outcome.duration:.1f}s)",
            flush=True,
        )


def _print_total(report: UpdateReport) -> None:
    if not report.outcomes:
        print("no source is due")
        return
    ok = len(report.outcomes) - len(report.failed)
    print(
        f"{len(report.outcomes)} source(s): {ok} ok, {len(report.failed)} failed;"
        f" {report.new} new, {report.updated} updated"
    )


COMMANDS = {
    "check": cmd_check,
    "poll": cmd_poll,
    "publish": cmd_publish,
    "run": cmd_run,
    "entries": cmd_entries,
}
