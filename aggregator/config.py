"""TOML -> frozen, validated `Settings`; every error names the file, the line and the key path."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aggregator.errors import ConfigError
from aggregator.process.tag import check_term
from aggregator.settings import (
    TAG_FIELDS,
    DigestSettings,
    FetchSettings,
    PublishSettings,
    SelectSettings,
    Settings,
    SmtpSettings,
    SourceSettings,
    StorySettings,
    Subscriber,
    TagRule,
)

T = TypeVar("T")

_INTERVAL = re.compile(r"(\d+)\s*([smhd])")
_INTERVAL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SOURCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_TAG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


def parse_interval(text: str) -> int:
    """ "1h30m" -> 5400 seconds. Raises ValueError on anything else."""
    compact = text.strip().lower()
    if not compact or _INTERVAL.sub("", compact).strip():
        raise ValueError(
            f"{text!r} is not an interval; use a number and s, m, h or d, such as '30m'"
        )
    seconds = sum(int(n) * _INTERVAL_UNITS[u] for n, u in _INTERVAL.findall(compact))
    if seconds <= 0:
        raise ValueError(f"{text!r} must be longer than zero")
    return seconds


def parse_schedule(text: str) -> tuple[int, int, int]:
    """ "mon 08:00" -> (weekday 0-6, hour, minute). Raises ValueError."""
    match = re.fullmatch(r"\s*([a-zA-Z]{3})[a-zA-Z]*\s+(\d{1,2}):(\d{2})\s*", text)
    if not match or match.group(1).lower() not in _DAYS:
        raise ValueError(
            f"{text!r} is not a weekly schedule; use a day and a time, such as 'mon 08:00'"
        )
    hour, minute = int(match.group(2)), int(match.group(3))
    if hour > 23 or minute > 59:
        raise ValueError(f"{text!r} has no such time of day")
    return _DAYS.index(match.group(1).lower()), hour, minute


class KeyLines:
    """Maps key paths such as `sources[3].every` to the line that sets them.

    tomllib keeps no positions, so this reads the file's table headers and key lines itself.
    It only has to be right for the TOML people write by hand; when a path is not found,
    the nearest enclosing table's line is used.
    """

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_.\-"' ]+?)\s*=""")

    def __init__(self, text: str) -> None:
        self.lines: dict[str, int] = {}
        counters: dict[str, int] = {}
        table = ""
        in_multiline: str | None = None
        array_depth = 0  # open brackets of a value that spans lines
        for number, line in enumerate(text.splitlines(), start=1):
            if in_multiline:
                if in_multiline in line:
                    in_multiline = None
                continue
            if array_depth > 0:  # `["a", "b"]` here is part of a value, not a table header
                array_depth += _bracket_balance(line)
                continue
            header = self._HEADER.match(line)
            if header:
                name = ".".join(_unquote(part) for part in _split_dotted(header.group(2)))
                table = self._resolve(name, counters)
                if header.group(1) == "[[":
                    counters[name] = counters.get(name, -1) + 1
                    table = self._resolve(name, counters)
                self.lines.setdefault(table, number)
                continue
            key = self._KEY.match(line)
            if key:
                name = ".".join(_unquote(part) for part in _split_dotted(key.group(1)))
                path = f"{table}.{name}" if table else name
                self.lines.setdefault(path, number)
                rest = line[key.end() :]
                for quote in ('"""', "'''"):
                    if rest.count(quote) == 1:
                        in_multiline = quote
                if not in_multiline:
                    array_depth = max(_bracket_balance(rest), 0)

    @staticmethod
    def _resolve(name: str, counters: Mapping[str, int]) -> str:
        """Turn `sources.select` into `sources[2].select` using the array-of-tables counters."""
        parts = name.split(".")
        resolved: list[str] = []
        for i, part in enumerate(parts):
            prefix = ".".join(parts[: i + 1])
            resolved.append(f"{part}[{counters[prefix]}]" if prefix in counters else part)
        return ".".join(resolved)

    def line_of(self, path: str) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = re.sub(r"(\.[^.\[\]]+|\[\d+\])$", "", path) if "." in path or "[" in path else ""
        return None


_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'|#.*$')


def _bracket_balance(line: str) -> int:
    """Opened minus closed brackets on a line, ignoring strings and comments."""
    code = _STRING_OR_COMMENT.sub("", line)
    return code.count("[") - code.count("]")


