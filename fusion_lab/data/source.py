"""The contract of a registered dataset: a class listing (item, label) pairs per split.

A dataset registered in ``fusion_lab.registries.DATASETS`` is a class called as
``cls(root, **options)`` (``options`` from the study's ``dataset.options``) whose instance has

- ``class_names``: list[str], label ``i`` is ``class_names[i]``;
- ``train`` and ``test``: lists of ``(item, label)``; an item is usually an image path;
- ``load(item) -> PIL.Image.Image`` (RGB); the default opens a path.

Loading, splitting, transforms and skipping unreadable files are done once for every
dataset by ``fusion_lab.data``; a dataset class only says where its images are.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image

from fusion_lab.errors import DatasetError

# What PIL (and the formats it wraps) raises on a truncated, corrupt or non-image file.
IMAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    Image.DecompressionBombError,
)


class ImageSource:
    """Base class of registered datasets (see the module docstring)."""

    name = "dataset"  # the registered name, used in messages
    url = ""  # where the dataset is published
    needs_root = True  # False: made in memory, `root` is ignored and never checked
    class_names: list[str]
    train: list[tuple[Any, int]]
    test: list[tuple[Any, int]]

    def load(self, item: Any) -> Image.Image:
        """The image ``item`` as RGB; raises one of IMAGE_ERRORS when it cannot be read."""
        with Image.open(item) as im:
            return self.prepare(im.convert("RGB"))

    def prepare(self, image: Image.Image) -> Image.Image:
        """Hook applied to every loaded image (e.g. cropping a banner); default: none."""
        return image

    def describe_item(self, item: Any) -> str:
        """How an item is named in reports of unreadable files."""
        return str(item)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def find_root(name: str, root: str | Path | None, marker: str, subfolders: Iterable[str],
              expected: list[str], url: str) -> Path:
    """The folder holding ``marker``: ``root`` itself or one of its ``subfolders``.

    Lets a user point at either the dataset's own folder or the folder above it.

    Raises:
        DatasetError: naming the dataset, the folders looked in, the files expected and
            where the dataset is published.
    """
    if root is None:
        raise DatasetError(
            f"dataset {name!r} needs dataset.root (the folder holding {', '.join(expected)}); "
            f"get it from {url}"
        )
    base = Path(root).expanduser()
    candidates = [base, *(base / s for s in subfolders)]
    for c in candidates:
        if (c / marker).exists():
            return c
    missing_error(name, candidates, expected, url)


def check_files(name: str, folder: Path, expected: list[str], url: str) -> None:
    """Raise one DatasetError listing every path of ``expected`` missing under ``folder``."""
    missing = [e for e in expected if not (folder / e).exists()]
    if missing:
        missing_error(name, [folder], expected, url, missing=missing)


def missing_error(name: str, looked_in: list[Path], expected: list[str], url: str,
                  missing: list[str] | None = None) -> None:
    where = " or ".join(str(p) for p in looked_in)
    what = f"missing {', '.join(missing)}" if missing else "not found"
    raise DatasetError(
        f"dataset {name!r} {what} in {where}; expected {', '.join(expected)} "
        f"(download it from {url} and set dataset.root to its folder)"
    )
