"""Train and evaluate one run: the recipe, mixed precision, checkpoints and resume.

``train_run`` is the whole life of a run folder: it resumes from ``checkpoint.pt`` when one
is there, appends one line per epoch to ``metrics.jsonl`` and returns the summary. An epoch
is never chosen by test accuracy: the summary reports the last epoch, and the test
accuracy at the best *validation* epoch when the dataset has a validation split.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fusion_lab.config import RunConfig, to_dict
from fusion_lab.errors import DivergedError, FusionLabError
from fusion_lab.lease import deferred
from fusion_lab.model import FusionModel, build_model, model_loss
from fusion_lab.store import append_jsonl, read_jsonl, write_text

CHECKPOINT = "checkpoint.pt"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The RNG seed of one epoch: an epoch's randomness depends on (seed, epoch) only."""
    return (seed * 1_000_003 + epoch * 7919 + 17) % 2**31


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FusionLabError("--device cuda was asked for, but torch sees no CUDA device; "
                             "use --device cpu or auto")
    return torch.device(device)


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


def make_optimizer(model: FusionModel, cfg: RunConfig):
    """SGD (or AdamW) with the backbone's and the new modules' learning rates; cosine per epoch."""
    t = cfg.train
    new = [p for m in model.new_modules() for p in m.parameters()]
    groups = [{"params": list(model.backbone.parameters()), "lr": t.lr_backbone},
              {"params": new, "lr": t.lr_new}]
    if t.optimizer == "sgd":
        opt = torch.optim.SGD(groups, lr=t.lr_new, momentum=t.momentum,
                              weight_decay=t.weight_decay)
    elif t.optimizer == "adamw":
        opt = torch.optim.AdamW(groups, lr=t.lr_new, weight_decay=t.weight_decay)
    else:
        raise FusionLabError(f"train.optimizer must be sgd or adamw, got {t.optimizer!r}")

    def factor(epoch: int) -> float:
        if epoch < t.warmup_epochs:
            return (epoch + 1) / (t.warmup_epochs + 1)
        if t.schedule == "constant":
            return 1.0
        span = max(1, t.epochs - t.warmup_epochs)
        return 0.5 * (1 + math.cos(math.pi * (epoch - t.warmup_epochs) / span))

    if t.schedule not in ("cosine", "constant"):
        raise FusionLabError(f"train.schedule must be cosine or constant, got {t.schedule!r}")
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


