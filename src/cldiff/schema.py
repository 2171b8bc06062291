"""Dataclasses from plain mappings (parsed YAML), with every problem collected.

One builder for the run configuration (:mod:`cldiff.config`) and the strategies' own fields
(:mod:`cldiff.strategies`): a key the dataclass does not have is reported with a "did you mean", a value of
the wrong type with the type it needs, and the caller raises one error that lists them all.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any


def yaml_float(value: Any) -> Any:
    """PyYAML (YAML 1.1) reads `1e-3` as a string; accept it as the float every user means."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def accepts_float(tp: Any) -> bool:
    return tp is float or (typing.get_origin(tp) in (typing.Union, types.UnionType) and float in typing.get_args(tp))


def type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if tp is dict or origin is dict:
        return isinstance(value, dict)
    if tp is list or origin is list:
        return isinstance(value, list)
    return isinstance(value, tp) if isinstance(tp, type) else True


def type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def did_you_mean(key: str, allowed) -> str:
    """' (did you mean 'x'?)' for the closest allowed name, or ''."""
    close = difflib.get_close_matches(key, list(allowed), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_key(key: str, allowed: list[str], where: str) -> str:
    return f"{where}{key}: unknown key{did_you_mean(key, allowed)}; allowed: {', '.join(allowed)}"


def build(cls: type, raw: Any, where: str, problems: list[str]):
    """An instance of the dataclass ``cls`` from the mapping ``raw`` (nested dataclasses from nested mappings);
    each problem is appended to ``problems`` as 'WHERE.KEY: what is wrong', and the field keeps its default."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{where.rstrip('.') or 'config'}: expected a mapping, got {type(raw).__name__}")
        return cls()
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            problems.append(unknown_key(str(key), names, where))
            continue
        tp = hints[key]
        if accepts_float(tp):
            value = yaml_float(value)
        if dataclasses.is_dataclass(tp):
            kwargs[key] = build(tp, value, f"{where}{key}.", problems)
        elif not type_ok(value, tp):
            problems.append(f"{where}{key}: expected {type_name(tp)}, got {value!r}")
        else:
            kwargs[key] = float(value) if tp is float and isinstance(value, int) else value
    return cls(**kwargs)
