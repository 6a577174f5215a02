"""Stanford Cars (Krause et al., 2013): 196 car models, 8,144 train / 8,041 test images.

Two layouts are detected automatically (``root`` may also be the folder above either):

- torchvision's ``StanfordCars`` layout (folder ``stanford_cars/``): devkit/cars_meta.mat,
  devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat, cars_train/, cars_test/;
- the all-in-one layout: cars_annos.mat (with a ``test`` flag per image) and car_ims/.

The .mat files are read here with scipy (torchvision's download is broken upstream and is
never attempted). Labels are the files' 1-based classes minus one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fusion_lab.data.source import ImageSource, check_files, missing_error
from fusion_lab.errors import DatasetError
from fusion_lab.registries import DATASETS

URL = (
    "https://ai.stanford.edu/~jkrause/cars/car_dataset.html (mirrors: "
    "https://www.kaggle.com/datasets/jessicali9530/stanford-cars-dataset)"
)
DEVKIT_FILES = [
    "devkit/cars_meta.mat", "devkit/cars_train_annos.mat", "cars_test_annos_withlabels.mat",
    "cars_train/", "cars_test/",
]
ALL_IN_ONE_FILES = ["cars_annos.mat", "car_ims/"]


def _records(path: Path, key: str) -> Any:
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path), squeeze_me=True)
    except Exception as e:  # scipy raises several types on a damaged file
        raise DatasetError(f"dataset 'stanford_cars': cannot read {path}: {e}") from e
    if key not in mat:
        raise DatasetError(f"dataset 'stanford_cars': {path} has no {key!r} entry")
    return np.atleast_1d(mat[key])


def _names(path: Path) -> list[str]:
    return [str(n).strip() for n in _records(path, "class_names")]


@DATASETS.register("stanford_cars")
class StanfordCars(ImageSource):
    """Stanford Cars: 196 classes, 8,144/8,041 split (devkit or cars_annos.mat layout)."""

    name = "stanford_cars"
    # the released training script's recipe (fusion_lab.config.recipes): 448 x 448, no crop
    reference_recipe = {"epochs": 100, "batch_size": 8, "resize": (448, 448),
                        "lr_backbone": 1e-3, "lr_new": 1e-3, "backbone_high_lr_stages": 0}
    url = URL
    classes = 196

    def __init__(self, root: str | None):
        if root is None:
            missing_error(self.name, [], DEVKIT_FILES, URL)
        base = Path(root).expanduser()
        candidates = [base, base / "stanford_cars"]
        for folder in candidates:
            if (folder / "devkit").is_dir():
                return self._read_devkit(folder)
            if (folder / "cars_annos.mat").exists():
                return self._read_all_in_one(folder)
        expected = DEVKIT_FILES + ["(or) " + ", ".join(ALL_IN_ONE_FILES)]
        missing_error(self.name, candidates, expected, URL)

    def _read_devkit(self, folder: Path) -> None:
        check_files(self.name, folder, DEVKIT_FILES, URL)
        self.class_names = _names(folder / "devkit/cars_meta.mat")
        self.train = self._pairs(folder / "devkit/cars_train_annos.mat", folder / "cars_train")
        self.test = self._pairs(folder / "cars_test_annos_withlabels.mat", folder / "cars_test")

    def _pairs(self, mat: Path, images: Path) -> list[tuple[str, int]]:
        return [
            (str(images / str(a["fname"])), int(a["class"]) - 1)
            for a in _records(mat, "annotations")
        ]

    def _read_all_in_one(self, folder: Path) -> None:
        check_files(self.name, folder, ALL_IN_ONE_FILES, URL)
        self.class_names = _names(folder / "cars_annos.mat")
        self.train, self.test = [], []
        for a in _records(folder / "cars_annos.mat", "annotations"):
            split = self.test if int(a["test"]) else self.train
            split.append((str(folder / str(a["relative_im_path"])), int(a["class"]) - 1))
        bad = [y for _, y in self.train + self.test if not 0 <= y < len(self.class_names)]
        if bad:
            raise DatasetError(
                f"dataset 'stanford_cars': labels {sorted(set(bad))[:5]} in "
                f"{folder / 'cars_annos.mat'} fall outside its {len(self.class_names)} classes"
            )
