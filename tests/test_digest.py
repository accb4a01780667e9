"""The pure digest: weeks, selection and grouping, excerpts, source warnings, rendering, and
header safety against hostile feed text. Plain data in, plain data out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from aggregator.app import templates_dir
from aggregator.digest import (
    DigestContent,
    Envelope,
    Renderer,
    as_bytes,
    build_message,
    due_period,
    excerpt_of,
    header_value,
    last_complete_week,
    next_attempt_after,
    parse_week,
    select_sections,
    source_warnings,
    subject_of,
)
from aggregator.models import Entry, SourceState, StoredEntry, Story
from aggregator.settings import SourceSettings

HK = ZoneInfo("Asia/Hong_Kong")
TZ = "Asia/Hong_Kong"
W21 = parse_week("2024-W21", TZ)


def stored(
    entry_id: str,
    title: str,
    *,
    tags: tuple[str, ...] = ("topic",),
    seen: datetime = datetime(2024, 5, 22, 10, tzinfo=HK),
    source: str = "Source A",
    link: str | None = "https://example.org/a",
    text: str = "Some text about the story.",
) -> StoredEntry:
    entry = Entry(
        id=entry_id,
        source_id=source.lower().replace(" ", "-"),
        guid=None,
        link=link,
        canonical_url=link,
        title=title,
        summary_html=f"<p>{text}</p>",
        summary_text=text,
        author=None,
        published=seen,
        updated=None,
        first_seen=seen,
        content_hash=entry_id,
        tags=tags,
        story_id=entry_id,
    )
    return StoredEntry(entry=entry, source_name=source)


def story(*members: StoredEntry) -> Story:
    return Story(id=members[0].entry.id, lead=members[0], others=members[1:])


# -- weeks -----------------------------------------------------------------------------------


def test_iso_weeks_are_local_weeks() -> None:
    assert W21.label == "2024-W21"
    assert W21.start == datetime(2024, 5, 20, tzinfo=HK)
    assert W21.end == datetime(2024, 5, 27, tzinfo=HK)
    assert W21.span == "20–26 May 2024"
    assert parse_week("2020-w53", TZ).label == "2020-W53"
    for bad in ("2024-21", "2023-W53", "W21", "2024-W00"):
        with pytest.raises(ValueError):
            parse_week(bad, TZ)
    # Monday 00:30 in Hong Kong is still Sunday in UTC: the local week counts.
    monday = datetime(2024, 5, 27, 0, 30, tzinfo=HK).astimezone(UTC)
    assert last_complete_week(monday, TZ).label == "2024-W21"


def test_due_period_follows_the_schedule() -> None:
    schedule = (0, 8, 0)  # mon 08:00
    before = datetime(2024, 5, 27, 7, 59, tzinfo=HK)
    after = datetime(2024, 5, 27, 8, 0, tzinfo=HK)
    assert due_period(before, schedule, TZ).label == "2024-W20"
    assert due_period(after, schedule, TZ).label == "2024-W21"
    assert due_period(datetime(2024, 6, 2, 23, tzinfo=HK), schedule, TZ).label == "2024-W21"


def test_retry_backoff_doubles_to_a_cap() -> None:
    now = datetime(2024, 5, 27, tzinfo=UTC)
    waits = [next_attempt_after(now, n) - now for n in (1, 2, 3, 20)]
    assert waits == [
        timedelta(minutes=5),
        timedelta(minutes=10),
        timedelta(minutes=20),
        timedelta(hours=6),
    ]


# -- selection -------------------------------------------------------------------------------


def test_selection_takes_the_week_and_the_tags_and_groups_topic_first() -> None:
    stories = [
        story(stored("old", "Last week", seen=datetime(2024, 5, 19, 23, 59, tzinfo=HK))),
        story(stored("next", "Next week", seen=datetime(2024, 5, 27, 0, 0, tzinfo=HK))),
        story(stored("ai", "AI only", tags=("ai",))),
        story(stored("both", "Topic and AI", tags=("ai", "topic"))),
        story(stored("other", "Untagged", tags=("sport",))),
        story(
            stored("t2", "Topic, newer", seen=datetime(2024, 5, 26, 23, 59, tzinfo=HK)),
            stored("t2b", "Same story", source="Source B", link="https://b.example/x"),
            stored("t2c", "Same again", source="Source A", link="https://a.example/dup"),
        ),
    ]
    sections = select_sections(
        stories,
        W21,
        ("ai", "topic"),
        topic="topic",
        tag_titles={"topic": "The Topic", "ai": "AI"},
        timezone=TZ,
    )
    assert [s.tag for s in sections] == ["topic", "ai"]
    assert sections[0].title == "The Topic"
    assert [i.story_id for i in sections[0].items] == ["t2", "both"]  # newest first
    assert [i.story_id for i in sections[1].items] == ["ai"]  # each story once
    grouped = sections[0].items[0]
    assert [(a.label, a.url) for a in grouped.also] == [("Source B", "https://b.example/x")]
    assert grouped.date == "26 May 2024"
    content = DigestContent(title="Watch", period=W21, sections=sections)
    assert (content.story_count, content.source_count, content.report_count) == (3, 2, 4)


def test_stories_first_seen_before_the_week_stay_out_even_with_a_new_member() -> None:
    old_lead = stored("lead", "Old", seen=datetime(2024, 5, 10, tzinfo=HK))
    new_member = stored("new", "New report", source="Source B")
    sections = select_sections(
        [story(old_lead, new_member)],
        W21,
        ("topic",),
        topic="topic",
        tag_titles={},
        timezone=TZ,
    )
    assert sections == ()


def test_excerpt_is_two_or_three_lines() -> None:
    words = "Hong Kong and Shenzhen researchers " * 30
    cut = excerpt_of(words)
    assert len(cut) <= 201 and cut.endswith("…") and not cut[:-1].endswith(" ")
    chinese = "香港與內地科技合作再進一步" * 40
    assert len(excerpt_of(chinese)) == 201
    assert excerpt_of("short\n\ntext") == "short text"


def test_unsafe_links_are_dropped() -> None:
    bad = story(stored("x", "Title", link="javascript:alert(1)"))
    (section,) = select_sections([bad], W21, ("topic",), topic=None, tag_titles={}, timezone=TZ)
    assert section.items[0].url is None


def test_source_warnings_name_failing_and_silent_sources() -> None:
    now = datetime(2024, 5, 27, tzinfo=UTC)
    sources = [
        SourceSettings(id=i, url=f"https://{i}.example/", name=i.title())
        for i in ("ok", "failing", "silent", "never")
    ]
    states = {
        "ok": SourceState("ok", "u", last_success_at=now),
        "failing": SourceState(
            "failing", "u", consecutive_failures=3, last_error="HTTP 500\nServer Error"
        ),
        "silent": SourceState("silent", "u", last_success_at=now),
    }
    latest = {"ok": now - timedelta(days=1), "silent": now - timedelta(days=30)}
    warnings = source_warnings(sources, states, latest, now)
    assert [(w.source_id, w.problem) for w in warnings] == [
        ("failing", "failing (3 polls): HTTP 500 Server Error"),
        ("silent", "no new items for 30 days"),
    ]


# -- rendering and headers ---------------------------------------------------------------------

PAYLOADS = [
    "Hong Kong lab\r\nBcc: victim@evil.test",
    "Hong Kong lab\nX-Injected: yes",
    "Bad =?UTF-8?Q?=0A?=Bcc: evil@evil.test end",
    "=?UTF-8?B?DQpCY2M6IGV2aWxAZXZpbC50ZXN0?=",
    "Para\u2028Bcc: evil@evil.test\u2029X: y",
    "NUL\x00Bcc: evil@evil.test",
    "Vertical\x0bTab\x0cFeed\x85Next\x1cFS",
    "A" * 2048,
    "香港" * 1024,
    "lone surrogate \udc80 here",
]


def render(stories: list[Story], subject: str = "{title}: {count}, {week}: {top}") -> EmailMessage:
    sections = select_sections(stories, W21, ("topic",), topic="topic", tag_titles={}, timezone=TZ)
    content = DigestContent(
        title="Watch",
        period=W21,
        sections=sections,
        archive_url="https://watch.example/archive/2024-W21.html",
        unsubscribe_url="https://watch.example/unsubscribe?token=abc.def",
    )
    rendered = Renderer(templates_dir()).render(content, subject)
    envelope = Envelope(
        sender="Science Watch <watch@example.org>",
        to_email="reader@example.org",
        to_name="Reader\r\nBcc: evil@evil.test",
        message_id="<id.1@example.org>",
        date=datetime(2024, 5, 27, 8, tzinfo=HK),
        list_id="Watch <topic.example.org>",
        unsubscribe_mailto="mailto:watch@example.org?subject=unsubscribe",
        unsubscribe_url=content.unsubscribe_url,
    )
    return build_message(rendered, envelope)


def parse(message: EmailMessage) -> EmailMessage:
    parsed = BytesParser(policy=policy.default).parsebytes(as_bytes(message))
    assert isinstance(parsed, EmailMessage)
    return parsed


HEADERS = [
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "auto-submitted",
    "mime-version",
    "content-type",
]


@pytest.mark.parametrize("title", PAYLOADS)
def test_no_feed_text_adds_or_changes_a_header(title: str) -> None:
    parsed = parse(render([story(stored("x", title))]))
    assert sorted(k.lower() for k in parsed) == sorted(HEADERS)
    assert parsed["To"].addresses[0].addr_spec == "reader@example.org"
    assert len(parsed["To"].addresses) == 1
    subject = str(parsed["Subject"])
    assert "\n" not in subject and "\r" not in subject and "\x00" not in subject
    assert "\u2028" not in subject and len(subject) <= 200
    assert subject.startswith("Watch: 1, 2024-W21: ")
    raw = as_bytes(render([story(stored("x", title))]))
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\nBcc" not in head and b"\nX-Injected" not in head and b"\nX:" not in head
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_one_bad_title_does_not_stop_the_digest() -> None:
    stories = [story(stored(f"s{i}", t, link=f"https://e.org/{i}")) for i, t in enumerate(PAYLOADS)]
    parsed = parse(render(stories, subject="{title}"))
    html_part = parsed.get_body(("html",))
    text_part = parsed.get_body(("plain",))
    assert html_part is not None and text_part is not None
    html = html_part.get_content()
    assert html.count('class="story-title"') == len(PAYLOADS)
    assert text_part.get_content().count("\n* ") == len(PAYLOADS)
    assert "\x00" not in html and "<script" not in html


def test_message_structure_and_headers() -> None:
    good = story(
        stored("a", "Hong Kong & Shenzhen <b>labs</b>", text="Joint lab opens."),
        stored("b", "Same", source="Source B", link="https://b.example/1"),
    )
    parsed = parse(render([good]))
    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    assert parsed["List-Unsubscribe"] == (
        "<mailto:watch@example.org?subject=unsubscribe>,"
        " <https://watch.example/unsubscribe?token=abc.def>"
    )
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["List-Id"] == "Watch <topic.example.org>"
    assert parsed["Message-ID"] == "<id.1@example.org>"
    assert parsed["To"].addresses[0].display_name == "Reader Bcc: evil@evil.test"
    html = parts[1].get_content()
    assert "Hong Kong &amp; Shenzhen &lt;b&gt;labs&lt;/b&gt;" in html  # autoescaped
    assert "<style" in html and "@media" in html  # media queries kept for clients that read them
    assert 'style="' in html  # the rest inlined
    assert "<link" not in html and "<script" not in html and "http://fonts" not in html
    assert 'href="https://b.example/1"' in html and "Also reported by" in html
    assert "https://watch.example/archive/2024-W21.html" in html
    text = parts[0].get_content()
    assert "Hong Kong & Shenzhen <b>labs</b>" in text  # the text part is not escaped
    assert "Unsubscribe: https://watch.example/unsubscribe?token=abc.def" in text
    assert "1 story from 2 sources (2 reports)" in text


def test_header_value_neutralises_encoded_words() -> None:
    assert header_value("a =?UTF-8?Q?=0A?= b") == "a = ?UTF-8?Q? =0A? = b"
    assert header_value("x\r\ny\u2028z") == "x y z"
    assert len(header_value("a" * 5000)) == 500


def test_subject_template_falls_back_on_a_bad_template() -> None:
    content = DigestContent(title="Watch", period=W21, sections=())
    assert subject_of("{title} {nope} {count}", content) == "Watch {nope} 0"
    assert subject_of("{0} {", content) == "Watch: week 2024-W21"


def test_templates_exist() -> None:
    assert Path(templates_dir(), "digest.html").is_file()
    assert Path(templates_dir(), "digest.txt").is_file()
