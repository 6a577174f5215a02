"""Small helpers shared by the components."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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


def level_names(reductions: list[int]) -> list[str]:
    """Names of tapped levels from their strides: stride 8 -> 's3', 16 -> 's4', 32 -> 's5'."""
    names = []
    for r in reductions:
        k = math.log2(r)
        names.append(f"s{int(k)}" if k.is_integer() else f"r{r}")
    if len(set(names)) != len(names):  # two taps at one stride: number them instead
        names = [f"l{i}" for i in range(len(reductions))]
    return names
