"""``bifpn``: EfficientDet's BiFPN layer (Tan et al., CVPR 2020), stacked ``repeats`` times.

Levels first projected to ``out_channels`` d (1x1 conv without bias + BN) where their width
differs. Then per layer, with L levels (P_0 lowest) and fast normalised fusion
O = sum_i w_i I_i / (eps + sum_j w_j), w_i = ReLU(learned scalar), eps = 1e-4:
- top-down:  P_i^td  = Conv(fuse(P_i^in, up(P_{i+1}^td)))     for 0 < i < L-1 (P_{L-1}^td = input)
- lowest:    P_0^out = Conv(fuse(P_0^in, up(P_1^td)))
- bottom-up: P_i^out = Conv(fuse(P_i^in, P_i^td, down(P_{i-1}^out))) for 0 < i < L-1
- highest:   P_{L-1}^out = Conv(fuse(P_{L-1}^in, down(P_{L-2}^out)))
Conv is the paper's "depthwise separable convolution for feature fusion, with batch
normalisation and activation": swish on the fused sum, depthwise 3x3 (no bias), pointwise
1x1 (bias), BN. ``up`` is nearest resizing, ``down`` max pooling, both to the exact size.
Nodes per layer: 2L - 2, each 9d + d^2 + d + 2d parameters; fusion weights per layer:
2 (L - 2) + 2 + 3 (L - 2) + 2 = 5L - 6.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusion_lab.errors import ConfigError
from fusion_lab.registries import FUSIONS
from fusion_lab.registry._common import resize_to
from fusion_lab.registry.fusion_necks import check_levels

EPS = 1e-4  # the paper's epsilon


class FastFusion(nn.Module):
    """One BiFPN node: fast normalised fusion of its inputs, then the separable conv."""

    def __init__(self, n_inputs: int, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n_inputs))
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, channels, 1)
        self.bn = nn.BatchNorm2d(channels)

    def normalised_weights(self) -> torch.Tensor:
        w = F.relu(self.weight)  # non-negative
        return w / (w.sum() + EPS)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        w = self.normalised_weights()
        fused = sum(w[i] * x for i, x in enumerate(inputs))
        return self.bn(self.pointwise(self.depthwise(F.silu(fused))))


class BiFPNLayer(nn.Module):
    """One BiFPN layer over L levels of equal width."""

    def __init__(self, levels: int, channels: int):
        super().__init__()
        self.td = nn.ModuleList(FastFusion(2, channels) for _ in range(levels - 2))  # 1..L-2
        self.low = FastFusion(2, channels)
        self.bu = nn.ModuleList(FastFusion(3, channels) for _ in range(levels - 2))  # 1..L-2
        self.high = FastFusion(2, channels)

    def nodes(self) -> list[FastFusion]:
        return [*self.td, self.low, *self.bu, self.high]

    def forward(self, p: list[torch.Tensor]) -> list[torch.Tensor]:
        L = len(p)
        td = {L - 1: p[-1]}
        for i in range(L - 2, 0, -1):  # top-down, intermediate levels
            td[i] = self.td[i - 1]([p[i], resize_to(td[i + 1], p[i].shape[-2:])])
        out = [self.low([p[0], resize_to(td[1], p[0].shape[-2:])])]
        for i in range(1, L - 1):  # bottom-up, intermediate levels
            out.append(self.bu[i - 1]([p[i], td[i], down(out[-1], p[i].shape[-2:])]))
        out.append(self.high([p[-1], down(out[-1], p[-1].shape[-2:])]))
        return out


def down(x: torch.Tensor, size) -> torch.Tensor:
    """Max pooling to a lower level's exact size."""
    return x if tuple(x.shape[-2:]) == tuple(size) else F.adaptive_max_pool2d(x, tuple(size))


@FUSIONS.register("bifpn", paper="Tan et al., CVPR 2020")
class BiFPNFusion(nn.Module):
    """EfficientDet's BiFPN: top-down and bottom-up paths with fast normalised fusion."""

    def __init__(self, in_channels: list[int], out_channels: int = 256, repeats: int = 1):
        super().__init__()
        problems = self.check_args(repeats=repeats)
        if problems:
            raise ConfigError(problems)
        check_levels("bifpn", in_channels)
        d = out_channels
        self.inputs = nn.ModuleList(
            nn.Identity() if c == d else nn.Sequential(nn.Conv2d(c, d, 1, bias=False),
                                                       nn.BatchNorm2d(d))
            for c in in_channels)
        self.layers = nn.ModuleList(BiFPNLayer(len(in_channels), d) for _ in range(repeats))
        self.out_channels = [d] * len(in_channels)

    @staticmethod
    def check_args(repeats: int = 1, **_) -> list[str]:
        if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
            return [f"fusion 'bifpn': repeats must be a positive integer (stacked BiFPN "
                    f"layers; EfficientDet-D0 uses 3), got {repeats!r}"]
        return []

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        p = [proj(f) for proj, f in zip(self.inputs, feats)]
        for layer in self.layers:
            p = layer(p)
        return p
