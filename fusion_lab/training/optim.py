"""The optimizer of a run, its learning-rate schedule and one optimizer step.

``make_optimizer`` takes a resolved, checked config (``fusion_lab.plan`` checked
``train.optimizer`` and ``train.schedule`` against the values their fields declare).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from fusion_lab.config import RunConfig, TrainConfig
from fusion_lab.models.assemble import FusionModel, split_backbone
from fusion_lab.training.device import Precision

# train.optimizer's values (``config.OPTIMIZERS``, which the config's check holds it to)
OPTIMIZERS: dict[str, Callable[[list[dict], TrainConfig], torch.optim.Optimizer]] = {
    "sgd": lambda groups, t: torch.optim.SGD(groups, lr=t.lr_new, momentum=t.momentum,
                                             weight_decay=t.weight_decay),
    "adamw": lambda groups, t: torch.optim.AdamW(groups, lr=t.lr_new,
                                                 weight_decay=t.weight_decay),
}


def make_optimizer(model: FusionModel, cfg: RunConfig):
    """SGD (or AdamW) with the backbone's and the new modules' learning rates; cosine per
    epoch (or constant), after ``warmup_epochs`` of linear warm-up. ``cfg`` is resolved and
    checked (``train.optimizer`` and ``train.schedule`` hold values their fields declare).

    Group 0 (``lr_backbone``): the backbone but its last ``train.backbone_high_lr_stages``
    stages; group 1 (``lr_new``): those stages and every new module (the released CUB
    script's split puts ResNet50's layer4 there).
    """
    t = cfg.train
    low, high = split_backbone(model.backbone, t.backbone_high_lr_stages)
    new = high + [p for m in model.new_modules() for p in m.parameters()]
    groups = [{"params": low, "lr": t.lr_backbone}, {"params": new, "lr": t.lr_new}]
    opt = OPTIMIZERS[t.optimizer](groups, t)

    def factor(epoch: int) -> float:
        if epoch < t.warmup_epochs:
            return (epoch + 1) / (t.warmup_epochs + 1)
        if t.schedule == "constant":
            return 1.0
        span = max(1, t.epochs - t.warmup_epochs)  # cosine
        return 0.5 * (1 + math.cos(math.pi * (epoch - t.warmup_epochs) / span))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, prec: Precision,
                   model: nn.Module, grad_clip: float | None = None) -> None:
    """Backward and one optimizer step, through the grad scaler when fp16 needs one."""
    opt.zero_grad(set_to_none=True)
    if prec.scaler is not None:
        prec.scaler.scale(loss).backward()
        if grad_clip:
            prec.scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        prec.scaler.step(opt)
        prec.scaler.update()
    else:
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