def to_device(images: torch.Tensor, labels: torch.Tensor, device: torch.device,
              channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(device, non_blocking=True)


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, prec: Precision,
             channels_last: bool) -> dict[str, Any]:
    """Accuracy (percent) of the combined prediction and of each head."""
    model.eval()
    correct: dict[str, int] = {}
    total = 0
    for images, labels in loader:
        images, labels = to_device(images, labels, device, channels_last)
        with prec.autocast():
            out = model(images)
        preds = {"combined": out["combined"], **out["logits"]}
        for name, logits in preds.items():
            correct[name] = correct.get(name, 0) + int((logits.argmax(1) == labels).sum())
        total += labels.numel()
    if total == 0:
        return {"acc": float("nan"), "heads": {}, "n": 0}
    acc = {k: 100.0 * v / total for k, v in correct.items()}
    heads = {k: v for k, v in acc.items() if k != "combined"}
    return {"acc": acc["combined"], "heads": heads, "n": total}


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s: dict) -> None:
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if s.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def train_run(run_dir: str | Path, cfg: RunConfig, run_id: str, device: str = "auto",
              progress: Any = None, stop_after_epochs: int | None = None,
              before_write: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train (or resume) one run in ``run_dir``; returns the result part of its summary.

    Args:
        run_dir: the run's folder (config.json already written).
        cfg: the resolved run config.
        run_id: the run's id, checked against the checkpoint before resuming.
        device: auto | cpu | cuda | cuda:N.
        progress: an object with ``start_epoch(epoch, epochs, batches)``,
            ``batch(loss, acc, images_per_s)`` and ``end_epoch(record)`` (or None).
        stop_after_epochs: stop (as if killed) once this many epochs are done; for tests.
        before_write: called before each epoch's checkpoint and metrics are written; the
            runner's lease check, which raises if another process took the claim over.
    """
    from fusion_lab.data import build_data

    run_dir = Path(run_dir)
    t, dev = cfg.train, resolve_device(device)
    t_start = time.perf_counter()
    seed_everything(cfg.seed)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data = build_data(cfg.dataset, image_size=t.image_size, resize=t.resize,
                      batch_size=t.batch_size, workers=t.workers, seed=cfg.seed,
                      device=dev.type)
    model = build_model(cfg.model, data.num_classes).to(dev)
    channels_last = t.channels_last and dev.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt, sched = make_optimizer(model, cfg)
    prec = precision(t.amp, dev)
    if t.compile and dev.type == "cuda":
        model.fusion = torch.compile(model.fusion)
        model.attention = torch.compile(model.attention)

    ckpt_path = run_dir / CHECKPOINT
    start_epoch, best, before = 0, None, 0.0
    setup_s = time.perf_counter() - t_start
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=dev, weights_only=False)
        if state.get("run_id") == run_id:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            if prec.scaler is not None and state.get("scaler"):
                prec.scaler.load_state_dict(state["scaler"])
            _set_rng_state(state["rng"])
            start_epoch, best = state["epoch"], state.get("best_val")
            before = state.get("wall_time_s", 0.0)
    if before_write is not None:
        before_write()
    # Keep exactly the metrics of the epochs the checkpoint holds.
    metrics_path = run_dir / "metrics.jsonl"
    rows = [r for r in read_jsonl(metrics_path) if r.get("epoch", 0) <= start_epoch]
    write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in rows))

    train_time = checkpoint_s = 0.0
    record: dict[str, Any] = rows[-1] if rows else {}
    for epoch in range(start_epoch, t.epochs):
        if stop_after_epochs is not None and epoch >= stop_after_epochs:
            return {"stopped": True}
        data.set_epoch(epoch)
        seed_everything(epoch_seed(cfg.seed, epoch))
        model.train()
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        if progress is not None:
            progress.start_epoch(epoch, t.epochs, len(data.train))
        for step, (images, labels) in enumerate(data.train):
            if labels.numel() < 2:  # a last batch of one image: BatchNorm cannot train on it
                continue
            images, labels = to_device(images, labels, dev, channels_last)
            with prec.autocast():
                out = model(images)
                loss = model_loss(out, labels, t.label_smoothing)
            if not torch.isfinite(loss):
                raise DivergedError(
                    f"loss became {loss.item()} at epoch {epoch + 1}, batch {step + 1}; lower "
                    "the learning rates (train.lr_new, train.lr_backbone), set train.grad_clip, "
                    "or use train.amp=bf16/off"
                )
            optimizer_step(loss, opt, prec, model, t.grad_clip)
            n = labels.numel()
            loss_sum += loss.item() * n
            correct += int((out["combined"].argmax(1) == labels).sum())
            seen += n
            if progress is not None:
                progress.batch(loss.item(), 100.0 * correct / seen,
                               seen / max(1e-9, time.perf_counter() - t0))
        epoch_train_s = time.perf_counter() - t0
        lr = opt.param_groups[1]["lr"]
        sched.step()
        val = evaluate(model, data.val, dev, prec, channels_last) if data.val else None
        test = evaluate(model, data.test, dev, prec, channels_last)
        epoch_s = time.perf_counter() - t0
        train_time += epoch_s
        record = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / max(1, seen),
                  "train_acc": 100.0 * correct / max(1, seen),
                  "val_acc": val["acc"] if val else None,
                  "test_acc": test["acc"], "test_heads": test["heads"],
                  "images_per_s": seen / max(1e-9, epoch_train_s), "epoch_s": epoch_s}
        if val is not None and (best is None or val["acc"] > best["val_acc"]):
            best = {"epoch": epoch + 1, "val_acc": val["acc"], "acc": test["acc"],
                    "heads": test["heads"]}
        if before_write is not None:
            before_write()
        t_ckpt = time.perf_counter()
        with deferred():  # a signal waits: checkpoint and metrics line go together
            _save_checkpoint(ckpt_path, {
                "run_id": run_id, "epoch": epoch + 1, "config": to_dict(cfg),
                "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "scaler": prec.scaler.state_dict() if prec.scaler is not None else None,
                "rng": _rng_state(), "best_val": best, "num_classes": data.num_classes,
                "class_names": data.class_names,
                "wall_time_s": before + time.perf_counter() - t_start})
            append_jsonl(metrics_path, record)
        checkpoint_s += time.perf_counter() - t_ckpt
        if progress is not None:
            progress.end_epoch(record)
    if not t.keep_checkpoint:
        ckpt_path.unlink(missing_ok=True)
    rows = read_jsonl(metrics_path)
    last = rows[-1] if rows else record
    return {
        "final": {"acc": last.get("test_acc"), "heads": last.get("test_heads", {})},
        "best_val": best,
        "test_size": data.test_size, "val_size": data.val_size,
        "num_classes": data.num_classes, "epochs": len(rows),
        "device": _device_name(dev), "precision": prec.name,
        "skipped_images": data.skipped(),
        "train_time_s": train_time, "setup_s": setup_s, "checkpoint_s": checkpoint_s,
        "wall_time_s": before + time.perf_counter() - t_start,
    }


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return f"cpu ({torch.get_num_threads()} threads)"
