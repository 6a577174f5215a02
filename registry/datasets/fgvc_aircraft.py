"""FGVC-Aircraft (Maji et al., 2013): 10,000 images; trainval 6,667 / test 3,333.

Read through torchvision's ``FGVCAircraft`` (never downloading). ``root`` is the folder
holding ``fgvc-aircraft-2013b/`` (or that folder itself). Options:

- ``level``: ``variant`` (100 classes, the FGVC benchmark), ``family`` (70) or
  ``manufacturer`` (30);
- ``remove_banner``: crop the 20-pixel copyright banner off the bottom of every image.
"""

from __future__ import annotations

from PIL import Image

from fusion_lab.data.source import ImageSource, check_files, find_root
from fusion_lab.errors import DatasetError
from fusion_lab.registries import DATASETS

URL = "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/"
LEVELS = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
LEVEL_CLASSES = {"variant": 100, "family": 70, "manufacturer": 30}
BANNER = 20  # pixels of copyright text at the bottom of every image


@DATASETS.register("fgvc_aircraft")
class FGVCAircraft(ImageSource):
    """FGVC-Aircraft: variant (100), family (70) or manufacturer (30) level; trainval/test."""

    name = "fgvc_aircraft"
    # the released training script's recipe (fusion_lab.config.recipes)
    reference_recipe = {"epochs": 100, "batch_size": 16, "resize": (512, 448),
                        "lr_backbone": 1e-3, "lr_new": 1e-3, "backbone_high_lr_stages": 0}
    url = URL

    @classmethod
    def check_options(cls, options: dict) -> list[str]:
        problems = super().check_options(options)
        level = (options or {}).get("level", "variant")
        if level not in LEVELS:
            problems.append(f"dataset 'fgvc_aircraft': level must be one of "
                            f"{', '.join(LEVELS)}, got {level!r}")
        return problems

    @classmethod
    def classes_for(cls, options: dict) -> int | None:
        return LEVEL_CLASSES.get((options or {}).get("level", "variant"))

    def __init__(self, root: str | None, level: str = "variant", remove_banner: bool = False):
        if level not in LEVELS:
            raise DatasetError(
                f"dataset 'fgvc_aircraft': level must be one of {', '.join(LEVELS)}, got {level!r}"
            )
        expected = [
            f"data/{LEVELS[level]}", f"data/images_{level}_trainval.txt",
            f"data/images_{level}_test.txt", "data/images/",
        ]
        folder = find_root(self.name, root, "data", ["fgvc-aircraft-2013b"], expected, URL)
        check_files(self.name, folder, expected, URL)
        if folder.name != "fgvc-aircraft-2013b":  # torchvision insists on that folder name
            raise DatasetError(
                f"dataset 'fgvc_aircraft': the folder must be named fgvc-aircraft-2013b, got {folder}"
            )
        from torchvision.datasets import FGVCAircraft as TVAircraft

        splits = {}
        for split in ("trainval", "test"):
            try:
                ds = TVAircraft(str(folder.parent), split=split, annotation_level=level,
                                download=False)
            except (RuntimeError, KeyError, ValueError, OSError) as e:
                raise DatasetError(f"dataset 'fgvc_aircraft': cannot read {folder}: {e!r}") from e
            splits[split] = list(zip(ds._image_files, ds._labels))
            self.class_names = list(ds.classes)
        self.train, self.test = splits["trainval"], splits["test"]
        self.remove_banner = bool(remove_banner)

    def prepare(self, image: Image.Image) -> Image.Image:
        if self.remove_banner:
            w, h = image.size
            return image.crop((0, 0, w, max(1, h - BANNER)))
        return image

    def prepare_tensor(self, image):  # the same crop on a uint8 tensor [3, H, W]
        if self.remove_banner:
            return image[:, : max(1, image.shape[1] - BANNER)]
        return image
