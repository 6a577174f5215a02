"""A run's checkpoint: saved atomically after each epoch, restored to resume the run.

``checkpoint.pt`` holds the model, optimizer, scheduler, grad scaler and RNG states, the
epoch and the best validation epoch so far; ``resume`` restores them (when the checkpoint
belongs to the run) and cuts ``metrics.jsonl`` to the epochs the checkpoint holds, so a
resumed run writes each epoch exactly once. The checkpoint also carries its epoch's
metrics line: a process killed (SIGKILL, a node lost) after the checkpoint was replaced but
before that line was appended gets the line back on resume instead of a missing epoch.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fusion_lab.store import CHECKPOINT, METRICS_JSONL, read_jsonl, write_text
from fusion_lab.training.device import Precision


def save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


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
    ckpt_path = run_dir / CHECKPOINT
    out, last = Resumed(), None
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=dev, weights_only=False)
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
