"""Registries and the plugin host: registration, discovery, loading failures, conflicts, providers."""

from __future__ import annotations

import ast
import importlib
import itertools
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

import i2i
from i2i.assembly.host import DISABLE_ENV, KINDS, STRICT_ENV, PluginHost
from i2i.errors import DuplicateComponentError, I2IError, UnknownComponentError
from i2i.registry import Provider, Registry

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch):
    """The host reads these variables; tests that want them set them explicitly."""
    monkeypatch.delenv(STRICT_ENV, raising=False)
    monkeypatch.delenv(DISABLE_ENV, raising=False)


def _widget(input_nc: int, output_nc: int, width: int = 4) -> tuple:
    """A stand-in generator.

    Only the first line is the description.
    """
    return ("widget", input_nc, output_nc, width)


# -- Registry ---------------------------------------------------------------------------------------


def test_registry_stores_factories_and_builds_fresh_instances():
    built = []

    def factory(width: int = 2) -> dict:
        built.append(width)
        return {"width": width}

    registry = Registry("widget")
    registry.add("w", factory)
    assert built == []  # registering builds nothing
    component = registry.get("w")
    assert (component.kind, component.name, component.factory) == ("widget", "w", factory)
    first, second = registry.build("w", width=3), registry.build("w", width=3)
    assert first == second == {"width": 3}
    assert first is not second
    assert built == [3, 3]
    assert "w" in registry and "v" not in registry
    assert len(registry) == 1
    assert registry.names() == ["w"]
    assert [c.name for c in registry] == ["w"]


def test_registry_description_and_injected_parameters():
    registry = Registry("generator", injected=("input_nc", "output_nc"))
    registry.add("widget", _widget)
    registry.add("other", _widget, description="Says something else.")
    assert registry.get("widget").description == "A stand-in generator."
    assert registry.get("other").description == "Says something else."
    assert registry.get("widget").injected == {"input_nc", "output_nc"}
    assert registry.get("widget").provider.plugin == "<direct>"


@pytest.mark.parametrize(
    ("name", "factory", "match"),
    [("", _widget, "non-empty string"), (3, _widget, "non-empty string"), ("w", 42, "non-callable")],
)
def test_registry_rejects_bad_registrations(name, factory, match):
    with pytest.raises(I2IError, match=match):
        Registry("generator").add(name, factory)


def test_duplicate_name_names_both_providers():
    registry = Registry("generator")
    registry._set_provider(Provider("first", "pkg-one", "1.0"))
    registry.add("twin", _widget)
    registry._set_provider(Provider("second", "pkg-two", "2.5"))
    with pytest.raises(DuplicateComponentError) as caught:
        registry.add("twin", _widget)
    message = str(caught.value)
    assert caught.value.name == "twin"
    for part in ("'twin'", "pkg-one 1.0", "'first'", "pkg-two 2.5", "'second'", "I2I_DISABLE_PLUGINS"):
        assert part in message
    assert registry.get("twin").provider.plugin == "first"  # the first registration is kept


def test_unknown_name_suggests_and_lists_the_choices():
    registry = Registry("generator")
    for name in ("unet_256", "unet_128", "resnet"):
        registry.add(name, _widget)
    with pytest.raises(UnknownComponentError) as caught:
        registry.get("unet_265")
    message = str(caught.value)
    assert message.startswith("Unknown generator 'unet_265'.")
    assert "Did you mean 'unet_256'" in message
    assert "Available: resnet, unet_128, unet_256." in message
    assert isinstance(caught.value, KeyError)  # dict-like lookups keep working
    with pytest.raises(UnknownComponentError, match="Available: resnet, unet_128, unet_256"):
        registry.build("gan")  # nothing close: no suggestion, but still the list


def test_unknown_name_in_an_empty_registry_points_at_missing_plugins():
    with pytest.raises(UnknownComponentError, match="is the plugin providing them installed"):
        Registry("metric").get("fid")


# -- loading entry points ----------------------------------------------------------------------------

GOOD = """
import i2i

def widget(input_nc: int, output_nc: int, width: int = 4):
    "A test generator."
    return ("widget", input_nc, output_nc, width)

@i2i.hookimpl
def i2i_register_generators(registry):
    registry.add("widget", widget)
"""

_module_ids = itertools.count()


