"""Typed overrides of nested dataclass configs: ``--set key=value`` and ``--config FILE``.

A dotted key (``rac.actor_lr``) walks the nested dataclasses; the value string is parsed to
the field's declared type (int, float, bool, str, tuples of those, ``X | None``). Anything
wrong (unknown key, unparsable value, unreadable file) raises :class:`ConfigError` with one
line that names the fix, e.g. the close matches of a misspelt key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """Bad config input; the message is one line meant for the user."""


def flat_keys(cfg: Any, prefix: str = "") -> list[str]:
    """All dotted leaf keys of a nested dataclass instance."""
    keys: list[str] = []
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if dataclasses.is_dataclass(value):
            keys.extend(flat_keys(value, f"{prefix}{field.name}."))
        else:
            keys.append(prefix + field.name)
    return keys


def to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain dict (tuples become lists) for YAML/JSON output."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        return value

    return plain(cfg)


def _unknown_key(key: str, cfg: Any) -> ConfigError:
    keys = flat_keys(cfg)
    close = difflib.get_close_matches(key, keys, n=4, cutoff=0.5)
    if not close:  # match on the last component too: "actor_lr" -> "rac.actor_lr"
        leaf = key.rsplit(".", 1)[-1]
        close = [k for k in keys if k.rsplit(".", 1)[-1] == leaf] or [
            k for k in keys if leaf and leaf in k
        ][:4]
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `merpo-agent train --help`"
    return ConfigError(f"unknown config key {key!r}{hint}")


def _tree(cfg: Any) -> dict[str, Any]:
    """A nested dataclass as ``{field: value or subtree}`` (the classes kept aside)."""
    return {
        f.name: _tree(getattr(cfg, f.name))
        if dataclasses.is_dataclass(getattr(cfg, f.name))
        else getattr(cfg, f.name)
        for f in dataclasses.fields(cfg)
    }


def _rebuild(template: Any, tree: dict[str, Any], prefix: str = "") -> Any:
    kwargs = {}
    for f in dataclasses.fields(template):
        value = tree[f.name]
        sub = getattr(template, f.name)
        kwargs[f.name] = (
            _rebuild(sub, value, f"{prefix}{f.name}.") if dataclasses.is_dataclass(sub) else value
        )
    try:
        return type(template)(**kwargs)
    except (ValueError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        section = prefix.rstrip(".") or "config"
        raise ConfigError(f"bad {section} setting: {first}") from None


def _field_type(owner: Any, name: str) -> Any:
    return typing.get_type_hints(type(owner))[name]


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def parse_value(text: Any, annotation: Any, key: str) -> Any:
    """Convert ``text`` (a string from the CLI, or a YAML/TOML value) to ``annotation``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (text is None or str(text).lower() in ("none", "null", "")):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return parse_value(text, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"bad value for {key!r}: {text!r}")
    if origin in (tuple, list):
        inner = args[0] if args else str
        if isinstance(text, str):
            stripped = text.strip().strip("[]()")
            items = [s.strip() for s in stripped.split(",") if s.strip()]
        elif isinstance(text, Iterable):
            items = list(text)
        else:
            items = [text]
        return tuple(parse_value(item, inner, key) for item in items)
    if annotation is bool:
        if isinstance(text, bool):
            return text
        if str(text).lower() in _TRUE:
            return True
        if str(text).lower() in _FALSE:
            return False
        raise ConfigError(f"bad value {text!r} for {key!r}; expected true or false")
    if annotation is int:
        if isinstance(text, bool):
            raise ConfigError(f"bad value {text!r} for {key!r}; expected an integer")
        if isinstance(text, int):
            return text
        try:
            as_float = float(str(text).strip())
        except ValueError:
            as_float = math.nan
        if math.isfinite(as_float) and as_float.is_integer():
            return int(as_float)
        raise ConfigError(f"bad value {text!r} for {key!r}; expected an integer")
    if annotation is float:
        if isinstance(text, bool):
            raise ConfigError(f"bad value {text!r} for {key!r}; expected a number")
        try:
            value = float(str(text).strip())
        except ValueError:
            raise ConfigError(f"bad value {text!r} for {key!r}; expected a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"bad value {text!r} for {key!r}; expected a finite number")
        return value
    if annotation is str:
        if isinstance(text, Mapping | list | tuple):
            raise ConfigError(f"bad value {text!r} for {key!r}; expected a string")
        return str(text)
    raise ConfigError(f"config key {key!r} has a type ({annotation}) that cannot be overridden")


def apply_overrides(cfg: Any, items: Iterable[tuple[str, Any]]) -> Any:
    """A copy of ``cfg`` with every ``(dotted_key, raw_value)`` applied (frozen dataclasses ok).

    Values are parsed to the fields' types; the nested dataclasses are rebuilt once at the
    end, so their own validation (``__post_init__``) sees all overrides together.
    """
    tree = _tree(cfg)
    for key, raw in items:
        node, sub = cfg, tree
        parts = key.split(".")
        for i, part in enumerate(parts):
            names = {f.name for f in dataclasses.fields(node)} if dataclasses.is_dataclass(
                node
            ) else set()
            if part not in names:
                raise _unknown_key(key, cfg)
            child = getattr(node, part)
            if i < len(parts) - 1:
                node, sub = child, sub[part]
                continue
            if dataclasses.is_dataclass(child):
                raise ConfigError(
                    f"config key {key!r} is a section; set one of its fields, e.g. "
                    f"{key}.{flat_keys(child)[0]}=..."
                )
            sub[part] = parse_value(raw, _field_type(node, part), key)
    return _rebuild(cfg, tree)


def get_value(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        if not dataclasses.is_dataclass(node) or part not in {
            f.name for f in dataclasses.fields(node)
        }:
            raise _unknown_key(key, cfg)
        node = getattr(node, part)
    return node


def parse_assignment(text: str) -> tuple[str, str]:
    """``"rac.actor_lr=1e-4"`` -> ``("rac.actor_lr", "1e-4")``."""
    if "=" not in text:
        raise ConfigError(f"bad override {text!r}; write it as key=value, e.g. run.steps=500")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"bad override {text!r}; the key before '=' is empty")
    return key, value.strip()


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{dotted_key: value}``."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML (``.yaml``/``.yml``) or TOML (``.toml``) file as a flat ``{dotted_key: value}``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml", ".json"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(
                f"config file {str(path)!r}: unknown format; use a .yaml, .yml or .toml file"
            )
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"config file {str(path)!r} does not parse: {first}") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of config keys")
    return flatten(data)
