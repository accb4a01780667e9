"""Encoding reconciliation and DOCTYPE defusing: bytes we encode ourselves, known answers."""

from __future__ import annotations

import codecs

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.parse.encoding import (
    choose_encoding,
    decode_text,
    decode_xml,
    normalize_label,
    strip_doctype,
)

# 㗎 and 邨 exist only in HKSCS, not in plain Big5 (checked: "㗎".encode("big5") fails).
HK_TITLE = "香港科技大學與深圳合作 㗎 邨"
# 粤港澳大湾区 is in GB2312; 䶮 and 𠀀 are only in GB18030.
GB_TITLE = "粤港澳大湾区 䶮 𠀀"


def xml(title: str, encoding: str | None) -> str:
    declaration = f'<?xml version="1.0" encoding="{encoding}"?>\n' if encoding else ""
    return f'{declaration}<rss version="2.0"><channel><title>{title}</title></channel></rss>'


def title_of(data: bytes) -> str:
    text = data.decode("utf-8")
    return text.split("<title>")[1].split("</title>")[0]


def test_fixture_characters_really_need_the_superset_codecs() -> None:
    for char in "㗎邨":
        with pytest.raises(UnicodeEncodeError):
            char.encode("big5")
        char.encode("big5hkscs")
    for char in "䶮𠀀":
        with pytest.raises(UnicodeEncodeError):
            char.encode("gb2312")
        char.encode("gb18030")


@pytest.mark.parametrize("label", ["big5", "Big5", "BIG5-HKSCS", "cn-big5"])
def test_big5_declaration_decodes_hkscs_characters(label: str) -> None:
    content = xml(HK_TITLE, label).encode("big5hkscs")
    assert title_of(decode_xml(content, None)) == HK_TITLE


def test_big5_http_charset_decodes_hkscs_characters() -> None:
    content = xml(HK_TITLE, None).encode("big5hkscs")
    assert title_of(decode_xml(content, "application/rss+xml; charset=big5")) == HK_TITLE


@pytest.mark.parametrize("label", ["gb2312", "GBK", "x-gbk", "gb18030"])
def test_gb2312_label_decodes_gb18030_characters(label: str) -> None:
    content = xml(GB_TITLE, label).encode("gb18030")
    assert title_of(decode_xml(content, None)) == GB_TITLE


def test_http_charset_wins_over_declaration_for_xml_media_types() -> None:
    content = xml(GB_TITLE, "big5").encode("gb18030")
    assert title_of(decode_xml(content, 'text/xml; charset="gb2312"')) == GB_TITLE


def test_declaration_wins_over_a_charset_on_a_non_xml_media_type() -> None:
    content = xml(HK_TITLE, "big5").encode("big5hkscs")
    assert title_of(decode_xml(content, "text/html; charset=iso-8859-1")) == HK_TITLE


def test_a_label_that_cannot_decode_the_bytes_yields_to_one_that_can() -> None:
    content = xml(HK_TITLE, "big5").encode("big5hkscs")
    assert title_of(decode_xml(content, "application/xml; charset=utf-8")) == HK_TITLE


def test_iso_8859_1_is_read_as_windows_1252() -> None:
    title = "Caf\u00e9 \u201cquoted\u201d \u20ac5"
    content = xml(title, "ISO-8859-1").encode("cp1252")
    assert b"\x93" in content and b"\x80" in content  # C1 range bytes: cp1252 punctuation
    assert title_of(decode_xml(content, None)) == title


def test_utf8_mislabelled_latin1_is_read_as_utf8() -> None:
    content = xml(HK_TITLE, "iso-8859-1").encode("utf-8")
    assert title_of(decode_xml(content, "text/xml; charset=ISO-8859-1")) == HK_TITLE


def test_undeclared_latin1_falls_back_to_windows_1252() -> None:
    content = xml("Ã©t\u00e9 \u2014 na\u00efve", None).encode("cp1252")
    assert title_of(decode_xml(content, None)) == "Ã©t\u00e9 \u2014 na\u00efve"


def test_undeclared_utf8_with_one_broken_byte_stays_utf8() -> None:
    content = xml(HK_TITLE * 3, None).encode("utf-8").replace("邨".encode(), b"\xff", 1)
    title = title_of(decode_xml(content, None))
    assert title.startswith("香港科技大學與深圳合作") and "\ufffd" in title


