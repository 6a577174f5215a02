"""The PIL pipeline this toolkit used before uint8 batches (kept as a yardstick).

``LegacyTransform`` is the former ``FGVCTransform`` unchanged: PIL bilinear resize,
crop and flip on the PIL image, ImageNet normalisation to float32 in the worker. It is
what ``tests/test_decode.py`` compares the new transforms against and what
``scripts/bench_loader.py`` times as "old"; training does not use it.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from fusion_lab.data.transforms import IMAGENET_MEAN, IMAGENET_STD, crop_box


class LegacyTransform:
    """PIL image -> normalised float32 tensor [3, image_size, image_size] (the old contract)."""

    def __init__(self, image_size: int, resize: int, train: bool):
        if resize < image_size:
            raise ValueError(f"resize ({resize}) must be >= image_size ({image_size})")
        self.image_size = image_size
        self.resize = resize
        self.train = train
        self.mean = np.array(IMAGENET_MEAN, np.float32) * 255.0
        self.inv_std = 1.0 / (np.array(IMAGENET_STD, np.float32) * 255.0)

    def __call__(self, image: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        s, r = self.image_size, self.resize
        if image.size != (r, r):
            image = image.resize((r, r), Image.BILINEAR, reducing_gap=3.0)
        top, left, flip = crop_box(s, r, self.train, generator)
        image = image.crop((left, top, left + s, top + s))
        if flip:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        x = np.asarray(image, dtype=np.float32)  # [H, W, 3]
        x = (x - self.mean) * self.inv_std
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))
