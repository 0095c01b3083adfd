"""What guardian._contains_any means, written from its definition (extension/src/needles.c) the
slow way, for tests to compare the C search and the SQL fallback with."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from pathlib import Path

import psycopg

# every character that \s may match in some locale (isspace, glibc's iswspace, ICU's u_isspace)
WHITE_SPACE = "".join(
    chr(c)
    for c in (
        0x20,
        *range(0x09, 0x0E),
        *range(0x1C, 0x20),
        0x85,
        0xA0,
        0x1680,
        0x180E,
        *range(0x2000, 0x200C),
        0x2028,
        0x2029,
        0x202F,
        0x205F,
        0x3000,
    )
)
WHITE_SPACE_RUN = re.compile(f"[{re.escape(WHITE_SPACE)}]+")
FOLD_OTHER = "\x7f"


def folded(value: str, dotted_i: str = "i") -> bytes:
    """The text the needles are looked for in: NFKC, U+0130 as lower('İ') (``dotted_i``), runs
    of white space as one space, every other non-ASCII character as 0x7F (no word character)."""
    text = WHITE_SPACE_RUN.sub(" ", unicodedata.normalize("NFKC", value).replace("\u0130", dotted_i))
    return "".join(c if c < "\x80" else FOLD_OTHER for c in text).encode()


def folded_lower(value: str, lower: Callable[[str], str]) -> bytes:
    """lower(NFKC(value)) with white space runs as one space (where non-ASCII needles are looked for)."""
    return WHITE_SPACE_RUN.sub(" ", lower(unicodedata.normalize("NFKC", value))).encode()


def is_word(byte: int) -> bool:
    return (byte < 0x80 and chr(byte).isalnum()) or byte >= 0x80


def _ascii_lower(data: bytes) -> bytes:
    return bytes(b + 32 if 65 <= b <= 90 else b for b in data)


def _text_match(text: bytes, needle: bytes, start: bool, end: bool) -> bool:
    lowered = _ascii_lower(text)
    at = lowered.find(needle)
    while at >= 0:
        before_ok = not start or at == 0 or not is_word(text[at - 1])
        after = at + len(needle)
        after_ok = not end or after == len(text) or not is_word(text[after])
        if before_ok and after_ok:
            return True
        at = lowered.find(needle, at + 1)
    return False


def glibc_lower(text: str) -> str:
    """lower() as a database with a glibc locale (C.UTF-8, the tests' cluster) has it: one
    character at a time, so U+0130 becomes a plain "i"."""
    return text.replace("\u0130", "i").lower()


def reference_contains_any(
    value: str, needles: list[str | None], dotted_i: str = "i", lower: Callable[[str], str] = glibc_lower
) -> bool:
    """guardian._contains_any(value, needles): ASCII case-insensitive search of the folded text,
    '^'/'$' word boundaries, '#' digits only, an empty needle matches everything. ``dotted_i`` and
    ``lower`` stand for the database's lower() (only non-ASCII needles see ``lower``)."""
    h = folded(value, dotted_i)
    digits = bytes(b for b in h if 48 <= b <= 57).decode()
    lowered_text = None
    if not value.isascii() and any(n is not None and not n.isascii() for n in needles):
        lowered_text = folded_lower(value, lower)
    for raw in needles:
        if raw is None:
            continue
        if len(raw) > 2 and raw.startswith("@="):
            if _domain_match(value, raw[2:]):
                return True
            continue
        if len(raw) > 1 and raw.startswith("#"):
            # digits only; '?' any digit (a leading one is dropped); a trailing '$': the end
            wanted = "".join(c for c in raw[1:] if c in "0123456789?").lstrip("?")
            pattern = wanted.replace("?", "[0-9]") + ("$" if raw.endswith("$") else "")
            if not wanted or re.search(pattern, digits):
                return True
            continue
        start = len(raw) > 1 and raw.startswith("^")
        body = raw[1:] if start else raw
        end = len(body) > 1 and body.endswith("$")
        body = body[:-1] if end else body
        needle = _ascii_lower(body.encode())
        if not needle:
            return True
        if _text_match(h, needle, start, end):
            return True
        if lowered_text is not None and _text_match(lowered_text, needle, start, end):
            return True
    return False


def _domain_match(value: str, domain: str) -> bool:
    """An '@=' needle: the value's e-mail domain (after its last '@', without trailing white space,
    '.' or '>'), in lower case, is the needle's domain as written (a needle with capitals never
    matches) or one of its sub-domains; a value with any non-ASCII character matches whatever the
    needle (folding could make it any address)."""
    if not value.isascii():
        return True
    if "@" not in value:
        return False
    part = value.rsplit("@", 1)[1]
    part = _ascii_lower(part.rstrip(" \t\n\v\f\r\x1c\x1d\x1e\x1f.>").encode()).decode()
    return part == domain or part.endswith("." + domain)


def sql_fallback(db: psycopg.Connection) -> str:
    """The SQL matcher installed where the C library cannot be (00_matchers.sql), created as a
    temporary function of this session; returns its name."""
    source = (Path(__file__).parents[2] / "extension/sql/20_contamination/00_matchers.sql").read_text()
    start = source.index("CREATE FUNCTION guardian._contains_any", source.index("EXCEPTION WHEN"))
    body = source[start : source.index("$sql$;", start) + len("$sql$;")]
    body = body.replace("CREATE FUNCTION guardian._contains_any", "CREATE OR REPLACE FUNCTION pg_temp.contains_any_sql")
    db.execute(body)
    return "pg_temp.contains_any_sql"
