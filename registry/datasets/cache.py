"""``cache``: a pre-resized copy of another dataset, written by ``fusionlab data cache``.

``root`` is the cache's folder (``index.json`` and ``images/``). Classes, splits and their
order are the source dataset's, and so is the reference recipe of a run on it
(``recipe_source``); ``square_size`` is the side of the cached squares, which a run's
``train.resize`` must equal (``fusion_lab.data.build_data`` checks it). See
``fusion_lab.data.cache``.
"""

from __future__ import annotations

import json
from pathlib import Path

from fusion_lab.data.cache import FORMAT, INDEX
from fusion_lab.data.source import ImageSource, find_root
from fusion_lab.errors import DatasetError
from fusion_lab.registries import DATASETS

HOW = "`fusionlab data cache NAME ROOT OUT --size S`"


@DATASETS.register("cache")
class CachedDataset(ImageSource):
    """A pre-resized copy of a dataset (fusionlab data cache); train.resize must equal its size."""

    name = "cache"
    url = f"a folder written by {HOW}"

    def __init__(self, root: str | None):
        folder = find_root(self.name, root, INDEX, [], [INDEX, "images/"], self.url)
        try:
            index = json.loads((folder / INDEX).read_text())
        except (OSError, ValueError) as e:
            raise DatasetError(f"dataset 'cache': cannot read {folder / INDEX}: {e}") from e
        if index.get("format") != FORMAT:
            raise DatasetError(f"dataset 'cache': {folder} has format {index.get('format')!r}, "
                               f"expected {FORMAT}; write it again with {HOW}")
        self.folder = folder
        self.square_size = int(index["size"])
        self.source_name = index["dataset"]
        self.class_names = list(index["class_names"])
        self.names: dict[str, str] = {}
        for split in ("train", "test"):
            samples = []
            for i, (file, label, described) in enumerate(index[split]):
                # An image unreadable in the source keeps its place; loading it fails.
                item = str(folder / file) if file else str(folder / f"unreadable/{split}/{i}")
                self.names[item] = described
                samples.append((item, int(label)))
            setattr(self, split, samples)

    @staticmethod
    def recipe_source(root: str) -> str | None:
        """The dataset this cache copies (its index's ``dataset``): a run on the cache
        takes that dataset's reference recipe (``fusion_lab.config.recipes``). None where
        the index cannot be read (validation reports the folder)."""
        try:
            index = json.loads((Path(root).expanduser() / INDEX).read_text())
        except (OSError, ValueError):
            return None
        source = index.get("dataset") if isinstance(index, dict) else None
        return source if isinstance(source, str) else None

    def describe_item(self, item: str) -> str:
        return f"{self.names.get(item, item)} (cached as {Path(item).name})"
