"""``synthetic_fgvc``: procedural fine-grained birds, made in memory from a seed.

The default dataset, so that a study runs on a fresh machine with no data and no GPU.
Classes share one bird silhouette and differ only in local details (wing pattern, which
marker colour sits on beak, crown and throat); see ``fusion_lab.data.synthetic`` and
docs/synthetic_fgvc.md. ``root`` is ignored. ``regions(item)`` says where the bird and its
discriminative parts (beak, crown, throat, wing) are, for scoring attention maps.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from PIL import Image

from fusion_lab.data.source import ImageSource
from fusion_lab.data.synthetic import MAX_CLASSES, class_name, generate, render_with_masks
from fusion_lab.errors import DatasetError
from fusion_lab.maps.regions import Regions
from fusion_lab.registries import DATASETS


@DATASETS.register("synthetic_fgvc")
class SyntheticFGVC(ImageSource):
    """Procedural fine-grained birds (no download); classes differ in local details only."""

    name = "synthetic_fgvc"
    url = "(generated in memory; nothing to download)"
    needs_root = False

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[str]:
        problems = super().check_options(options)
        if problems:
            return problems
        given = inspect.signature(cls).bind(None, **{k: v for k, v in options.items()
                                                     if k != "max_unreadable"})
        given.apply_defaults()
        return cls._range_problems(**{k: v for k, v in given.arguments.items() if k != "root"})

    @staticmethod
    def _range_problems(num_classes: Any, train_per_class: Any, test_per_class: Any,
                        image_size: Any, **others: Any) -> list[str]:
        def whole(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        problems = []
        if not whole(num_classes) or not 2 <= num_classes <= MAX_CLASSES:
            problems.append(f"dataset 'synthetic_fgvc': num_classes must be 2..{MAX_CLASSES}, "
                            f"got {num_classes!r}")
        for key, value, low in (("train_per_class", train_per_class, 1),
                                ("test_per_class", test_per_class, 1),
                                ("image_size", image_size, 16)):
            if not whole(value) or value < low:
                problems.append(f"dataset 'synthetic_fgvc': {key} must be an integer >= {low}, "
                                f"got {value!r}")
        return problems

    @classmethod
    def classes_for(cls, options: dict[str, Any]) -> int | None:
        return int(options.get("num_classes", inspect.signature(cls).parameters[
            "num_classes"].default))

    def __init__(self, root: str | None = None, num_classes: int = 10, train_per_class: int = 40,
                 test_per_class: int = 20, image_size: int = 64, seed: int = 0,
                 max_rotation: float = 25.0, clutter: int = 5, noise: float = 5.0):
        problems = self._range_problems(num_classes, train_per_class, test_per_class, image_size)
        if problems:
            raise DatasetError("; ".join(problems))
        kw = {"max_rotation": max_rotation, "clutter": clutter, "noise": noise}
        train_x, train_y = generate(num_classes, train_per_class, image_size, seed, 0, **kw)
        test_x, test_y = generate(num_classes, test_per_class, image_size, seed, 1, **kw)
        self.images = list(train_x) + list(test_x)
        n = len(train_x)
        self.train = [(i, int(y)) for i, y in enumerate(train_y)]
        self.test = [(n + i, int(y)) for i, y in enumerate(test_y)]
        self.class_names = [class_name(c) for c in range(num_classes)]
        self._render = {"seed": seed, "size": image_size, "n_train": n, **kw}

    def regions(self, item: int) -> Regions:
        """The bird's box and the visible masks of beak, crown, throat and wing of ``item``.

        Re-rendered from the item's own generator, so they match the image exactly.
        """
        r = self._render
        stream, i = (0, item) if item < r["n_train"] else (1, item - r["n_train"])
        label = (self.train if stream == 0 else self.test)[i][1]
        kw = {k: r[k] for k in ("max_rotation", "clutter", "noise")}
        _, masks = render_with_masks(np.random.default_rng([r["seed"], stream, i]), label,
                                     r["size"], **kw)
        rows, cols = np.nonzero(masks.pop("bird") > 0)
        box = (float(cols.min()), float(rows.min()), float(cols.max() + 1),
               float(rows.max() + 1))
        return Regions((r["size"], r["size"]), box, part_masks=masks)

    def load(self, item: int) -> Image.Image:
        return Image.fromarray(self.images[item])

    def load_tensor(self, item: int):  # uint8 [3, H, W] without a PIL round trip
        import torch

        return torch.from_numpy(self.images[item]).permute(2, 0, 1)

    def describe_item(self, item: int) -> str:
        return f"synthetic image {item}"
