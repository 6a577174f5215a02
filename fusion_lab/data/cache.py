"""A pre-resized copy of a dataset: decode and resize once, train from small squares.

``write_cache`` decodes every image of a dataset (with its options and hooks, e.g. the
Aircraft banner crop), resizes it to ``size`` x ``size`` exactly as the train and test
transforms would (``resize_square``), and writes it as a JPEG of the stated quality, plus
``index.json``: the source dataset, its options, the size, the class names and both splits
in their original order (so a val split carved from the cache equals the one carved from
the source). Unreadable images keep their place in the index with no file; a run on the
cache skips and counts them as it would on the source.

A study trains on it with ``dataset: {name: cache, root: OUT}`` and the same ``train.resize``
as ``--size`` (the loader then only crops and flips; a different resize is refused, since
resizing a resized image twice would be a different input). The JPEG re-encoding changes
pixels slightly, so a cached run is a run of its own (its dataset section differs).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torchvision.io import encode_jpeg

from fusion_lab.data.source import IMAGE_ERRORS, ImageSource
from fusion_lab.data.transforms import resize_square

INDEX = "index.json"
FORMAT = 1


@dataclass
class CacheReport:
    images: int
    unreadable: list[str]
    bytes_written: int


def _write_one(source: ImageSource, item: Any, path: Path, size: int, quality: int) -> int | None:
    """Bytes written for one image, or None when it is unreadable."""
    try:
        image = source.load_tensor(item)
    except IMAGE_ERRORS:
        return None
    data = encode_jpeg(resize_square(image, size).contiguous(), quality=quality)
    payload = data.numpy().tobytes()
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)
    return len(payload)


def write_cache(source: ImageSource, name: str, options: dict, out: str | Path, size: int,
                quality: int = 95, threads: int = 2,
                progress: Callable[[int], None] | None = None) -> CacheReport:
    """Write the resized copy of ``source`` (registered as ``name`` with ``options``) to ``out``."""
    torch.set_num_threads(1)  # one image per thread is faster than threads inside ops
    out = Path(out)
    index: dict[str, Any] = {"format": FORMAT, "dataset": name, "options": options,
                             "size": size, "quality": quality,
                             "class_names": list(source.class_names)}
    unreadable: list[str] = []
    total = done = 0
    for split in ("train", "test"):
        folder = out / "images" / split
        folder.mkdir(parents=True, exist_ok=True)
        samples = getattr(source, split)
        paths = [folder / f"{i:06d}.jpg" for i in range(len(samples))]
        with ThreadPoolExecutor(max(1, threads)) as pool:
            written = list(pool.map(
                lambda item, path: _write_one(source, item, path, size, quality),
                [item for item, _ in samples], paths))
        entries = []
        for (item, label), path, n in zip(samples, paths, written):
            described = source.describe_item(item)
            if n is None:
                unreadable.append(described)
            total += n or 0
            entries.append([f"images/{split}/{path.name}" if n is not None else None,
                            int(label), described])
            done += 1
            if progress is not None and done % 500 == 0:
                progress(done)
        index[split] = entries
    tmp = out / f".{INDEX}.tmp"
    tmp.write_text(json.dumps(index))
    os.replace(tmp, out / INDEX)
    return CacheReport(done, unreadable, total)
