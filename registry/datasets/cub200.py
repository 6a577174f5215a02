"""CUB-200-2011 (Wah et al., 2011): 200 bird species, 5,994 train / 5,794 test images.

Reads the folder as distributed (``CUB_200_2011/``): images.txt, image_class_labels.txt,
train_test_split.txt, classes.txt and images/. ``root`` may be that folder or the one above.
Labels are 0-199 in classes.txt order; class names drop the "001." prefix.
"""

from __future__ import annotations

from pathlib import Path

from fusion_lab.data.source import ImageSource, check_files, find_root
from fusion_lab.errors import DatasetError
from fusion_lab.registries import DATASETS

URL = "https://www.vision.caltech.edu/datasets/cub_200_2011/"
FILES = ["images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt", "images/"]


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
