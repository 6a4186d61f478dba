"""Checked reading of the JSON config files of a model folder.

Every field is checked for its JSON type (and sizes for a sane range) before
anything is allocated, and every message names the file and the field.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

__all__ = [
    "MAX_CONFIG_SIZE",
    "REQUIRED",
    "field",
    "json_type",
    "module_folder",
    "read_json",
    "read_json_or_none",
    "size_field",
    "string_map",
    "write_json",
]


# Upper bound on any size read from a config: far above every real model, low enough that a
# hostile value is refused before anything is allocated.
MAX_CONFIG_SIZE = 1 << 20

REQUIRED = object()

_JSON_TYPES = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    type(None): "null",
}


def json_type(value: Any) -> str:
    return next((name for kind, name in _JSON_TYPES.items() if type(value) is kind), "a value")


def read_json(path: Path, expected: type = dict) -> Any:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, expected):
        raise ValueError(f"{path} holds {json_type(data)}; expected {_JSON_TYPES[expected]}.")
    return data


def read_json_or_none(path: Path) -> Any:
    """The JSON at ``path``, or ``None`` where it is missing or unreadable (never raises)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def field(
    config: dict[str, Any], path: Path, key: str, kinds: tuple[type, ...], default: Any = REQUIRED
) -> Any:
    """``config[key]``, checked to be of one of the JSON ``kinds``; ``default`` when absent."""
    if key not in config:
        if default is REQUIRED:
            raise ValueError(f"{path}: field {key!r} is missing.")
        return default
    value = config[key]
    # bool is an int subclass in Python, but never a size or an index in a config.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(_JSON_TYPES[kind] for kind in kinds)
        raise ValueError(
            f"{path}: field {key!r} is {value!r} ({json_type(value)}); expected {expected}."
        )
    return value


def size_field(config: dict[str, Any], path: Path, key: str, default: Any = REQUIRED) -> Any:
    """A positive integer field within :data:`MAX_CONFIG_SIZE` (or null when the default is)."""
    kinds = (int,) if default is REQUIRED or default is not None else (int, type(None))
    value = field(config, path, key, kinds, default)
    if value is not None and not 1 <= value <= MAX_CONFIG_SIZE:
        raise ValueError(
            f"{path}: field {key!r} is {value}; expected an integer from 1 to {MAX_CONFIG_SIZE}."
        )
    return value


def string_map(config: dict[str, Any], path: Path, key: str) -> dict[str, str]:
    value = field(config, path, key, (dict, type(None)), None) or {}
    bad = {k: v for k, v in value.items() if not isinstance(v, str)}
    if bad:
        raise ValueError(f"{path}: field {key!r} must map names to strings; got {bad!r}.")
    return dict(value)


def module_folder(root: Path, relative: str, where: str) -> Path:
    """The folder of a module, refused unless it lies inside the model folder ``root``."""
    parts = PurePosixPath(relative.replace("\\", "/"))
    if parts.is_absolute() or ".." in parts.parts or PureWindowsPath(relative).drive:
        raise ValueError(
            f"{where}: path {relative!r} must be relative and inside the model folder "
            "(no '..', no absolute path)."
        )
    folder = root / parts
    resolved, inside = folder.resolve(), root.resolve()
    if resolved != inside and inside not in resolved.parents:
        raise ValueError(
            f"{where}: path {relative!r} leads to {resolved}, outside the model folder {inside} "
            "(through a symbolic link); only files inside the model folder are loaded."
        )
    return folder


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, the layout the reference writes."""
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
