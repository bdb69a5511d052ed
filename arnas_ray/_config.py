"""Typed construction of frozen dataclass specs from plain dicts (YAML, JSON, Tune configs).

``from_dict(cls, data)`` checks every key against the dataclass fields (unknown keys are
refused by name), converts values to the annotated types and lets the class's
``__post_init__`` check ranges. Every failure is a :class:`~arnas_ray.errors.SpecError` that
names the dotted field path, the value and what is allowed. No value is ever evaluated.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, Union

from arnas_ray.errors import SpecError

__all__ = ["check", "check_choice", "from_dict", "to_dict"]

T = TypeVar("T")
_FRACTION = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*/\s*([0-9]+(?:\.[0-9]*)?)\s*$")


def check(condition: bool, field: str, requirement: str, value: Any) -> None:
    """Raise ``SpecError`` in optuna's form: "`eps > 0` must hold, but got eps=-0.1"."""
    if not condition:
        raise SpecError(field, f"`{requirement}` must hold, but got {field.rsplit('.', 1)[-1]}={value!r}")


def check_choice(value: Any, allowed: tuple[Any, ...], field: str) -> None:
    """Raise ``SpecError`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise SpecError(field, f"unknown value {value!r}; expected one of {allowed}")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})"


def _union(args: tuple[Any, ...], value: Any, path: str) -> Any:
    if value is None and type(None) in args:
        return None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _convert(arg, value, path)
        except SpecError:
            continue
    names = [getattr(a, "__name__", str(a)) for a in args]
    raise SpecError(path, f"expected one of types {names}, got {_describe(value)}")


def _int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer() and math.isfinite(value):
            return int(value)
        raise SpecError(path, f"expected an integer, got {_describe(value)}")
    return value


def _float(value: Any, path: str) -> float:
    if isinstance(value, str):
        match = _FRACTION.match(value)
        if match is None:
            raise SpecError(path, f"expected a number (or a fraction such as '8/255'), got {_describe(value)}")
        num, den = float(match.group(1)), float(match.group(2))
        if den == 0:
            raise SpecError(path, f"division by zero in {value!r}")
        value = num / den
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(path, f"expected a number, got {_describe(value)}")
    if not math.isfinite(value):
        raise SpecError(path, f"expected a finite number, got {value!r}")
    return float(value)


def _tuple(args: tuple[Any, ...], value: Any, path: str) -> tuple[Any, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise SpecError(path, f"expected a list, got {_describe(value)}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise SpecError(path, f"expected a list of {len(args)} items, got {len(value)}: {value!r}")
    return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))


def _mapping(args: tuple[Any, ...], value: Any, path: str) -> dict[Any, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(path, f"expected a mapping, got {_describe(value)}")
    kt, vt = args if args else (Any, Any)
    return {_convert(kt, k, f"{path}.<key>"): _convert(vt, v, _join(path, str(k))) for k, v in value.items()}


def _plain_type(tp: type, value: Any, path: str) -> Any:
    """``bool``, ``str`` and other classes: the value must already be one."""
    kind = {bool: "true or false", str: "a string"}.get(tp, tp.__name__)
    if isinstance(value, tp):
        return value
    raise SpecError(path, f"expected {kind}, got {_describe(value)}")


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        return _union(args, value, path)
    if origin is typing.Literal:
        if value not in args:
            raise SpecError(path, f"unknown value {value!r}; expected one of {args}")
        return value
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else from_dict(tp, value, path=path)  # type: ignore[arg-type]
    if tp is int:
        return _int(value, path)
    if tp is float:
        return _float(value, path)
    if origin is tuple:
        return _tuple(args, value, path)
    if origin in (dict, Mapping) or tp is dict:
        return _mapping(args, value, path)
    if isinstance(tp, type):
        return _plain_type(tp, value, path)
    raise TypeError(f"_config cannot convert to {tp!r} at {path}")  # internal: unsupported annotation


def from_dict(cls: type[T], data: Any, *, path: str = "") -> T:
    """Build the frozen dataclass ``cls`` from a mapping, strictly.

    Args:
        cls: a dataclass type whose fields carry type annotations.
        data: a mapping of field name -> value (``None`` means all defaults).
        path: dotted prefix used in error messages for nested specs.

    Raises:
        SpecError: unknown key, wrong type, or a range check in ``__post_init__`` failed.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SpecError(path, f"expected a mapping of {cls.__name__} fields, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        raise SpecError(_join(path, str(key)), f"unknown field {key!r}; valid fields: {sorted(fields)}")
    kwargs = {name: _convert(hints[name], value, _join(path, name)) for name, value in data.items()}
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise SpecError(_join(path, missing[0]), "required field is missing")
    try:
        return cls(**kwargs)
    except SpecError as exc:
        if path and not exc.field.startswith(path):
            raise SpecError(_join(path, exc.field), exc.message) from None
        raise


def to_dict(obj: Any) -> Any:
    """Inverse of :func:`from_dict`: a JSON/YAML-ready structure (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
