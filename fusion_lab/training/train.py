"""How a run trains: the recipe and one epoch (evaluation: ``fusion_lab.training.evaluate``;
checkpoints: ``fusion_lab.training.checkpoint``).

``train_run`` is the whole life of a run folder (the optimizer and its schedule:
``fusion_lab.training.optim``): ``resume`` restores ``checkpoint.pt`` when
one is there, ``train_epoch`` trains one epoch, each finished epoch appends a line to
``metrics.jsonl`` and checkpoints, and ``run_summary`` returns the result. An epoch is never
chosen by test accuracy: the summary reports the last epoch, and the test accuracy at the
best *validation* epoch when the dataset has a validation split. The device, mixed precision
and the model's layout on the device are in ``fusion_lab.training.device``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fusion_lab.config import RunConfig, TrainConfig, to_dict
from fusion_lab.data import build_data
from fusion_lab.data.device import on_device
from fusion_lab.errors import DivergedError, FusionLabError
from fusion_lab.models.assemble import build_model, model_loss
from fusion_lab.store import (
    BEST_WEIGHTS,
    CHECKPOINT,
    METRICS_JSONL,
    ClaimLost,
    append_jsonl,
    read_jsonl,
)
from fusion_lab.store.lease import deferred
from fusion_lab.training import ddp
from fusion_lab.training.checkpoint import resume, rng_state, save_checkpoint
from fusion_lab.training.device import (
    Precision,
    device_name,
    precision,
    prepare_model,
    resolve_device,
    set_threads,
)
from fusion_lab.training.evaluate import evaluate
from fusion_lab.training.loggers import Sinks
from fusion_lab.training.optim import make_optimizer, optimizer_step


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The RNG seed of one epoch: an epoch's randomness depends on (seed, epoch) only."""
    return (seed * 1_000_003 + epoch * 7919 + 17) % 2**31


@dataclass
class EpochStats:
    loss_sum: float = 0.0  # summed over images
    correct: int = 0  # images the combined prediction got right
    seen: int = 0  # images trained on


def train_epoch(model: nn.Module, loader, opt: torch.optim.Optimizer, prec: Precision,
                dev: torch.device, channels_last: bool, t: TrainConfig, epoch: int,
                progress: Any = None, d: ddp.Dist = ddp.SINGLE) -> EpochStats:
    """One pass over the training split; stops the run on a non-finite loss.

    With DDP (``d.active``) the loader yields this process's share of each global batch;
    the loss is scaled so that the averaged gradient is the global batch's, and the
    statistics are the global batch's.
    """
    model.train()
    t0 = time.perf_counter()
    stats = EpochStats()
    for step, (images, labels) in enumerate(on_device(loader, dev, channels_last)):
        if labels.numel() < 2 and not d.active:  # BatchNorm cannot train on one image
            continue  # (DDP: ShardedBatches skips such batches on every process)
        with prec.autocast():
            out = model(images)
            loss = model_loss(out, labels, t.label_smoothing)
        right = int((out["combined"].argmax(1) == labels).sum())
        loss, mean_loss, right, n = ddp.scaled_loss(loss, right, labels.numel(), d)
        if not math.isfinite(mean_loss):
            raise DivergedError(
                f"loss became {mean_loss} at epoch {epoch + 1}, batch {step + 1}; lower "
                "the learning rates (train.lr_new, train.lr_backbone), set train.grad_clip, "
                "or use train.amp=bf16/off"
            )
        optimizer_step(loss, opt, prec, model, t.grad_clip)
        stats.loss_sum += mean_loss * n
        stats.correct += right
        stats.seen += n
        if progress is not None:
            progress.batch(mean_loss, 100.0 * stats.correct / stats.seen,
                           stats.seen / max(1e-9, time.perf_counter() - t0))
    return stats


@dataclass
class _Parts:
    """What a run trains with: ``model`` is evaluated and saved, ``net`` (DDP's) steps."""

    data: Any
    model: nn.Module
    net: nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    prec: Precision
    dev: torch.device
    channels_last: bool
    d: ddp.Dist


@dataclass
class _Clock:
    t_start: float  # when train_run began
    wall_before_s: float = 0.0  # of the earlier, interrupted attempts
    setup_s: float = 0.0
    train_time_s: float = 0.0
    checkpoint_s: float = 0.0

    def wall(self) -> float:
        return self.wall_before_s + time.perf_counter() - self.t_start


