"""CBAM's two halves (Woo et al., ECCV 2018), as alternatives to CN-CNN's CA and SA.

Per level, on the fused map F (C, H, W), following the paper's Eq. 2 and 3:
- ``cbam_channel``: Mc = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F))), the MLP shared by both
  pools: W1 (C/r -> C) after ReLU after W0 (C -> C/r), no biases (the equation has none);
  output Mc * F. Parameters per level: 2 * C * (C // r).
- ``cbam_spatial``: Ms = sigmoid(f7x7([AvgPool_c(F); MaxPool_c(F)])), pools along the
  channel axis, one 7x7 conv 2 -> 1 (padding 3, one bias); output Ms * F, and Ms is the
  "sa" mask (``fusionlab viz``, ``table --attention``). Parameters per level: 2 * 49 + 1.
Unlike CN-CNN's CA there is no link between levels: each level is attended on its own.
"""

from __future__ import annotations

import torch
from torch import nn

from fusion_lab.registries import ATTENTIONS

CBAM = "Woo et al., ECCV 2018"


class _ChannelGate(nn.Module):
    def __init__(self, channels: int, reduction: int):
        super().__init__()
        mid = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(channels, mid, 1, bias=False), nn.ReLU(inplace=True),
                                 nn.Conv2d(mid, channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        mx = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        return torch.sigmoid(avg + mx)  # (B, C, 1, 1)


class _SpatialGate(nn.Module):
    def __init__(self, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))  # (B, 1, H, W)


@ATTENTIONS.register("cbam_channel", paper=CBAM)
class CBAMChannel(nn.Module):
    """CBAM's channel half: shared MLP over average- and max-pooled maps (alternative to ca)."""

    masks = ("ca",)

    def __init__(self, channels: list[int], reduction: int = 16):
        super().__init__()
        self.gates = nn.ModuleList(_ChannelGate(c, reduction) for c in channels)

    @staticmethod
    def check_args(reduction: int = 16, **_) -> list[str]:
        if not isinstance(reduction, int) or isinstance(reduction, bool) or reduction < 1:
            return [f"attention 'cbam_channel': reduction must be a positive integer (the "
                    f"paper: 16), got {reduction!r}"]
        return []

    def forward(self, maps: list[torch.Tensor]):
        masks = [g(x) for g, x in zip(self.gates, maps)]
        return [m * x for m, x in zip(masks, maps)], {"ca": masks}


@ATTENTIONS.register("cbam_spatial", paper=CBAM)
class CBAMSpatial(nn.Module):
    """CBAM's spatial half: 7x7 conv over channel-wise average and max (alternative to sa)."""

    masks = ("sa",)

    def __init__(self, channels: list[int], kernel_size: int = 7):
        super().__init__()
        self.gates = nn.ModuleList(_SpatialGate(kernel_size) for _ in channels)

    @staticmethod
    def check_args(kernel_size: int = 7, **_) -> list[str]:
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            return [f"attention 'cbam_spatial': kernel_size must be a positive odd integer "
                    f"(the paper: 7), got {kernel_size!r}"]
        return []

    def forward(self, maps: list[torch.Tensor]):
        masks = [g(x) for g, x in zip(self.gates, maps)]
        return [m * x for m, x in zip(masks, maps)], {"sa": masks}
