"""The contract of a registered dataset: a class listing (item, label) pairs per split.

A dataset registered in ``fusion_lab.registries.DATASETS`` is a class called as
``cls(root, **options)`` (``options`` from the study's ``dataset.options``) whose instance has

- ``class_names``: list[str], label ``i`` is ``class_names[i]``;
- ``train`` and ``test``: lists of ``(item, label)``; an item is usually an image path;
- ``load(item) -> PIL.Image.Image`` (RGB); the default opens a path;
- optionally the class attribute ``reference_recipe``: the training recipe that
  ``train.recipe: reference`` gives its runs (a dict of values, or the name of another
  recipe; see ``fusion_lab.config.recipes``).

and whose class may say, for validation before anything trains (``ImageSource`` gives
defaults):

- ``check_options(options) -> list[str]``: problems with the study's ``dataset.options``
  (unknown names, values out of range), one line each; the default checks the names
  against the constructor's signature and ``max_unreadable``;
- ``needs_root``: False for a dataset made without files (its root is not looked for);
- ``classes_for(options) -> int | None``: the number of classes when it is known without
  reading the data (``fusionlab bench`` uses it), else None.

Training reads images through ``load_tensor(item)`` (uint8 tensor [3, H, W], RGB), which
decodes JPEG files with libjpeg-turbo directly into a tensor and falls back to ``load``
for anything else (``fusion_lab.data.decode``). A dataset's ``prepare`` hook (e.g. a
banner crop) works on PIL images; a dataset may add ``prepare_tensor`` doing the same on
tensors, otherwise its images take a PIL round trip through ``prepare``.

Loading, splitting, transforms and skipping unreadable files are done once for every
dataset by ``fusion_lab.data``; a dataset class only says where its images are.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from fusion_lab.data.decode import decode_jpeg_bytes, is_path, pil_to_uint8, uint8_to_pil
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
    needs_root = True  # False: made without files, dataset.root is not needed
    classes: int | None = None  # the number of classes, when fixed
    # the training recipe `train.recipe: reference` gives its runs (fusion_lab.config.recipes):
    # a dict of values or another recipe's name; None: "generic", the CUB recipe's shape
    reference_recipe: dict[str, Any] | str | None = None
    square_size: int | None = None  # images already resized to this square (a cache)
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

    def load_tensor(self, item: Any) -> torch.Tensor:
        """The image ``item`` as uint8 [3, H, W] RGB; raises as ``load`` does when unreadable.

        A JPEG file read by the default ``load`` is decoded by libjpeg-turbo straight into a
        tensor; every other case (other formats, files the fast decoder refuses, datasets
        with their own ``load``) goes through ``load``, so PIL decides what is unreadable.
        """
        if type(self).load is ImageSource.load and is_path(item):
            with open(item, "rb") as f:
                image = decode_jpeg_bytes(f.read())
            if image is not None:
                return self.prepare_tensor(image)
        return pil_to_uint8(self.load(item))

    def prepare_tensor(self, image: torch.Tensor) -> torch.Tensor:
        """``prepare`` on a uint8 tensor; by default a PIL round trip when ``prepare`` is set."""
        if type(self).prepare is ImageSource.prepare:
            return image
        return pil_to_uint8(self.prepare(uint8_to_pil(image)))

    def describe_item(self, item: Any) -> str:
        """How an item is named in reports of unreadable files."""
        return str(item)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> list[str]:
        """Problems with ``dataset.options`` found without reading the data."""
        return option_problems(cls, options)

    @classmethod
    def classes_for(cls, options: dict[str, Any]) -> int | None:
        """The number of classes with these options, without reading the data (or None)."""
        return cls.classes


def option_problems(cls: type, options: dict[str, Any]) -> list[str]:
    """Option names the dataset class does not take, and ``max_unreadable`` out of [0, 1]."""
    options = dict(options or {})
    problems = []
    if "max_unreadable" in options:
        value = options.pop("max_unreadable")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
            problems.append(f"dataset {getattr(cls, 'name', cls.__name__)!r}: option "
                            f"max_unreadable must be a fraction in [0, 1], got {value!r}")
    params = [p for p in inspect.signature(cls).parameters if p != "root"]
    unknown = sorted(k for k in options if k not in params)
    if unknown:
        problems.append(f"dataset {getattr(cls, 'name', cls.__name__)!r} does not take "
                        f"options {unknown}; valid options: {', '.join([*params, 'max_unreadable'])}")
    return problems


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
