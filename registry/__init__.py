"""The component catalogue, installed as ``fusion_lab.registry``.

Importing this package registers every built-in component. Each file is one idea:
backbones (timm's models are built by ``fusion_lab.models.backbones``), fusions, attentions, heads, presets and datasets.
"""

from fusion_lab.registry import (  # noqa: F401
    attentions,
    backbone_small,
    datasets,
    fusion_convlstm,
    fusion_fpn,
    heads,
    presets,
)
