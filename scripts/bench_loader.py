"""Benchmark: the old (PIL, float32) and the new (libjpeg-turbo, uint8) train loaders at 448.

Writes CUB-like JPEGs (500x375, photo-like texture, quality 75-90, see
``fixtures.texture``) in imagefolder layout to a temporary folder, then times the
train loader at the reference geometry (resize 600x600 -> random crop 448 -> flip), batch
16, with 0, 1 and 2 workers, old and new alternately so that load from other processes
hits both alike:

- old: PIL decode, PIL resize/crop/flip, float normalisation in the worker, float32
  batches across the process boundary (``fixtures.legacy``, the former pipeline);
- new: ``torchvision.io.decode_jpeg``, uint8 resize/crop/flip, uint8 batches; the
  normalisation happens on the training device and is not counted here.

Then the cost of each stage for one image in this process (where the time goes), and the
workers a GPU consuming 300 or 1,000 images/s needs at the measured rate per worker.

    .venv/bin/python scripts/bench_loader.py [--images 240] [--batch 16] [--workers 0 1 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fusion_lab.config import DatasetConfig
from fusion_lab.data import build_data
from fusion_lab.data.decode import decode_jpeg_bytes
from fusion_lab.data.loading import SplitDataset
from fusion_lab.data.transforms import FGVCTransform, normalise
from fusion_lab.models.profile import cpu_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures.legacy import LegacyTransform  # noqa: E402
from fixtures.texture import jpeg_bytes, textured_image  # noqa: E402

TARGETS = {"full CN-CNN on an H200": 400, "bare ResNet50 on an H200": 1200}


class LegacyDataset(SplitDataset):
    """The former ``__getitem__``: PIL ``load`` then the float transform."""

    def __getitem__(self, key):
        index, sample_seed = key if isinstance(key, tuple) else (key, 0)
        item, label = self.samples[index]
        return self.transform(self.source.load(item), self.generator(sample_seed)), int(label)


def write_images(root: Path, n: int, classes: int = 10) -> float:
    """``n`` train JPEGs (and one test image per class); returns their mean size in kB."""
    sizes = []
    for i in range(n):
        d = root / "train" / f"class_{i % classes:02d}"
        d.mkdir(parents=True, exist_ok=True)
        data = jpeg_bytes(textured_image(375, 500, i), quality=75 + (i % 4) * 5)
        (d / f"{i:05d}.jpg").write_bytes(data)
        sizes.append(len(data))
    for c in range(classes):
        d = root / "test" / f"class_{c:02d}"
        d.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (500, 375)).save(d / "0.jpg")
    return sum(sizes) / len(sizes) / 1000


def loader(root: Path, pipeline: str, workers: int, batch: int):
    cfg = DatasetConfig(name="imagefolder", root=str(root))
    data = build_data(cfg, image_size=448, resize=600, batch_size=batch, workers=workers, seed=0)
    if pipeline == "old":
        ds = data.train.dataset
        data.train.dataset.__class__ = LegacyDataset
        ds.transform = LegacyTransform(448, 600, train=True)
    return data


def measure(data, epochs: int = 1) -> float:
    # Warm-up: one whole pass (starts the workers, fills the page cache). Breaking out
    # early would leave prefetched batches of that pass for the workers to finish inside
    # the timed pass.
    for _ in data.train:
        pass
    n, start = 0, time.perf_counter()
    for epoch in range(epochs):
        data.set_epoch(epoch + 1)
        for _, labels in data.train:
            n += len(labels)
    return n / (time.perf_counter() - start)


def stage_times(path: Path, repeats: int = 30) -> dict[str, dict[str, float]]:
    """Median milliseconds of each stage for one image, in this process, old vs new."""
    data = path.read_bytes()
    old_tf, new_tf = LegacyTransform(448, 600, True), FGVCTransform(448, 600, True)
    im = Image.open(path).convert("RGB")
    x = decode_jpeg_bytes(data)
    big = new_tf(x, torch.Generator().manual_seed(0))
    from torchvision.transforms.v2.functional import resize

    stages = {
        "old": {
            "read+decode (PIL)": lambda: Image.open(path).convert("RGB"),
            "resize 600 (PIL)": lambda: im.resize((600, 600), Image.BILINEAR, reducing_gap=3.0),
            "whole transform (PIL, float)": lambda: old_tf(im, torch.Generator().manual_seed(0)),
        },
        "new": {
            "read+decode (turbo)": lambda: decode_jpeg_bytes(path.read_bytes()),
            "resize 600 (uint8)": lambda: resize(x, [600, 600], antialias=True),
            "whole transform (uint8)": lambda: new_tf(x, torch.Generator().manual_seed(0)),
            "normalise (if on CPU)": lambda: normalise(big[None]),
        },
    }
    out: dict[str, dict[str, float]] = {}
    for name, fns in stages.items():
        out[name] = {}
        for stage, fn in fns.items():
            fn()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            out[name][stage] = statistics.median(times) * 1e3
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=240)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rounds", type=int, default=2, help="old/new alternations per setting")
    ap.add_argument("--summary", help="append the figures to this file (gpu_check.sh)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPUs (usable {len(os.sched_getaffinity(0))}), "
          f"{cpu_model()}, load average {load:.2f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        kb = write_images(Path(tmp), args.images)
        print(f"{args.images} textured JPEGs 500x375 (q 75-90, mean {kb:.0f} kB) -> resize "
              f"600x600 -> crop 448 + flip, batch {args.batch}; median of {args.rounds} rounds")
        rates: dict[tuple[str, int], float] = {}
        for w in args.workers:
            loaders = {p: loader(Path(tmp), p, w, args.batch) for p in ("old", "new")}
            got: dict[str, list[float]] = {"old": [], "new": []}
            for _ in range(args.rounds):
                for p in ("old", "new"):
                    got[p].append(measure(loaders[p]))
            for p in ("old", "new"):
                rates[p, w] = statistics.median(got[p])
            del loaders
            per = {p: rates[p, w] / max(w, 1) for p in ("old", "new")}
            print(f"workers={w}: old {rates['old', w]:6.1f} images/s ({per['old']:.1f} per "
                  f"process), new {rates['new', w]:6.1f} ({per['new']:.1f}); "
                  f"new/old {rates['new', w] / rates['old', w]:.2f}x")
        print("one image, median ms per stage (this process, 1 thread):")
        for name, stages in stage_times(next(Path(tmp).glob("train/*/*.jpg"))).items():
            print(f"  {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    with_workers = [w for w in args.workers if w > 0] or args.workers
    per = {p: max(rates[p, w] / max(w, 1) for w in with_workers) for p in ("old", "new")}
    print(f"new / old per worker: {per['new'] / per['old']:.2f}x")
    if args.summary:
        with open(args.summary, "a") as f:
            f.write(f"loader new / old images/s per worker: {per['new'] / per['old']:.2f}x\n")
    for p in ("old", "new"):
        per_worker = per[p]
        needs = ", ".join(f"{what} ({need}/s): {int(np.ceil(need / per_worker))} workers"
                          for what, need in TARGETS.items())
        print(f"{p}: {per_worker:.0f} images/s per worker -> {needs} (on free cores)")
        if args.summary:
            with open(args.summary, "a") as f:
                f.write(f"loader images/s per worker, {p} pipeline (448 from 500x375 JPEGs): "
                        f"{per_worker:.1f}\n")
                for w in args.workers:
                    f.write(f"loader images/s {p}, workers={w}: {rates[p, w]:.1f}\n")


if __name__ == "__main__":
    main()
