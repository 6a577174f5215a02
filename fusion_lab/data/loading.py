"""Turning a dataset's (item, label) list into batches, skipping unreadable images.

How skipping works, and why it is safe with DataLoader workers:

1. ``SplitDataset.__getitem__`` reads the image as a uint8 tensor (``ImageSource.load_tensor``),
   catches the errors PIL raises on a corrupt or truncated file and returns a ``Failed``
   marker naming the file instead of a sample.
2. ``collate_skipping`` (run inside the worker) stacks the good samples and passes the
   names of the failed ones along as a third element of the batch.
3. ``SkippingLoader.__iter__`` (run in the main process) removes that third element,
   records the names in a ``SkipLog`` shared by all splits and yields ``(images, labels)``:
   uint8 [B, 3, S, S] and int64 [B]; normalisation happens on the device
   (``fusion_lab.data.device``). A batch whose every sample failed is dropped.

With GPU decoding (``decode="gpu"``) a JPEG file's sample is its encoded bytes plus its
crop (``Encoded``): the worker reads the file only, and the batch's ``images`` is then a
``PendingBatch`` that ``fusion_lab.data.device`` completes on the GPU.

The count therefore lives in the main process only, whatever the number of workers and
whether they are forked, spawned or persistent; no shared memory or manager is needed.
Batches that lost a sample are smaller than ``batch_size``. When a split's unreadable files
exceed ``max_unreadable`` (a fraction of that split), iteration raises ``DatasetError``.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from fusion_lab.config import DECODERS  # the values __getitem__ implements
from fusion_lab.data.gpu_decode import Encoded, PendingBatch, read_encoded
from fusion_lab.data.source import IMAGE_ERRORS, ImageSource
from fusion_lab.data.transforms import FGVCTransform, crop_box
from fusion_lab.errors import DatasetError


@dataclass(frozen=True)
class Failed:
    """Stands for a sample whose image could not be read."""

    item: str


class SplitDataset(Dataset):
    """One split of a source: indexes into ``samples`` and applies ``transform``.

    An index is either an int or ``(int, sample_seed)`` from ``EpochSampler``; the seed
    drives the random crop and flip of a train transform. ``decode="gpu"`` returns JPEG
    files undecoded (``Encoded``) for the GPU; other images are decoded here as usual.
    ``decode`` comes validated from planning; any other value is refused here rather than
    silently decoded on the CPU.
    """

    def __init__(self, source: ImageSource, samples: Sequence[tuple[Any, int]],
                 transform: FGVCTransform, decode: str = "cpu"):
        if decode not in DECODERS:
            raise DatasetError(f"dataset.decode must be one of {', '.join(DECODERS)}, "
                               f"got {decode!r}")
        self.source = source
        self.samples = list(samples)
        self.transform = transform
        self.decode = decode

    def __len__(self) -> int:
        return len(self.samples)

    def generator(self, sample_seed: int) -> torch.Generator | None:
        return torch.Generator().manual_seed(sample_seed) if self.transform.train else None

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor | Encoded, int] | Failed:
        index, sample_seed = key if isinstance(key, tuple) else (key, 0)
        item, label = self.samples[index]
        try:
            if self.decode == "gpu":
                data = read_encoded(self.source, item)
                if data is not None:
                    tf = self.transform
                    box = crop_box(tf.image_size, tf.resize, tf.train,
                                   self.generator(sample_seed), tf.flip)
                    return Encoded(data, *box, index), int(label)
            image = self.source.load_tensor(item)
        except IMAGE_ERRORS:
            return Failed(self.source.describe_item(item))
        return self.transform(image, self.generator(sample_seed)), int(label)


def collate_skipping(batch: list) -> tuple[torch.Tensor | PendingBatch, torch.Tensor, list[str]]:
    """Stack the readable samples; return the names of the unreadable ones beside them."""
    good = [b for b in batch if not isinstance(b, Failed)]
    failed = [b.item for b in batch if isinstance(b, Failed)]
    if not good:
        return torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64), failed
    labels = torch.tensor([y for _, y in good], dtype=torch.int64)
    if any(isinstance(x, Encoded) for x, _ in good):
        return PendingBatch.of([x for x, _ in good]), labels, failed
    images = default_collate([x for x, _ in good])  # uses shared memory inside a worker
    return images, labels, failed


class SkipLog:
    """Unreadable files met so far, per split, and the limit on how many are tolerated.

    Args:
        dataset: the dataset's name, for messages.
        max_unreadable: largest tolerated fraction of unreadable files in one split.
    """

    def __init__(self, dataset: str, max_unreadable: float = 0.01):
        self.dataset = dataset
        self.max_unreadable = max_unreadable
        self.sizes: dict[str, int] = {}
        self.failed: dict[str, dict[str, None]] = {}  # split -> ordered set of files

    def add_split(self, split: str, size: int) -> None:
        self.sizes[split] = size
        self.failed.setdefault(split, {})

    def record(self, split: str, items: list[str]) -> None:
        seen = self.failed.setdefault(split, {})
        for item in items:
            seen[item] = None
        limit = self.max_unreadable * self.sizes.get(split, 0)
        if len(seen) > limit:
            shown = ", ".join(list(seen)[:3])
            raise DatasetError(
                f"dataset {self.dataset!r}: {len(seen)} unreadable images in the {split} split "
                f"of {self.sizes.get(split, 0)} (more than max_unreadable={self.max_unreadable:g}),"
                f" e.g. {shown}; run `fusionlab data check` to list them all"
            )

    def count(self) -> int:
        return len(self.files())

    def files(self) -> list[str]:
        out: dict[str, None] = {}
        for seen in self.failed.values():
            out.update(seen)
        return list(out)


class SkippingLoader(DataLoader):
    """A DataLoader yielding ``(images, labels)`` that logs and drops unreadable samples.

    Takes DataLoader's arguments plus ``split`` (its name) and ``log`` (a SkipLog); the
    collate function is always ``collate_skipping``.
    """

    def __init__(self, dataset: SplitDataset, *, split: str, log: SkipLog, **kwargs: Any):
        kwargs["collate_fn"] = collate_skipping
        super().__init__(dataset, **kwargs)
        self.split = split
        self.log = log
        log.add_split(split, len(dataset))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels, failed in super().__iter__():
            if failed:
                self.log.record(self.split, failed)
            if len(labels):
                yield images, labels


def ignore_stop_signals(worker_id: int) -> None:
    """A loader worker's start: ignore SIGINT and SIGTERM.

    A terminal's Ctrl-C reaches the whole process group. Forked workers inherit the main
    process's handlers, which raise ``RunInterrupted``/``KeyboardInterrupt`` in the worker:
    it dies, and the main process saw "DataLoader worker exited unexpectedly" (a failed run
    and a page of tracebacks). The main process alone decides: it records the run as
    interrupted and shuts its workers down.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def quiet_fd_sharer() -> None:
    """Leave out the traceback that multiprocessing's descriptor sharer prints when Ctrl-C
    stops a run while a loader worker is receiving a batch's file descriptor.

    torch sends tensors between processes by passing file descriptors through
    ``multiprocessing.resource_sharer``, whose server thread in the main process reports
    any error of a connection through ``sys.excepthook`` unless Python is already exiting.
    A worker stopped in mid-transfer (the run was interrupted and its workers shut down)
    drops its connection, and the user saw a page of traceback under the one line saying
    the run was recorded as interrupted. Only connection errors raised inside that module
    are left out; every other exception reaches the hook installed before. Idempotent.
    """
    previous = sys.excepthook
    if getattr(previous, "quiet_fd_sharer", False):
        return

    def hook(etype: type[BaseException], value: BaseException, tb: Any) -> None:
        if issubclass(etype, (OSError, EOFError)) and _through_resource_sharer(tb):
            return
        previous(etype, value, tb)

    hook.quiet_fd_sharer = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def _through_resource_sharer(tb: Any) -> bool:
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        if name.endswith("multiprocessing/resource_sharer.py"):
            return True
        tb = tb.tb_next
    return False
