"""CUB-200-2011 (Wah et al., 2011): 200 bird species, 5,994 train / 5,794 test images.

Reads the folder as distributed (``CUB_200_2011/``): images.txt, image_class_labels.txt,
train_test_split.txt, classes.txt and images/. ``root`` may be that folder or the one above.
Labels are 0-199 in classes.txt order; class names drop the "001." prefix.
``regions(item)`` reads the bird's box (bounding_boxes.txt) and its visible part points
(parts/parts.txt, parts/part_locs.txt), which ship with the dataset, for scoring attention.
"""

from __future__ import annotations

from pathlib import Path

from fusion_lab.data.source import ImageSource, check_files, find_root
from fusion_lab.errors import DatasetError
from fusion_lab.maps.regions import Regions
from fusion_lab.registries import DATASETS

URL = "https://www.vision.caltech.edu/datasets/cub_200_2011/"
FILES = ["images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt", "images/"]
REGION_FILES = ["bounding_boxes.txt", "parts/parts.txt", "parts/part_locs.txt"]


def _read_table(path: Path) -> dict[int, str]:
    """``id value`` lines -> {id: value}."""
    out: dict[int, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        key, _, value = line.strip().partition(" ")
        try:
            out[int(key)] = value.strip()
        except ValueError:
            raise DatasetError(f"dataset 'cub200': {path} line {n} is not 'id value': {line!r}") from None
    return out


@DATASETS.register("cub200")
class CUB200(ImageSource):
    """CUB-200-2011 birds: 200 classes, official 5,994/5,794 split."""

    name = "cub200"
    # the released training script's recipe (fusion_lab.config.recipes): layer4 (k = 1)
    # trains at lr_new with the new modules
    reference_recipe = {"epochs": 100, "batch_size": 16, "resize": (600, 448),
                        "lr_backbone": 1e-4, "lr_new": 1e-3, "backbone_high_lr_stages": 1}
    url = URL
    classes = 200

    def __init__(self, root: str | None):
        folder = find_root(self.name, root, "images.txt", ["CUB_200_2011"], FILES, URL)
        check_files(self.name, folder, FILES, URL)
        images = _read_table(folder / "images.txt")
        labels = _read_table(folder / "image_class_labels.txt")
        is_train = _read_table(folder / "train_test_split.txt")
        classes = _read_table(folder / "classes.txt")
        class_ids = sorted(classes)
        index = {cid: i for i, cid in enumerate(class_ids)}
        self.class_names = [classes[c].split(".", 1)[-1] for c in class_ids]
        self.train, self.test = [], []
        self._folder, self._ids, self._regions = folder, {}, None
        for image_id, rel in sorted(images.items()):
            try:
                label = index[int(labels[image_id])]
                split = self.train if int(is_train[image_id]) == 1 else self.test
            except (KeyError, ValueError):
                raise DatasetError(
                    f"dataset 'cub200': image id {image_id} ({rel}) has no valid label or split "
                    f"in {folder}; the annotation files do not match images.txt"
                ) from None
            split.append((str(folder / "images" / rel), label))
            self._ids[str(folder / "images" / rel)] = image_id

    def regions(self, item: str) -> Regions:
        """The bird's box and its visible part points (15 CUB parts) of one image."""
        if self._regions is None:
            self._regions = self._read_regions()
        boxes, points = self._regions
        image_id = self._ids[item]
        if image_id not in boxes:
            raise DatasetError(f"dataset 'cub200': image id {image_id} ({item}) has no line "
                               f"in {self._folder / 'bounding_boxes.txt'}")
        from PIL import Image

        with Image.open(item) as im:
            size = im.size
        return Regions(size, boxes[image_id], part_points=points.get(image_id, {}))

    def _read_regions(self) -> tuple[dict, dict]:
        check_files(self.name, self._folder, REGION_FILES, URL)
        boxes = {}
        for image_id, text in _read_table(self._folder / "bounding_boxes.txt").items():
            x, y, w, h = (float(v) for v in text.split())
            boxes[image_id] = (x, y, x + w, y + h)
        names = _read_table(self._folder / "parts" / "parts.txt")
        points: dict[int, dict] = {}
        path = self._folder / "parts" / "part_locs.txt"
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                image_id, part, x, y, visible = line.split()
                if int(float(visible)):
                    points.setdefault(int(image_id), {})[names[int(part)]] = (float(x),
                                                                               float(y))
            except (ValueError, KeyError):
                raise DatasetError(f"dataset 'cub200': {path} line {n} is not 'image_id "
                                   f"part_id x y visible' with a known part: {line!r}") from None
        return boxes, points
