"""GPU decoding (``dataset.decode: gpu``): workers read JPEG bytes, nvJPEG decodes batches.

With GPU decoding a loader worker reads a JPEG file's bytes and draws the sample's crop
(``Encoded``); it decodes nothing. The main process hands each batch's encoded files to
``torchvision.io.decode_jpeg(list, device=...)`` in one call, then resizes, crops and flips
each image on the device (the same geometry as ``FGVCTransform``). So the CPU cost per
image is a file read, and the workers send a few tens of kB per image instead of 600 kB.

Fallbacks keep the CPU path's behaviour:

- images that are not JPEG files, or whose dataset changes them with a PIL-only
  ``prepare`` hook, are decoded in the worker as usual (the batch mixes both kinds);
- a file the device decoder refuses (a truncated or corrupt JPEG, or a colour format it
  does not turn into RGB) is decoded on the CPU through ``ImageSource.load_tensor``, whose
  PIL fallback decides whether it is unreadable; unreadable files are skipped and counted
  as on the CPU path.

On the CPU (``device="cpu"``) the same code runs with torchvision's CPU decoder: that is
how the tests check the batching and the fallbacks without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fusion_lab.data.decode import is_path, whole_jpeg
from fusion_lab.data.source import IMAGE_ERRORS, ImageSource
from fusion_lab.data.transforms import crop_flip, resize_square


@dataclass
class Encoded:
    """A JPEG file's bytes (uint8 [N]) and the crop drawn for it; ``index`` into the split."""

    data: torch.Tensor
    top: int
    left: int
    flip: bool
    index: int


@dataclass
class PendingBatch:
    """A batch whose JPEGs are still encoded: ``items[i]`` is a uint8 image or ``Encoded``."""

    items: list[torch.Tensor | Encoded]

    @classmethod
    def of(cls, items: list[torch.Tensor | Encoded]) -> PendingBatch:
        return cls(list(items))

    def __len__(self) -> int:
        return len(self.items)


def read_encoded(source: ImageSource, item: Any) -> torch.Tensor | None:
    """The bytes of a JPEG file the device can decode for ``source``, else None.

    None when the dataset loads images its own way, changes them with a PIL-only
    ``prepare`` hook, or the file is not a whole JPEG (``decode.whole_jpeg``): the worker
    then decodes it on the CPU, where PIL judges a truncated file.
    Raises OSError when the file cannot be read at all (the loader skips it).
    """
    cls = type(source)
    if cls.load is not ImageSource.load or not is_path(item):
        return None
    if cls.prepare is not ImageSource.prepare and cls.prepare_tensor is ImageSource.prepare_tensor:
        return None
    with open(item, "rb") as f:
        data = f.read()
    if not whole_jpeg(data):  # not a JPEG, or truncated: decoded (or judged) on the CPU
        return None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def decode_many(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """Decode JPEG byte tensors on ``device``, in one call when all succeed.

    Returns uint8 [3, H, W] RGB per file, or None where the device decoder failed or did not
    give 3 channels (the caller then decodes that file on the CPU).
    """
    # here, not at the top: torchvision's decoders (a slow import) only once a JPEG is decoded
    from torchvision.io import ImageReadMode, decode_jpeg

    if not data:
        return []
    try:
        out = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:  # one bad file fails the whole call: retry one by one
        out = []
        for d in data:
            try:
                out.append(decode_jpeg(d, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                out.append(None)
    return [x if x is not None and x.dim() == 3 and x.shape[0] == 3 else None for x in out]


def complete(batch: PendingBatch, labels: torch.Tensor, dataset: Any, device: torch.device
             ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode and transform a pending batch on ``device``.

    Args:
        batch: from a loader over ``dataset`` (a ``SplitDataset`` with ``decode="gpu"``).
        labels: int64 [B], one per item, in order.
        dataset: gives the source, the samples and the transform's geometry.
        device: where to decode.

    Returns:
        (uint8 [B', 3, S, S] on ``device``, the labels kept, names of unreadable files).
    """
    source, tf = dataset.source, dataset.transform
    encoded = [x for x in batch.items if isinstance(x, Encoded)]
    decoded = iter(decode_many([e.data for e in encoded], device))
    hook = type(source).prepare_tensor is not ImageSource.prepare_tensor
    images, keep, failed = [], [], []
    for pos, x in enumerate(batch.items):
        if not isinstance(x, Encoded):
            images.append(x.to(device, non_blocking=True))
            keep.append(pos)
            continue
        image = next(decoded)
        if image is None:  # the device decoder refused it: the CPU path (and PIL) decide
            item = dataset.samples[x.index][0]
            try:
                image = source.load_tensor(item)
            except IMAGE_ERRORS:
                failed.append(source.describe_item(item))
                continue
            image = crop_flip(resize_square(image, tf.resize), x.top, x.left, tf.image_size, x.flip)
            images.append(image.contiguous().to(device, non_blocking=True))
        else:
            if hook:
                image = source.prepare_tensor(image)
            images.append(crop_flip(resize_square(image, tf.resize), x.top, x.left,
                                    tf.image_size, x.flip))
        keep.append(pos)
    if not images:
        return torch.empty(0, dtype=torch.uint8, device=device), labels[:0], failed
    return torch.stack(images), labels[keep], failed
