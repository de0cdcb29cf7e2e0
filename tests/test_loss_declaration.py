"""Whether a loss needs a discriminator is declared by its plugin, and ``i2i validate`` reads the
declaration without building the loss (it used to guess from the factory's return annotation)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import i2i
from i2i.assembly.build import build_losses
from i2i.assembly.host import PluginHost
from i2i.cli import app
from i2i.errors import I2IError, RecipeError
from i2i.registry import Registry

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "recipes" / "facades_quick.toml"
runner = CliRunner()


class Critic(i2i.Loss):
    """A loss that trains D (its discriminator_loss is beside the point here)."""

    uses_discriminator = True

    def generator_loss(self, ctx: i2i.StepContext) -> torch.Tensor:
        return -ctx.discriminator(ctx.fake_B).mean()


def critic(weight: float = 1.0) -> i2i.Loss:
    """Declared at registration; the return annotation says only i2i.Loss."""
    return Critic(weight)


def legacy_critic(weight: float = 1.0) -> Critic:
    """An older plugin: declares nothing, its return annotation names the class."""
    return Critic(weight)


def pretender(weight: float = 1.0) -> i2i.Loss:
    """Registered as needing D, but builds a loss that does not."""
    return i2i.Loss(weight)


class Plugin:
    @i2i.hookimpl
    def i2i_register_losses(registry):  # noqa: N805
        registry.add("critic", critic, uses_discriminator=True)
        registry.add("critic_class", Critic)
        registry.add("legacy_critic", legacy_critic)
        registry.add("pretender", pretender, uses_discriminator=True)


def without_discriminator(tmp_path: Path, loss: str) -> Path:
    """The quick recipe with no [discriminator] and the losses l1 and ``loss``."""
    lines, out, skipping = QUICK.read_text().splitlines(), [], False
    for line in lines:
        if line.startswith("["):
            skipping = line.strip() in ("[discriminator]", "[[losses]]")
        if not skipping:
            out.append(line)
    out += ["", "[[losses]]", 'name = "l1"', "", "[[losses]]", f'name = "{loss}"']
    path = tmp_path / "recipe.toml"
    path.write_text("\n".join(out) + "\n")
    return path


@pytest.mark.parametrize(
    "loss", ["critic", "critic_class", "legacy_critic", "cgan", "gan", "bicyclegan", "min_of_k"]
)
def test_validate_refuses_a_declared_adversarial_loss_without_a_discriminator(tmp_path, install_host, loss):
    install_host(("critic-plugin", Plugin))
    result = runner.invoke(app, ["validate", str(without_discriminator(tmp_path, loss))])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, RecipeError), result.exception
    assert any(
        p.startswith(f"losses.{loss}: this loss trains a discriminator") for p in result.exception.problems
    ), result.exception.problems


@pytest.mark.parametrize("loss", ["l2", "cross_entropy", "mode_seeking", "cimle"])
def test_a_loss_declared_without_d_needs_no_discriminator_section(tmp_path, loss):
    problems: list[str] = []
    try:
        i2i.resolve_recipe(without_discriminator(tmp_path, loss))
    except RecipeError as exc:
        problems = exc.problems
    assert not any("discriminator" in p for p in problems), problems


def test_every_default_loss_declares_it_and_builds_what_it_declares():
    host = PluginHost()
    losses = [c for c in host.registry("loss") if c.provider.distribution == "i2i"]
    assert {c.name for c in losses} >= {"cgan", "gan", "l1", "l2", "cross_entropy", "bicyclegan", "cimle"}
    for component in losses:
        assert component.uses_discriminator is not None, component.name
        assert component.uses_discriminator == component.build().uses_discriminator, component.name
    trains_d = {c.name for c in losses if c.uses_discriminator}
    assert trains_d == {"cgan", "gan", "bicyclegan", "min_of_k"}


def test_the_example_plugin_declares_its_loss():
    host = PluginHost()
    assert host.registry("loss").get("latent_spread").uses_discriminator is False


def test_a_built_loss_that_contradicts_its_declaration_stops_the_run():
    host = PluginHost(extra_plugins=[("critic-plugin", Plugin)], strict=True)
    assert [name for name, _ in build_losses({"losses": [{"name": "critic"}]}, host)] == ["critic"]
    with pytest.raises(I2IError, match=r"'pretender'.*uses_discriminator = True.*says False"):
        build_losses({"losses": [{"name": "pretender"}]}, host)


def test_only_losses_declare_it_and_a_loss_class_declares_it_once():
    with pytest.raises(I2IError, match="only losses declare"):
        Registry("generator").add("g", torch.nn.Identity, uses_discriminator=False)
    with pytest.raises(I2IError, match="its class Critic says True"):
        Registry("loss").add("c", Critic, uses_discriminator=False)
    with pytest.raises(I2IError, match="True or False"):
        Registry("loss").add("c", critic, uses_discriminator="yes")  # type: ignore[arg-type]
    registry = Registry("loss")
    registry.add("c", Critic)
    registry.add("plain", critic)
    assert registry.get("c").uses_discriminator is True
    assert registry.get("plain").uses_discriminator is None  # not declared
