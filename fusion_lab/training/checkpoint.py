"""A run's checkpoint: saved atomically after each epoch, restored to resume the run.

``checkpoint.pt`` holds the model, optimizer, scheduler, grad scaler and RNG states, the
epoch and the best validation epoch so far; ``resume`` restores them (when the checkpoint
belongs to the run) and cuts ``metrics.jsonl`` to the epochs the checkpoint holds, so a
resumed run writes each epoch exactly once. The checkpoint also carries its epoch's
metrics line: a process killed (SIGKILL, a node lost) after the checkpoint was replaced but
before that line was appended gets the line back on resume instead of a missing epoch.

A new checkpoint is written to a temporary file and fsynced; the old one is set aside as
``checkpoint.prev.pt`` until the new one has been renamed into place and the folder fsynced.
An unreadable checkpoint (empty, truncated) falls back to ``checkpoint.prev.pt`` or, when
there is none, restarts the run from epoch 0, with one warning either way.
"""

from __future__ import annotations

import json
import os
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fusion_lab.errors import FusionLabWarning
from fusion_lab.store import (
    CHECKPOINT,
    CHECKPOINT_PREV,
    METRICS_JSONL,
    read_jsonl,
    temp_file_for,
    write_text,
)
from fusion_lab.training.device import Precision


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # a platform or file system that cannot open folders
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: Path, state: dict) -> None:
    """Write ``state`` to ``path`` so that a crash at any moment leaves a readable copy.

    Written to a temp file and fsynced; ``checkpoint.pt``'s previous version is kept as
    ``checkpoint.prev.pt`` until the new one is renamed into place and the folder fsynced.
    A full or read-only disk removes the temp file and raises ``store.StorageError``.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temp_file_for(path, tmp):
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
    prev = path.with_name(CHECKPOINT_PREV) if path.name == CHECKPOINT else None
    if prev is not None and path.exists():
        os.replace(path, prev)
        _fsync_dir(path.parent)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    if prev is not None:
        prev.unlink(missing_ok=True)


def _load(path: Path, dev: torch.device) -> tuple[dict | None, str | None]:
    """(the checkpoint at ``path``, None), or (None, why it cannot be read); (None, None): absent."""
    if not path.exists():
        return None, None
    try:
        state = torch.load(path, map_location=dev, weights_only=False)
    except torch.OutOfMemoryError:
        raise
    except Exception as e:  # torch.load raises many kinds on a damaged file
        return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if not isinstance(state, dict):
        return None, "not a checkpoint"
    return state, None


def load_checkpoint(run_dir: Path, dev: torch.device, write: bool = True) -> dict | None:
    """The run's checkpoint, else the previous one (put back in its place unless ``write``
    is false), else None; one warning when a checkpoint was there but unreadable."""
    path, prev = run_dir / CHECKPOINT, run_dir / CHECKPOINT_PREV
    state, why = _load(path, dev)
    if state is not None:
        return state
    older, _ = _load(prev, dev)
    said = f"{path} is unreadable ({why})" if why else f"{path} is missing"
    if older is not None:
        warnings.warn(FusionLabWarning(
            f"{said}; resuming from {CHECKPOINT_PREV} (epoch {older.get('epoch')})"),
            stacklevel=3)
        if write:
            os.replace(prev, path)
        return older
    if why:
        warnings.warn(FusionLabWarning(f"{said}; restarting the run from epoch 0"),
                      stacklevel=3)
    return None


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


@dataclass
class Resumed:
    """Where a run starts: 0 for a fresh run, else the checkpoint's epoch and its state."""

    epoch: int = 0
    best: dict | None = None  # the best validation epoch so far (see ``run_summary``)
    wall_before_s: float = 0.0  # wall time of the earlier, interrupted attempts
    rows: list[dict] = field(default_factory=list)  # metrics.jsonl lines of those epochs


def resume(run_dir: Path, run_id: str, model: nn.Module, opt: torch.optim.Optimizer,
           sched: Any, prec: Precision, dev: torch.device, write: bool = True) -> Resumed:
    """Restore the run's checkpoint (when it belongs to ``run_id``) into the model,
    optimizer, scheduler, grad scaler and RNGs; cut metrics.jsonl to the epochs it holds
    (unless ``write`` is false: DDP processes other than 0 only read)."""
    out, last = Resumed(), None
    state = load_checkpoint(run_dir, dev, write)
    if state is not None:
        if state.get("run_id") == run_id:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            if prec.scaler is not None and state.get("scaler"):
                prec.scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
            out.epoch, out.best = state["epoch"], state.get("best_val")
            out.wall_before_s = state.get("wall_time_s", 0.0)
            last = state.get("record")  # the metrics line of the checkpoint's epoch
    # Keep exactly the metrics of the epochs the checkpoint holds.
    metrics_path = run_dir / METRICS_JSONL
    out.rows = [r for r in read_jsonl(metrics_path) if r.get("epoch", 0) <= out.epoch]
    if last is not None and last.get("epoch") == out.epoch and (
            not out.rows or out.rows[-1].get("epoch") != out.epoch):
        out.rows.append(last)  # killed between the checkpoint and its metrics line
    if write:
        write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in out.rows))
    return out
