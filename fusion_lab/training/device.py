"""Where a model runs: the device, its name, mixed precision and the model's layout on it.

Training (``fusion_lab.training.train``), ``fusionlab bench`` and ``scripts/gpu_throughput.py`` all
place models with ``prepare_model`` and name devices with ``device_name``, so what a
benchmark measures is what training runs.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fusion_lab.errors import FusionLabError

AMP_MODES = ("auto", "bf16", "fp16", "off")


def resolve_device(device: str) -> torch.device:
    """auto | cpu | cuda | cuda:N as a torch device; one error when CUDA is asked for and
    torch sees none."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FusionLabError("--device cuda was asked for, but torch sees no CUDA device; "
                             "use --device cpu or auto")
    return torch.device(device)


_DEFAULT_THREADS: list[int] = []  # torch's thread count before a run of this process set one


def set_threads(threads: int | None) -> None:
    """A run's CPU threads (``train.threads``), set before it does any tensor work: N
    intra-op threads (and N inter-op threads, where torch still allows it: once per process,
    before any inter-op work), or None for torch's default, the count this process had
    before any run set one (so a run without the key trains as it did before it existed)."""
    if threads is None and not _DEFAULT_THREADS:
        return  # no run of this process set a count: torch's default, untouched
    if not _DEFAULT_THREADS:
        _DEFAULT_THREADS.append(torch.get_num_threads())
    torch.set_num_threads(threads or _DEFAULT_THREADS[0])
    if threads is not None:
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # already set, or inter-op work has begun: results do not depend on it
            pass


def device_name(dev: torch.device) -> str:
    """How results name a device: ``cuda:0 (NVIDIA H100 ...)`` or ``cpu (N threads)``."""
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def prepare_model(model: nn.Module, dev: torch.device, channels_last: bool = True,
                  compile: bool = False) -> tuple[nn.Module, bool]:
    """Move a model to its device and lay it out as training does.

    On CUDA only: channels_last memory format (``train.channels_last``) and
    ``torch.compile`` of the fusion and attention modules (``train.compile``).
    Returns the model and whether inputs should be made channels_last too.
    """
    model = model.to(dev)
    channels_last = channels_last and dev.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile and dev.type == "cuda":
        model.fusion = torch.compile(model.fusion)
        model.attention = torch.compile(model.attention)
    return model, channels_last


@dataclass
class Precision:
    autocast: Callable[[], Any]
    scaler: torch.amp.GradScaler | None
    name: str


def precision(amp: str, device: torch.device) -> Precision:
    """Autocast context and grad scaler for ``train.amp`` on this device."""
    if device.type != "cuda" or amp == "off":
        return Precision(nullcontext, None, "fp32")
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp not in ("bf16", "fp16"):
        raise FusionLabError(f"train.amp must be auto, bf16, fp16 or off, got {amp!r}")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    return Precision(lambda: torch.autocast("cuda", dtype=dtype), scaler, amp)
