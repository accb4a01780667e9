"""urljoin with a shortcut: some absolute URLs are sure to join to themselves, whatever the base.

Feed items carry such links and ids (`https://...`, `tag:...`) almost always, and each goes
through several joins (the parser's, the normalizer's), each parsing both URLs. The results are
exactly urljoin's.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import urljoin, urlparse, uses_relative

# What urlsplit + urlunsplit give back unchanged: lowercase scheme, an ASCII host (no brackets,
# no userinfo), no whitespace or control character (urlsplit strips or drops those), no ";" (a
# path's last ";" starts its params, dropped when empty), and a "?" or "#" only before a
# non-empty query or fragment (empty ones are dropped).
_PLAIN_ABSOLUTE = re.compile(
    r"https?://[A-Za-z0-9.\-]+(?::[0-9]+)?"
    r"(?:/[^\x00-\x20\x7f;?#]*)?"
    r"(?:\?[^\x00-\x20\x7f#]+)?"
    r"(?:#[^\x00-\x20\x7f]+)?"
)

# A scheme urljoin does not resolve against a base ("tag:", "urn:", "mailto:"), first thing in
# the URL; no authority ("//", which urlsplit checks and may reject), no tab or newline (which
# urlsplit drops, perhaps making a "//").
_OPAQUE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):(?!//)[^\t\n\r]*")
_RELATIVE_SCHEMES = frozenset(uses_relative)


def plain_absolute(url: str) -> bool:
    """Whether `url` is an http(s) URL that urljoin gives back as it is (with a base that
    urlparse accepts, see `base_parses`)."""
    return _PLAIN_ABSOLUTE.fullmatch(url) is not None


def joins_to_itself(url: str) -> bool:
    """Whether urljoin gives `url` back as it is (with a base that urlparse accepts)."""
    if _PLAIN_ABSOLUTE.fullmatch(url) is not None:
        return True
    opaque = _OPAQUE.fullmatch(url)
    return opaque is not None and opaque[1].lower() not in _RELATIVE_SCHEMES


def join(base: str, url: str) -> str:
    """urllib.parse.urljoin(base, url), ValueError included."""
    if joins_to_itself(url) and base_parses(base):
        return url
    return urljoin(base, url)


@lru_cache(maxsize=256)  # one per feed URL
def base_parses(base: str) -> bool:
    """Whether urljoin can parse `base` (it raises ValueError for a bad IPv6 literal and the like)."""
    try:
        urlparse(base)
    except ValueError:
        return False
    return True
