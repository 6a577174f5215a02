"""Cost profile of a study's variants: parameters, FLOPs, throughput and peak memory.

One variant per group (seeds collapse; every grid cell is a variant). Each is built from its
resolved config and fed synthetic tensors of the study's image size, so no dataset is read.
Throughputs are medians over repeats taken round-robin across the variants (drift on a
shared machine hits all alike), with their range over the rounds, and are reported as
ratios to the baseline row of the same grid cell, measured in the same process (the ratio
of the medians, and its range over rounds: each round's ratio compares two steps taken
under the same load). The conditions go with them: device, image size, batch, rounds, and
the load average before and after. Peak memory is measured per variant in a fresh
subprocess (one training step and one inference batch): ``torch.cuda.max_memory_allocated``
on a GPU; on the CPU, the rise of the process's peak resident set size over its size after
importing torch (the peak is reset through /proc/self/clear_refs; where that fails, the
``ru_maxrss`` rise, which misses a peak below the import's own). The result is written to ``results/<study>/cost.json``
(docs/results-format.md).
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fusion_lab import store
from fusion_lab.analysis.table_formats import cost_conditions, ips_cell
from fusion_lab.config import RunConfig, from_dict, to_dict
from fusion_lab.data import open_source
from fusion_lab.errors import FusionLabError
from fusion_lab.models.assemble import build_model, count_parameters, model_loss
from fusion_lab.models.profile import cpu_model, image_gflops, round_robin
from fusion_lab.plan.study import PlannedRun, Study
from fusion_lab.registries import DATASETS, load_plugins
from fusion_lab.training.device import device_name, precision, prepare_model, resolve_device
from fusion_lab.training.train import optimizer_step


@dataclass
class Variant:
    group_id: str
    label: str
    grid: dict[str, Any]
    config: RunConfig


def variants(runs: list[PlannedRun]) -> list[Variant]:
    """One variant per group, in study order (the first seed's config)."""
    seen: dict[str, Variant] = {}
    for r in runs:
        seen.setdefault(r.group_id, Variant(r.group_id, r.label, dict(r.grid), r.config))
    return list(seen.values())


def num_classes(cfg: RunConfig) -> int:
    """Classes of the dataset: its class's ``classes_for(options)`` where the number is
    known without the data, else counted from the data."""
    d = cfg.dataset
    known = getattr(DATASETS.get(d.name), "classes_for", None) if d.name in DATASETS else None
    if known is not None and known(d.options) is not None:
        return int(known(d.options))

    try:
        return open_source(d.name, d.root, d.options)[0].num_classes
    except FusionLabError as e:
        raise FusionLabError(f"cannot tell the number of classes of {d.name!r} without the "
                             f"data ({e}); pass --num-classes") from None


def _build(cfg: RunConfig, classes: int, dev: torch.device) -> nn.Module:
    model = build_model(dataclasses.replace(cfg.model, pretrained=False), classes)
    return prepare_model(model, dev, cfg.train.channels_last, cfg.train.compile)[0]


def _steps(model: nn.Module, cfg: RunConfig, dev: torch.device, batch: int, size: int,
           classes: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """A training step (forward, loss, backward, SGD) and an inference batch, as closures."""
    x = torch.randn(batch, 3, size, size, device=dev)
    if dev.type == "cuda" and cfg.train.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,), device=dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    prec = precision(cfg.train.amp, dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    def train() -> None:
        model.train()
        with prec.autocast():
            loss = model_loss(model(x), y)
        optimizer_step(loss, opt, prec, model)
        sync()

    def infer() -> None:
        model.eval()
        with torch.no_grad(), prec.autocast():
            model(x)
        sync()

    return train, infer


def peak_memory_mb(cfg: RunConfig, classes: int, device: str, batch: int, size: int,
                   plugins: list[str], base_dir: str | None) -> float:
    """Peak memory of one training step and one inference batch, in a fresh process."""
    job = {"config": to_dict(cfg), "classes": classes, "device": device, "batch": batch,
           "size": size, "plugins": plugins, "base_dir": base_dir,
           "threads": torch.get_num_threads()}
    out = subprocess.run([sys.executable, "-m", "fusion_lab.analysis.bench", json.dumps(job)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"peak memory subprocess failed:\n{out.stderr[-2000:]}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mem_mb"])


def _rss_mb(key: str) -> float:
    """VmRSS or VmHWM of this process from /proc/self/status, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(f"no {key} in /proc/self/status")


def _peak_child(job: dict) -> dict:
    torch.set_num_threads(job["threads"])
    load_plugins(job["plugins"], base_dir=job["base_dir"])
    cfg, dev = from_dict(job["config"]), torch.device(job["device"])
    if dev.type == "cpu":
        before = _rss_mb("VmRSS")  # the runtime: Python, torch, the plugins
        try:  # reset the peak RSS to the current RSS (Linux >= 4.0)
            Path("/proc/self/clear_refs").write_text("5")
            hwm_reset = True
        except OSError:
            hwm_reset = False
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model = _build(cfg, job["classes"], dev)
    train, infer = _steps(model, cfg, dev, job["batch"], job["size"], job["classes"])
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    train()
    infer()
    if dev.type == "cuda":
        return {"peak_mem_mb": torch.cuda.max_memory_allocated(dev) / 2**20}
    peak = _rss_mb("VmHWM") if hwm_reset else (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # KB on Linux
    return {"peak_mem_mb": max(0.0, peak - before)}


def baseline_index(vs: list[Variant], baseline: str | None) -> list[int]:
    """For each variant, the index of the variant its ratios are taken against."""
    out = []
    for v in vs:
        same = [i for i, b in enumerate(vs) if b.label == baseline and b.grid == v.grid]
        out.append(same[0] if same else 0)
    return out


def spread(ts: list[float], ref: list[float], batch: int, kind: str) -> dict[str, Any]:
    """Throughput (median over rounds) and its range; ratio to the reference (``ref``: the
    baseline's seconds in the same rounds) as the ratio of medians, and its range over
    rounds (each round's own ratio)."""
    ips = [batch / t for t in ts]
    per_round = [r / t for t, r in zip(ts, ref)]
    return {f"{kind}_ips": batch / statistics.median(ts),
            f"{kind}_ips_range": [min(ips), max(ips)],
            f"{kind}_ratio": statistics.median(ref) / statistics.median(ts),
            f"{kind}_ratio_range": [min(per_round), max(per_round)]}


def bench_study(study: Study, runs: list[PlannedRun], results: str | Path, device: str = "auto",
                batch_size: int | None = None, image_size: int | None = None, repeats: int = 5,
                warmup: int = 1, classes: int | None = None, memory: bool = True,
                log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Measure every variant of a study and write results/<study>/cost.json; returns it."""
    if repeats < 1:
        raise FusionLabError(f"--repeats must be at least 1, got {repeats}")
    dev = resolve_device(device)
    vs = variants(runs)
    base = vs[0].config.train
    batch = batch_size or base.batch_size
    size = image_size or base.image_size
    n_cls = classes or num_classes(vs[0].config)
    models, steps, rows = [], [], {}
    for v in vs:
        torch.manual_seed(0)
        model = _build(v.config, n_cls, dev)
        models.append(model)
        rows[v.group_id] = {"label": v.label, "grid": v.grid,
                            "params": count_parameters(model),
                            "gflops": image_gflops(model, size, batch)}
        steps.append(_steps(model, v.config, dev, batch, size, n_cls))
        log(f"built {v.label}: {rows[v.group_id]['params']:,} parameters, "
            f"{rows[v.group_id]['gflops']:.2f} GFLOPs")
    fns = {(i, kind): fn for i, pair in enumerate(steps)
           for kind, fn in zip(("train", "infer"), pair)}
    load_start = os.getloadavg()
    times = round_robin(fns, repeats, warmup, on_round=lambda r, _: log(
        f"round {r + 1}/{warmup + repeats}{' (warm-up)' if r < warmup else ''} done"))
    load_end = os.getloadavg()
    del models, steps
    for i, (v, b) in enumerate(zip(vs, baseline_index(vs, study.baseline))):
        for kind in ("train", "infer"):
            rows[v.group_id].update(spread(times[(i, kind)], times[(b, kind)], batch, kind))
    for v in vs:
        mem = None
        if memory:
            base_dir = str(study.path.parent) if study.path else None
            mem = peak_memory_mb(v.config, n_cls, str(dev), batch, size, study.plugins, base_dir)
            log(f"peak memory of {v.label}: {mem:.0f} MB")
        rows[v.group_id]["peak_mem_mb"] = mem
    cost = {"device": device_name(dev), "measured": store.now(), "image_size": size,
            "batch_size": batch, "baseline": study.baseline or vs[0].label,
            "conditions": {"repeats": repeats, "warmup": warmup, "cpu": cpu_model(),
                           "cpus": os.cpu_count(), "load_avg_start": list(load_start),
                           "load_avg_end": list(load_end)},
            "rows": rows}
    store.write_json(store.study_dir(results, study.name) / store.COST_JSON, cost)
    return cost


def format_cost(cost: dict[str, Any]) -> str:
    """A plain-text table of a cost profile, under the conditions it was measured in."""
    head = (f"{'variant':<28}{'params (M)':>11}{'GFLOPs':>9}  {'train img/s':<32}"
            f"{'infer img/s':<32}{'peak MB':>8}")
    lines = [cost_conditions(cost),
             f"img/s: median [min-max] over rounds; (x ratio [min-max]): throughput against "
             f"{cost['baseline']} of the same grid cell (ratio of medians [per-round range])",
             head]
    for row in cost["rows"].values():
        cell = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in row["grid"].items())
        name = f"{row['label']} [{cell}]" if cell else row["label"]
        mem = row["peak_mem_mb"]
        lines.append(
            f"{name[:27]:<28}{row['params'] / 1e6:>11.2f}{row['gflops']:>9.2f}  "
            f"{ips_cell(row, 'train'):<32}{ips_cell(row, 'infer'):<32}"
            f"{'-' if mem is None else f'{mem:.0f}':>8}")
    return "\n".join(lines)


if __name__ == "__main__":  # the peak-memory subprocess: python -m fusion_lab.analysis.bench JOB
    print(json.dumps(_peak_child(json.loads(sys.argv[1]))))
