"""Builds small RSS and Atom documents for tests, in any encoding."""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import escape


@dataclass(frozen=True)
class Item:
    title: str
    link: str | None = None
    guid: str | None = None
    description: str = ""
    pub_date: str = "Thu, 16 May 2024 14:38:00 +0800"


def rss(
    items: list[Item],
    *,
    title: str = "Test feed",
    encoding: str = "utf-8",
    declare: str | None = None,
) -> bytes:
    parts = [
        f'<?xml version="1.0" encoding="{declare or encoding}"?>',
        '<rss version="2.0"><channel>',
        f"<title>{escape(title)}</title><link>https://example.org/</link>",
        "<description>test</description>",
    ]
    for item in items:
        parts.append("<item>")
        parts.append(f"<title>{escape(item.title)}</title>")
        if item.link:
            parts.append(f"<link>{escape(item.link)}</link>")
        if item.guid:
            parts.append(f'<guid isPermaLink="false">{escape(item.guid)}</guid>')
        parts.append(f"<description>{escape(item.description)}</description>")
        parts.append(f"<pubDate>{item.pub_date}</pubDate>")
        parts.append("</item>")
    parts.append("</channel></rss>")
    return "\n".join(parts).encode(encoding)
