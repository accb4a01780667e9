"""The command line: parses arguments, calls the app, prints results; no logic of its own."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from aggregator import __version__
from aggregator.app import App, config_path, open_app, publish_site
from aggregator.errors import AggregatorError, ConfigError
from aggregator.logs import FORMATS, setup_logging
from aggregator.models import SourceOutcome, UpdateReport
from aggregator.progress import Progress
from aggregator.schedule import due_sources
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
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="log lines for people (text, the default) or one JSON object per line (json)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("check", help="validate the config and print a summary")

    poll = commands.add_parser("poll", help="poll due sources (or all, or the named ones)")
    poll.add_argument("--all", action="store_true", help="poll every enabled source, due or not")
    poll.add_argument("ids", nargs="*", metavar="ID", help="poll only these sources")

    commands.add_parser("publish", help="write the feeds and pages into <data_dir>/public/")

    run = commands.add_parser("run", help="run the worker (or one round with --once)")
    run.add_argument("--once", action="store_true", help="poll what is due, publish, exit")

    status = commands.add_parser("status", help="worker, sources and digest health")
    status.add_argument("--json", action="store_true", help="the report as one JSON object")

    backup = commands.add_parser("backup", help="online copy of the database, safe while running")
    backup.add_argument("file", type=Path, metavar="FILE", help="where to write the copy")

    sources = commands.add_parser("sources", help="source health; add, import, export, enable")
    sources_commands = sources.add_subparsers(dest="sources_command", metavar="ACTION")
    sources_commands.add_parser("list", help="health per source (the default)")
    add = sources_commands.add_parser("add", help="add a feed, or the feed a page names")
    add.add_argument("url", metavar="URL")
    add.add_argument("--id", dest="source_id", help="the new source's id (default: from its title)")
    add.add_argument("--name", help="display name (default: the feed's title)")
    add.add_argument("--every", default="30m", help="poll interval (default 30m)")
    add.add_argument("--tag", action="append", default=[], dest="tags", help="a tag; repeatable")
    import_ = sources_commands.add_parser("import", help="add the feeds of an OPML file")
    import_.add_argument("file", type=Path, metavar="FILE")
    sources_commands.add_parser("export", help="print the feed sources as OPML 2.0")
    enable = sources_commands.add_parser("enable", help="poll a source disabled by 410 Gone again")
    enable.add_argument("ids", nargs="+", metavar="ID")

    entries = commands.add_parser("entries", help="list stored entries")
    entries.add_argument("--tag", help="only entries with this tag")
    entries.add_argument("--since", type=_date, metavar="DATE", help="published on or after DATE")
    entries.add_argument("--limit", type=int, default=50, help="at most N entries (default 50)")
    entries.add_argument("--json", action="store_true", help="one JSON object per line")

    commands.add_parser(
        "retag", help="re-apply the current tag rules and story grouping to stored entries"
    )

    explain = commands.add_parser("explain", help="why an entry has (or lacks) each tag")
    explain.add_argument("entry_id", metavar="ENTRY_ID", help="an id shown by `entries`")

    digest = commands.add_parser("digest", help="preview or send the weekly email digest")
    digest_commands = digest.add_subparsers(dest="digest_command", required=True, metavar="ACTION")
    for name, text in (("preview", "write HTML and text to <data_dir>/outbox/"), ("send", "send")):
        action = digest_commands.add_parser(name, help=text)
        action.add_argument("--week", metavar="YYYY-Www", help="default: the last complete week")
        action.add_argument("--to", metavar="EMAIL", help="only this subscriber")
        if name == "send":
            action.add_argument(
                "--dry-run", action="store_true", help="write .eml files to <data_dir>/outbox/"
            )
    resubscribe = digest_commands.add_parser("resubscribe", help="undo an unsubscribe")
    resubscribe.add_argument("email", metavar="EMAIL")

    serve = commands.add_parser("serve", help="serve <data_dir>/public/ over HTTP")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (8080; 0: any free port)")
    return parser


def _date(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_format, verbose=args.verbose)
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
    if s.digest.subscribers and not os.environ.get(s.digest.secret_env):
        print(
            f"digest: ${s.digest.secret_env} is not set: digests carry a mailto: unsubscribe"
            " only, no one-click link"
        )
    print(f"data: {s.data_dir}")
    return EXIT_OK


def cmd_poll(app: App, args: argparse.Namespace) -> int:
    unknown = [i for i in args.ids if app.settings.source(i) is None]
    if unknown:
        print(f"error: no source with id {', '.join(map(repr, unknown))}", file=sys.stderr)
        return EXIT_USAGE
    states = app.store.source_states()
    due = due_sources(app.settings.sources, states, app.clock.now(), only=args.ids, force=args.all)
    progress = Progress(sys.stdout, len(due), interactive=sys.stdout.isatty())
    try:
        report = update(
            app.settings,
            app.store,
            app.clock,
            only=args.ids,
            force=args.all,
            on_outcome=lambda outcome: progress.line(_outcome_line(outcome)),
        )
    finally:
        progress.finish()
    _print_total(report)
    return EXIT_PARTIAL if report.failed else EXIT_OK


def cmd_publish(app: App, args: argparse.Namespace) -> int:
    report = publish_site(app)
    print(
        f"published {len(report.written)} changed file(s), {len(report.unchanged)} unchanged, in {app.public_dir}"
    )
    return EXIT_OK


def cmd_serve(app: App, args: argparse.Namespace) -> int:
    from aggregator.serve import make_server

    server = make_server(app, args.host, args.port)
    print(f"serving {app.public_dir} at {server.url} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return EXIT_OK


def cmd_run(app: App, args: argparse.Namespace) -> int:
    from aggregator.worker import run_once, run_worker

    if args.once:
        tick = run_once(app, on_outcome=_print_outcome)
        _print_total(tick.update)
        print(f"published {tick.published} changed file(s) in {app.public_dir}")
        if tick.pruned:
            print(f"pruned {tick.pruned} entries older than the keep period")
        if tick.digest_sent:
            print("sent the due digest")
        return EXIT_PARTIAL if tick.update.failed else EXIT_OK
    return run_worker(app)


def cmd_status(app: App, args: argparse.Namespace) -> int:
    from aggregator.status import format_report, gather

    report = gather(app)
    if args.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        print("\n".join(format_report(report, app.settings.timezone)))
    return report.exit_code


def cmd_backup(app: App, args: argparse.Namespace) -> int:
    from aggregator.backup import backup_database

    done = backup_database(app.store.conn, args.file)
    print(
        f"backed up {done.entries} entries (schema {done.schema_version},"
        f" {done.size / 1e6:.1f} MB) to {done.path}"
    )
    return EXIT_OK


def cmd_explain(app: App, args: argparse.Namespace) -> int:
    from aggregator.explain import explain_entry
    from aggregator.process.tag import compile_rules

    stored = app.store.entry(args.entry_id)
    if stored is None:
        message = f"error: no stored entry with id {args.entry_id!r}; see `aggregator entries`"
        print(message, file=sys.stderr)
        return EXIT_USAGE
    source = app.settings.source(stored.entry.source_id)
    tagger = compile_rules(app.settings.tags)
    print(explain_entry(stored, tagger, source.tags if source else ()))
    return EXIT_OK


def cmd_entries(app: App, args: argparse.Namespace) -> int:
    zone = ZoneInfo(app.settings.timezone)
    listed = app.store.entries(tag=args.tag, since=args.since, limit=args.limit)
    story_ids = list(dict.fromkeys(s.entry.story_id or s.entry.id for s in listed))
    stories = {story.id: story for story in app.store.stories_by_id(story_ids)} if args.json else {}
    for stored in listed:
        entry = stored.entry
        if args.json:
            story = stories.get(entry.story_id or entry.id)
            record = {
                "id": entry.id,
                "source": entry.source_id,
                "source_name": stored.source_name,
                "title": entry.title,
                "link": entry.link,
                "published": entry.published.isoformat(),
                "first_seen": entry.first_seen.isoformat(),
                "tags": list(entry.tags),
                "story_id": entry.story_id or entry.id,
                "is_lead": story is None or story.lead.entry.id == entry.id,
                "story_members": [
                    m.entry.id for m in (story.members if story else ()) if m.entry.id != entry.id
                ],
            }
            print(json.dumps(record, ensure_ascii=False))
        else:
            when = entry.published.astimezone(zone).strftime("%Y-%m-%d %H:%M")
            tags = f"  [{', '.join(entry.tags)}]" if entry.tags else ""
            print(f"{entry.id}  {when}  {entry.source_id}  {entry.title}{tags}")
    return EXIT_OK


def cmd_retag(app: App, args: argparse.Namespace) -> int:
    from aggregator.retag import retag

    print(retag(app.settings, app.store).summary())
    return EXIT_OK


def cmd_digest(app: App, args: argparse.Namespace) -> int:
    from aggregator import digest_run
    from aggregator.digest import last_complete_week, parse_week

    if args.digest_command == "resubscribe":
        again = app.store.opt_in(args.email)
        print(f"{args.email}: {'resubscribed' if again else 'had not unsubscribed'}")
        return EXIT_OK
    timezone = app.settings.timezone
    try:
        week = args.week and parse_week(args.week, timezone)
    except ValueError as error:
        print(f"error: --week: {error}", file=sys.stderr)
        return EXIT_USAGE
    period = week or last_complete_week(app.clock.now(), timezone)
    if args.digest_command == "preview":
        for path in digest_run.preview(app, period, to=args.to):
            print(path)
        return EXIT_OK
    if args.to and not any(
        s.email.lower() == args.to.lower() for s in app.settings.digest.subscribers
    ):
        print(f"error: --to: {args.to} is not in [[digest.subscribers]]", file=sys.stderr)
        return EXIT_USAGE
    if args.dry_run:
        report = digest_run.write_dry_run(app, period, only=args.to)
    else:
        report = digest_run.send_digests(app, period, only=args.to)
    for delivery in report.deliveries:
        detail = f": {delivery.detail}" if delivery.detail else ""
        print(f"{delivery.status:<17} {delivery.email}{detail}")
    counts = Counter(d.status for d in report.deliveries)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no subscribers"
    print(f"digest {period.label}: {summary}")
    return EXIT_PARTIAL if report.failed else EXIT_OK


def cmd_sources(app: App, args: argparse.Namespace) -> int:
    from aggregator import sources as manage

    action = args.sources_command or "list"
    settings, now = app.settings, app.clock.now()
    if action == "list":
        app.store.sync_sources(settings.sources, now)
        states, history = app.store.source_states(), app.store.source_history(now)
        zone = ZoneInfo(settings.timezone)
        for source in settings.sources:
            seen = history.get(source.id)
            report = manage.source_report(
                source,
                states.get(source.id),
                recent_items=seen.recent_items if seen else 0,
                published=seen.published if seen else (),
                now=now,
            )
            print("\n".join(manage.describe_source(report, zone)))
        return EXIT_OK
    if action == "export":
        print(manage.export_opml(settings.sources, title=settings.publish.title, now=now), end="")
        return EXIT_OK
    if action == "enable":
        unknown = [i for i in args.ids if settings.source(i) is None]
        if unknown:
            print(f"error: no source with id {', '.join(map(repr, unknown))}", file=sys.stderr)
            return EXIT_USAGE
        app.store.sync_sources(settings.sources, now)
        for source_id in args.ids:
            done = app.store.enable_source(source_id)
            print(f"{source_id}: {'enabled, polled next time' if done else 'was not disabled'}")
        return EXIT_OK
    text = settings.path.read_text(encoding="utf-8")
    if action == "import":
        try:
            outlines = manage.parse_opml(args.file.read_bytes())
        except OSError as error:
            print(f"error: cannot read {args.file}: {error.strerror}", file=sys.stderr)
            return EXIT_USAGE
        new_text, added, skipped = manage.import_outlines(text, settings.sources, outlines, now)
        _write_config(app, new_text)
        for block in added:
            print(f"added {block.id}: {block.url}")
        for outline in skipped:
            print(f"skipped {outline.url}: already a source")
        print(f"{len(added)} source(s) added to {settings.path}")
        return EXIT_OK
    try:
        found = manage.probe_sync(args.url, settings.fetch)
    except AggregatorError as error:
        print(f"error: cannot add {args.url}: {error}", file=sys.stderr)
        return EXIT_PARTIAL
    new_text, new = manage.add_source(
        text,
        settings.sources,
        found,
        source_id=args.source_id,
        name=args.name,
        every=args.every,
        tags=args.tags,
        now=now,
    )
    _write_config(app, new_text)
    print(f"added {new.id}: {new.url} ({found.entries} item(s) now) to {settings.path}")
    for other in found.others:
        print(f"the page also names {other.url} {other.title!r}")
    return EXIT_OK


def _write_config(app: App, text: str) -> None:
    """Write the edited config, then load it: a block that does not validate is taken back."""
    from aggregator import config

    path = app.settings.path
    old = path.read_text(encoding="utf-8")
    path.write_text(text, encoding="utf-8")
    try:
        config.load(path)
    except ConfigError:
        path.write_text(old, encoding="utf-8")
        raise


def _print_outcome(outcome: SourceOutcome) -> None:
    print(_outcome_line(outcome), flush=True)


def _outcome_line(outcome: SourceOutcome) -> str:
    if outcome.status == "error":
        return f"FAIL  {outcome.source_id}: {outcome.error}"
    if outcome.status == "not-modified":
        return f"ok    {outcome.source_id}: not modified ({outcome.duration:.1f}s)"
    return (
        f"ok    {outcome.source_id}: {outcome.new} new, {outcome.updated} updated,"
        f" {outcome.unchanged} unchanged ({outcome.duration:.1f}s)"
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
    "retag": cmd_retag,
    "explain": cmd_explain,
    "status": cmd_status,
    "backup": cmd_backup,
    "sources": cmd_sources,
    "digest": cmd_digest,
    "serve": cmd_serve,
}
