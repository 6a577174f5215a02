"""Benchmark: CPU training-step time of our CN-CNN vs the authors' ConvLSTM vs bare ResNet50.

One process, alternating repeats (A B C A B C ...) after a warm-up, median per model, so
load from other processes on a shared machine hits every model alike. Prints the step
times, ours / plain (target <= 0.9), each / bare ResNet50, and forward GFLOPs.

    .venv/bin/python scripts/bench_speed.py [--repeats 5] [--warmup 2] [--batch 4]
        [--image-size 224] [--threads 2] [--gflops-size 448]
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable

import timm
import torch
import torch.nn.functional as F
from torch import nn

from fusion_lab.config import ModelConfig
from fusion_lab.models.assemble import build_model, model_loss
from fusion_lab.models.profile import cpu_model, forward_gflops, round_robin

NUM_CLASSES = 200


def make_models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "ours (cn_cnn, fast)": build_model(
            ModelConfig(preset="cn_cnn", backbone="resnet50"), NUM_CLASSES),
        "plain (authors' ConvLSTM)": build_model(
            ModelConfig(preset="cn_cnn", backbone="resnet50", fusion_args={"impl": "plain"}),
            NUM_CLASSES),
        "bare timm resnet50": timm.create_model("resnet50", num_classes=NUM_CLASSES),
    }


def train_step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One SGD training step (forward, loss, backward, step) as a closure."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    model.train()

    def step() -> None:
        out = model(x)
        loss = model_loss(out, y) if isinstance(out, dict) else F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gflops-size", type=int, default=448)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"training step: batch {args.batch}, {args.image_size}x{args.image_size}, "
          f"{NUM_CLASSES} classes, SGD; {args.warmup} warm-up + {args.repeats} alternating "
          "repeats, median", flush=True)
    models = make_models()
    gflops = {name: forward_gflops(m, args.gflops_size) for name, m in models.items()}
    x = torch.randn(args.batch, 3, args.image_size, args.image_size)
    y = torch.randint(0, NUM_CLASSES, (args.batch,))
    steps = {name: train_step_fn(m, x, y) for name, m in models.items()}
    def show(r: int, this_round: dict) -> None:
        tag = " (warm-up)" if r < args.warmup else ""
        print(f"  round {r + 1}/{args.warmup + args.repeats}{tag}: "
              + ", ".join(f"{dt:.2f}s" for dt in this_round.values()), flush=True)

    # round-robin: drift hits every model alike
    times = round_robin(steps, args.repeats, args.warmup, on_round=show)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    ours, plain, bare = (med[n] for n in models)
    print()
    print(f"{'model':<28}{'step s (median)':>16}{'min':>8}{'max':>8}{'/ bare':>8}"
          f"{f'GFLOPs@{args.gflops_size}':>14}")
    for name, ts in times.items():
        print(f"{name:<28}{med[name]:>16.3f}{min(ts):>8.3f}{max(ts):>8.3f}"
              f"{med[name] / bare:>8.2f}{gflops[name]:>14.2f}")
    print(f"\nours / plain = {ours / plain:.3f} (target <= 0.9)")
    print(f"ours / bare resnet50 = {ours / bare:.2f}; plain / bare resnet50 = {plain / bare:.2f}")
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
