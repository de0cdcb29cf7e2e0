"""An example i2i plugin: a generator, a loss and a model, registered through the public hooks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

import i2i


class NoiseEncoderDecoder(nn.Module):
    """Encoder-decoder whose input is the image plus a broadcast latent code."""

    def __init__(self, input_nc: int, output_nc: int, latent_dim: int, ngf: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim  # > 0: the i2i training loop passes z to forward()
        self.size_multiple = 4
        self.net = nn.Sequential(
            nn.Conv2d(input_nc + latent_dim, ngf, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(ngf, ngf * 2, 4, 2, 1),
            nn.InstanceNorm2d(ngf * 2),
            nn.ReLU(),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1),
            nn.InstanceNorm2d(ngf),
            nn.ReLU(),
            nn.ConvTranspose2d(ngf, output_nc, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        planes = z[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return self.net(torch.cat([x, planes], dim=1))


def noise_encoder_decoder(input_nc: int, output_nc: int, latent_dim: int = 8, ngf: int = 32) -> nn.Module:
    """Small encoder-decoder with a latent code z concatenated to the input."""
    return NoiseEncoderDecoder(input_nc, output_nc, latent_dim, ngf)


class LatentSpreadLoss(i2i.Loss):
    """Hinge on the spread of two samples: max(0, margin - |G(A,z1) - G(A,z2)| / |z1 - z2|)."""

    def __init__(self, weight: float, margin: float) -> None:
        super().__init__(weight)
        self.margin = margin

    def generator_loss(self, ctx: i2i.StepContext) -> Tensor | None:
        if ctx.z is None:  # a generator without a latent code has nothing to spread
            return None
        other, z2 = ctx.sample()  # a second output with a fresh code, shared with other losses
        ratio = (ctx.fake_B - other).abs().mean() / (ctx.z - z2).abs().mean()
        ctx.log("spread_ratio", ratio)
        return torch.relu(self.margin - ratio)


def latent_spread(weight: float = 1.0, margin: float = 0.2) -> i2i.Loss:
    """Pushes two outputs for one input apart until they differ by margin per unit of code distance."""
    return LatentSpreadLoss(weight, margin)


class Regression(i2i.TrainingModel):
    """A model with its own step: the generator alone, trained on L1 (or L2) to the target.

    The baseline every adversarial method is measured against, and the smallest complete model:
    one network, one optimiser, a step that is four lines.
    """

    uses_losses = False  # no [[losses]]: the distance is a [model] setting

    def __init__(self, distance: str = "l1") -> None:
        super().__init__()
        if distance not in ("l1", "l2"):
            raise i2i.I2IError(f"model.distance = {distance!r}: use l1 or l2.")
        self.distance = distance

    def build(self, parts: i2i.ModelParts) -> None:
        self.channels = {"input_nc": parts.input_nc, "output_nc": parts.output_nc}
        self.generator = parts.generator(parts.input_nc, parts.output_nc)
        parts.initialise(self.generator)

    def io(self, direction: str = "AtoB") -> dict[str, int]:
        return dict(self.channels)

    def optimiser_groups(self) -> dict[str, i2i.OptimiserGroup]:
        return {"G": i2i.OptimiserGroup(list(self.generator.parameters()))}

    def checkpoint_state(self) -> dict:
        return {}  # the generator is checkpointed by i2i as the A-to-B translator

    def load_checkpoint_state(self, state) -> None:
        pass

    def train_step(self, batch, tools: i2i.StepTools) -> dict[str, Tensor]:
        real_A, real_B = tools.inputs(batch["A"]), tools.inputs(batch["B"])
        fake_B = i2i.generate(tools.replica(self.generator), real_A, tools.sample_z(real_A.shape[0]))
        error = fake_B - real_B
        loss = error.abs().mean() if self.distance == "l1" else error.pow(2).mean()
        tools.optimisers["G"].zero_grad(set_to_none=True)
        tools.backward(loss)
        if tools.accept(loss):
            tools.optimisers["G"].step()
        return {f"G_{self.distance}": loss.detach(), "G_total": loss.detach()}


@i2i.hookimpl
def i2i_register_models(registry):
    registry.add("regression", Regression)


@i2i.hookimpl
def i2i_register_generators(registry):
    registry.add("noise_encoder_decoder", noise_encoder_decoder)


@i2i.hookimpl
def i2i_register_losses(registry):
    registry.add("latent_spread", latent_spread, uses_discriminator=False)  # G's term only, no D
