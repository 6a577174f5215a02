"""``small_cnn``: a small plain CNN for CPU studies on tiny images (e.g. the quickstart).

ImageNet backbones downsample by 4 in their stem, which turns the few-pixel details of a
64 px fine-grained image into less than a pixel; this one halves the resolution once in the
stem and then once per stage, so its three taps sit at strides 4, 8 and 16 with 48, 96 and
160 channels (about 0.3 M parameters). ``pretrained: synthetic`` starts it from the weights
shipped with fusion_lab (pretrained on ``synthetic_shapes``, studies/pretrain_synthetic.yaml);
any file exported from a small_cnn run (``fusionlab export``) works too.
"""

from __future__ import annotations

import torch
from torch import nn

from fusion_lab.errors import WeightsError
from fusion_lab.registries import BACKBONES


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


@BACKBONES.register("small_cnn")
class SmallCNN(nn.Module):
    """Small plain CNN (strides 4/8/16, ~0.3 M params) for CPU studies on tiny images."""

    widths = (24, 48, 96, 160)

    @classmethod
    def check_args(cls, pretrained: bool | str, out_indices: list[int]) -> list[str]:
        """Problems found before building: pretrained weights, stages it does not have."""
        n = len(cls.widths) - 1
        problems = []
        if pretrained is True:  # names and files are loaded by build_backbone
            problems.append("small_cnn has no weights on timm's hub; use pretrained: "
                            "synthetic (shipped), a weights file, or false")
        if not out_indices or any(not -n <= i < n for i in out_indices) or len(
                {i % n for i in out_indices}) != len(out_indices):
            problems.append(f"small_cnn has {n} stages: model.out_indices must be distinct "
                            f"stage indices in {-n}..{n - 1} (e.g. [-3, -2, -1]), "
                            f"got {list(out_indices)}")
        return problems

    def __init__(self, pretrained: bool | str = False, out_indices=(-3, -2, -1)):
        super().__init__()
        if pretrained is True:  # a name or file is loaded by build_backbone
            raise WeightsError("small_cnn has no weights on timm's hub; use pretrained: "
                               "synthetic (shipped), a weights file, or false")
        w = self.widths
        self.stem = _conv_bn(3, w[0], stride=2)  # stride 2
        self.stages = nn.ModuleList(
            nn.Sequential(_conv_bn(cin, cout), _conv_bn(cout, cout), nn.MaxPool2d(2))
            for cin, cout in zip(w[:-1], w[1:])
        )  # strides 4, 8, 16
        n = len(self.stages)
        self.taps = sorted(i % n for i in out_indices)
        self.out_channels = [w[i + 1] for i in self.taps]
        self.reductions = [2 ** (i + 2) for i in self.taps]

    def param_stages(self) -> list[list[nn.Parameter]]:
        """Parameters by stage, low first: [stem + stages.0], [stages.1], [stages.2]."""
        out = [list(s.parameters()) for s in self.stages]
        out[0] = list(self.stem.parameters()) + out[0]
        return out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.taps:
                out.append(x)
        return out
