"""`fusionlab config STUDY`: every run's resolved config, size, cost and time, before training.

Per run: its label (and grid cell), seed and id, the resolved config as YAML (``--diff``:
only the keys that differ from the study's base), and per variant (seeds share a model) its
parameters, forward GFLOPs per image and an estimate of its training time on this device:
one training step of the model at the run's batch and image size on synthetic tensors
(``fusion_lab.analysis.bench``), timed round-robin over the variants, times the steps of
an epoch times the epochs. Nothing is written and nothing trains.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

import click
import yaml

from fusion_lab.config import flatten, resolve_dict, to_dict
from fusion_lab.plan.dotted import set_dotted
from fusion_lab.plan.find import find_study
from fusion_lab.plan.planning import prepare, presets


@click.command("config")
@click.argument("study")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config key for every run, as `fusionlab run --set`.")
@click.option("--diff", is_flag=True, help="Show only the keys that differ from the base.")
@click.option("--estimate/--no-estimate", default=True, show_default=True,
              help="Build each variant and time one training step.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, or auto.")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1),
              help="Timed rounds of one training step per variant (after one warm-up).")
@click.option("--results", default="results", show_default=True,
              type=click.Path(file_okay=False), help="Where a study name is looked up.")
def config_cmd(study: str, overrides: tuple[str, ...], diff: bool, estimate: bool,
               device: str, repeats: int, results: str) -> None:
    """Print every run of STUDY (a study file or name) as it would train: resolved config,
    parameters, GFLOPs and an estimated training time on this device."""
    st, runs = prepare(find_study(study, results).require_file(), list(overrides))
    costs = _costs(runs, device, repeats) if estimate else {}
    base = _base_keys(st) if diff else None
    for r in runs:
        click.echo(f"# {r.display}  seed {r.seed}  run {r.run_id[:12]}")
        cost = costs.get(r.group_id)
        if cost:
            click.echo(f"# {cost['params']:,} parameters, {cost['gflops']:.3f} GFLOPs per "
                       f"image, about {_duration(cost['seconds'])} to train on "
                       f"{cost['device']} ({cost['steps']} steps of {cost['step_s']:.3f} s; "
                       "an estimate from timed steps, without data loading or evaluation)")
        click.echo(_yaml(r.config, base))


def _yaml(cfg: Any, base: dict[str, Any] | None) -> str:
    """The config as YAML; with ``base`` (flattened), only the keys whose value differs."""

    d = to_dict(cfg)
    if base is not None:
        changed = [k for k, v in flatten(d).items() if k not in base or base[k] != v]
        d = {}
        for key in changed:
            set_dotted(d, key, _lookup(to_dict(cfg), key))
        if not d:
            return "{}  # the base, as it is\n"
    return yaml.safe_dump(d, sort_keys=False, default_flow_style=None)


def _lookup(d: dict, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _base_keys(st: Any) -> dict[str, Any]:
    """The study's base as one resolved run, flattened (seed: the first)."""
    cfg, _ = resolve_dict({**st.base, "seed": st.seeds[0]}, presets())
    return flatten(to_dict(cfg)) if cfg is not None else {}


def _costs(runs: list, device: str, repeats: int) -> dict[str, dict[str, Any]]:
    """Per group: parameters, GFLOPs per image and the estimated training time."""
    # here, not at the top: `--help` and a usage mistake answer without importing torch
    import torch

    from fusion_lab.analysis.bench import _build, _steps, num_classes, variants
    from fusion_lab.models.assemble import count_parameters
    from fusion_lab.models.profile import image_gflops, round_robin
    from fusion_lab.training.device import device_name, resolve_device

    dev = resolve_device(device)
    costs, steps = {}, {}
    for v in variants(runs):
        t = v.config.train
        classes = num_classes(v.config)
        torch.manual_seed(0)
        model = _build(v.config, classes, dev)
        costs[v.group_id] = {"params": count_parameters(model), "device": device_name(dev),
                             "gflops": image_gflops(model, t.image_size, t.batch_size),
                             "steps": t.epochs * _steps_per_epoch(v.config)}
        steps[v.group_id] = _steps(model, v.config, dev, t.batch_size, t.image_size, classes)[0]
    times = round_robin(steps, repeats, warmup=1)
    for group, cost in costs.items():
        cost["step_s"] = statistics.median(times[group])
        cost["seconds"] = cost["step_s"] * cost["steps"]
    return costs


_SIZES: dict[str, int] = {}


def _steps_per_epoch(cfg: Any) -> int:
    """Training batches of one epoch: the train split less the val part, by the batch."""
    # here, not at the top: `--help` and a usage mistake answer without importing torch
    from fusion_lab.data import open_source

    d = cfg.dataset
    key = json.dumps([d.name, d.root, d.options], sort_keys=True, default=str)
    if key not in _SIZES:
        _SIZES[key] = len(open_source(d.name, d.root, d.options)[0].train)
    train = int(_SIZES[key] * (1 - d.val_fraction))
    return max(1, train // cfg.train.batch_size)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
