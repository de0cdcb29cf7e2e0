"""Finding, loading and calling plugins.

Plugins are modules or objects with ``@i2i.hookimpl`` functions, announced through the ``i2i``
entry-point group (the default pix2pix components included). Each entry point is loaded on its own:
one that fails to import, breaks the hook contract or raises inside a hook is recorded in
:attr:`PluginHost.failures` and everything else keeps working. Set ``I2I_STRICT_PLUGINS=1`` to turn
such failures into errors, and ``I2I_DISABLE_PLUGINS=a,b`` to skip plugins by entry-point name.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from i2i import hookspecs
from i2i.errors import DuplicateComponentError, I2IError
from i2i.registry import UNKNOWN_PROVIDER, Provider, Registry

ENTRY_POINT_GROUP = hookspecs.PROJECT
STRICT_ENV = "I2I_STRICT_PLUGINS"
DISABLE_ENV = "I2I_DISABLE_PLUGINS"

#: kind → (hook name, parameters the host injects into that kind's factories)
KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "model": ("i2i_register_models", ()),
    "generator": ("i2i_register_generators", ("input_nc", "output_nc")),
    "discriminator": ("i2i_register_discriminators", ("input_nc",)),
    "loss": ("i2i_register_losses", ()),
    "dataset": ("i2i_register_datasets", ("split",)),
    "metric": ("i2i_register_metrics", ()),
    "sampler": ("i2i_register_samplers", ()),
    "palette": ("i2i_register_palettes", ()),
}


@dataclass(frozen=True)
class PluginFailure:
    """A plugin that could not be used, and why."""

    plugin: str
    provider: Provider
    stage: str
    reason: str
    details: str = ""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


class PluginHost:
    """Owns the pluggy manager, the loaded plugins and one :class:`Registry` per component kind."""

    def __init__(
        self,
        *,
        entry_points: Iterable[metadata.EntryPoint] | None = None,
        extra_plugins: Iterable[tuple[str, Any]] = (),
        strict: bool | None = None,
        disabled: Iterable[str] | None = None,
    ) -> None:
        self.strict = _truthy(os.environ.get(STRICT_ENV)) if strict is None else strict
        if disabled is None:
            disabled = [p for p in os.environ.get(DISABLE_ENV, "").split(",") if p.strip()]
        self.disabled = {d.strip() for d in disabled}
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.providers: dict[str, Provider] = {}
        self.failures: list[PluginFailure] = []
        if entry_points is None:
            entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
        for ep in sorted(entry_points, key=lambda e: e.name):
            self._load_entry_point(ep)
        for name, plugin in extra_plugins:
            self._register(name, plugin, Provider(plugin=name))
        self.registries: dict[str, Registry] = {}
        for kind, (hook, injected) in KINDS.items():
            self.registries[kind] = self._collect(kind, hook, injected)

    # -- loading ---------------------------------------------------------------------------------
    def _fail(self, name: str, provider: Provider, stage: str, exc: BaseException) -> None:
        if self.strict:
            raise I2IError(
                f"Plugin {name!r} ({provider}) failed while {stage}: {exc} "
                f"(strict mode is on because {STRICT_ENV} is set)."
            ) from exc
        self.failures.append(
            PluginFailure(
                plugin=name,
                provider=provider,
                stage=stage,
                reason=f"{type(exc).__name__}: {exc}",
                details="".join(traceback.format_exception(exc)),
            )
        )

    def _load_entry_point(self, ep: metadata.EntryPoint) -> None:
        dist = getattr(ep, "dist", None)
        provider = Provider(
            plugin=ep.name,
            distribution=dist.name if dist is not None else None,
            version=dist.version if dist is not None else None,
        )
        if ep.name in self.disabled:
            return
        try:
            plugin = ep.load()
        except Exception as exc:  # any import-time error must not take the host down
            self._fail(ep.name, provider, f"importing {ep.value}", exc)
            return
        self._register(ep.name, plugin, provider)

    def _register(self, name: str, plugin: Any, provider: Provider) -> None:
        if name in self.providers:
            self._fail(
                name,
                provider,
                "registering",
                I2IError(f"a plugin named {name!r} is already registered by {self.providers[name]}"),
            )
            return
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # pluggy.PluginValidationError and friends
            self._fail(name, provider, "registering", exc)
            return
        try:
            # An implementation whose name matches no hook is almost always a typo.
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            self.pm.unregister(name=name)
            self._fail(name, provider, "checking hook names", exc)
            return
        self.providers[name] = provider

    def _collect(self, kind: str, hook: str, injected: tuple[str, ...]) -> Registry:
        registry = Registry(kind, injected)
        caller = getattr(self.pm.hook, hook)
        # pluggy lists implementations oldest first, so a duplicate name blames the later plugin.
        for impl in caller.get_hookimpls():
            provider = self.providers.get(impl.plugin_name, Provider(plugin=impl.plugin_name))
            registry._set_provider(provider)
            kwargs = {"registry": registry}
            try:
                impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
            except DuplicateComponentError as exc:
                # Neither provider wins silently: the name stays unusable until one is removed.
                registry._remove_provider(impl.plugin_name)
                registry._mark_conflict(exc.name, str(exc))
                self._fail(impl.plugin_name, provider, f"running {hook}", exc)
            except Exception as exc:
                registry._remove_provider(impl.plugin_name)
                self._fail(impl.plugin_name, provider, f"running {hook}", exc)
        registry._set_provider(UNKNOWN_PROVIDER)
        return registry

    # -- queries ---------------------------------------------------------------------------------
    def registry(self, kind: str) -> Registry:
        return self.registries[kind]

    def components(self) -> list:
        return [c for kind in KINDS for c in self.registries[kind]]

    def provider_versions(self, plugins: Iterable[str] | None = None) -> dict[str, str]:
        """Plugin name → "distribution version", as written into run directories."""
        names = self.providers if plugins is None else plugins
        return {n: str(self.providers[n]) for n in names if n in self.providers}


_host: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide host, loaded on first use."""
    global _host
    if _host is None:
        _host = PluginHost()
    return _host


def set_host(host: PluginHost | None) -> None:
    """Replace (or with ``None`` forget) the process-wide host; used by tests and embedding apps."""
    global _host
    _host = host
