"""Fusions without recurrence: ``none`` (the top level only) and ``fpn_add``.

``fpn_add`` is the HL ablation of CN-CNN (Table 2): "directly adding the feature maps
together, same as in FPN" (Lin et al., 2017): 1x1 lateral convs to a common width, then
top-down P5 = L5, P4 = L4 + up(P5), P3 = L3 + up(P4), each at its own level's size.
"""

from __future__ import annotations

import torch
from torch import nn

from fusion_lab.registries import FUSIONS
from fusion_lab.registry._common import CN_CNN, resize_to


@FUSIONS.register("none")
class NoFusion(nn.Module):
    """No fusion: only the highest level is used (the fine-tuned baseline)."""

    def __init__(self, in_channels: list[int], out_channels: int = 256):
        super().__init__()
        self.out_channels = [in_channels[-1]]

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [feats[-1]]


@FUSIONS.register("fpn_add", paper=CN_CNN)
class FPNAddFusion(nn.Module):
    """FPN-style top-down addition of 1x1-projected levels (CN-CNN's HL ablation)."""

    def __init__(self, in_channels: list[int], out_channels: int = 256, upsample: str = "nearest"):
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.upsample = upsample
        self.out_channels = [out_channels] * len(in_channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        lat = [conv(f) for conv, f in zip(self.laterals, feats)]
        out = [lat[-1]]  # P_top = L_top
        for x in reversed(lat[:-1]):  # high to low: P_i = L_i + up(P_{i+1})
            out.append(x + resize_to(out[-1], x.shape[-2:], self.upsample))
        return out[::-1]  # low level first
