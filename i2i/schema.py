"""Checking recipe values against factory signatures and the host's own settings.

Component parameters are validated against the factory's signature and type hints, so a plugin
gets recipe validation without declaring anything extra. The supported hints are the ones that can
be written in TOML: ``int``, ``float``, ``bool``, ``str``, ``None``, ``Literal[...]``, unions, and
``list``/``tuple`` of those. Anything else is accepted as is.

Types alone let nonsense through (``ngf = 0``, ``lr = nan``), so a factory may also state bounds,
``Annotated[int, Range(1, 512)]``, and attach a :func:`recipe_check` for rules that relate several
settings (a crop no larger than the resize, a U-Net depth that fits the crop). Without a declared
range, numbers are still refused when they are NaN or do not fit in 64 bits.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_MISSING = inspect.Parameter.empty
#: Integers a recipe may hold where no range is declared: what fits in 64 bits (torch's limit).
INT64 = (-(2**63), 2**64 - 1)


@dataclass(frozen=True)
class Range:
    """Allowed values of a number, or allowed lengths of a list: ``Annotated[float, Range(0, 1)]``.

    ``None`` leaves a side open; ``low_open``/``high_open`` exclude the bound itself. A number
    with a declared range must also be finite (no NaN, no infinity).
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))

    def __str__(self) -> str:
        low = "-inf" if self.low is None else _number(self.low)
        high = "inf" if self.high is None else _number(self.high)
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if self.high_open or self.high is None else "]"
        return f"{left}{low}, {high}{right}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def range_problem(value: Any, bounds: Range | None) -> str | None:
    """Why ``value`` is out of ``bounds`` (or of the defaults for undeclared numbers), or ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, list | tuple) and bounds is not None:
        if not bounds.contains(len(value)):
            low = 0 if bounds.low is None else bounds.low
            if len(value) < low:
                return f"needs at least {_number(low)} entries"
            return f"allowed lengths {bounds}"
        return None
    if not isinstance(value, int | float):
        return None
    if bounds is not None and isinstance(value, int) and not INT64[0] <= value < 2**63:
        # An open side still ends where 64 bits do: torch and NumPy take nothing larger.
        low = INT64[0] if bounds.low is None else bounds.low
        high = 2**63 - 1 if bounds.high is None else bounds.high
        bounds = Range(low, high, bounds.low_open, bounds.high_open)
    if bounds is not None:
        return None if bounds.contains(value) else f"allowed range {bounds}"
    if isinstance(value, float) and math.isnan(value):
        return "not a number (NaN)"
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        return f"does not fit in 64 bits, allowed range {Range(*INT64)}"
    return None


@dataclass(frozen=True)
class CheckContext:
    """What a :func:`recipe_check` sees besides its own settings.

    ``recipe``: the resolved sections checked so far (read them, never change them);
    ``image_size``: the side of the square images the networks train on, when the dataset declares
    it (``None`` when unknown, e.g. a variable size).
    """

    recipe: Mapping[str, Any]
    image_size: int | None


Check = Callable[[dict[str, Any], CheckContext], Iterable[str]]
ImageSize = Callable[[dict[str, Any]], int | None]


def recipe_check(check: Check | None = None, *, image_size: ImageSize | None = None):
    """Decorate a factory with rules that relate several settings, run by ``i2i validate``.

    ``check(params, context)`` gets the factory's resolved settings and yields problems, each
    starting with the key it concerns (``"crop_size = 512: ..."``; i2i puts the section in front).
    ``image_size(params)``, for datasets, gives the side of the square training images (or ``None``),
    which the generator's and discriminator's checks then see as ``context.image_size``.
    """

    def attach(factory):
        if check is not None:
            factory.i2i_check = check
        if image_size is not None:
            factory.i2i_image_size = image_size
        return factory

    return attach


@dataclass(frozen=True)
class Param:
    """One accepted key: its type hint (or ``Any``), default (or required) and help text."""

    name: str
    annotation: Any = Any
    default: Any = _MISSING
    help: str = ""
    minimum: float | None = None
    range: Range | None = None

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    @property
    def bounds(self) -> Range | None:
        """The declared range; ``minimum`` alone means ``[minimum, inf)``."""
        if self.range is None and self.minimum is not None:
            return Range(self.minimum)
        return self.range


def split_annotated(annotation: Any) -> tuple[Any, Range | None]:
    """``Annotated[T, Range(...)]`` → ``(T, Range)``; any other hint → ``(hint, None)``."""
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        return base, next((e for e in extras if isinstance(e, Range)), None)
    return annotation, None


def factory_params(factory: Callable[..., Any], skip: frozenset[str] = frozenset()) -> dict[str, Param]:
    """The recipe-settable parameters of ``factory`` (a function or a class)."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception:  # unresolvable forward references: fall back to no checking
        hints = {}
    sig = inspect.signature(factory)
    params: dict[str, Param] = {}
    for p in sig.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in skip or p.name == "self":
            continue
        annotation, bounds = split_annotated(hints.get(p.name, Any))
        params[p.name] = Param(p.name, annotation, p.default, range=bounds)
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
