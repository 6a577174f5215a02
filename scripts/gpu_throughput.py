"""Training images/s of the bare ResNet50 baseline and CN-CNN, with and without torch.compile.

Synthetic tensors, SGD steps as in fusion_lab.training.train (mixed precision on CUDA, channels_last),
median and range over timed steps after a warm-up. The four configurations are timed
round-robin (one step each in turn) so drift hits all alike. Targets on an H200 at
448x448 (issue 21): CN-CNN >= 400 images/s, bare ResNet50 >= 1,200, each with or without
torch.compile, whichever is faster ("met" or "NOT met" is printed per model).

    python scripts/gpu_throughput.py                       # CUDA: 448, batch 32, 20 steps
    python scripts/gpu_throughput.py --device cpu --image-size 64 --batch-size 2 --steps 2

The compiled rows need CUDA (as train.compile does) and are skipped on the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fusion_lab.config import ModelConfig
from fusion_lab.models.assemble import build_model, model_loss
from fusion_lab.models.profile import round_robin
from fusion_lab.training.device import device_name, precision, prepare_model, resolve_device
from fusion_lab.training.train import optimizer_step

TARGETS = {"baseline": 1200.0, "cn_cnn": 400.0}  # images/s on an H200 at 448, bf16


def setup(preset: str, compiled: bool, dev: torch.device, args: argparse.Namespace):
    torch.manual_seed(0)
    model = build_model(ModelConfig(preset=preset, backbone="resnet50"), args.classes)
    # as training places it: channels_last on CUDA; compiled: what train.compile does
    model, cl = prepare_model(model, dev, channels_last=True, compile=compiled)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=5e-4)
    prec = precision(args.amp, dev)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=dev)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, args.classes, (args.batch_size,), device=dev)
    model.train()

    def step() -> None:
        with prec.autocast():
            loss = model_loss(model(x), y)
        optimizer_step(loss, opt, prec, model)

    return step, prec.name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--image-size", type=int, default=448)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation)")
    ap.add_argument("--classes", type=int, default=200)
    ap.add_argument("--amp", default="bf16", help="bf16 | fp16 | off (CUDA only)")
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled runs")
    ap.add_argument("--summary", help="append the figures to this file (gpu_check.sh)")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    compile_too = dev.type == "cuda" and not args.no_compile  # train.compile is CUDA-only
    configs = [(p, c) for p in ("baseline", "cn_cnn") for c in (False, True)
               if not c or compile_too]
    steps, prec_name = {}, "fp32"
    for preset, compiled in configs:
        steps[(preset, compiled)], prec_name = setup(preset, compiled, dev, args)
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            steps[(preset, compiled)]()
        sync()
        print(f"warm-up {preset}{' compiled' if compiled else ''}: "
              f"{time.perf_counter() - t0:.1f}s", flush=True)
    times = round_robin(steps, args.steps, sync=sync)
    report(times, args, dev, prec_name)


def report(times: dict, args: argparse.Namespace, dev: torch.device, prec_name: str) -> None:
    """images/s (median [min-max] over steps), ratio to the baseline, target met or not;
    appended to ``args.summary`` too when given."""
    ips = {k: args.batch_size / statistics.median(v) for k, v in times.items()}
    span = {k: (args.batch_size / max(v), args.batch_size / min(v)) for k, v in times.items()}
    head = (f"{device_name(dev)}, {args.image_size}x{args.image_size}, batch {args.batch_size}, "
            f"{prec_name}{', channels_last' if dev.type == 'cuda' else ''}, "
            f"median [min-max] of {args.steps} steps")
    print(f"\n{head}")
    print(f"{'model':<10}{'compile':>9}{'images/s':>11}{'[min-max]':>16}{'/ baseline':>12}"
          f"{'target':>9}")
    for (preset, compiled), v in ips.items():
        ratio = v / ips[("baseline", compiled)]
        lo, hi = span[(preset, compiled)]
        print(f"{preset:<10}{'yes' if compiled else 'no':>9}{v:>11.1f}"
              f"{f'[{lo:.4g}-{hi:.4g}]':>16}{ratio:>12.2f}{TARGETS[preset]:>9.0f}")
    lines = []
    for preset in ("baseline", "cn_cnn"):
        if (preset, True) in ips:
            print(f"{preset}: compiled / eager = "
                  f"{ips[(preset, True)] / ips[(preset, False)]:.2f}")
        best = max((v, c) for (p, c), v in ips.items() if p == preset)
        verdict = "met" if best[0] >= TARGETS[preset] else "NOT met"
        lines.append(f"target {preset} >= {TARGETS[preset]:.0f} images/s: {verdict} "
                     f"({best[0]:.1f}, {'compiled' if best[1] else 'eager'})")
    print("\n".join(lines))
    if args.summary:
        with open(args.summary, "a") as f:
            f.write(f"training throughput: {head}\n")
            for (preset, compiled), v in ips.items():
                lo, hi = span[(preset, compiled)]
                f.write(f"train images/s {preset} {'compiled' if compiled else 'eager'}: "
                        f"{v:.1f} [{lo:.1f}-{hi:.1f}]\n")
            f.write("\n".join(lines) + "\n")

if __name__ == "__main__":
    main()
