"""Batches onto the model's device: uint8 -> normalised float there, prefetched on CUDA.

Loaders yield uint8 batches (``fusion_lab.data.loading``); ``on_device(loader, device)``
wraps one so that iterating it yields ``(float32 [B, 3, S, S] normalised, int64 [B])`` on
``device``, channels_last when asked. On CUDA the next batch is copied (from pinned memory),
decoded when GPU decoding is on, and normalised on a side stream while the current one
trains. Training, evaluation and ``viz`` all take their input through here, so every
consumer sees the same normalisation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from fusion_lab.data.gpu_decode import PendingBatch, complete
from fusion_lab.data.transforms import normalise


class DeviceLoader:
    """Iterates a ``SkippingLoader``, yielding normalised batches on ``device``.

    Args:
        loader: a SkippingLoader (uint8 batches, or pending ones with GPU decoding).
        device: where the model runs.
        channels_last: memory format of the images handed to the model.
    """

    def __init__(self, loader, device: torch.device | str, channels_last: bool = False):
        self.loader = loader
        self.device = torch.device(device)
        self.channels_last = channels_last

    def __len__(self) -> int:
        return len(self.loader)

    def prepare(self, images: torch.Tensor | PendingBatch, labels: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """One loader batch -> (normalised float images, labels) on the device."""
        if isinstance(images, PendingBatch):
            images, labels, failed = complete(images, labels, self.loader.dataset, self.device)
            if failed:
                self.loader.log.record(self.loader.split, failed)
        else:
            images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return normalise(images), labels.to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.device.type != "cuda":
            for images, labels in self.loader:
                images, labels = self.prepare(images, labels)
                if len(labels):
                    yield images, labels
            return
        yield from self._prefetching(torch.cuda.Stream(self.device))

    def _prefetching(self, stream: Any) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Prepare batch k+1 on the side ``stream`` before handing out batch k."""
        batches = iter(self.loader)

        def load_next():
            for images, labels in batches:
                with self._on(stream):
                    out = self.prepare(images, labels)
                if len(out[1]):
                    return out
            return None

        nxt = load_next()
        while nxt is not None:
            self._hand_over(nxt, stream)
            batch, nxt = nxt, None
            nxt = load_next()
            yield batch

    def _on(self, stream: Any):
        """Context: CUDA work queued inside goes to ``stream``."""
        return torch.cuda.stream(stream)

    def _hand_over(self, batch: tuple[torch.Tensor, ...], stream: Any) -> None:
        """Make the caller's stream wait for ``stream``'s work on ``batch`` and own its memory."""
        current = torch.cuda.current_stream(self.device)
        current.wait_stream(stream)
        for t in batch:  # memory allocated on the side stream is now used on the caller's
            t.record_stream(current)


def on_device(loader, device: torch.device | str, channels_last: bool = False) -> DeviceLoader:
    """``loader``'s batches, normalised on ``device`` (see ``DeviceLoader``)."""
    return DeviceLoader(loader, device, channels_last)
