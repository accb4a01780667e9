"""Fetched bytes -> UTF-8: reconcile BOM, HTTP charset and XML declaration; defuse DOCTYPEs.

Pure functions. The order follows browsers (WHATWG) and RFC 7303: a byte order mark wins, then a
charset the server gave for an XML media type, then the XML declaration, then UTF-8 with a
windows-1252 fallback. Labels map to the decoders browsers use (big5 -> big5hkscs, gb2312 ->
gb18030, latin1 -> cp1252), because publishers label supersets with the name of the subset.
"""

from __future__ import annotations

import codecs
import re

# WHATWG Encoding Standard: labels whose real-world content needs a superset decoder.
_LABEL_ALIASES: dict[str, str] = {
    **dict.fromkeys(
        ("big5", "big5-hkscs", "cn-big5", "csbig5", "x-x-big5", "big5hkscs", "cp950"),
        "big5hkscs",
    ),
    **dict.fromkeys(
        (
            "gb2312",
            "gbk",
            "x-gbk",
            "gb_2312",
            "gb_2312-80",
            "csgb2312",
            "chinese",
            "iso-ir-58",
            "cp936",
            "ms936",
            "windows-936",
            "euc-cn",
            "gb18030",
        ),
        "gb18030",
    ),
    **dict.fromkeys(
        (
            "iso-8859-1",
            "iso8859-1",
            "iso_8859-1",
            "iso-ir-100",
            "latin1",
            "latin-1",
            "l1",
            "cp819",
            "ibm819",
            "us-ascii",
            "ascii",
            "ansi_x3.4-1968",
            "windows-1252",
            "x-cp1252",
            "cp1252",
        ),
        "cp1252",
    ),
    **dict.fromkeys(("iso-8859-9", "latin5", "l5", "windows-1254"), "cp1254"),
    **dict.fromkeys(("tis-620", "iso-8859-11", "windows-874"), "cp874"),
    **dict.fromkeys(("euc-kr", "ks_c_5601-1987", "ks_c_5601-1989", "windows-949"), "cp949"),
    **dict.fromkeys(
        ("shift_jis", "shift-jis", "sjis", "x-sjis", "ms_kanji", "windows-31j", "csshiftjis"),
        "cp932",
    ),
    **dict.fromkeys(("utf8", "unicode-1-1-utf-8", "utf-8"), "utf-8"),
}

_UTF16_32 = frozenset({"utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"})

# Python text codecs no browser knows; some (UTF-7, the escapes) could smuggle markup past filters.
_REFUSED_CODECS = frozenset(
    {"utf-7", "idna", "punycode", "unicode-escape", "raw-unicode-escape", "undefined"}
)

# A labelled single-byte page that is valid UTF-8 with multi-byte sequences is UTF-8: Latin-1 text
# practically never forms valid UTF-8 by accident, while servers mislabel UTF-8 as Latin-1 often.
_SINGLE_BYTE_DEFAULTS = frozenset({"cp1252"})

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32le"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16le"),
    (codecs.BOM_UTF16_BE, "utf-16be"),
)

_XML_ENCODING = re.compile(
    rb"""^\s*<\?xml\s[^>]*?\bencoding\s*=\s*["']([A-Za-z0-9._:-]{1,40})["']""", re.IGNORECASE
)
_XML_DECLARATION = re.compile(r"^\s*<\?xml\s[^>]*?\?>", re.IGNORECASE)
_DOCTYPE_START = re.compile(rb"<!DOCTYPE", re.IGNORECASE)


def normalize_label(label: str | None) -> str | None:
    """The Python codec for an encoding label, or None when the label is unknown or empty."""
    if not label:
        return None
    key = label.strip().strip("\"'").lower()
    try:
        name = codecs.lookup(_LABEL_ALIASES.get(key, key)).name
        b"<".decode(name)  # LookupError for bytes-to-bytes codecs such as rot13 or base64
    except LookupError:
        return None
    except UnicodeDecodeError:  # a text codec that needs more than one byte
        pass
    return None if name in _REFUSED_CODECS else name


def media_type_and_charset(content_type: str | None) -> tuple[str, str | None]:
    """`text/xml; charset="big5"` -> ("text/xml", "big5")."""
    if not content_type:
        return "", None
    media_type, *params = content_type.split(";")
    charset = None
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip("\"'") or None
    return media_type.strip().lower(), charset


def is_xml_media_type(media_type: str) -> bool:
    return media_type in ("application/xml", "text/xml") or media_type.endswith("+xml")


