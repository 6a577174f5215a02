"""Evaluation: accuracy of the combined prediction and of each head over a loader.

A batch-dependent model (``model.batch_dependent``, e.g. the released code's ConvLSTM over
the minibatch) is warned about when it is evaluated one image at a time.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from fusion_lab.data.device import on_device
from fusion_lab.errors import FusionLabWarning
from fusion_lab.training.device import Precision


def warn_batch_of_one(model: nn.Module, batch_size: int | None) -> None:
    """Warn when a batch-dependent model is evaluated one image at a time."""
    if batch_size == 1 and getattr(model, "batch_dependent", False):
        warnings.warn(FusionLabWarning(
            "this model's predictions depend on its batch (ConvLSTM over the minibatch) and "
            "it is evaluated in batches of 1: every image then sees a zero state, unlike "
            "the released code, which tests in batches of its training batch size"),
            stacklevel=2)


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, prec: Precision,
             channels_last: bool) -> dict[str, Any]:
    """Accuracy (percent) of the combined prediction and of each head."""
    warn_batch_of_one(model, getattr(loader, "batch_size", None))
    model.eval()
    correct: dict[str, int] = {}
    total = last = 0
    for images, labels in on_device(loader, device, channels_last):  # normalised there
        last = labels.numel()
        with prec.autocast():
            out = model(images)
        preds = {"combined": out["combined"], **out["logits"]}
        for name, logits in preds.items():
            correct[name] = correct.get(name, 0) + int((logits.argmax(1) == labels).sum())
        total += labels.numel()
    if total == 0:
        return {"acc": float("nan"), "heads": {}, "n": 0}
    if last == 1 and total > 1 and getattr(model, "batch_dependent", False):
        warnings.warn(FusionLabWarning(
            f"this model's predictions depend on its batch and the last of its {total} test "
            "images is alone in its batch: that image sees a zero state (as in the released "
            "code)"), stacklevel=2)
    acc = {k: 100.0 * v / total for k, v in correct.items()}
    heads = {k: v for k, v in acc.items() if k != "combined"}
    return {"acc": acc["combined"], "heads": heads, "n": total}
