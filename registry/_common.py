"""Small helpers shared by the components."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# CN-CNN's paper (cross-layer navigation CNN), the source of the built-in components
CN_CNN = "Guo et al., ACM MM Asia 2021"


def resize_to(x: torch.Tensor, size: tuple[int, int] | torch.Size, mode: str = "nearest"):
    """Resize a map to an exact spatial size (no-op when it already has it).

    Resizing to the target's actual size, not by a fixed factor, keeps odd input sizes
    (e.g. 97x131, where stage ratios are not exact powers of two) working.
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=tuple(size), mode="nearest")
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False)