@pytest.mark.parametrize(
    ("bom", "codec"),
    [
        (codecs.BOM_UTF8, "utf-8"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
        (codecs.BOM_UTF32_LE, "utf-32-le"),
    ],
)
def test_byte_order_mark_wins_over_every_label(bom: bytes, codec: str) -> None:
    content = bom + xml(HK_TITLE, "iso-8859-1").encode(codec)
    result = decode_xml(content, "text/xml; charset=big5")
    assert title_of(result) == HK_TITLE
    assert result.startswith(b'<?xml version="1.0" encoding="utf-8"?>')


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_bom_is_detected_from_the_first_bytes(codec: str) -> None:
    content = xml(HK_TITLE, "utf-16").encode(codec)
    assert title_of(decode_xml(content, None)) == HK_TITLE


def test_utf16_declaration_on_ascii_compatible_bytes_is_ignored() -> None:
    content = xml(HK_TITLE, "utf-16").encode("utf-8")
    assert title_of(decode_xml(content, None)) == HK_TITLE


def test_declaration_is_rewritten_to_utf8() -> None:
    content = b"  \n<?xml version='1.0' encoding='big5' standalone='yes'?><rss/>"
    assert decode_xml(content, None) == b'<?xml version="1.0" encoding="utf-8"?><rss/>'


@pytest.mark.parametrize("label", ["utf-7", "rot13", "base64", "unicode_escape", "no-such-thing"])
def test_dangerous_or_unknown_labels_are_ignored(label: str) -> None:
    assert normalize_label(label) is None
    content = xml("plain +ADw-b+AD4- \\x3c", label).encode("ascii")
    assert title_of(decode_xml(content, f"application/xml; charset={label}")) == (
        "plain +ADw-b+AD4- \\x3c"
    )


def test_aliases_follow_whatwg() -> None:
    assert normalize_label("big5") == "big5hkscs"
    assert normalize_label("GB2312") == "gb18030"
    assert normalize_label("x-gbk") == "gb18030"
    assert normalize_label("latin1") == "cp1252"
    assert normalize_label("US-ASCII") == "cp1252"
    assert normalize_label("shift_jis") == "cp932"
    assert normalize_label("'UTF8'") == "utf-8"
    assert normalize_label(None) is None


def test_choose_encoding_reports_bom_length() -> None:
    assert choose_encoding(codecs.BOM_UTF8 + b"<a/>", None) == ("utf-8", 3)
    assert choose_encoding(b"<a/>", None) == ("utf-8", 0)


def test_decode_text_strips_bom_and_leading_whitespace() -> None:
    assert decode_text(codecs.BOM_UTF8 + b"\n  {}") == "{}"


# --- DOCTYPE defusing -------------------------------------------------------------------------


def test_strip_doctype_removes_internal_subset_with_tricky_quotes() -> None:
    content = (
        b'<?xml version="1.0"?>\n'
        b"<!DOCTYPE rss [ <!ENTITY a \"]> still inside\"> <!ENTITY b '>'> ]>\n"
        b"<rss>&a;&b;</rss>"
    )
    assert strip_doctype(content) == b'<?xml version="1.0"?>\n\n<rss>&a;&b;</rss>'


def test_strip_doctype_removes_public_doctype_and_every_later_one() -> None:
    content = (
        b'<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" '
        b'"http://my.netscape.com/publish/formats/rss-0.91.dtd"><rss><!doctype x [<!ENTITY y "z">]>'
        b"</rss>"
    )
    assert strip_doctype(content) == b"<rss></rss>"


def test_strip_doctype_drops_an_unterminated_declaration() -> None:
    assert strip_doctype(b'<a/><!DOCTYPE x [ <!ENTITY y "') == b"<a/>"


def test_strip_doctype_keeps_documents_without_one() -> None:
    content = b"<rss><title>&lt;!DOCTYPE is text here&gt;</title></rss>"
    assert strip_doctype(content) == content


@given(
    st.binary(max_size=2000), st.sampled_from([None, "text/xml", "application/xml; charset=big5"])
)
def test_decode_xml_accepts_any_bytes(content: bytes, content_type: str | None) -> None:
    decode_xml(content, content_type).decode("utf-8")  # valid UTF-8, never an exception


@given(st.binary(max_size=2000))
def test_strip_doctype_leaves_no_doctype(content: bytes) -> None:
    assert b"<!doctype" not in strip_doctype(content).lower()
