"""Helpers for the data tests: miniature trees in each dataset's published format."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def load_datasets() -> None:
    """Register the built-in datasets, even while other catalogue modules are missing."""
    try:
        importlib.import_module("fusion_lab.registry.datasets")
    except ImportError:
        # fusion_lab.registry's __init__ imports modules being written by others: load the
        # datasets subpackage under a bare parent package instead.
        sys.modules.pop("fusion_lab.registry", None)
        parent = types.ModuleType("fusion_lab.registry")
        parent.__path__ = [str(REPO / "registry")]
        sys.modules["fusion_lab.registry"] = parent
        importlib.import_module("fusion_lab.registry.datasets")


def write_image(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> None:
    """A small random JPEG (or PNG, by suffix) at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


def corrupt(path: Path, how: str = "garbage") -> None:
    """Make ``path`` unreadable: replace it with garbage or cut the file in half."""
    if how == "garbage":
        path.write_bytes(b"this is not an image" * 10)
    else:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


def make_cub(root: Path, counts: list[tuple[int, int]]) -> Path:
    """CUB_200_2011/ with len(counts) classes of (train, test) images each."""
    d = root / "CUB_200_2011"
    images, labels, split, classes = [], [], [], []
    n = 0
    for c, (n_train, n_test) in enumerate(counts, 1):
        cname = f"{c:03d}.Bird_{c}"
        classes.append(f"{c} {cname}")
        for j in range(n_train + n_test):
            n += 1
            rel = f"{cname}/Bird_{c}_{j:04d}_{n}.jpg"
            write_image(d / "images" / rel, n)
            images.append(f"{n} {rel}")
            labels.append(f"{n} {c}")
            split.append(f"{n} {1 if j < n_train else 0}")
    for name, lines in [("images.txt", images), ("image_class_labels.txt", labels),
                        ("train_test_split.txt", split), ("classes.txt", classes)]:
        (d / name).write_text("\n".join(lines) + "\n")
    return d


def _struct(rows: list[dict]) -> np.ndarray:
    """A 1xN MATLAB struct array as scipy.io.savemat writes it from a record array."""
    keys = list(rows[0])
    arr = np.zeros((1, len(rows)), dtype=[(k, object) for k in keys])
    for i, r in enumerate(rows):
        for k in keys:
            arr[0, i][k] = r[k]
    return arr


def _cell(names: list[str]) -> np.ndarray:
    cell = np.empty((1, len(names)), dtype=object)
    cell[0, :] = names
    return cell


def make_cars_devkit(root: Path, class_names: list[str], train: list[int],
                     test: list[int]) -> Path:
    """torchvision's stanford_cars/ layout; ``train``/``test`` are 0-based labels per image."""
    from scipy.io import savemat

    d = root / "stanford_cars"
    (d / "devkit").mkdir(parents=True)
    savemat(d / "devkit/cars_meta.mat", {"class_names": _cell(class_names)})
    for labels, folder, mat in [(train, "cars_train", "devkit/cars_train_annos.mat"),
                                (test, "cars_test", "cars_test_annos_withlabels.mat")]:
        rows = []
        for i, y in enumerate(labels, 1):
            write_image(d / folder / f"{i:05d}.jpg", i + 1000 * len(folder))
            rows.append({"bbox_x1": 1, "bbox_y1": 1, "bbox_x2": 30, "bbox_y2": 20,
                         "class": y + 1, "fname": f"{i:05d}.jpg"})
        savemat(d / mat, {"annotations": _struct(rows)})
    return d


def make_cars_annos(root: Path, class_names: list[str], labels: list[int],
                    is_test: list[int]) -> Path:
    """The all-in-one layout: cars_annos.mat and car_ims/."""
    from scipy.io import savemat

    rows = []
    for i, (y, t) in enumerate(zip(labels, is_test), 1):
        write_image(root / "car_ims" / f"{i:06d}.jpg", i)
        rows.append({"relative_im_path": f"car_ims/{i:06d}.jpg", "bbox_x1": 1, "bbox_y1": 1,
                     "bbox_x2": 30, "bbox_y2": 20, "class": y + 1, "test": t})
    savemat(root / "cars_annos.mat",
            {"annotations": _struct(rows), "class_names": _cell(class_names)})
    return root


def make_aircraft(root: Path, variants: dict[str, tuple[str, str]],
                  trainval: list[str], test: list[str], size: tuple[int, int] = (60, 50)) -> Path:
    """fgvc-aircraft-2013b/data/; ``variants`` maps variant -> (family, manufacturer)."""
    d = root / "fgvc-aircraft-2013b" / "data"
    (d / "images").mkdir(parents=True)
    families = sorted({f for f, _ in variants.values()})
    makers = sorted({m for _, m in variants.values()})
    (d / "variants.txt").write_text("\n".join(variants) + "\n")
    (d / "families.txt").write_text("\n".join(families) + "\n")
    (d / "manufacturers.txt").write_text("\n".join(makers) + "\n")
    n = 1000000
    for split, names in [("trainval", trainval), ("test", test)]:
        lines = {"variant": [], "family": [], "manufacturer": []}
        for v in names:
            n += 1
            write_image(d / "images" / f"{n}.jpg", n, size)
            fam, maker = variants[v]
            lines["variant"].append(f"{n} {v}")
            lines["family"].append(f"{n} {fam}")
            lines["manufacturer"].append(f"{n} {maker}")
        for level, ls in lines.items():
            (d / f"images_{level}_{split}.txt").write_text("\n".join(ls) + "\n")
    return root / "fgvc-aircraft-2013b"


def make_imagefolder(root: Path, counts: dict[str, tuple[int, int]]) -> Path:
    n = 0
    for cname, (n_train, n_test) in counts.items():
        for split, k in [("train", n_train), ("test", n_test)]:
            for j in range(k):
                n += 1
                write_image(root / split / cname / f"img{j}.png", n)
    return root
