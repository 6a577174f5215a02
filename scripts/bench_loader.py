"""Benchmark: decoded-and-transformed images per second of the train loader at 448.

Writes CUB-like JPEGs (500x375) in imagefolder layout to a temporary folder, then times
the train loader (resize 600x600 -> random crop 448 -> flip -> normalise) with 0, 1 and 2
workers, and says how many workers a GPU consuming N images/s would need.

    .venv/bin/python scripts/bench_loader.py [--images 300] [--batch 16]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from fusion_lab.config import DatasetConfig
from fusion_lab.data import build_data
from fusion_lab.profile import cpu_model

TARGETS = {"full CN-CNN on an H100": 300, "bare ResNet50 on an H100": 1000}




def write_images(root: Path, n: int, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / "train" / f"class_{i % classes:02d}"
        d.mkdir(parents=True, exist_ok=True)
        # Smooth noise compresses like a photo (not like white noise, not like a flat fill).
        small = rng.integers(0, 255, (47, 63, 3), dtype=np.uint8)
        im = Image.fromarray(small).resize((500, 375), Image.BICUBIC)
        im.filter(ImageFilter.GaussianBlur(2)).save(d / f"{i:05d}.jpg", quality=90)
    for c in range(classes):  # the test split must exist; one image per class
        d = root / "test" / f"class_{c:02d}"
        d.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (500, 375)).save(d / "0.jpg")


def measure(root: Path, workers: int, batch: int, epochs: int = 2) -> float:
    cfg = DatasetConfig(name="imagefolder", root=str(root))
    data = build_data(cfg, image_size=448, resize=600, batch_size=batch, workers=workers, seed=0)
    for _ in data.train:  # warm-up pass: starts the workers, fills the page cache
        break
    n, start = 0, time.perf_counter()
    for epoch in range(epochs):
        data.set_epoch(epoch)
        for _, labels in data.train:
            n += len(labels)
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {cpu_model()}")
    print(f"{args.images} JPEGs 500x375 -> resize 600x600 -> crop 448, batch {args.batch}")
    with tempfile.TemporaryDirectory() as tmp:
        write_images(Path(tmp), args.images)
        rates = {}
        for w in args.workers:
            rates[w] = measure(Path(tmp), w, args.batch)
            per = rates[w] / max(w, 1)
            print(f"workers={w}: {rates[w]:7.1f} images/s ({per:.1f} per process)")
    per_worker = max(rates[w] / max(w, 1) for w in rates if w > 0) if any(rates) else 0
    for what, need in TARGETS.items():
        print(f"{what} ({need} images/s): about {int(np.ceil(need / per_worker))} workers "
              f"at {per_worker:.0f} images/s per worker (on free cores)")


if __name__ == "__main__":
    main()
