"""Checking recipe values against factory signatures and the host's own settings.

Component parameters are validated against the factory's signature and type hints, so a plugin
gets recipe validation without declaring anything extra. The supported hints are the ones that can
be written in TOML: ``int``, ``float``, ``bool``, ``str``, ``None``, ``Literal[...]``, unions, and
``list``/``tuple`` of those. Anything else is accepted as is.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_MISSING = inspect.Parameter.empty


@dataclass(frozen=True)
class Param:
    """One accepted key: its type hint (or ``Any``), default (or required) and help text."""

    name: str
    annotation: Any = Any
    default: Any = _MISSING
    help: str = ""
    minimum: float | None = None

    @property
    def required(self) -> bool:
        return self.default is _MISSING


def factory_params(factory: Callable[..., Any], skip: frozenset[str] = frozenset()) -> dict[str, Param]:
    """The recipe-settable parameters of ``factory`` (a function or a class)."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable forward references: fall back to no checking
        hints = {}
    sig = inspect.signature(factory)
    params: dict[str, Param] = {}
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in skip or p.name == "self":
            continue
        params[p.name] = Param(p.name, hints.get(p.name, Any), p.default)
    return params


def accepts_extra(factory: Callable[..., Any]) -> bool:
    """Whether ``factory`` takes ``**kwargs`` (then unknown keys cannot be detected)."""
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(factory).parameters.values())


def describe(annotation: Any) -> str:
    """A short human description of a type hint, for error messages."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return "any value"
    if annotation is type(None):
        return "nothing"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(describe(a) for a in args)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        inner = describe(args[0]) if args else "values"
        return f"a list of {inner}"
    if annotation is float:
        return "a number"
    if annotation is int:
        return "an integer"
    if annotation is bool:
        return "true or false"
    if annotation is str:
        return "a string"
    return getattr(annotation, "__name__", str(annotation))


def matches(value: Any, annotation: Any) -> bool:
    """Whether a TOML value fits a type hint."""
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(annotation)
    if annotation is type(None):
        return value is None
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in typing.get_args(annotation))
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = typing.get_args(annotation)
        if origin is tuple and args and Ellipsis not in args:
            return len(value) == len(args) and all(map(matches, value, args))
        inner = args[0] if args else Any
        return all(matches(v, inner) for v in value)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def coerce(value: Any, annotation: Any) -> Any:
    """Turn an int into a float where a float is expected (TOML writes ``1`` for ``1.0``)."""
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typing.get_origin(annotation) is tuple and isinstance(value, list):
        return tuple(value)
    return value
