"""Any dataset laid out as ``root/train/<class>/*`` and ``root/test/<class>/*``.

Classes are the sub-folders of train/, sorted by name; test/ may lack some of them but
must not have others. Files with image extensions only (case-insensitive).
"""

from __future__ import annotations

from pathlib import Path

from fusion_lab.data.source import ImageSource, find_root
from fusion_lab.errors import DatasetError
from fusion_lab.registries import DATASETS

EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
EXPECTED = ["train/<class>/<images>", "test/<class>/<images>"]
URL = "your own data (an image folder with train/ and test/ inside)"


def _list(folder: Path, classes: list[str]) -> list[tuple[str, int]]:
    out = []
    for label, name in enumerate(classes):
        d = folder / name
        if d.is_dir():
            files = sorted(p for p in d.rglob("*") if p.suffix.lower() in EXTENSIONS)
            out.extend((str(p), label) for p in files)
    return out


@DATASETS.register("imagefolder")
class ImageFolder(ImageSource):
    """A generic root/train/<class>/ and root/test/<class>/ image folder."""

    name = "imagefolder"
    url = URL

    def __init__(self, root: str | None):
        folder = find_root(self.name, root, "train", [], EXPECTED, URL)
        if not (folder / "test").is_dir():
            raise DatasetError(
                f"dataset 'imagefolder': no test/ folder in {folder}; expected {', '.join(EXPECTED)}"
            )
        self.class_names = sorted(p.name for p in (folder / "train").iterdir() if p.is_dir())
        extra = sorted(
            p.name for p in (folder / "test").iterdir()
            if p.is_dir() and p.name not in self.class_names
        )
        if extra:
            raise DatasetError(
                f"dataset 'imagefolder': classes {extra} are in {folder / 'test'} but not in "
                f"{folder / 'train'}"
            )
        self.train = _list(folder / "train", self.class_names)
        self.test = _list(folder / "test", self.class_names)
