"""Checks on config.json values, run before a network is built from them.

A size of 0, a string where a count belongs or a list where a number does would otherwise surface deep inside
torch, as a traceback or a warning, or halfway through a render. Each check raises ValueError naming the key and
the value; the loader reports that as a model it cannot use. Keys a config does not have are not checked: the
dataclass default applies.
"""

from __future__ import annotations

import json
import math


def _show(value: object) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, str, int, float, bool, type(None))) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def whole_numbers(d: dict, *keys: str, nullable: bool = False) -> None:
    """Each key, where present, is a positive whole number (or null when nullable)."""
    for key in keys:
        if key in d and not (nullable and d[key] is None) and not _is_whole(d[key]):
            raise ValueError(f"{key} must be a positive whole number{' or null' if nullable else ''}, "
                             f"got {_show(d[key])}")


def whole_list(d: dict, key: str, length: int | None = None) -> None:
    """A non-empty list of positive whole numbers (exactly `length` of them when given)."""
    if key not in d:
        return
    value = d[key]
    if (not isinstance(value, (list, tuple)) or not value or (length and len(value) != length)
            or not all(_is_whole(v) for v in value)):
        raise ValueError(f"{key} must be a list of {length or 'one or more'} positive whole numbers, "
                         f"got {_show(value)}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number(d: dict, key: str, low: float | None = None, high: float | None = None, above: bool = False) -> None:
    """A finite number, >= low (> low when `above`) and <= high where given."""
    if key not in d:
        return
    value = d[key]
    if _is_number(value) and (low is None or (value > low if above else value >= low)) \
            and (high is None or value <= high):
        return
    bounds = ([f"{'>' if above else '>='} {low:g}"] if low is not None else []) \
        + ([f"<= {high:g}"] if high is not None else [])
    where = " " + " and ".join(bounds) if bounds else ""
    raise ValueError(f"{key} must be a number{where}, got {_show(value)}")


def number_list(d: dict, key: str, positive: bool = False) -> None:
    """A list of finite numbers (each > 0 when `positive`)."""
    if key not in d:
        return
    value = d[key]
    if not isinstance(value, (list, tuple)) or not all(_is_number(v) and (v > 0 or not positive) for v in value):
        raise ValueError(f"{key} must be a list of {'positive ' if positive else ''}numbers, got {_show(value)}")


def bool_list(d: dict, key: str) -> None:
    if key in d and not (isinstance(d[key], (list, tuple)) and all(isinstance(v, bool) for v in d[key])):
        raise ValueError(f"{key} must be a list of true/false values, got {_show(d[key])}")


def boolean(d: dict, *keys: str) -> None:
    for key in keys:
        if key in d and not isinstance(d[key], bool):
            raise ValueError(f"{key} must be true or false, got {_show(d[key])}")


def string(d: dict, *keys: str, nullable: bool = False) -> None:
    for key in keys:
        if key in d and not (isinstance(d[key], str) or (nullable and d[key] is None)):
            raise ValueError(f"{key} must be a string{' or null' if nullable else ''}, got {_show(d[key])}")


def mapping(d: object, what: str) -> None:
    if not isinstance(d, dict):
        raise ValueError(f"the {what} config must be a JSON object, got {_show(d)}")