def train_run(run_dir: str | Path, cfg: RunConfig, run_id: str, device: str = "auto",
              progress: Any = None, stop_after_epochs: int | None = None,
              before_write: Callable[[], None] | None = None,
              should_stop: Callable[[dict], bool] | None = None) -> dict[str, Any]:
    """Train (or resume) one run in ``run_dir``; returns the result part of its summary.

    Args:
        run_dir: the run's folder (config.json already written).
        cfg: the resolved run config (``fusion_lab.plan`` resolved and checked it).
        run_id: the run's id, checked against the checkpoint before resuming.
        device: auto | cpu | cuda | cuda:N.
        progress: an object with ``start_epoch(epoch, epochs, batches)``,
            ``batch(loss, acc, images_per_s)`` and ``end_epoch(record)`` (or None).
        stop_after_epochs: stop (as if killed) once this many epochs are done; for tests.
        before_write: called before each epoch's checkpoint and metrics are written; the
            runner's lease check, which raises if another process took the claim over.
        should_stop: asked with the last metrics line before each epoch but the first: True stops.

    Under DDP (``fusion_lab.training.ddp``, ``train.world_size`` processes) every process calls
    this; process 0 alone evaluates and writes, and its ``before_write`` decides for all.
    """
    set_threads(cfg.train.threads)  # first: on the CPU the result depends on the count
    run_dir = Path(run_dir)
    d = ddp.current()
    t, dev = cfg.train, resolve_device(device)
    if t.world_size != d.world_size:
        raise FusionLabError(
            f"train.world_size is {t.world_size} but this is one of {d.world_size} "
            f"process(es): train it with fusionlab run --nproc {t.world_size}")
    clock = _Clock(time.perf_counter())
    r = _set_up(cfg, dev, d)
    clock.setup_s = time.perf_counter() - clock.t_start
    if before_write is not None and d.main:
        before_write()  # resume rewrites metrics.jsonl
    start = resume(run_dir, run_id, r.model, r.opt, r.sched, r.prec, dev, write=d.main)
    clock.wall_before_s = start.wall_before_s
    # optional tracking sinks (train.loggers) beside metrics.jsonl; process 0 writes
    sinks, ok = Sinks(t.loggers if d.main else [], run_dir), False
    try:
        best, stopped = start.best, False
        for epoch in range(start.epoch, t.epochs):
            if stopped := _asks_stop(should_stop, run_dir, epoch, t.epochs, d):
                break
            if stop_after_epochs is not None and epoch >= stop_after_epochs:
                return {"stopped": True}
            best = _epoch(run_dir, cfg, run_id, r, epoch, best, clock, sinks, progress,
                          before_write)
        ok = True
    finally:
        sinks.close(ok)
    if not t.keep_checkpoint and d.main:
        (run_dir / CHECKPOINT).unlink(missing_ok=True)
    times = {"train_time_s": clock.train_time_s, "setup_s": clock.setup_s,
             "checkpoint_s": clock.checkpoint_s, "wall_time_s": clock.wall()}
    rows = read_jsonl(run_dir / METRICS_JSONL)
    # The test loader's batches (the training batch size, unshuffled): a batch-dependent
    # model's predictions depend on them (docs/results-format.md).
    return {**run_summary(rows, best, r.data, dev, r.prec, times),
            "world_size": d.world_size, "batch_per_process": t.batch_size // d.world_size,
            "batch_dependent": bool(getattr(r.model, "batch_dependent", False)),
            "test_batch_size": t.batch_size, **({"stopped_early": True} if stopped else {})}


def _asks_stop(should_stop: Callable[[dict], bool] | None, run_dir: Path, done: int,
               epochs: int, d: ddp.Dist) -> bool:
    """Whether ``should_stop`` (a tuning pruner's decision: ``orchestrate.pruning``) ends
    the run now, asked with the last metrics line once ``done`` of ``epochs`` epochs are
    written: after each epoch but the last, and on resuming. The run is then finished,
    with ``stopped_early`` in its result. One process only (not DDP)."""
    if should_stop is None or not 0 < done < epochs:
        return False
    if d.active:
        raise FusionLabError("a run that a pruner may stop trains on one process "
                             "(train.world_size 1)")
    rows = read_jsonl(run_dir / METRICS_JSONL)
    return bool(rows) and bool(should_stop(rows[-1]))


def _set_up(cfg: RunConfig, dev: torch.device, d: ddp.Dist) -> _Parts:
    """Seed, then the data, the model on its device, the optimizer and the precision."""
    t = cfg.train
    seed_everything(cfg.seed)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data = build_data(cfg.dataset, image_size=t.image_size, resize=t.resize,
                      batch_size=t.batch_size, workers=t.workers, seed=cfg.seed,
                      device=dev.type, rank=d.rank, world_size=d.world_size)
    model, channels_last = prepare_model(build_model(cfg.model, data.num_classes), dev,
                                         channels_last=t.channels_last, compile=t.compile)
    model = ddp.to_sync_bn(model, d, dev, t.sync_bn)
    opt, sched = make_optimizer(model, cfg)
    net = ddp.wrap(model, d, dev)
    return _Parts(data, model, net, opt, sched, precision(t.amp, dev), dev, channels_last, d)


