"""Validating configuration read from YAML: a value coerced to its field's type, a mapping turned into a
dataclass with unknown keys refused (with a "did you mean"), a choice checked against its options; every
error a ConfigError that names the key and what is accepted. Shared by the run spec (`replication.spec`),
params.yaml (`replication.params`) and the executor block (`replication.executor`).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the key and what is accepted."""


def did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def choice(key: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(
            f"{key}: {value!r} is unknown{did_you_mean(str(value), choices)}; "
            f"choose one of: {', '.join(sorted(choices))}"
        )


def positive(key: str, value) -> None:
    if value <= 0:
        raise ConfigError(f"{key}: {value} must be > 0")


def coerce(key: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(key, value, inner[0])
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {annotation.__name__} fields, got {value!r}")
        return from_dict(annotation, value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)  # 1e6 in YAML
        if isinstance(value, str):
            try:
                as_float = float(value)
            except ValueError:
                as_float = None
            if as_float is not None and as_float.is_integer():
                return int(as_float)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {annotation!r} for {key}")


@functools.cache
def _fields(cls) -> tuple[dict[str, Any], list[str]]:
    """A dataclass's resolved annotations and field names: resolving string annotations is most of the cost of
    reading a record, and a store reads thousands."""
    return typing.get_type_hints(cls), [f.name for f in dataclasses.fields(cls)]


def check_keys(cls, raw: dict[str, Any], key: str) -> None:
    """Raise ConfigError for the first key of `raw` (nested mappings included) that dataclass `cls` lacks, named
    under `key`: where the user wrote it, before layers of settings are merged and lose their origin."""
    hints, names = _fields(cls)
    _reject_unknown(raw, names, key)
    for name, value in raw.items():
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
            check_keys(hints[name], value, f"{key}.{name}")


def _reject_unknown(raw: dict[str, Any], names: list[str], key: str) -> None:
    for name in raw:
        if name not in names:
            raise ConfigError(f"{key}.{name}: unknown key{did_you_mean(name, names)}; accepted keys: {', '.join(names)}")


def from_dict(cls, raw: dict[str, Any], key: str):
    hints, names = _fields(cls)
    _reject_unknown(raw, names, key)
    return cls(**{name: coerce(f"{key}.{name}", value, hints[name]) for name, value in raw.items()})


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def undot(dotted: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in dotted.items():
        node = out
        *parents, leaf = path.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out