@pytest.fixture
def entry_point(tmp_path, monkeypatch):
    """``entry_point(name, source)``: a fake entry point in group "i2i" for a module with ``source``,
    written to a temporary folder on sys.path (under a fresh module name every time)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    created = []

    def make(name: str, source: str) -> metadata.EntryPoint:
        module = f"i2i_test_plugin_{next(_module_ids)}"
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        importlib.invalidate_caches()
        created.append(module)
        return metadata.EntryPoint(name=name, value=module, group="i2i")

    yield make
    for module in created:
        sys.modules.pop(module, None)


def test_entry_points_register_components(entry_point):
    host = PluginHost(entry_points=[entry_point("good", GOOD)])
    assert host.failures == []
    component = host.registry("generator").get("widget")
    assert component.description == "A test generator."
    assert component.provider == Provider(plugin="good")  # a bare entry point has no distribution
    assert str(component.provider) == "good"
    assert component.build(input_nc=1, output_nc=3, width=2) == ("widget", 1, 3, 2)
    assert set(host.registries) == set(KINDS)


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("import i2i_no_such_dependency\n", "ModuleNotFoundError: No module named"),
        ("raise ImportError('needs libfoo')\n", "ImportError: needs libfoo"),
        ("def broken(:\n", "SyntaxError"),
    ],
)
def test_a_plugin_that_fails_to_import_is_recorded_and_the_others_still_load(entry_point, source, reason):
    broken = entry_point("broken", source)
    host = PluginHost(entry_points=[broken, entry_point("good", GOOD)])
    assert [f.plugin for f in host.failures] == ["broken"]
    failure = host.failures[0]
    assert failure.stage == f"importing {broken.value}"
    assert failure.reason.startswith(reason)
    assert "Traceback" in failure.details
    assert "widget" in host.registry("generator")
    assert set(host.providers) == {"good"}


def test_a_hook_that_raises_is_recorded_and_its_partial_registrations_are_dropped(entry_point):
    half = entry_point(
        "half",
        """
        import i2i

        @i2i.hookimpl
        def i2i_register_generators(registry):
            registry.add("half_done", lambda input_nc, output_nc: None)
            raise RuntimeError("lost my config")
        """,
    )
    host = PluginHost(entry_points=[half, entry_point("good", GOOD)])
    assert len(host.failures) == 1
    failure = host.failures[0]
    assert (failure.plugin, failure.stage) == ("half", "running i2i_register_generators")
    assert failure.reason == "RuntimeError: lost my config"
    assert host.registry("generator").names() == ["widget"]
    with pytest.raises(UnknownComponentError):
        host.registry("generator").get("half_done")


def test_a_misspelled_hook_name_is_detected(entry_point):
    typo = entry_point(
        "a-typo",
        """
        import i2i

        @i2i.hookimpl
        def i2i_register_generator(registry):  # missing "s"
            registry.add("never", lambda input_nc, output_nc: None)
        """,
    )
    host = PluginHost(entry_points=[typo, entry_point("b-good", GOOD)])
    assert [(f.plugin, f.stage) for f in host.failures] == [("a-typo", "checking hook names")]
    assert "i2i_register_generator" in host.failures[0].reason
    assert host.pm.get_plugin("a-typo") is None  # unregistered, so it cannot run half-checked
    assert set(host.providers) == {"b-good"}  # the plugin after it is not blamed
    assert host.registry("generator").names() == ["widget"]


def test_a_hook_with_an_argument_the_spec_lacks_is_rejected(entry_point):
    extra = entry_point(
        "extra-arg",
        """
        import i2i

        @i2i.hookimpl
        def i2i_register_generators(registry, device):
            pass
        """,
    )
    host = PluginHost(entry_points=[extra])
    assert [(f.plugin, f.stage) for f in host.failures] == [("extra-arg", "registering")]
    assert "device" in host.failures[0].reason


def test_a_hook_implementation_may_take_fewer_arguments_than_the_spec():
    calls = []

    class NoArguments:
        @i2i.hookimpl
        def i2i_register_losses():  # noqa: N805 - pluggy calls it with keyword arguments only
            calls.append("called")

    host = PluginHost(entry_points=[], extra_plugins=[("no-args", NoArguments)])
    assert host.failures == []
    assert calls == ["called"]


@pytest.mark.parametrize(
    "source",
    [
        "raise ImportError('needs libfoo')\n",
        "import i2i\n@i2i.hookimpl\ndef i2i_register_losses(registry):\n    raise ValueError('x')\n",
        "import i2i\n@i2i.hookimpl\ndef i2i_register_loss(registry):\n    pass\n",
    ],
    ids=["import", "hook", "typo"],
)
def test_strict_mode_turns_failures_into_errors(entry_point, monkeypatch, source):
    monkeypatch.setenv(STRICT_ENV, "1")
    with pytest.raises(I2IError, match=f"Plugin 'broken' .*{STRICT_ENV}"):
        PluginHost(entry_points=[entry_point("broken", source)])


def test_strict_mode_can_be_chosen_in_code(entry_point, monkeypatch):
    monkeypatch.setenv(STRICT_ENV, "1")
    host = PluginHost(entry_points=[entry_point("broken", "raise ImportError\n")], strict=False)
    assert [f.plugin for f in host.failures] == ["broken"]


def test_disabled_plugins_are_not_even_imported(entry_point, monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "broken, other")
    broken = entry_point("broken", "raise ImportError('must not be imported')\n")
    host = PluginHost(entry_points=[broken, entry_point("good", GOOD)])
    assert host.failures == []
    assert set(host.providers) == {"good"}
    assert broken.value not in sys.modules


TWIN = """
import i2i

