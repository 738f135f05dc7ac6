"""Byte sizes and durations as people write them ("1.5GiB", "800MB"; "90s", "10m") and back."""
from __future__ import annotations

import re

_BYTES = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SECONDS = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def _quantity(value: int | float | str, units: dict[str, int], what: str, examples: str) -> float:
    """A number, or a number with one of `units`, in the base unit."""
    if isinstance(value, bool):
        raise ValueError(f"a {what} must be a number or a string like {examples}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"a {what} cannot be negative")
        return value
    m = _RE.match(str(value))
    if not m or m.group(2).lower() not in units:
        raise ValueError(f"'{value}' is not a {what}; write it like {examples}")
    return float(m.group(1)) * units[m.group(2).lower()]


def parse_size(value: int | float | str) -> int:
    """Bytes from an int or a string such as '6GiB' / '512 MB'."""
    return int(_quantity(value, _BYTES, "size", "'6GiB', '1.5GiB' or '800MB'"))


def parse_duration(value: int | float | str) -> float:
    """Seconds from a number or a string such as '90s', '10m', '1h'."""
    return float(_quantity(value, _SECONDS, "duration", "'90s', '10m' or '1h'"))


def fmt_size(n: int | float) -> str:
    """Short human size in binary units, e.g. '1.50 GiB'."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"
