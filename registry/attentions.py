"""Attention of CN-CNN's LH pathway (navigation from low to high level, Sec. 2.3).

Per level, on the fused map F:
- SA (spatial): a 3x3 transposed conv C -> 1 (stride 1, padding 1) and a sigmoid: (1, H, W).
- CA (channel): global average pool, 1x1 conv C -> C/r, ReLU, 1x1 conv C/r -> C, sigmoid:
  (C, 1, 1). Low-to-high link: CA4 := (CA4 + CA3) / 2, then CA5 := (CA5 + CA4) / 2.
- SA+CA: SA * F + CA * F.  SA: SA * F.  CA: CA * F.  none: F.
"""

from __future__ import annotations

import torch
from torch import nn

from fusion_lab.registries import ATTENTIONS
from fusion_lab.registry._common import CN_CNN


class SpatialMask(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(channels, 1, 3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x))  # (B, 1, H, W)


class ChannelMask(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        mid = max(1, channels // reduction)
        self.net = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, mid, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, C, 1, 1)


class LevelAttention(nn.Module):
    """Spatial and/or channel attention per level, with CA's low-to-high link.

    The registered classes take ``reduction`` and ``link`` only (a typo in a study's
    ``attention_args`` is caught at validation) and name the masks they return in
    ``masks`` (the ATTENTIONS contract, e.g. ``fusionlab viz`` draws the "sa" ones).

    Args:
        channels: channels of each level's map, low level first.
        spatial: use SA.
        channel: use CA.
        reduction: CA's bottleneck ratio (256 -> 16 in the paper's code).
        link: average each level's CA mask with the (already linked) one below it.
    """

    def __init__(self, channels: list[int], spatial: bool, channel: bool,
                 reduction: int = 16, link: bool = True):
        super().__init__()
        self.sa = nn.ModuleList(SpatialMask(c) for c in channels) if spatial else None
        self.ca = nn.ModuleList(ChannelMask(c, reduction) for c in channels) if channel else None
        if channel and link and len(set(channels)) > 1:
            raise ValueError(
                f"the CA low-to-high link needs equal channels on every level, got {channels}; "
                "set attention_args: {link: false}"
            )
        self.link = link

    def forward(self, maps: list[torch.Tensor]):
        masks: dict[str, list[torch.Tensor]] = {}
        if self.sa is not None:
            masks["sa"] = [m(x) for m, x in zip(self.sa, maps)]
        if self.ca is not None:
            ca = [m(x) for m, x in zip(self.ca, maps)]
            if self.link:
                for i in range(1, len(ca)):
                    ca[i] = (ca[i] + ca[i - 1]) / 2
            masks["ca"] = ca
        if not masks:
            return list(maps), masks
        out = []
        for i, x in enumerate(maps):
            mask = sum(masks[k][i] for k in masks)  # SA * F + CA * F = (SA + CA) * F
            out.append(x * mask)
        return out, masks


@ATTENTIONS.register("none")
class NoAttention(LevelAttention):
    """No attention: the fused maps go to the heads unchanged."""

    masks = ()

    def __init__(self, channels: list[int], reduction: int = 16, link: bool = True):
        super().__init__(channels, spatial=False, channel=False, reduction=reduction, link=link)


@ATTENTIONS.register("sa", paper=CN_CNN)
class SpatialAttention(LevelAttention):
    """Spatial attention only (3x3 transposed conv to one sigmoid mask per level)."""

    masks = ("sa",)

    def __init__(self, channels: list[int], reduction: int = 16, link: bool = True):
        super().__init__(channels, spatial=True, channel=False, reduction=reduction, link=link)


@ATTENTIONS.register("ca", paper=CN_CNN)
class ChannelAttention(LevelAttention):
    """Channel attention only, with the low-to-high link between levels."""

    masks = ("ca",)

    def __init__(self, channels: list[int], reduction: int = 16, link: bool = True):
        super().__init__(channels, spatial=False, channel=True, reduction=reduction, link=link)


@ATTENTIONS.register("sa+ca", paper=CN_CNN)
class SpatialChannelAttention(LevelAttention):
    """Spatial and channel attention, masks added then applied (CN-CNN's LH pathway)."""

    masks = ("sa", "ca")

    def __init__(self, channels: list[int], reduction: int = 16, link: bool = True):
        super().__init__(channels, spatial=True, channel=True, reduction=reduction, link=link)
