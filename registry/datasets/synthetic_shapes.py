"""``synthetic_shapes``: generic procedural objects, the source task to pretrain on.

32 classes (8 outlines x 4 textures, ``fusion_lab.data.shapes``), none of them a
``synthetic_fgvc`` bird: pretraining ``small_cnn`` here and fine-tuning on
``synthetic_fgvc`` is the CPU-sized version of ImageNet -> CUB. ``root`` is ignored.
"""

from __future__ import annotations

from PIL import Image

from fusion_lab.data.shapes import MAX_SHAPE_CLASSES, generate_shapes, shape_class_name
from fusion_lab.data.source import ImageSource
from fusion_lab.errors import DatasetError
from fusion_lab.registries import DATASETS


@DATASETS.register("synthetic_shapes")
class SyntheticShapes(ImageSource):
    """Generic procedural objects (8 outlines x 4 textures): a source task to pretrain on."""

    name = "synthetic_shapes"
    url = "(generated in memory; nothing to download)"
    needs_root = False  # root is ignored

    def __init__(self, root: str | None = None, num_classes: int = MAX_SHAPE_CLASSES,
                 train_per_class: int = 60, test_per_class: int = 60, image_size: int = 64,
                 seed: int = 0, clutter: int = 4, noise: float = 5.0):
        if not 2 <= num_classes <= MAX_SHAPE_CLASSES:
            raise DatasetError(f"dataset 'synthetic_shapes': num_classes must be "
                               f"2..{MAX_SHAPE_CLASSES}, got {num_classes}")
        if train_per_class < 1 or test_per_class < 1 or image_size < 16:
            raise DatasetError(
                "dataset 'synthetic_shapes': train_per_class and test_per_class must be >= 1 "
                f"and image_size >= 16, got {train_per_class}, {test_per_class}, {image_size}")
        kw = {"clutter": clutter, "noise": noise}
        train_x, train_y = generate_shapes(num_classes, train_per_class, image_size, seed, 0, **kw)
        test_x, test_y = generate_shapes(num_classes, test_per_class, image_size, seed, 1, **kw)
        self.images = list(train_x) + list(test_x)
        n = len(train_x)
        self.train = [(i, int(y)) for i, y in enumerate(train_y)]
        self.test = [(n + i, int(y)) for i, y in enumerate(test_y)]
        self.class_names = [shape_class_name(c) for c in range(num_classes)]

    def load(self, item: int) -> Image.Image:
        return Image.fromarray(self.images[item])

    def describe_item(self, item: int) -> str:
        return f"synthetic image {item}"
