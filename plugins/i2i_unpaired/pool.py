"""CycleGAN's history of generated images (Shrivastava et al. 2017; Zhu et al. 2017, section 4).

A discriminator trained only on the generator's latest outputs chases it and oscillates; showing it
older fakes half of the time steadies training. The pool draws from torch's global RNG, whose state
a checkpoint already restores, and its stored images are part of :meth:`ImagePool.state_dict`, so a
resumed run hands the discriminator exactly the fakes an uninterrupted one would.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from i2i import I2IError


class ImagePool:
    """Up to ``size`` past fakes; ``query`` returns the batch the discriminator should see.

    Per image of the batch: while the pool is not full, the image is stored and returned; once it
    is full, with probability 0.5 a stored image chosen at random is returned and the new one takes
    its place, otherwise the new image is returned. ``size = 0`` turns the pool off (the batch is
    returned as it is). Images are stored and returned detached: the pool feeds D's update only.
    """

    def __init__(self, size: int = 50) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise I2IError(f"The image pool size must be an integer >= 0 (CycleGAN: 50), not {size!r}.")
        self.size = size
        self.images: list[Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: Tensor) -> Tensor:
        """The batch ``images`` (N, C, H, W), with some images swapped for older fakes."""
        images = images.detach()
        if self.size == 0:
            return images
        out = []
        for image in images:
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif bool(torch.rand(()) < 0.5):
                slot = int(torch.randint(self.size, ()))
                old = self.images[slot].to(image.device)
                self.images[slot] = image.clone()
                out.append(old)
            else:
                out.append(image)
        return torch.stack(out)

    __call__ = query

    def state_dict(self) -> dict[str, Any]:
        """The size and the stored images (on the CPU), for a checkpoint."""
        return {"size": self.size, "images": [image.detach().cpu().clone() for image in self.images]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; the images move to the device on use."""
        try:
            size, images = state["size"], list(state["images"])
        except (KeyError, TypeError) as exc:
            raise I2IError(
                f"The image pool's saved state is incomplete ({type(exc).__name__}: {exc}); expected "
                "the keys 'size' and 'images'. The checkpoint was not written by this pool."
            ) from None
        if size != self.size or len(images) > self.size:
            raise I2IError(
                f"The checkpoint's image pool holds {len(images)} images of a pool of size {size}, "
                f"but this run's pool has size {self.size}; resume with the same pool size."
            )
        self.images = [torch.as_tensor(image).clone() for image in images]

    def __repr__(self) -> str:
        return f"ImagePool(size={self.size}, stored={len(self.images)})"
