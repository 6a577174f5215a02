"""Classification heads.

``multi_level`` (CN-CNN): one classifier per level on its attended map, GAP -> BN1d(C) ->
Linear(C, h) -> BN1d(h) -> ELU -> Linear(h, K), plus (the authors' code, not the paper's
text) a fourth on the concatenated global averages of the fused maps before attention.
``linear``: the fine-tuned baseline, GAP + one linear layer on the highest level.
Heads return a dict of head name -> logits; the model's prediction is their mean.
"""

from __future__ import annotations

import torch
from torch import nn

from fusion_lab.registries import HEADS


def gap(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(2, 3))  # (B, C, H, W) -> (B, C)


class MLPClassifier(nn.Sequential):
    """BN1d(C) -> Linear(C, h) -> BN1d(h) -> ELU -> Linear(h, K), on pooled features."""

    def __init__(self, in_features: int, hidden: int, num_classes: int):
        super().__init__(
            nn.BatchNorm1d(in_features),
            nn.Linear(in_features, hidden),
            nn.BatchNorm1d(hidden),
            nn.ELU(inplace=True),
            nn.Linear(hidden, num_classes),
        )


@HEADS.register("multi_level")
class MultiLevelHead(nn.Module):
    """A classifier per level on the attended maps, plus a concat head on the fused maps.

    Args:
        channels: channels of each level, low level first.
        num_classes: K.
        names: one name per level (e.g. s3, s4, s5).
        hidden: classifier hidden width (the reference: 512 for 200 classes, else 256).
        concat: add the fourth classifier on concat(GAP(fused maps)).
    """

    def __init__(self, channels: list[int], num_classes: int, names: list[str] | None = None,
                 hidden: int | None = None, concat: bool = True):
        super().__init__()
        hidden = hidden or (512 if num_classes == 200 else 256)
        self.names = list(names or [f"l{i}" for i in range(len(channels))])
        self.levels = nn.ModuleList(MLPClassifier(c, hidden, num_classes) for c in channels)
        self.concat = MLPClassifier(sum(channels), hidden, num_classes) if concat else None

    def forward(self, fused: list[torch.Tensor], attended: list[torch.Tensor]):
        logits = {n: clf(gap(x)) for n, clf, x in zip(self.names, self.levels, attended)}
        if self.concat is not None:
            logits["concat"] = self.concat(torch.cat([gap(x) for x in fused], dim=1))
        return logits


@HEADS.register("linear")
class LinearHead(nn.Module):
    """Global average pooling and one linear layer on the highest level (the baseline)."""

    def __init__(self, channels: list[int], num_classes: int, names: list[str] | None = None):
        super().__init__()
        self.fc = nn.Linear(channels[-1], num_classes)

    def forward(self, fused: list[torch.Tensor], attended: list[torch.Tensor]):
        return {"fc": self.fc(gap(attended[-1]))}
