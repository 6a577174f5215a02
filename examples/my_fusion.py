"""``max_fuse``: an example fusion strategy defined in a user's own file (a plugin).

Every level is projected to a common width by a 1x1 conv + BN + ReLU at its own
resolution, resized (nearest) to the lowest level's size, and the levels are merged by an
element-wise maximum: at each position and channel the strongest level wins. The merged
map is then handed back to every level, resized to that level's own size, so the attention
and the per-level heads downstream see one map per level as usual.

Load it by path from a study (``plugins: [../examples/my_fusion.py]``) or on the command
line (``fusionlab list fusions --plugin examples/my_fusion.py``); then use it by name:
``model: {fusion: max_fuse}``. See examples/README.md.

The fusion contract (fusion_lab.registries): ``cls(in_channels, out_channels, **kw)``, a
``.out_channels`` list, and ``forward(list of maps, low level first) -> list of maps, low
level first``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusion_lab.registries import FUSIONS


@FUSIONS.register("max_fuse")
class MaxFusion(nn.Module):
    """Element-wise max of 1x1-projected levels at the lowest level's size (example plugin).

    Args:
        in_channels: channels of each backbone map, low level first.
        out_channels: width of the fused maps.
        own_size: hand each level the merged map at its own size (else all at the
            lowest level's size, as the ConvLSTM fusion does by default).
    """

    def __init__(self, in_channels: list[int], out_channels: int = 256, own_size: bool = True):
        super().__init__()
        self.proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, out_channels, 1, bias=False),
                          nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))
            for c in in_channels
        )
        self.own_size = own_size
        self.out_channels = [out_channels] * len(in_channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        size = feats[0].shape[-2:]  # the lowest level's (H, W)
        # Project first (cheap at low resolution), then resize to an exact size: odd
        # inputs give stage ratios that are not powers of two.
        projected = [F.interpolate(p(f), size=size, mode="nearest")
                     for p, f in zip(self.proj, feats)]  # each (B, C, H, W)
        merged = torch.stack(projected).amax(dim=0)  # (B, C, H, W)
        if not self.own_size:
            return [merged for _ in feats]
        return [merged if f.shape[-2:] == size
                else F.adaptive_avg_pool2d(merged, f.shape[-2:]) for f in feats]