@i2i.hookimpl
def i2i_register_generators(registry):
    registry.add("twin", lambda input_nc, output_nc: "{label}")
    registry.add("only_{label}", lambda input_nc, output_nc: "{label}")
"""


def test_two_plugins_registering_one_name_make_it_unusable(entry_point):
    first = entry_point("a-first", TWIN.format(label="a"))
    second = entry_point("b-second", TWIN.format(label="b"))
    host = PluginHost(entry_points=[first, second])
    assert len(host.failures) == 1
    failure = host.failures[0]
    assert failure.stage == "running i2i_register_generators"
    assert failure.reason.startswith("DuplicateComponentError:")
    # Neither provider wins silently: using the name names both.
    for call in (
        lambda: host.registry("generator").get("twin"),
        lambda: host.registry("generator").build("twin", input_nc=3, output_nc=3),
    ):
        with pytest.raises(DuplicateComponentError) as caught:
            call()
        assert "'a-first'" in str(caught.value) and "'b-second'" in str(caught.value)


def test_a_duplicate_name_blames_the_later_plugin(entry_point):
    first = entry_point("a-first", TWIN.format(label="a"))
    second = entry_point("b-second", TWIN.format(label="b"))
    host = PluginHost(entry_points=[first, second])
    assert [f.plugin for f in host.failures] == ["b-second"]
    assert "only_a" in host.registry("generator")


def test_a_plugin_reusing_a_default_name_does_not_knock_out_the_defaults():
    class Rogue:
        @i2i.hookimpl
        def i2i_register_generators(registry):  # noqa: N805
            registry.add("unet", _widget)

    host = PluginHost(extra_plugins=[("rogue", Rogue)])
    assert [f.plugin for f in host.failures] == ["rogue"]
    assert "unet_256" in host.registry("generator")


def test_a_plugin_name_can_only_be_registered_once(entry_point):
    class Same:
        @i2i.hookimpl
        def i2i_register_metrics(registry):  # noqa: N805
            registry.add("same_metric", lambda: None)

    host = PluginHost(entry_points=[entry_point("good", GOOD)], extra_plugins=[("good", Same)])
    assert [(f.plugin, f.stage) for f in host.failures] == [("good", "registering")]
    assert "already registered" in host.failures[0].reason
    assert "same_metric" not in host.registry("metric")


# -- the installed plugins ---------------------------------------------------------------------------

DEFAULTS = {
    "generator": {"unet", "unet_128", "unet_256", "resnet", "resnet_6blocks", "resnet_9blocks"},
    "discriminator": {"patchgan", "pixelgan"},
    "loss": {"cgan", "gan", "l1", "l2"},
    "dataset": {"aligned"},
    "metric": {"l1", "psnr", "ssim", "fid"},
}


@pytest.fixture(scope="module")
def installed() -> PluginHost:
    return PluginHost(strict=False, disabled=[])


def test_the_installed_plugins_load_cleanly(installed):
    assert installed.failures == []
    for kind, names in DEFAULTS.items():
        assert names <= set(installed.registry(kind).names()), kind


def test_providers_of_real_entry_points_are_recorded(installed):
    version = metadata.version("i2i")
    for kind, names in DEFAULTS.items():
        for name in names:
            provider = installed.registry(kind).get(name).provider
            assert (provider.distribution, provider.version) == ("i2i", version)
            assert provider.plugin.startswith("pix2pix-")
            assert str(provider) == f"i2i {version}"
    example_version = metadata.version("i2i-example-plugin")
    for kind, name in (("generator", "noise_encoder_decoder"), ("loss", "latent_spread")):
        provider = installed.registry(kind).get(name).provider
        assert provider == Provider("example", "i2i-example-plugin", example_version)
    assert installed.provider_versions(["example", "nope"]) == {
        "example": f"i2i-example-plugin {example_version}"
    }


def test_the_core_never_imports_the_default_plugin_by_name():
    offenders = []
    for path in sorted((REPO / "i2i").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                modules = [node.value]  # importlib.import_module("i2i_pix2pix...") and the like
            else:
                continue
            for module in modules:
                if module.split(".")[0] == "i2i_pix2pix":
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []
