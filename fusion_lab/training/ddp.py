"""One run on several processes: DistributedDataParallel under torchrun.

``fusionlab run --nproc N`` (or ``torchrun --nproc_per_node N -m fusion_lab run ...``)
starts N processes that train each run together. Each epoch's deterministic order
(``EpochSampler``) is cut into global batches of ``train.batch_size`` images and every
global batch is shared out between the processes (``fusion_lab.data.sampling.ShardedBatches``); ``scaled_loss``
makes the gradient that DDP averages equal the gradient of the global batch's mean loss,
also when the last batch does not divide evenly. Process 0 alone claims runs and writes
checkpoints, metrics and summaries; the others follow its decisions (``broadcast``).

Learning-rate rule: the global batch is ``train.batch_size`` whatever the number of
processes, so the recipe's learning rates apply unchanged. What changes is BatchNorm in
training mode: each process normalises over its own share, unless ``train.sync_bn``
(CUDA only) turns on SyncBatchNorm.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from fusion_lab.errors import FusionLabError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()
_current = SINGLE


def env_world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 outside torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def init(device: str) -> Dist:
    """Join the process group torchrun prepared: gloo on the CPU, nccl on CUDA."""
    global _current
    world = env_world_size()
    if world <= 1:
        _current = SINGLE
        return _current
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if use_cuda else "gloo")
    _current = Dist(rank, world, local)
    return _current


def current() -> Dist:
    return _current


def finish(clean: bool = True) -> None:
    """Leave the process group before the interpreter shuts down.

    A process that exits with its gloo group alive can die of SIGABRT while Python
    finalises (gloo's worker threads still hold tensors), so its run's exit status turns
    into a failure after the work is done. ``clean``: every process got here, wait for
    the others first; on an error path the others may never come, so leave at once.
    """
    global _current
    if dist.is_available() and dist.is_initialized():
        try:
            if clean:
                dist.barrier()
        except RuntimeError as e:
            if not peer_gone(e):
                raise
        finally:
            dist.destroy_process_group()
    _current = SINGLE


def peer_gone(e: BaseException) -> bool:
    """Whether ``e`` is gloo saying that another process of the group has gone away."""
    return isinstance(e, RuntimeError) and any(
        s in str(e) for s in ("Connection closed by peer", "Connection reset by peer"))


def broadcast(obj: Any, d: Dist | None = None) -> Any:
    """Process 0's ``obj`` on every process (itself when not distributed)."""
    d = d or _current
    if not d.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def scaled_loss(loss: torch.Tensor, correct: int, n: int, d: Dist
                ) -> tuple[torch.Tensor, float, int, int]:
    """The loss to back-propagate, and the global batch's mean loss, correct count and size.

    DDP averages gradients over processes; scaling each process's mean loss by
    ``n_local * world / n_global`` makes that average the gradient of the global mean.
    """
    if not d.active:
        return loss, float(loss.item()), correct, n
    totals = torch.tensor([float(n), float(loss.item()) * n, float(correct)],
                          dtype=torch.float64)
    dist.all_reduce(totals)
    n_all = int(totals[0].item())
    return loss * (n * d.world_size / n_all), totals[1].item() / n_all, int(totals[2]), n_all


def wrap(model: nn.Module, d: Dist, dev: torch.device) -> nn.Module:
    """The model as training steps it: DistributedDataParallel when distributed.

    A module with a true ``batch_dependent`` attribute (a component whose output for one
    image depends on the other images of the batch) gets a warning.
    """
    if not d.active:
        return model
    if any(getattr(m, "batch_dependent", False) for m in model.modules()):
        warnings.warn("this model's predictions depend on the other images of its batch; "
                      f"sharding each batch over {d.world_size} processes changes what it "
                      "computes (each process sees only its share)", stacklevel=2)
    ids = [dev.index if dev.index is not None else d.local_rank] if dev.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def to_sync_bn(model: nn.Module, d: Dist, dev: torch.device, sync_bn: bool) -> nn.Module:
    """Convert BatchNorm layers to SyncBatchNorm (before the optimizer sees the model)."""
    if not sync_bn:
        return model
    if dev.type != "cuda":
        raise FusionLabError("train.sync_bn works on CUDA only (torch's SyncBatchNorm rejects "
                             "CPU tensors); drop it or train on GPUs")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model) if d.active else model


def check_runs(runs: list, device: str, world: int | None = None,
               how: str = "fusionlab run --nproc {}") -> list[str]:
    """What stops the runs from training, each on ``world`` processes, before anything
    starts (each problem once): a ``train.world_size`` below 1, a global batch that does not
    divide over a run's processes, SyncBatchNorm off CUDA, and a ``train.world_size`` other
    than ``world``, the processes each run gets (``how``: the command that trains runs of N
    processes, ``{}`` standing for N; ``world`` None, as in a dry run: not compared).
    """
    problems: list[str] = []
    cuda = device != "cpu" and torch.cuda.is_available()
    for r in runs:
        t = r.config.train
        if t.world_size < 1:
            found = f"train.world_size must be at least 1, got {t.world_size}"
        elif t.batch_size % t.world_size:
            found = (f"train.batch_size {t.batch_size} (the global batch) must divide evenly "
                     f"over {t.world_size} processes")
        elif t.sync_bn and not cuda:
            found = ("train.sync_bn works on CUDA only (torch's SyncBatchNorm rejects CPU "
                     "tensors); drop it or train on GPUs")
        else:
            continue
        if found not in problems:
            problems.append(found)
    sizes = sorted({r.config.train.world_size for r in runs})
    if world is not None and sizes and sizes[0] >= 1 and sizes != [world]:
        problems.append(
            f"the study's runs have train.world_size {', '.join(map(str, sizes))} but this "
            f"is {world} process(es) per run: train them with "
            + ", ".join(how.format(n) for n in sizes)
            + (" (one call each)" if len(sizes) > 1 else ""))
    return problems
