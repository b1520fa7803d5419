"""Decoding text files: UTF-8 (with or without BOM), UTF-16 with BOM, else a clear skip."""

from __future__ import annotations

from app.readers.base import SkipFile


def decode_text(data: bytes) -> str:
    if not data.strip():
        raise SkipFile("empty file")
    utf16 = data.startswith((b"\xff\xfe", b"\xfe\xff"))  # a UTF-16 byte order mark
    if b"\x00" in data[:8192] and not utf16:
        raise SkipFile("binary content (NUL bytes) in a text file")
    for encoding in ("utf-8-sig", "utf-16") if utf16 else ("utf-8-sig",):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError as exc:
        raise SkipFile(f"not valid UTF-8 or Windows-1252 text ({exc.reason} at byte {exc.start})") from exc
    # cp1252 decodes almost anything; accept it only when it looks like prose.
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    if printable < 0.95 * len(text):
        raise SkipFile("undecodable text: not UTF-8 and not mostly printable")
    return text