def _split_dotted(text: str) -> list[str]:
    return [p.strip() for p in re.findall(r'"[^"]*"|\'[^\']*\'|[^.]+', text)]


def _unquote(part: str) -> str:
    return part[1:-1] if len(part) >= 2 and part[0] == part[-1] and part[0] in "\"'" else part


@dataclass
class _Reader:
    """Reads typed values out of the parsed TOML, raising ConfigError with file, line and key."""

    file: str
    keys: KeyLines

    def fail(self, path: str, message: str) -> ConfigError:
        return ConfigError(message, file=self.file, line=self.keys.line_of(path), key=path)

    def table(self, data: Mapping[str, Any], path: str, allowed: set[str]) -> Mapping[str, Any]:
        if not isinstance(data, Mapping):
            raise self.fail(path, f"expected a table, got {_type_name(data)}")
        for key in data:
            if key not in allowed:
                where = f"{path}.{key}" if path else key
                expected = ", ".join(sorted(allowed))
                raise self.fail(where, f"unknown key {key!r} (expected one of: {expected})")
        return data

    def get(
        self, data: Mapping[str, Any], path: str, key: str, kind: type[T], default: T | None = None
    ) -> T:
        where = f"{path}.{key}" if path else key
        if key not in data:
            if default is None:
                raise self.fail(where, "is required")
            return default
        value = data[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise self.fail(where, f"expected {_kind_name(kind)}, got {_type_name(value)}")
        return value  # type: ignore[no-any-return]

    def optional_str(self, data: Mapping[str, Any], path: str, key: str) -> str | None:
        if key not in data:
            return None
        return self.get(data, path, key, str).strip() or None

    def strings(self, data: Mapping[str, Any], path: str, key: str) -> tuple[str, ...]:
        where = f"{path}.{key}" if path else key
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(where, f"expected a list of strings, got {_type_name(value)}")
        if any(not v.strip() for v in value):
            raise self.fail(where, "holds an empty string")
        return tuple(v.strip() for v in value)

    def convert(self, path: str, value: str, parse: Callable[[str], T]) -> T:
        try:
            return parse(value)
        except ValueError as error:
            raise self.fail(path, str(error)) from None


def _type_name(value: object) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean"}
    names.update({list: "a list", dict: "a table"})
    return names.get(type(value), type(value).__name__)


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        kind, kind.__name__
    )


