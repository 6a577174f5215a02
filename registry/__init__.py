"""The component catalogue, installed as ``fusion_lab.registry``.

Importing this package registers every built-in component. Each file is one idea:
backbones (timm's models are built by ``fusion_lab.models.backbones``), fusions, attentions, heads, presets and datasets.
The catalogue across papers (docs/catalogue.md): necks from detection and segmentation
(``fusion_necks``: concat, panet; ``fusion_bifpn``; ``fusion_asff``), CBAM's halves
(``attention_cbam``) and every attention block timm ships (``attention_timm``:
``timm:NAME``). Each fusion and attention names its paper (``register(name, paper=...)``),
shown by ``fusionlab list``.
"""

from fusion_lab.registry import (  # noqa: F401
    attention_cbam,
    attention_timm,
    attentions,
    backbone_small,
    datasets,
    fusion_asff,
    fusion_bifpn,
    fusion_convlstm,
    fusion_fpn,
    fusion_necks,
    heads,
    presets,
)
