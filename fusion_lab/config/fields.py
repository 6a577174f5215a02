"""A config field's valid values and type, checked without the config (no torch)."""

from __future__ import annotations

import types
import typing
from dataclasses import field
from typing import Any, Union


def valid(default: Any = None, *, min: float | None = None,
          below: float | None = None, choices: tuple[str, ...] | None = None) -> Any:
    """A config field with its valid range: ``min`` <= v (< ``below``), or v in ``choices``.
    ``None`` is always allowed where the field's type allows it."""
    rules = {k: v for k, v in (("min", min), ("below", below), ("choices", choices))
             if v is not None}
    return field(default=default, metadata=rules)


def type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return isinstance(value, (list, tuple)) and all(type_ok(v, item) for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    return isinstance(value, tp)


def type_name(tp: Any) -> str:
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def range_problem(name: str, value: Any, rules: dict[str, Any]) -> str | None:
    if value is None:
        return None
    if "choices" in rules and value not in rules["choices"]:
        return f"{name} must be one of {', '.join(rules['choices'])}, got {value!r}"
    if ("min" not in rules or value >= rules["min"]) and (
            "below" not in rules or value < rules["below"]):
        return None
    if "below" in rules:
        return f"{name} must be in [{rules['min']:g}, {rules['below']:g}), got {value!r}"
    return f"{name} must be >= {rules['min']:g}, got {value!r}"
