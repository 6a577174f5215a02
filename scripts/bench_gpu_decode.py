"""Benchmark and check of GPU decoding (``dataset.decode: gpu``) on CUDA.

Writes CUB-like JPEGs (500x375, photo-like texture, quality 75-90), then:

1. decode only: ``torchvision.io.decode_jpeg(list of 32 files, device=...)``, images/s;
2. the train loader end to end (workers read bytes, the device decodes, resizes to 600,
   crops 448, flips and normalises; ``fusion_lab.data.on_device``), images/s with
   ``decode: gpu`` against ``decode: cpu`` at the same worker count;
3. how far the device decoder's pixels are from libjpeg-turbo's on the CPU (mean and max
   absolute difference in levels, decode only and after the whole transform): why
   ``decode: gpu`` is a run of its own (it is in the run id).

    python scripts/bench_gpu_decode.py [--device cuda] [--images 256] [--workers 2]
    python scripts/bench_gpu_decode.py --device cpu --images 32   # smoke test, no GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from fusion_lab.config import DatasetConfig
from fusion_lab.data import build_data, on_device
from fusion_lab.data.gpu_decode import decode_many

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures.texture import jpeg_bytes, textured_image  # noqa: E402


def write_images(root: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        path = root / "train" / f"c{i % 8}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg_bytes(textured_image(375, 500, i), quality=75 + (i % 4) * 5))
        paths.append(path)
    for c in range(8):
        (root / "test" / f"c{c}").mkdir(parents=True, exist_ok=True)
        (root / "test" / f"c{c}" / "0.jpg").write_bytes(paths[c].read_bytes())
    return paths


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def loader_rate(root: Path, decode: str, dev: torch.device, workers: int, batch: int,
                keep: list | None = None) -> float:
    cfg = DatasetConfig(name="imagefolder", root=str(root), decode=decode)
    data = build_data(cfg, image_size=448, resize=600, batch_size=batch, workers=workers,
                      seed=0, device=dev.type)
    for _ in on_device(data.train, dev):  # warm-up pass (workers, page cache, nvJPEG)
        break
    data.set_epoch(1)
    n, t0 = 0, time.perf_counter()
    for images, labels in on_device(data.train, dev, channels_last=dev.type == "cuda"):
        n += len(labels)
        if keep is not None:
            keep.append(images.float().cpu())
    sync(dev)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--summary", help="append the figures to this file (gpu_check.sh)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), args.images)
        data = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in paths]
        batches = [data[i:i + args.batch] for i in range(0, len(data), args.batch)]
        decode_many(batches[0], dev)  # warm-up (nvJPEG handles)
        times = []
        for b in batches:
            sync(dev)
            t0 = time.perf_counter()
            decode_many(b, dev)
            sync(dev)
            times.append((time.perf_counter() - t0) / len(b))
        lines.append(f"GPU decode images/s, decode only ({dev}, 500x375, batch {args.batch}): "
                     f"{1 / statistics.median(times):.0f}")
        # Pixels: device decoder vs libjpeg-turbo on the CPU.
        on_dev = [x.cpu().int() for b in batches[:2] for x in decode_many(b, dev)]
        on_cpu = [x.int() for b in batches[:2] for x in decode_many(b, torch.device("cpu"))]
        diffs = torch.cat([(a - b).abs().flatten() for a, b in zip(on_dev, on_cpu)]).float()
        lines.append(f"device vs CPU decode, levels: mean {diffs.mean():.3f}, max "
                     f"{diffs.max():.0f}, pixels differing {(diffs > 0).float().mean():.1%}")
        gpu_batches: list = []
        cpu_batches: list = []
        rates = {}
        for decode, keep in (("cpu", cpu_batches), ("gpu", gpu_batches)):
            rates[decode] = loader_rate(Path(tmp), decode, dev, args.workers, args.batch, keep)
            lines.append(f"GPU decode images/s, train loader end to end (decode: {decode}, "
                         f"{args.workers} workers, 448 from 600): {rates[decode]:.0f}")
        d = torch.cat([(a - b).abs().flatten() for a, b in zip(gpu_batches, cpu_batches)])
        levels = d * 0.226 * 255  # normalised units back to levels (std of about 0.226)
        lines.append(f"decode gpu vs cpu after the whole transform, levels: mean "
                     f"{levels.mean():.3f}, max {levels.max():.0f}")
    for line in lines:
        print(line)
    if args.summary:
        with open(args.summary, "a") as f:
            f.write("".join(line + "\n" for line in lines))


if __name__ == "__main__":
    main()
