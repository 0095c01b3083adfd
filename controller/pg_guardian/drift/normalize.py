"""Is a difference formatting only? pglast parses both sides and compares what they mean.

Function bodies in SQL and PL/pgSQL, view definitions and policy expressions keep the author's
formatting. Two texts that parse to the same tree differ only in whitespace, comments, keyword
case or redundant parentheses: a *cosmetic* difference, not drift. PL/pgSQL is parsed with
pglast too (its tree keeps the embedded SQL as text, which is normalised in turn); text that
does not parse falls back to comparing tokens from pglast's scanner, comments dropped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import pglast
from pglast import parser
from pglast.stream import RawStream

_LITERAL_TOKENS = frozenset({"SCONST", "USCONST", "BCONST", "XCONST", "UIDENT"})
_COMMENT_TOKENS = frozenset({"SQL_COMMENT", "C_COMMENT"})


@lru_cache(maxsize=4096)
def tokens(text: str) -> str:
    """The text as SQL tokens: comments and whitespace dropped, unquoted words lower-cased."""
    try:
        scanned = parser.scan(text)
    except Exception:  # pglast raises its own error types; anything unscannable compares as is
        return " ".join(text.split())
    out = []
    for token in scanned:
        if token.name in _COMMENT_TOKENS:
            continue
        word = text[token.start : token.end + 1]
        if token.name not in _LITERAL_TOKENS and not word.startswith('"'):
            word = word.lower()
        out.append(word)
    return " ".join(out)


@lru_cache(maxsize=4096)
def sql(text: str) -> str:
    """SQL statements in canonical form (parsed and deparsed), or their tokens if unparsable."""
    try:
        return str(RawStream()(pglast.parse_sql(text)))  # type: ignore[no-untyped-call]
    except Exception:
        return tokens(text)


def expression(text: str) -> str:
    """An SQL expression (a policy's USING clause) in canonical form."""
    return sql(f"SELECT {text}")


def _strip_plpgsql(node: Any) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "lineno":
                continue
            if key in ("query", "typname") and isinstance(value, str):
                out[key] = tokens(value)
            else:
                out[key] = _strip_plpgsql(value)
        return out
    if isinstance(node, list):
        return [_strip_plpgsql(v) for v in node]
    return node


def plpgsql(body: str, arguments: str = "", returns: str | None = "void", procedure: bool = False) -> str:
    """A PL/pgSQL body as its parse tree (line numbers dropped, embedded SQL as tokens)."""
    tag = "$pgg$"
    n = 0
    while tag in body:
        n += 1
        tag = f"$pgg{n}$"
    head = (
        f"CREATE PROCEDURE pgg({arguments})"
        if procedure
        else f"CREATE FUNCTION pgg({arguments}) RETURNS {returns or 'void'}"
    )
    try:
        tree = pglast.parse_plpgsql(f"{head} LANGUAGE plpgsql AS {tag}{body}{tag}")
    except Exception:
        return tokens(body)
    return json.dumps(_strip_plpgsql(tree), sort_keys=True)


def formatting_attribute(kind: str, attribute: str, source: Mapping[str, Any], target: Mapping[str, Any]) -> bool:
    """Can a difference in this attribute be formatting only? (guardian._formatting_attribute)"""
    if kind in ("function", "procedure") and attribute == "body":
        return source.get("language") in ("sql", "plpgsql") and source.get("language") == target.get("language")
    if kind in ("view", "materialized view"):
        return attribute == "definition"
    if kind == "policy":
        return attribute in ("using", "with_check")
    return False


def _canonical(kind: str, attribute: str, value: str, definition: Mapping[str, Any]) -> str:
    if kind in ("function", "procedure"):
        if definition.get("language") == "plpgsql":
            return plpgsql(
                value,
                definition.get("arguments", ""),
                definition.get("returns"),
                procedure=kind == "procedure",
            )
        return sql(value)
    if kind == "policy":
        return expression(value)
    return sql(value)


def formatting_only(kind: str, attribute: str, source: Mapping[str, Any], target: Mapping[str, Any]) -> bool:
    """True when the attribute differs between two definitions only in formatting."""
    a, b = source.get(attribute), target.get(attribute)
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    if not formatting_attribute(kind, attribute, source, target):
        return False
    return _canonical(kind, attribute, a, source) == _canonical(kind, attribute, b, target)