def sniff_bom(content: bytes) -> tuple[str, int] | None:
    """(codec, BOM length) from a byte order mark or from UTF-16/32 `<` patterns without one."""
    for bom, codec in _BOMS:
        if content.startswith(bom):
            return codec, len(bom)
    head = content[:4]
    if len(head) == 4:
        if head == b"<\x00\x00\x00":
            return "utf-32le", 0
        if head == b"\x00\x00\x00<":
            return "utf-32be", 0
        if head[0:1] == b"<" and head[1] == 0 and head[3] == 0 and head[2] != 0:
            return "utf-16le", 0
        if head[0] == 0 and head[1:2] == b"<" and head[2] == 0 and head[3] != 0:
            return "utf-16be", 0
    return None


def declared_xml_encoding(content: bytes) -> str | None:
    """The encoding named in the XML declaration, as a codec name, or None."""
    match = _XML_ENCODING.match(content[:1024])
    return normalize_label(match.group(1).decode("ascii")) if match else None


def choose_encoding(content: bytes, content_type: str | None) -> tuple[str, int]:
    """(codec, bytes to skip) for a document, by BOM, HTTP charset, declaration, then sniffing."""
    bom = sniff_bom(content)
    if bom is not None:
        return bom
    media_type, charset = media_type_and_charset(content_type)
    http = normalize_label(charset)
    declared = declared_xml_encoding(content)
    # ASCII-compatible bytes cannot be UTF-16/32, whatever a label says.
    http = None if http in _UTF16_32 else http
    declared = None if declared in _UTF16_32 else declared
    # A charset on text/html or octet-stream is usually a server default, not the feed's own.
    labels = [http, declared] if is_xml_media_type(media_type) else [declared, http]
    candidates = [label for label in labels if label]
    for label in candidates:
        if label in _SINGLE_BYTE_DEFAULTS and _is_multibyte_utf8(content):
            return "utf-8", 0
        if _decodes(content, label):
            return label, 0
    if candidates:
        return candidates[0], 0  # declared but damaged: keep the label, replace bad bytes
    return ("utf-8" if _mostly_utf8(content) else "cp1252"), 0


def decode_text(content: bytes, content_type: str | None = None) -> str:
    """The document as text, with undecodable bytes replaced and leading whitespace removed."""
    codec, skip = choose_encoding(content, content_type)
    text = content[skip:].decode(codec, errors="replace")
    return text.lstrip("\ufeff \t\r\n")


def decode_xml(content: bytes, content_type: str | None) -> bytes:
    """The document as UTF-8 bytes whose XML declaration (if any) says encoding="utf-8"."""
    text = decode_text(content, content_type)
    text = _XML_DECLARATION.sub('<?xml version="1.0" encoding="utf-8"?>', text, count=1)
    return text.encode("utf-8", errors="replace")


def strip_doctype(content: bytes) -> bytes:
    """Remove every DOCTYPE declaration with its internal subset.

    Entity declarations live only there, so afterwards nothing can name an external entity
    (`SYSTEM "file:///etc/passwd"`) or expand into gigabytes (billion laughs, or one large entity
    referenced thousands of times). References left behind stay inert text.
    """
    parts: list[bytes] = []
    position = 0
    while (match := _DOCTYPE_START.search(content, position)) is not None:
        parts.append(content[position : match.start()])
        position = _declaration_end(content, match.end())
    parts.append(content[position:])
    return b"".join(parts)


def _declaration_end(content: bytes, start: int) -> int:
    """Index just past the `>` closing a declaration, skipping quoted strings and `[...]`."""
    depth = 0
    quote: int | None = None
    i = start
    length = len(content)
    while i < length:
        byte = content[i]
        if quote is not None:
            if byte == quote:
                quote = None
        elif byte in b"\"'":
            quote = byte
        elif byte == ord("["):
            depth += 1
        elif byte == ord("]"):
            depth = max(0, depth - 1)
        elif byte == ord(">") and depth == 0:
            return i + 1
        i += 1
    return length  # unterminated: drop the rest rather than keep a half declaration


def _decodes(content: bytes, codec: str) -> bool:
    try:
        content.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return False
    return True


def _is_multibyte_utf8(content: bytes) -> bool:
    return not content.isascii() and _decodes(content, "utf-8")


def _mostly_utf8(content: bytes) -> bool:
    """Valid UTF-8, or UTF-8 with a few damaged sequences among many good ones."""
    if _decodes(content, "utf-8"):
        return True
    text = content.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    non_ascii = sum(1 for char in text if ord(char) > 127)
    return bad * 10 < non_ascii - bad
