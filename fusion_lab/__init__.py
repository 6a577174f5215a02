"""fusion_lab: ablation studies of multi-layer feature fusion for fine-grained classification.

The machinery lives in ``fusion_lab``; the component catalogue (backbones, fusions,
attentions, heads, presets, datasets) lives in the repository's ``registry/`` folder and is
installed as ``fusion_lab.registry``. Importing ``fusion_lab`` does not import torch.
"""

from fusion_lab.errors import FusionLabError

__version__ = "0.1.0"
__all__ = ["FusionLabError", "__version__"]