def _epoch(run_dir: Path, cfg: RunConfig, run_id: str, r: _Parts, epoch: int,
           best: dict | None, clock: _Clock, sinks: Sinks, progress: Any,
           before_write: Callable[[], None] | None) -> dict | None:
    """Train one epoch; process 0 evaluates it and writes its checkpoint and metrics line.
    Returns the best validation epoch so far."""
    t, d = cfg.train, r.d
    r.data.set_epoch(epoch)
    seed_everything(epoch_seed(cfg.seed, epoch))
    t0 = time.perf_counter()
    if progress is not None:
        progress.start_epoch(epoch, t.epochs, len(r.data.train))
    ep = train_epoch(r.net, r.data.train, r.opt, r.prec, r.dev, r.channels_last, t, epoch,
                     progress, d)
    epoch_train_s = time.perf_counter() - t0
    lr = r.opt.param_groups[1]["lr"]
    r.sched.step()
    if not d.main:  # process 0 evaluates and writes; go on once it says so
        if not ddp.broadcast(None, d):
            raise ClaimLost("process 0 lost the run's claim; stopping")
        return best
    val = evaluate(r.model, r.data.val, r.dev, r.prec, r.channels_last) if r.data.val else None
    test = evaluate(r.model, r.data.test, r.dev, r.prec, r.channels_last)
    epoch_s = time.perf_counter() - t0
    clock.train_time_s += epoch_s
    record = {"epoch": epoch + 1, "lr": lr, "train_loss": ep.loss_sum / max(1, ep.seen),
              "train_acc": 100.0 * ep.correct / max(1, ep.seen),
              "val_acc": val["acc"] if val else None,
              "test_acc": test["acc"], "test_heads": test["heads"],
              "images_per_s": ep.seen / max(1e-9, epoch_train_s), "epoch_s": epoch_s}
    new_best = val is not None and (best is None or val["acc"] > best["val_acc"])
    if new_best:
        best = {"epoch": epoch + 1, "val_acc": val["acc"], "acc": test["acc"],
                "heads": test["heads"]}
    try:
        if before_write is not None:
            before_write()
    except BaseException:
        ddp.broadcast(False, d)
        raise
    ddp.broadcast(True, d)
    t_ckpt = time.perf_counter()
    _write_epoch(run_dir, cfg, run_id, r, record, best, new_best, clock)
    sinks.log_epoch(record)
    clock.checkpoint_s += time.perf_counter() - t_ckpt
    if progress is not None:
        progress.end_epoch(record)
    return best


def _write_epoch(run_dir: Path, cfg: RunConfig, run_id: str, r: _Parts, record: dict,
                 best: dict | None, new_best: bool, clock: _Clock) -> None:
    """An epoch's checkpoint, best weights (if new) and metrics line; a signal waits."""
    with deferred():
        if new_best:  # the best validation epoch's weights, for viz and evaluation
            save_checkpoint(run_dir / BEST_WEIGHTS, {
                "run_id": run_id, "epoch": record["epoch"], "val_acc": best["val_acc"],
                "config": to_dict(cfg), "model": r.model.state_dict(),
                "num_classes": r.data.num_classes, "class_names": r.data.class_names})
        save_checkpoint(run_dir / CHECKPOINT, {
            "run_id": run_id, "epoch": record["epoch"], "config": to_dict(cfg),
            "model": r.model.state_dict(), "optimizer": r.opt.state_dict(),
            "scheduler": r.sched.state_dict(),
            "scaler": r.prec.scaler.state_dict() if r.prec.scaler is not None else None,
            "rng": rng_state(), "best_val": best, "record": record,
            "num_classes": r.data.num_classes, "class_names": r.data.class_names,
            "wall_time_s": clock.wall()})
        append_jsonl(run_dir / METRICS_JSONL, record)


def run_summary(rows: list[dict], best: dict | None, data: Any, dev: torch.device,
                prec: Precision, times: dict[str, float]) -> dict[str, Any]:
    """The result part of a run's summary.json (docs/results-format.md).

    Args:
        rows: the run's metrics.jsonl lines, one per epoch; the last is the reported one.
        best: the epoch with the best validation accuracy (None without a val split).
        data: the run's data (split sizes, classes, skipped images).
        times: train_time_s, setup_s, checkpoint_s and wall_time_s.
    """
    last = rows[-1] if rows else {}
    return {
        "final": {"acc": last.get("test_acc"), "heads": last.get("test_heads", {})},
        "best_val": best,
        "test_size": data.test_size, "val_size": data.val_size,
        "num_classes": data.num_classes, "epochs": len(rows),
        "device": device_name(dev), "precision": prec.name,
        "skipped_images": data.skipped(),
        **times,
    }
