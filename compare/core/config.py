"""Typed config objects: presets, `--set KEY=VALUE` overrides, and their JSON form."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal

from compare.core.errors import UsageError


def field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _parse_value(name: str, raw: str, annotation: Any) -> Any:
    """Parse `raw` into the type a dataclass field declares."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        if raw not in args:
            raise UsageError(f"{name}={raw!r} is not allowed; choose one of: {', '.join(map(str, args))}")
        return raw
    if origin in (typing.Union, types.UnionType):
        if raw.lower() in ("none", "null") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _parse_value(name, raw, inner[0])
    if origin is tuple:
        return tuple(_parse_value(name, part, args[0]) for part in raw.split(",") if part)
    if annotation is bool:
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"{name}={raw!r} is not a boolean; use true or false")
    if annotation is int:
        try:
            number = float(raw)  # accepts 1e6 as well as 1000000
        except ValueError:
            number = float("nan")
        if not number.is_integer():
            raise UsageError(f"{name}={raw!r} is not an integer")
        return int(number)
    if annotation is float:
        try:
            number = float(raw)
        except ValueError:
            raise UsageError(f"{name}={raw!r} is not a number") from None
        if not math.isfinite(number):
            raise UsageError(f"{name}={raw!r} must be a finite number")
        return number
    return raw


def check_widths(obj, *names: str) -> None:
    """Layer widths (tuples of ints such as mlp_hidden) must be positive."""
    for name in names:
        widths = getattr(obj, name)
        if any(w <= 0 for w in widths):
            raise UsageError(f"{name}={','.join(map(str, widths))} must list positive layer widths, e.g. 256,256")


def apply_overrides(obj, overrides: dict[str, str]):
    """Return a copy of dataclass `obj` with string overrides parsed to each field's type."""
    hints = typing.get_type_hints(type(obj))
    changes = {}
    for key, raw in overrides.items():
        if key not in hints:
            raise UsageError(unknown_name_message("setting", key, field_names(type(obj))))
        changes[key] = _parse_value(key, raw, hints[key])
    return dataclasses.replace(obj, **changes)


def unknown_name_message(what: str, name: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(name, allowed, n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return f"unknown {what} {name!r}{hint}; allowed: {', '.join(allowed)}"


def from_dict(cls, data: dict):
    """Rebuild a config from its JSON form (tuples come back as lists). A field missing from an
    older record takes the value such records had (the class's `RECORDED_WITHOUT`, where its
    default has changed since), not today's default."""
    hints = typing.get_type_hints(cls)
    values = {key: value for key, value in getattr(cls, "RECORDED_WITHOUT", {}).items() if key not in data}
    for key, value in data.items():
        if key in hints and typing.get_origin(hints[key]) is tuple and value is not None:
            value = tuple(value)
        values[key] = value
    return cls(**values)
