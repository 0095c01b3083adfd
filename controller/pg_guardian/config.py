"""The controller's configuration file: one TOML file, read by each capability for its own tables.

The file is named by ``--config`` or ``GUARDIAN_CONFIG``; without one, defaults and environment
variables are enough. Today the relay reads it (:mod:`pg_guardian.relay.config`: ``[relay]``,
``[channels.*]``, ``[[routes]]`` and the settings they share). This module reads the file and
holds the checks any capability's settings use: durations, booleans, whole numbers, and a
checker that collects every problem instead of stopping at the first.
"""

from __future__ import annotations

import copy
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_VAR = "GUARDIAN_CONFIG"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


@dataclass(frozen=True)
class ConfigFile:
    """The file as read: its tables (none without a file), where they came from, what went wrong."""

    tables: dict[str, Any] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


def read_file(path: Path | str | None, env: Mapping[str, str]) -> ConfigFile:
    """Read the file named by ``path``, else by ``GUARDIAN_CONFIG``; a missing or broken file is
    a problem to report, not an exception."""
    path = path or env.get(ENV_VAR) or None
    if not path:
        return ConfigFile()
    try:
        with open(path, "rb") as fh:
            tables = tomllib.load(fh)
    except FileNotFoundError:
        return ConfigFile(problems=(f"config file {path} does not exist",))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return ConfigFile(problems=(f"config file {path}: {exc}",))
    return ConfigFile(tables, (f"file {path}",))


def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``extra`` into ``base``, table by table (values are copied)."""
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``1.5``, ``"500ms"``, ``"30s"``, ``"5m"``, ``"4h"`` or ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError(f"{value!r} is not a duration such as 30s, 5m, 4h or 1d")


def parse_bool(value: Any) -> bool:
    """``true``/``false`` (also 1/0, yes/no, on/off as text)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not true or false")


def positive_int(value: Any) -> int:
    """A whole number of at least 1 (``3`` or ``"3"``, not ``3.5`` nor ``true``)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a whole number")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{value!r} is not a whole number") from None
    if number < 1 or str(value).strip() not in (str(number), f"{number}.0"):
        raise ValueError(f"{value!r} is not a whole number of at least 1")
    return number


class Checker:
    """Collects problems instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def get(self, where: str, value: Any, convert: Callable[[Any], Any], default: Any = None) -> Any:
        """``convert(value)``, or ``default`` and a problem naming ``where``."""
        try:
            return convert(value)
        except (ValueError, TypeError) as exc:
            self.problems.append(f"{where}: {exc}")
            return default

    def unknown(self, where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
        """A problem for each key of ``table`` that is not ``allowed``."""
        for key in sorted(set(table) - allowed):
            hint = f"{where}.{key}" if where else key
            self.problems.append(f"{hint}: unknown setting (known: {', '.join(sorted(allowed))})")
