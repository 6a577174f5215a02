"""Cost measurements of a model: forward FLOPs (torch.utils.flop_counter)."""

from __future__ import annotations

import platform
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def forward_gflops(model: nn.Module, image_size: int | tuple[int, int], batch: int = 1) -> float:
    """Forward GFLOPs (2 per multiply-add) of ``model`` on one batch, in eval mode."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(batch, 3, h, w, device=next(model.parameters()).device)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / 1e9


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