def load(path: str | Path) -> Settings:
    """Read and validate the config file at `path`. Raises ConfigError on any problem."""
    path = Path(path)
    shown = str(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read the config file: {error.strerror}", file=shown) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("the config file is not UTF-8", file=shown) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        match = re.search(r"\(at line (\d+), column \d+\)$", message)
        line = int(match.group(1)) if match else None
        detail = message[: match.start()].strip() if match else message
        raise ConfigError(f"TOML syntax error: {detail}", file=shown, line=line) from None
    return _build(data, _Reader(shown, KeyLines(text)), path)


def _build(data: Mapping[str, Any], read: _Reader, path: Path) -> Settings:
    read.table(
        data,
        "",
        {"aggregator", "fetch", "sources", "tags", "publish", "digest", "smtp", "stories"},
    )
    base = read.table(
        data.get("aggregator", {}), "aggregator", {"data_dir", "timezone", "keep", "tick"}
    )
    timezone = read.get(base, "aggregator", "timezone", str, "Asia/Hong_Kong")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise read.fail("aggregator.timezone", f"unknown time zone {timezone!r}") from None
    data_dir = Path(read.get(base, "aggregator", "data_dir", str, "var"))

    tags = _tags(data.get("tags", {}), read)
    sources = _sources(data.get("sources", []), read, path.parent)
    publish = _publish(data.get("publish", {}), read, {t.name for t in tags})
    known_tags = {t.name for t in tags} | {tag for s in sources for tag in s.tags}
    return Settings(
        path=path,
        data_dir=data_dir,
        timezone=timezone,
        keep=read.convert(
            "aggregator.keep", read.get(base, "aggregator", "keep", str, "365d"), parse_interval
        ),
        tick=read.convert(
            "aggregator.tick", read.get(base, "aggregator", "tick", str, "1m"), parse_interval
        ),
        sources=sources,
        tags=tags,
        publish=publish,
        digest=_digest(data.get("digest", {}), read, known_tags, publish.topic),
        smtp=_smtp(data.get("smtp", {}), read),
        fetch=_fetch(data.get("fetch", {}), read),
        stories=_stories(data.get("stories", {}), read),
    )


def _stories(data: Any, read: _Reader) -> StorySettings:
    table = read.table(data, "stories", {"window", "threshold"})
    default = StorySettings()
    window = read.get(table, "stories", "window", str, "7d")
    threshold = read.get(table, "stories", "threshold", float, default.threshold)
    if not 0 < threshold <= 1:
        raise read.fail("stories.threshold", f"{threshold} must be above 0 and at most 1")
    return StorySettings(
        window=read.convert("stories.window", window, parse_interval), threshold=threshold
    )


def _fetch(data: Any, read: _Reader) -> FetchSettings:
    keys = {
        "timeout",
        "deadline",
        "max_bytes",
        "concurrency",
        "per_host",
        "host_spacing",
        "user_agent",
    }
    table = read.table(data, "fetch", keys)
    default = FetchSettings()
    settings = FetchSettings(
        timeout=read.get(table, "fetch", "timeout", float, default.timeout),
        deadline=read.get(table, "fetch", "deadline", float, default.deadline),
        max_bytes=read.get(table, "fetch", "max_bytes", int, default.max_bytes),
        concurrency=read.get(table, "fetch", "concurrency", int, default.concurrency),
        per_host=read.get(table, "fetch", "per_host", int, default.per_host),
        user_agent=read.optional_str(table, "fetch", "user_agent"),
        host_spacing=read.get(table, "fetch", "host_spacing", float, default.host_spacing),
    )
    if settings.host_spacing < 0:
        raise read.fail("fetch.host_spacing", "must be zero or more")
    for key in ("timeout", "deadline", "max_bytes", "concurrency", "per_host"):
        if getattr(settings, key) <= 0:
            raise read.fail(f"fetch.{key}", "must be greater than zero")
    return settings


def _sources(data: Any, read: _Reader, config_dir: Path) -> tuple[SourceSettings, ...]:
    if not isinstance(data, list):
        raise read.fail("sources", "expected [[sources]] blocks (an array of tables)")
    keys = {"id", "name", "url", "type", "every", "tags", "enabled", "language", "priority"}
    seen: dict[str, int] = {}
    sources = []
    for index, item in enumerate(data):
        path = f"sources[{index}]"
        table = read.table(item, path, keys | {"select"})
        source_id = read.get(table, path, "id", str).strip()
        if not _SOURCE_ID.match(source_id):
            raise read.fail(f"{path}.id", f"{source_id!r}: use letters, digits and '-' only")
        if source_id in seen:
            raise read.fail(
                f"{path}.id", f"duplicate source id {source_id!r} (also sources[{seen[source_id]}])"
            )
        seen[source_id] = index
        kind = read.get(table, path, "type", str, "feed")
        if kind not in ("feed", "html"):
            raise read.fail(f"{path}.type", f'{kind!r}: expected "feed" or "html"')
        select = None
        if kind == "html":
            if "select" not in table:
                raise read.fail(path, 'type = "html" needs a [sources.select] table')
            select = _select(table["select"], read, f"{path}.select")
        elif "select" in table:
            raise read.fail(f"{path}.select", 'only sources with type = "html" take selectors')
        url = read.convert(f"{path}.url", read.get(table, path, "url", str), _url(config_dir))
        every = read.get(table, path, "every", str, "30m")
        priority = read.get(table, path, "priority", int, 0)
        sources.append(
            SourceSettings(
                id=source_id,
                url=url,
                name=read.get(table, path, "name", str, source_id).strip() or source_id,
                type=kind,
                every=read.convert(f"{path}.every", every, parse_interval),
                tags=read.strings(table, path, "tags"),
                enabled=read.get(table, path, "enabled", bool, True),
                language=read.optional_str(table, path, "language"),
                priority=priority,
                select=select,
            )
        )
    return tuple(sources)


def _url(config_dir: Path) -> Callable[[str], str]:
    def check(value: str) -> str:
        value = value.strip()
        parts = urlsplit(value)
        if "://" not in value:
            if not value:
                raise ValueError("is empty")
            return str((config_dir / value).resolve())  # a local file, relative to the config
        if parts.scheme == "file":
            return value
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{value!r}: expected an http(s) URL, a file:// URL or a file path")
        try:
            port = parts.port
        except ValueError:
            port = -1
        if not parts.hostname or port == -1 or " " in value:
            raise ValueError(f"{value!r} is not a valid URL")
        return value

    return check


def _select(data: Any, read: _Reader, path: str) -> SelectSettings:
    table = read.table(data, path, {"item", "title", "link", "date", "summary", "date_regex"})
    date_regex = read.optional_str(table, path, "date_regex")
    if date_regex is not None:
        try:
            re.compile(date_regex)
        except re.error as error:
            raise read.fail(f"{path}.date_regex", f"not a regular expression: {error}") from None
    return SelectSettings(
        item=read.get(table, path, "item", str),
        title=read.get(table, path, "title", str),
        link=read.get(table, path, "link", str),
        date=read.optional_str(table, path, "date"),
        summary=read.optional_str(table, path, "summary"),
        date_regex=date_regex,
    )


def _tags(data: Any, read: _Reader) -> tuple[TagRule, ...]:
    if not isinstance(data, Mapping):
        raise read.fail("tags", "expected [tags.NAME] tables")
    rules = []
    for name, item in data.items():
        path = f"tags.{name}"
        if not _TAG_NAME.match(name):
            raise read.fail(path, f"{name!r}: use letters, digits, '-' and '_' in tag names")
        keys = {"title", "all", "any", "none", "fields", "weights", "min_score"}
        table = read.table(item, path, keys)
        groups = table.get("all", [])
        if not isinstance(groups, list) or not all(isinstance(g, list) for g in groups):
            raise read.fail(f"{path}.all", 'expected a list of groups, such as [["a", "b"], ["c"]]')
        all_groups = tuple(
            read.strings({"all": group}, f"{path}.all[{i}]", "all")
            for i, group in enumerate(groups)
        )
        if any(not group for group in all_groups):
            raise read.fail(f"{path}.all", "holds an empty group")
        any_terms = read.strings(table, path, "any")
        none_terms = read.strings(table, path, "none")
        for key, terms in [
            *((f"all[{i}]", group) for i, group in enumerate(all_groups)),
            ("any", any_terms),
            ("none", none_terms),
        ]:
            for term in terms:
                read.convert(f"{path}.{key}", term, check_term)
        rules.append(
            TagRule(
                name=name,
                title=read.get(table, path, "title", str, name),
                all=all_groups,
                any=any_terms,
                none=none_terms,
                **_tag_scoring(table, read, path),
            )
        )
    return tuple(rules)


def _tag_scoring(table: Mapping[str, Any], read: _Reader, path: str) -> dict[str, Any]:
    """A tag rule's `fields`, `[weights]` and `min_score`."""
    fields = read.strings(table, path, "fields") or TAG_FIELDS
    for name in fields:
        if name not in TAG_FIELDS:
            raise read.fail(
                f"{path}.fields", f"{name!r} is not a field (expected: {', '.join(TAG_FIELDS)})"
            )
    weights_table = read.table(table.get("weights", {}), f"{path}.weights", set(TAG_FIELDS))
    weights = tuple(
        (name, read.get(weights_table, f"{path}.weights", name, float))
        for name in TAG_FIELDS
        if name in weights_table
    )
    for name, weight in weights:
        if weight < 0:
            raise read.fail(f"{path}.weights.{name}", "must not be negative")
    min_score = read.get(table, path, "min_score", float) if "min_score" in table else None
    if min_score is not None and min_score <= 0:
        raise read.fail(f"{path}.min_score", "must be greater than zero")
    return {"fields": fields, "weights": weights, "min_score": min_score}


def _publish(data: Any, read: _Reader, tag_names: set[str]) -> PublishSettings:
    table = read.table(data, "publish", {"topic", "title", "base_url", "max_items", "description"})
    default = PublishSettings()
    topic = read.optional_str(table, "publish", "topic")
    if topic is not None and topic not in tag_names:
        known = ", ".join(sorted(tag_names)) or "none defined"
        raise read.fail("publish.topic", f"{topic!r} names no [tags] rule (known: {known})")
    base_url = read.get(table, "publish", "base_url", str, default.base_url).strip()
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise read.fail("publish.base_url", f"{base_url!r} is not an http(s) URL")
    max_items = read.get(table, "publish", "max_items", int, default.max_items)
    if max_items <= 0:
        raise read.fail("publish.max_items", "must be greater than zero")
    return PublishSettings(
        topic=topic,
        title=read.get(table, "publish", "title", str, default.title),
        base_url=base_url if base_url.endswith("/") else base_url + "/",
        max_items=max_items,
        description=read.get(table, "publish", "description", str, default.description),
    )


def _digest(data: Any, read: _Reader, known_tags: set[str], topic: str | None) -> DigestSettings:
    keys = {"schedule", "from", "subject", "send_empty", "subscribers", "secret_env", "grace"}
    table = read.table(data, "digest", keys)
    default = DigestSettings()
    schedule = read.get(table, "digest", "schedule", str, default.schedule)
    read.convert("digest.schedule", schedule, parse_schedule)
    sender = read.get(table, "digest", "from", str, default.sender)
    if "from" in table:
        read.convert("digest.from", sender, _address)
    raw_subscribers = table.get("subscribers", [])
    if not isinstance(raw_subscribers, list):
        raise read.fail("digest.subscribers", "expected [[digest.subscribers]] blocks")
    subscribers = []
    for index, item in enumerate(raw_subscribers):
        path = f"digest.subscribers[{index}]"
        entry = read.table(item, path, {"email", "name", "tags", "enabled"})
        email = read.convert(f"{path}.email", read.get(entry, path, "email", str), _mailbox)
        tags = read.strings(entry, path, "tags") or ((topic,) if topic else ())
        for tag in tags:
            if tag not in known_tags:
                raise read.fail(
                    f"{path}.tags", f"{tag!r} is not a tag defined in [tags] or on a source"
                )
        subscribers.append(
            Subscriber(
                email=email,
                name=read.optional_str(entry, path, "name"),
                tags=tags,
                enabled=read.get(entry, path, "enabled", bool, True),
            )
        )
    return DigestSettings(
        schedule=schedule,
        sender=sender,
        subject=read.get(table, "digest", "subject", str, default.subject),
        send_empty=read.get(table, "digest", "send_empty", bool, False),
        grace=read.convert(
            "digest.grace", read.get(table, "digest", "grace", str, "2d"), parse_interval
        ),
        subscribers=tuple(subscribers),
        secret_env=read.get(table, "digest", "secret_env", str, default.secret_env).strip()
        or default.secret_env,
    )


def _mailbox(value: str) -> str:
    """A subscriber's bare address, checked for syntax only (no DNS), in normalized form."""
    from email_validator import EmailNotValidError, validate_email

    if any(c in value for c in "\r\n\0<>"):
        raise ValueError(f"{value!r}: give the bare address, such as reader@example.org")
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise ValueError(f"{value!r} is not a valid email address: {error}") from None


def _address(value: str) -> str:
    """Accept `user@host` or `Name <user@host>`; reject anything with line breaks."""
    if any(c in value for c in "\r\n\0"):
        raise ValueError("must be on one line")
    match = re.fullmatch(r"\s*(?:[^<>]*<([^<>]+)>|([^<>]+))\s*", value)
    address = (match.group(1) or match.group(2)).strip() if match else ""
    if not _EMAIL.match(address):
        raise ValueError(f"{value!r} is not an email address")
    return value.strip()


def _smtp(data: Any, read: _Reader) -> SmtpSettings:
    keys = {"host", "port", "security", "username_env", "password_env", "timeout", "ca_file"}
    table = read.table(data, "smtp", keys)
    default = SmtpSettings()
    security = read.get(table, "smtp", "security", str, default.security)
    if security not in ("starttls", "tls", "none"):
        raise read.fail("smtp.security", f'{security!r}: expected "starttls", "tls" or "none"')
    port = read.get(table, "smtp", "port", int, default.port)
    if not 0 < port < 65536:
        raise read.fail("smtp.port", f"{port} is not a TCP port")
    return SmtpSettings(
        host=read.get(table, "smtp", "host", str, default.host),
        port=port,
        security=security,
        username_env=read.optional_str(table, "smtp", "username_env"),
        password_env=read.optional_str(table, "smtp", "password_env"),
        timeout=read.get(table, "smtp", "timeout", float, default.timeout),
        ca_file=read.optional_str(table, "smtp", "ca_file"),
    )
