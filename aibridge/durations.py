"""Parsing of human duration settings such as ``60d``, ``720h``, ``90s`` or ``0``."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PATTERN = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")


def parse_duration(text: str | int | float) -> int:
    """Return a duration in whole seconds. A bare number means seconds; ``0`` means none."""
    if isinstance(text, int | float):
        if text < 0:
            raise ValueError(f"duration must not be negative: {text}")
        return int(text)
    match = _PATTERN.match(text)
    if match is None:
        raise ValueError(f"invalid duration {text!r}: use a number with a unit s, m, h, d or w, e.g. 60d")
    number, unit = match.groups()
    return int(number) * _UNITS[unit or "s"]
