"""Cost measurements: forward FLOPs (torch.utils.flop_counter), round-robin timing, the CPU.

``round_robin`` is the one timing loop of ``fusionlab bench``, ``scripts/bench_speed.py``
and ``scripts/gpu_throughput.py``: every callable runs once per round, in turn, so drift
on a shared machine (other jobs, clocks) hits all of them alike.
"""

from __future__ import annotations

import copy
import platform
import time
from collections.abc import Callable, Hashable
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


def image_gflops(model: nn.Module, image_size: int | tuple[int, int], batch: int = 16) -> float:
    """Forward GFLOPs per image: at batch 1, or, for a model whose predictions depend on
    its batch (``batch_dependent``, e.g. a ConvLSTM over the minibatch, which at batch 1
    would skip its recurrence), per image of a ``batch``-image batch, counted on a
    meta-device copy (shapes only, nothing computed)."""
    if not getattr(model, "batch_dependent", False):
        return forward_gflops(model, image_size)
    meta = copy.deepcopy(model).to("meta")
    return forward_gflops(meta, image_size, batch) / batch


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def round_robin(fns: dict[Hashable, Callable[[], object]], repeats: int, warmup: int = 0,
                sync: Callable[[], object] | None = None,
                on_round: Callable[[int, dict[Hashable, float]], object] | None = None,
                ) -> dict[Hashable, list[float]]:
    """Seconds of each callable per timed round, taking the callables in turn each round.

    Args:
        fns: what to time, by key (e.g. one training step per model).
        repeats: timed rounds, after ``warmup`` untimed ones.
        sync: called before and after each call (``torch.cuda.synchronize`` on a GPU).
        on_round: called after every round (warm-up included) with the round's index and
            its seconds per key, e.g. to print progress.
    Returns:
        For each key, its ``repeats`` timings in round order.
    """
    times: dict[Hashable, list[float]] = {key: [] for key in fns}
    for r in range(warmup + repeats):
        this_round = {}
        for key, fn in fns.items():
            if sync is not None:
                sync()
            t0 = time.perf_counter()
            fn()
            if sync is not None:
                sync()
            this_round[key] = time.perf_counter() - t0
            if r >= warmup:
                times[key].append(this_round[key])
        if on_round is not None:
            on_round(r, this_round)
    return times
