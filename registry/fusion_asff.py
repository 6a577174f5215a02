"""``asff``: adaptively spatial feature fusion (Liu et al., arXiv 1911.09516, 2019).

Levels first projected to ``out_channels`` d by 1x1 laterals (with bias), so any widths
work. For each target level l, every level n is brought to l's resolution as the paper's
Sec. 3.1 describes: from a coarser level (n > l), a 1x1 conv then nearest interpolation;
from a finer one (n < l), l - n - 1 stride-2 max poolings (3x3) then a stride-2 3x3 conv;
the same level as it is. All convs d -> d with bias, each resized to the exact size.
Weights: one 1x1 conv d -> 1 (with bias) per (target, source) gives a logit map, and a
softmax over the L sources makes the per-pixel weights (sum to one at every pixel).
Output: y_l = sum_n alpha_n^l * x^{n -> l}, one map per level.
Parameters: sum(C_i) * d + L * d + L (L - 1) / 2 * ((d^2 + d) + (9 d^2 + d)) + L^2 (d + 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusion_lab.registries import FUSIONS
from fusion_lab.registry._common import resize_to
from fusion_lab.registry.fusion_necks import check_levels


class _Resample(nn.Module):
    """Level ``source`` brought to level ``target``'s resolution (the paper's rules)."""

    def __init__(self, channels: int, source: int, target: int):
        super().__init__()
        self.pools = max(0, target - source - 1)
        if source > target:  # coarser: 1x1 conv, then interpolate
            self.conv = nn.Conv2d(channels, channels, 1)
        elif source < target:  # finer: max pools, then a stride-2 3x3 conv
            self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        else:
            self.conv = None

    def forward(self, x: torch.Tensor, size) -> torch.Tensor:
        for _ in range(self.pools):
            x = F.max_pool2d(x, 3, stride=2, padding=1)
        if self.conv is not None:
            x = self.conv(x)
        return resize_to(x, size)


@FUSIONS.register("asff", paper="Liu et al., arXiv 1911.09516, 2019")
class ASFFFusion(nn.Module):
    """Adaptively spatial feature fusion: per-pixel softmax weights over all levels."""

    def __init__(self, in_channels: list[int], out_channels: int = 256):
        super().__init__()
        check_levels("asff", in_channels)
        d, n = out_channels, len(in_channels)
        self.laterals = nn.ModuleList(nn.Conv2d(c, d, 1) for c in in_channels)
        self.resample = nn.ModuleList(
            nn.ModuleList(_Resample(d, src, tgt) for src in range(n)) for tgt in range(n))
        self.weight_convs = nn.ModuleList(
            nn.ModuleList(nn.Conv2d(d, 1, 1) for _ in range(n)) for _ in range(n))
        self.out_channels = [d] * n

    def _resampled(self, feats: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        lat = [conv(f) for conv, f in zip(self.laterals, feats)]
        return [[r(x, lat[tgt].shape[-2:]) for r, x in zip(self.resample[tgt], lat)]
                for tgt in range(len(lat))]

    def level_weights(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per target level, the (B, L, H, W) weights over the L source levels."""
        return [self._weights(tgt, xs) for tgt, xs in enumerate(self._resampled(feats))]

    def _weights(self, tgt: int, xs: list[torch.Tensor]) -> torch.Tensor:
        logits = torch.cat([conv(x) for conv, x in zip(self.weight_convs[tgt], xs)], dim=1)
        return torch.softmax(logits, dim=1)  # over the levels, per pixel

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for tgt, xs in enumerate(self._resampled(feats)):
            w = self._weights(tgt, xs)  # (B, L, H, W)
            out.append(sum(w[:, n : n + 1] * x for n, x in enumerate(xs)))
        return out
