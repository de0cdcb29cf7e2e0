"""PatchNCE, the contrastive loss of CUT (Park, Efros, Zhang, Zhu: "Contrastive Learning for
Unpaired Image-to-Image Translation", ECCV 2020).

A translated patch should be more like the input patch at the same place than like any other input
patch. Both images go through G's encoder; at a few layers, the same random locations are sampled
in each, projected by a small MLP head and L2-normalised; the loss is InfoNCE with the input's patch
at the same location as the positive and its other sampled patches as the negatives.

Pieces, for a model plugin to combine::

    layers = nce_layers(G)                       # [0, 4, 7, 10, 14] for resnet_9blocks
    head = PatchSampleMLP(channels=encoder_channels(G, layers, input_nc))
    keys, ids = head(G.encode(real_A, layers))   # random locations, shared with the query
    queries, _ = head(G.encode(fake_B, layers), ids)
    loss = sum(patch_nce_loss(q, k) for q, k in zip(queries, keys)) / len(layers)

(:func:`multilayer_patch_nce` is that last block.) Randomness comes from torch's global CPU RNG,
so a resumed run samples the same locations as an uninterrupted one, on any device.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from i2i_pix2pix.generators import ResnetBlock
from torch import Tensor, nn

from i2i import I2IError, init_weights

#: CUT's number of patches per layer and temperature.
NUM_PATCHES = 256
TAU = 0.07
#: What the masked-out self-similarities are set to: below any cosine similarity (>= -1), so after
#: the division by tau they contribute nothing to the softmax, while staying finite.
_EXCLUDED = -10.0


def nce_layers(generator: nn.Module) -> list[int]:
    """CUT's five encoder layers, as indices into our ResNet generator's ``model``.

    CUT takes layers 0, 4, 8, 12 and 16 of its resnet_9blocks: the padded input image, the first
    and the second downsampling conv, the first and the fifth residual block. Its downsampling
    levels are four layers long (conv, norm, ReLU, blur-pool), ours three (stride-2 conv, norm,
    ReLU), so the same roles sit at 0, 4, 7, 10 and 14 here, which is what this returns for 9
    blocks (found from the layer types, not hard-coded). With fewer than five blocks the last block
    stands in for the fifth; with none, only the first three layers are used.
    """
    model = getattr(generator, "model", None)
    if not callable(getattr(generator, "encode", None)) or not isinstance(model, nn.Sequential):
        raise I2IError(
            f"PatchNCE needs a generator with encode(x, layers) over a Sequential 'model' (the "
            f"resnet generators), not {type(generator).__name__}; use resnet_9blocks or resnet."
        )
    downs = [i for i, layer in enumerate(model) if isinstance(layer, nn.Conv2d) and layer.stride == (2, 2)]
    blocks = [i for i, layer in enumerate(model) if isinstance(layer, ResnetBlock)]
    layers = [0, *downs[:2]]
    if blocks:
        layers.append(blocks[0])
        fifth = blocks[min(4, len(blocks) - 1)]
        if fifth != blocks[0]:
            layers.append(fifth)
    return layers


@torch.no_grad()
def encoder_channels(generator: nn.Module, layers: Sequence[int], input_nc: int) -> list[int]:
    """The channel count of each of ``layers``, found by encoding a small blank image.

    The generator is run in eval mode (batch-norm statistics and dropout untouched) and each module's
    mode is restored afterwards, so this can run before training without changing anything.
    """
    modes = {module: module.training for module in generator.modules()}
    try:
        generator.eval()
        param = next(generator.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        feats = generator.encode(torch.zeros(1, input_nc, 16, 16, device=device), list(layers))
    finally:
        for module, training in modes.items():
            module.training = training
    return [int(f.shape[1]) for f in feats]


class PatchSampleMLP(nn.Module):
    """Samples patch locations from feature maps and projects them with one small MLP per layer.

    ``forward(feats, patch_ids=None)`` takes one (B, C, H, W) map per layer and returns, per layer,
    the projected features (B, P, units), L2-normalised, and the sampled flat locations (P,) (a
    LongTensor into H*W, the same for every image of the batch). Pass the returned ids back in to
    sample the same locations from another image (the output of G, for the input's keys).

    Each MLP is Linear(C, units), ReLU, Linear(units, units), initialised N(0, 0.02) as in CUT.
    They are built from ``channels`` when given, or else lazily on the first call from the maps'
    channel counts; build them (``channels=`` or :meth:`build`) before creating an optimiser, which
    would otherwise miss their parameters. ``mlp=False`` only samples and normalises.
    """

    def __init__(
        self,
        num_patches: int = NUM_PATCHES,
        units: int = 256,
        channels: Sequence[int] | None = None,
        mlp: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("num_patches", num_patches), ("units", units)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise I2IError(f"PatchSampleMLP's {name} must be a positive integer, got {value!r}.")
        self.num_patches = num_patches
        self.units = units
        self.mlp = bool(mlp)
        self.mlps = nn.ModuleList()
        self.channels: list[int] | None = None
        if channels is not None:
            self.build(channels)

    def build(self, channels: Sequence[int], device: torch.device | str | None = None) -> None:
        """Make the MLPs for layers with these channel counts (once; later calls must agree)."""
        channels = [int(c) for c in channels]
        if self.channels is not None:
            if channels != self.channels:
                raise I2IError(
                    f"PatchSampleMLP was built for feature maps with {self.channels} channels, but "
                    f"got maps with {channels}; use the same encoder layers every time."
                )
            return
        self.channels = channels
        if self.mlp:
            for c in channels:
                head = nn.Sequential(nn.Linear(c, self.units), nn.ReLU(), nn.Linear(self.units, self.units))
                self.mlps.append(init_weights(head, "normal", 0.02).to(device))

    def forward(
        self, feats: Sequence[Tensor], patch_ids: Sequence[Tensor] | None = None
    ) -> tuple[list[Tensor], list[Tensor]]:
        if patch_ids is not None and len(patch_ids) != len(feats):
            raise I2IError(f"PatchSampleMLP got {len(feats)} feature maps but {len(patch_ids)} sets of ids.")
        self.build([f.shape[1] for f in feats], device=feats[0].device if feats else None)
        samples, ids = [], []
        for layer, feat in enumerate(feats):
            b, c, h, w = feat.shape
            flat = feat.permute(0, 2, 3, 1).reshape(b, h * w, c)
            if patch_ids is None:
                chosen = torch.randperm(h * w)[: min(self.num_patches, h * w)]  # CPU RNG: any device
            else:
                chosen = patch_ids[layer].cpu()
            picked = flat[:, chosen.to(feat.device), :]
            if self.mlp:
                picked = self.mlps[layer](picked)
            samples.append(F.normalize(picked, dim=-1))  # unit length: dot products are cosines
            ids.append(chosen)
        return samples, ids

    def extra_repr(self) -> str:
        return f"num_patches={self.num_patches}, units={self.units}, channels={self.channels}"


def patch_nce_loss(query: Tensor, key: Tensor, tau: float = TAU) -> Tensor:
    """InfoNCE over patches: each query's positive is the key at the same location.

    ``query`` and ``key`` are (B, P, C) (or (P, C), one image) of normalised features at the same
    P locations. The negatives of a query are the keys at the image's other P - 1 locations, never
    other images' (CUT's default). Returns the mean cross-entropy of picking the positive from the
    P logits divided by ``tau``. The key is detached: the loss trains what produced the query
    (the output's path through G and the head), as in CUT.
    """
    if query.dim() == 2:
        query, key = query[None], key[None]
    if query.dim() != 3 or query.shape != key.shape:
        raise I2IError(
            f"patch_nce_loss needs query and key of the same shape (B, P, C) or (P, C), got "
            f"{tuple(query.shape)} and {tuple(key.shape)}."
        )
    if not tau > 0:
        raise I2IError(f"The PatchNCE temperature tau must be positive, got {tau!r}.")
    key = key.detach()
    b, p, _ = query.shape
    positive = (query * key).sum(-1, keepdim=True)  # (B, P, 1)
    negative = torch.bmm(query, key.transpose(1, 2))  # (B, P, P): query i against key j
    same = torch.eye(p, dtype=torch.bool, device=query.device)
    negative = negative.masked_fill(same, _EXCLUDED)  # the positive is not its own negative
    logits = torch.cat([positive, negative], dim=2).reshape(b * p, p + 1) / tau
    target = torch.zeros(b * p, dtype=torch.long, device=query.device)
    return F.cross_entropy(logits, target)


def multilayer_patch_nce(
    head: PatchSampleMLP,
    query_feats: Sequence[Tensor],
    key_feats: Sequence[Tensor],
    tau: float = TAU,
) -> Tensor:
    """PatchNCE averaged over layers: keys sampled at random locations, queries at the same ones.

    ``query_feats`` are G's encoder maps of the output, ``key_feats`` those of the input (both from
    ``G.encode(x, layers)``).
    """
    if len(query_feats) != len(key_feats) or not query_feats:
        raise I2IError(
            f"multilayer_patch_nce needs as many query as key maps (at least one), got "
            f"{len(query_feats)} and {len(key_feats)}."
        )
    keys, ids = head(key_feats)
    queries, _ = head(query_feats, ids)
    total = sum(patch_nce_loss(q, k, tau) for q, k in zip(queries, keys, strict=True))
    return total / len(keys)
