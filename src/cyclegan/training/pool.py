"""History of generated images for discriminator updates (Shrivastava et al., CycleGAN §4).

Same policy as the reference ``ImagePool``: until ``pool_size`` images are stored each new image
is stored and returned; afterwards, with probability 0.5 a random stored image is returned and
replaced by the new one, else the new one is returned. Randomness comes from the pool's own
``torch.Generator`` so ``state_dict()`` (images + generator state) makes resume bit-exact.
"""

from __future__ import annotations

from typing import Any

import torch


class ImagePool:
    """``pool.query(fakes) -> fakes'`` (same shape, detached); ``pool_size=0`` passes through."""

    def __init__(self, pool_size: int = 50, seed: int = 0):
        if pool_size < 0:
            raise ValueError(f"loss.pool_size: must be >= 0, got {pool_size}")
        self.pool_size = pool_size
        self.generator = torch.Generator().manual_seed(seed)
        self.images: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Return a batch mixing the new ``images`` with stored older ones."""
        images = images.detach()
        if self.pool_size == 0:
            return images
        out = []
        for image in images:
            if len(self.images) < self.pool_size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand(1, generator=self.generator).item() > 0.5:
                idx = int(torch.randint(0, self.pool_size, (1,), generator=self.generator).item())
                old = self.images[idx]
                self.images[idx] = image.clone()
                out.append(old.to(device=image.device, dtype=image.dtype))
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        """Stored images (on CPU) and the generator state: plain tensors, checkpoint-safe."""
        return {
            "pool_size": self.pool_size,
            "images": [img.cpu() for img in self.images],
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["pool_size"] != self.pool_size:
            raise ValueError(
                f"ImagePool: the saved pool holds up to {state['pool_size']} images but "
                f"loss.pool_size is {self.pool_size}; resume with the same loss.pool_size"
            )
        self.images = [img.clone() for img in state["images"]]
        self.generator.set_state(state["generator"])
