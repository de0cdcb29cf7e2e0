"""The pix2pix model: one generator, one discriminator, the recipe's losses, "update D, then G".

Each step runs G(A) once; updates D on the sum of what the losses ask of it; then, with D frozen,
updates G (and the networks losses own) on the weighted sum of the losses' generator terms. The
losses decide how D is fed (conditioned on the input or not) and whether they need more samples,
so this one step serves pix2pix and the diversity methods alike (see docs/plugins.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from i2i import (
    I2IError,
    Loss,
    ModelParts,
    OptimiserGroup,
    StepContext,
    StepTools,
    TrainingModel,
    generate,
    hookimpl,
    set_requires_grad,
)


class Pix2Pix(TrainingModel):
    """pix2pix (Isola et al. 2017): G and D from the recipe, trained with its [[losses]]."""

    translators = {"AtoB": "generator"}

    def build(self, parts: ModelParts) -> None:
        self.input_nc, self.output_nc = parts.input_nc, parts.output_nc
        self.generator = parts.generator(parts.input_nc, parts.output_nc)
        self.losses: list[tuple[str, Loss]] = parts.losses(self.generator)
        self.loss_modules = nn.ModuleList([loss for _, loss in self.losses])
        self.discriminator = self._discriminator(parts)
        parts.initialise(self.generator, self.discriminator)

    def _discriminator(self, parts: ModelParts) -> nn.Module | None:
        """D, if a loss needs one; its input channels depend on whether a loss conditions it."""
        adversarial = [loss for _, loss in self.losses if loss.uses_discriminator]
        if not adversarial:
            return None
        if "discriminator" not in parts.recipe:
            names = [n for n, loss in self.losses if loss.uses_discriminator]
            raise I2IError(
                f"The loss {names[0]!r} trains a discriminator, but the recipe has no "
                "[discriminator] section."
            )
        conditional = {loss.conditional for loss in adversarial}
        if len(conditional) > 1:
            raise I2IError(
                "Conditional and unconditional adversarial losses cannot share one "
                "discriminator: use either 'cgan' or 'gan'."
            )
        return parts.discriminator(parts.output_nc + (parts.input_nc if conditional.pop() else 0))

    def networks(self) -> dict[str, nn.Module]:
        nets = {"generator": self.generator}
        if self.discriminator is not None:
            nets["discriminator"] = self.discriminator
        return nets

    def io(self, direction: str = "AtoB") -> dict[str, int]:
        self.translator(direction)  # refuses BtoA
        return {"input_nc": self.input_nc, "output_nc": self.output_nc}

    def owned_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters owned by the losses (e.g. BicycleGAN's encoder)."""
        return [p for _, loss in self.losses for p in loss.parameters() if p.requires_grad]

    def optimiser_groups(self) -> dict[str, OptimiserGroup]:
        groups = {"G": OptimiserGroup(list(self.generator.parameters()))}
        if self.discriminator is not None:
            groups["D"] = OptimiserGroup(list(self.discriminator.parameters()), lr="lr_D")
        owned = self.owned_parameters()
        if owned:  # stepped together with G, at G's learning rate
            groups["L"] = OptimiserGroup(owned, logged=False)
        return groups

    def replicated(self) -> list[nn.Module]:
        return list(self.networks().values())

    def checkpoint_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"losses": [loss.state_dict() for _, loss in self.losses]}
        if self.discriminator is not None:
            state["discriminator"] = self.discriminator.state_dict()
        return state

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        if self.discriminator is not None:
            self.discriminator.load_state_dict(state["discriminator"])
        loss_states = state.get("losses", [{} for _ in self.losses])
        for (_, loss), loss_state in zip(self.losses, loss_states, strict=True):
            loss.load_state_dict(loss_state)

    def train_step(self, batch: Mapping[str, Any], tools: StepTools) -> dict[str, Tensor]:
        G = tools.replica(self.generator)
        D = tools.replica(self.discriminator) if self.discriminator is not None else None
        real_A = tools.inputs(batch["A"])
        real_B = tools.inputs(batch["B"])
        z = tools.sample_z(real_A.shape[0])
        fake_B = generate(G, real_A, z)
        ctx = StepContext(real_A, real_B, G, D, fake_B, z, tools.sample_z)

        if D is not None:
            opt_D = tools.optimisers["D"]
            set_requires_grad(D, True)
            opt_D.zero_grad(set_to_none=True)
            terms = [t for _, loss in self.losses if (t := loss.discriminator_loss(ctx)) is not None]
            if terms:
                loss_D = torch.stack(terms).sum()
                tools.backward(loss_D)
                if tools.accept(loss_D):
                    opt_D.step()
                ctx.log("D_total", loss_D)
            set_requires_grad(D, False)

        ctx.discriminator = self.discriminator  # frozen: called without DDP (see StepTools.replica)
        generator_side = [opt for name, opt in tools.optimisers.items() if name != "D"]  # G, losses' nets
        for optimiser in generator_side:
            optimiser.zero_grad(set_to_none=True)
        total = None
        for name, loss in self.losses:
            term = loss.generator_loss(ctx)
            if term is None:
                continue
            ctx.log(f"G_{name}", term)
            weighted = loss.weight * term
            total = weighted if total is None else total + weighted
        if total is None:
            raise I2IError("None of the recipe's losses gives the generator anything to learn.")
        tools.backward(total)
        tools.sync_gradients()
        if tools.accept(total):
            for optimiser in generator_side:
                optimiser.step()
        ctx.log("G_total", total)
        return ctx.logs


@hookimpl
def i2i_register_models(registry) -> None:
    registry.add("pix2pix", Pix2Pix)
