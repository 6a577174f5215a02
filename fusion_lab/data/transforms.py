"""Train and test transforms of the recipes, with their own random generator.

Train: resize to ``resize`` x ``resize`` (the reference code's 600x600), random crop
``image_size`` (448), horizontal flip with probability 1/2, ImageNet normalisation.
Test (and val): resize to ``resize`` x ``resize``, centre crop ``image_size``, normalisation.

The random choices never use torch's or Python's global RNG: each sample gets a
``torch.Generator`` seeded from (run seed, epoch, index) by the train sampler (see
``fusion_lab.data.sampling``), so the augmentation of a sample is the same in the main
process and in any worker, whichever worker draws it.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FGVCTransform:
    """PIL image -> normalised float32 tensor [3, image_size, image_size].

    Args:
        image_size: side of the crop fed to the model.
        resize: side of the square the image is first resized to (>= image_size).
        train: random crop and flip (needs a generator) instead of a centre crop.
    """

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
        flip = False
        if self.train:
            if generator is None:
                raise ValueError("the train transform needs a generator")
            top, left, flip_draw = torch.randint(0, 1 << 30, (3,), generator=generator).tolist()
            top, left, flip = top % (r - s + 1), left % (r - s + 1), bool(flip_draw & 1)
        else:
            top = left = (r - s) // 2
        # Crop and flip in PIL, before conversion: less memory traffic than on floats.
        image = image.crop((left, top, left + s, top + s))
        if flip:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        # Normalise in numpy: torch's intra-op threads cost more than they save on one
        # image (4x slower with workers=0 on a busy 2-core machine).
        x = np.asarray(image, dtype=np.float32)  # [H, W, 3]
        x = (x - self.mean) * self.inv_std
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))

    def __repr__(self) -> str:
        kind = "train" if self.train else "test"
        return f"FGVCTransform({kind}, resize={self.resize}, image_size={self.image_size})"
