"""Multi-level necks from detection and segmentation, as fusions: ``concat`` and ``panet``.

``bifpn`` and ``asff`` are in their own files. Every neck takes any backbone's levels (two
to five, low level first, any widths) and resizes to each target's exact size, so odd
input sizes work.

- ``concat`` (hypercolumns, Hariharan et al., CVPR 2015): every level resized (bilinear)
  to the lowest level's size, concatenated, one 1x1 conv (with bias) to ``out_channels``.
  One map out. Parameters: sum(C_i) * d + d.
- ``panet`` (Liu et al., CVPR 2018; mmdetection's PAFPN): FPN first (1x1 laterals with
  bias, top-down P_i = L_i + up(P_{i+1}) by nearest resizing, a 3x3 conv on each merged
  map), then PANet's bottom-up path augmentation: N_low = P_low,
  N_{i+1} = ReLU(conv3x3(P_{i+1} + ReLU(conv3x3_stride2(N_i)))), all 3x3 convs d -> d
  with bias. L maps out. Parameters: sum(C_i) * d + L * d + (3L - 2) * (9 d^2 + d).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusion_lab.errors import ConfigError
from fusion_lab.registries import FUSIONS
from fusion_lab.registry._common import resize_to


def check_levels(name: str, in_channels: list[int]) -> None:
    """A neck fuses two or more levels: one level is a config mistake, said in one line."""
    if len(in_channels) < 2:
        raise ConfigError(f"fusion {name!r} fuses two or more levels, got {len(in_channels)} "
                          f"(channels {list(in_channels)}); set model.out_indices to two or "
                          "more backbone stages, or use fusion 'none'")


@FUSIONS.register("concat", paper="Hariharan et al., CVPR 2015")
class ConcatFusion(nn.Module):
    """Hypercolumns: every level resized to the lowest level's size, concatenated, 1x1 conv."""

    def __init__(self, in_channels: list[int], out_channels: int = 256,
                 upsample: str = "bilinear"):
        super().__init__()
        check_levels("concat", in_channels)
        self.proj = nn.Conv2d(sum(in_channels), out_channels, 1)
        self.upsample = upsample
        self.out_channels = [out_channels]

    @staticmethod
    def check_args(upsample: str = "bilinear", **_) -> list[str]:
        if upsample not in ("nearest", "bilinear"):
            return [f"fusion 'concat': upsample must be 'nearest' or 'bilinear', got {upsample!r}"]
        return []

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        size = feats[0].shape[-2:]
        return [self.proj(torch.cat([resize_to(f, size, self.upsample) for f in feats], 1))]


def conv3x3(channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride=stride, padding=1)


@FUSIONS.register("panet", paper="Liu et al., CVPR 2018")
class PANetFusion(nn.Module):
    """FPN top-down, then PANet's bottom-up path augmentation (mmdetection's PAFPN)."""

    def __init__(self, in_channels: list[int], out_channels: int = 256):
        super().__init__()
        check_levels("panet", in_channels)
        d, n = out_channels, len(in_channels)
        self.laterals = nn.ModuleList(nn.Conv2d(c, d, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(conv3x3(d) for _ in range(n))
        self.down_convs = nn.ModuleList(conv3x3(d, stride=2) for _ in range(n - 1))
        self.pa_convs = nn.ModuleList(conv3x3(d) for _ in range(n - 1))
        self.out_channels = [d] * n

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        lat = [conv(f) for conv, f in zip(self.laterals, feats)]
        for i in range(len(lat) - 2, -1, -1):  # top-down, high to low: P_i = L_i + up(P_i+1)
            lat[i] = lat[i] + resize_to(lat[i + 1], lat[i].shape[-2:])
        p = [conv(x) for conv, x in zip(self.fpn_convs, lat)]
        n = [p[0]]  # bottom-up, low to high: N_low = P_low
        for i in range(1, len(p)):
            down = resize_to(F.relu(self.down_convs[i - 1](n[-1])), p[i].shape[-2:])
            n.append(F.relu(self.pa_convs[i - 1](p[i] + down)))
        return n
