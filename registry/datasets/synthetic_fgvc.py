"""``synthetic_fgvc``: procedural fine-grained birds, made in memory from a seed.

The default dataset, so that a study runs on a fresh machine with no data and no GPU.
Classes share one bird silhouette and differ only in local details (wing pattern, which
marker colour sits on beak, crown and throat); see ``fusion_lab.data.synthetic`` and
docs/synthetic_fgvc.md. ``root`` is ignored.
"""

from __future__ import annotations

from PIL import Image

from fusion_lab.data.source import ImageSource
from fusion_lab.data.synthetic import MAX_CLASSES, class_name, generate
from fusion_lab.errors import DatasetError
from fusion_lab.registries import DATASETS


@DATASETS.register("synthetic_fgvc")
class SyntheticFGVC(ImageSource):
    """Procedural fine-grained birds (no download); classes differ in local details only."""

    name = "synthetic_fgvc"
    url = "(generated in memory; nothing to download)"
    needs_root = False  # root is ignored

    def __init__(self, root: str | None = None, num_classes: int = 10, train_per_class: int = 40,
                 test_per_class: int = 20, image_size: int = 64, seed: int = 0,
                 max_rotation: float = 25.0, clutter: int = 5, noise: float = 5.0):
        if not 2 <= num_classes <= MAX_CLASSES:
            raise DatasetError(
                f"dataset 'synthetic_fgvc': num_classes must be 2..{MAX_CLASSES}, got {num_classes}"
            )
        if train_per_class < 1 or test_per_class < 1 or image_size < 16:
            raise DatasetError(
                "dataset 'synthetic_fgvc': train_per_class and test_per_class must be >= 1 "
                f"and image_size >= 16, got {train_per_class}, {test_per_class}, {image_size}"
            )
        kw = {"max_rotation": max_rotation, "clutter": clutter, "noise": noise}
        train_x, train_y = generate(num_classes, train_per_class, image_size, seed, 0, **kw)
        test_x, test_y = generate(num_classes, test_per_class, image_size, seed, 1, **kw)
        self.images = list(train_x) + list(test_x)
        n = len(train_x)
        self.train = [(i, int(y)) for i, y in enumerate(train_y)]
        self.test = [(n + i, int(y)) for i, y in enumerate(test_y)]
        self.class_names = [class_name(c) for c in range(num_classes)]

    def load(self, item: int) -> Image.Image:
        return Image.fromarray(self.images[item])

    def describe_item(self, item: int) -> str:
        return f"synthetic image {item}"
