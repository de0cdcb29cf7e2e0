"""Registries of component factories, filled by plugins through the ``i2i_register_*`` hooks.

A registry stores *factories* (callables that build a component from recipe parameters), never
instances, together with the plugin that provided each one, so that listings, error messages and run
directories can say where a component came from.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from i2i.errors import DuplicateComponentError, I2IError, UnknownComponentError, suggest


@dataclass(frozen=True)
class Provider:
    """Who registered a component: the plugin's name and, when installed, its distribution."""

    plugin: str
    distribution: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        if self.distribution:
            return f"{self.distribution} {self.version or ''}".strip()
        return self.plugin


UNKNOWN_PROVIDER = Provider(plugin="<direct>")


@dataclass(frozen=True)
class Component:
    """One registered factory and what is known about it."""

    kind: str
    name: str
    factory: Callable[..., Any]
    provider: Provider
    description: str = ""
    injected: frozenset[str] = field(default_factory=frozenset)
    #: For losses: whether the loss needs a discriminator, as declared when it was registered (or by
    #: the :class:`i2i.Loss` subclass registered as the factory); ``None``: not declared.
    uses_discriminator: bool | None = None

    def build(self, **params: Any) -> Any:
        return self.factory(**params)


def first_doc_line(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


class Registry:
    """Name → factory for one kind of component (generator, loss, dataset, ...).

    Plugins call :meth:`add`; the host calls :meth:`get` / :meth:`build`. ``injected`` names the
    parameters the host supplies itself (for example a generator's ``input_nc``), which recipes must
    not set and validation therefore skips.
    """

    def __init__(self, kind: str, injected: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.injected = frozenset(injected)
        self._components: dict[str, Component] = {}
        self._provider: Provider = UNKNOWN_PROVIDER
        self._conflicts: dict[str, str] = {}

    # -- used by plugins -------------------------------------------------------------------------
    def add(
        self,
        name: str,
        factory: Callable[..., Any],
        *,
        description: str | None = None,
        uses_discriminator: bool | None = None,
    ) -> None:
        """Register ``factory`` under ``name``; ``factory(**params)`` must build the component.

        ``uses_discriminator`` (losses only) declares whether the loss the factory builds needs a
        discriminator, so that a recipe can be checked without building anything. A loss class
        registered as its own factory declares it with its class attribute instead.
        """
        if not isinstance(name, str) or not name:
            raise I2IError(f"A {self.kind} must be registered under a non-empty string name.")
        if not callable(factory):
            raise I2IError(f"The {self.kind} {name!r} was registered with a non-callable factory.")
        uses_discriminator = self._discriminator_declaration(name, factory, uses_discriminator)
        existing = self._components.get(name)
        if existing is not None:
            raise DuplicateComponentError(
                name,
                f"The {self.kind} name {name!r} is provided twice: by {existing.provider} "
                f"(plugin {existing.provider.plugin!r}) and by {self._provider} "
                f"(plugin {self._provider.plugin!r}). Uninstall one of them, or block one with "
                f"I2I_DISABLE_PLUGINS={self._provider.plugin}.",
            )
        self._components[name] = Component(
            kind=self.kind,
            name=name,
            factory=factory,
            provider=self._provider,
            description=description if description is not None else first_doc_line(factory),
            injected=self.injected,
            uses_discriminator=uses_discriminator,
        )

    def _discriminator_declaration(
        self, name: str, factory: Callable[..., Any], declared: bool | None
    ) -> bool | None:
        """The loss's declared need for a discriminator: the argument, or the loss class's attribute."""
        if declared is not None and self.kind != "loss":
            raise I2IError(
                f"The {self.kind} {name!r} was registered with uses_discriminator, which only losses declare."
            )
        if declared is not None and not isinstance(declared, bool):
            raise I2IError(
                f"The loss {name!r} was registered with uses_discriminator = {declared!r}; use True or False."
            )
        own = getattr(factory, "uses_discriminator", None) if inspect.isclass(factory) else None
        if self.kind != "loss" or not isinstance(own, bool):
            return declared
        if declared is not None and declared != own:
            raise I2IError(
                f"The loss {name!r} was registered with uses_discriminator = {declared}, but its class "
                f"{factory.__name__} says {own}: declare it once, on the class."
            )
        return own

    # -- used by the host ------------------------------------------------------------------------
    def _set_provider(self, provider: Provider) -> None:
        self._provider = provider

    def _remove_provider(self, plugin: str) -> None:
        """Drop everything one plugin registered (used when its hook failed half-way)."""
        for name in [n for n, c in self._components.items() if c.provider.plugin == plugin]:
            del self._components[name]

    def _mark_conflict(self, name: str, message: str) -> None:
        self._conflicts[name] = message

    def get(self, name: str) -> Component:
        if name in self._conflicts:
            raise DuplicateComponentError(name, self._conflicts[name])
        try:
            return self._components[name]
        except KeyError:
            raise UnknownComponentError(
                f"Unknown {self.kind} {name!r}. {suggest(name, self._components)}"
            ) from None

    def build(self, name: str, **params: Any) -> Any:
        return self.get(name).build(**params)

    def names(self) -> list[str]:
        return sorted(self._components)

    def __contains__(self, name: object) -> bool:
        return name in self._components

    def __iter__(self) -> Iterator[Component]:
        return iter(sorted(self._components.values(), key=lambda c: c.name))

    def __len__(self) -> int:
        return len(self._components)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
