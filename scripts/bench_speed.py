"""Benchmark: CPU training-step time of CN-CNN's paths vs the released model's, bare ResNet50.

One process, alternating repeats (A B C A B C ...) after a warm-up, so load from other
processes on a shared machine hits every model alike. The reference is the released model
as our code can run it: ``cn_cnn_released`` with ``impl: plain`` (ConvLSTM over the batch,
the authors' order of operations, their init). Prints each model's median step time with
its range, the median and range over rounds of its ratio to the reference (issue 21's
target: cn_cnn's fast path <= 0.8), the load average, and forward GFLOPs.

    .venv/bin/python scripts/bench_speed.py [--repeats 7] [--warmup 2] [--batch 4]
        [--image-size 224] [--threads 2] [--gflops-size 448] [--quick]
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
from fusion_lab.models.profile import cpu_model, image_gflops, round_robin

NUM_CLASSES = 200
REFERENCE = "released (plain, batch)"
QUICK = (REFERENCE, "cn_cnn fast", "cn_cnn subpixel (#21)")
TARGET = 0.8  # issue 21: cn_cnn's train step <= 0.8x the released model's


def make_models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    def model(preset: str, impl: str) -> nn.Module:
        cfg = ModelConfig(preset=preset, backbone="resnet50", pretrained=False,
                          fusion_args={"impl": impl})
        return build_model(cfg, NUM_CLASSES)

    return {
        REFERENCE: model("cn_cnn_released", "plain"),
        "cn_cnn fast": model("cn_cnn", "fast"),
        "cn_cnn subpixel (#21)": model("cn_cnn", "subpixel"),
        "cn_cnn plain": model("cn_cnn", "plain"),
        "cn_cnn_released fast": model("cn_cnn_released", "fast"),
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
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gflops-size", type=int, default=448)
    ap.add_argument("--quick", action="store_true",
                    help="time only the released model and cn_cnn's fast and subpixel paths")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPUs (nproc), {cpu_model()}; load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"training step: batch {args.batch}, {args.image_size}x{args.image_size}, "
          f"{NUM_CLASSES} classes, SGD; {args.warmup} warm-up + {args.repeats} alternating "
          "repeats; GFLOPs per image (batch-dependent models: per image of one batch)",
          flush=True)
    models = make_models()
    if args.quick:
        models = {k: m for k, m in models.items() if k in QUICK}
    gflops = {name: image_gflops(m, args.gflops_size, args.batch) for name, m in models.items()}
    x = torch.randn(args.batch, 3, args.image_size, args.image_size)
    y = torch.randint(0, NUM_CLASSES, (args.batch,))
    steps = {name: train_step_fn(m, x, y) for name, m in models.items()}

    def show(r: int, this_round: dict) -> None:
        tag = " (warm-up)" if r < args.warmup else ""
        print(f"  round {r + 1}/{args.warmup + args.repeats}{tag}: "
              + ", ".join(f"{dt:.2f}s" for dt in this_round.values()), flush=True)

    # round-robin: drift hits every model alike
    times = round_robin(steps, args.repeats, args.warmup, on_round=show)
    report(times, gflops, args.gflops_size)


def report(times: dict[str, list[float]], gflops: dict[str, float], size: int) -> None:
    """Step times (median, range) and per-round ratios to the reference (median, range)."""
    med = {name: statistics.median(ts) for name, ts in times.items()}
    ref = times[REFERENCE]
    print()
    print(f"{'model':<28}{'step s: median':>15}{'[min, max]':>16}{'/ released: median':>20}"
          f"{'[min, max]':>16}{f'GFLOPs@{size}':>13}")
    for name, ts in times.items():
        ratios = [t / r for t, r in zip(ts, ref)]  # per round: same load for both
        print(f"{name:<28}{med[name]:>15.3f}{f'[{min(ts):.3f}, {max(ts):.3f}]':>16}"
              f"{statistics.median(ratios):>20.3f}"
              f"{f'[{min(ratios):.3f}, {max(ratios):.3f}]':>16}{gflops[name]:>13.2f}")
    for name in ("cn_cnn fast", "cn_cnn subpixel (#21)"):
        r = statistics.median(t / b for t, b in zip(times[name], ref))
        print(f"{name} / released = {r:.3f} (target <= {TARGET}: "
              f"{'met' if r <= TARGET else 'NOT met'} in this run)")
    sub = [t / f for t, f in zip(times["cn_cnn subpixel (#21)"], times["cn_cnn fast"])]
    print(f"subpixel / fast = {statistics.median(sub):.3f} per round: median "
          f"[{min(sub):.3f}, {max(sub):.3f}] (same round, same load)")
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

if __name__ == "__main__":
    main()
