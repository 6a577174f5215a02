"""Figure 3 of the paper: what the LH pathway's maps and the SA masks look at.

For a trained run (its ``checkpoint.pt``), a few test images of the run's own dataset are
drawn one per row: the image (with its true and predicted class), then the norm over
channels of each attended map (the LH pathway's output, high level first, each min-max
scaled to its own range) and each spatial-attention mask overlaid on the image; colour
bars and that statement sit under the grid (``fusion_lab.maps.viz_draw``).

``study_run`` picks the run of a study to draw (``fusion_lab.plan.find.find_run`` turns a
command-line argument into a run folder), ``load_trained`` rebuilds the model,
``sample_images`` picks the images, ``extract_maps`` computes the maps (numpy arrays,
resized to the image) and ``draw`` (``fusion_lab.maps.viz_draw``) writes the PNG.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fusion_lab import store
from fusion_lab.config import RunConfig, from_dict
from fusion_lab.data import open_source
from fusion_lab.data.transforms import FGVCTransform, normalise
from fusion_lab.errors import FusionLabError
from fusion_lab.maps.attention_table import has_spatial_masks
from fusion_lab.maps.viz_draw import columns, draw, render, unnormalise  # noqa: F401
from fusion_lab.models.assemble import FusionModel, build_model, resolve_parts
from fusion_lab.plan.find import StudyRef
from fusion_lab.plan.planning import prepare


@dataclass
class Maps:
    """Per image, per level (high level first), maps resized to the image: (N, L, H, W)."""

    levels: list[str]  # level names, high level first, e.g. ["s5", "s4", "s3"]
    attended: np.ndarray  # L2 norm over channels of each attended map
    sa: np.ndarray | None  # spatial attention masks in [0, 1]; None without SA
    pred: np.ndarray | None = None  # the model's predicted class per image


def has_sa(cfg: RunConfig) -> bool:
    """Whether the model of ``cfg`` has spatial attention masks: its attention class lists
    "sa" in its ``masks`` attribute (the ATTENTIONS contract; the attention table's rule)."""
    return has_spatial_masks(resolve_parts(cfg.model)[1])


def _run_config(run_dir: Path) -> RunConfig | None:
    p = run_dir / store.CONFIG_JSON
    if not p.is_file():
        return None
    return from_dict(json.loads(p.read_text())["config"])


def pick_run(run_dirs: list[list[Path]], configs: list[RunConfig]) -> tuple[Path, str]:
    """The CN-CNN-like run of a study: rows are lists of seed folders, in study order.

    Prefers the last row with SA masks, and within a row the first seed with a checkpoint.
    Returns the folder and why it was picked.
    """
    order = [i for i in reversed(range(len(run_dirs))) if has_sa(configs[i])]
    why = "last row with spatial attention"
    if not order:
        order, why = list(reversed(range(len(run_dirs)))), "no row has SA masks; last row"
    for i in order:
        for d in run_dirs[i]:
            if (d / store.CHECKPOINT).is_file():
                return d, why
    return run_dirs[order[0]][0], why + " (no checkpoint found)"


def study_run(ref: StudyRef, results: Path) -> tuple[Path, str]:
    """The run of a study that ``fusionlab viz`` draws: its CN-CNN-like run (``pick_run``),
    among the runs of its study file when one was given, else among its recorded rows.

    The rule for a study in ``fusion_lab.plan.find.find_run``, which turns a command-line
    argument into a run folder. Returns the folder and a note saying which run was picked.
    """
    if ref.kind == "file" and ref.tag is None:  # a tag's runs: those its study.json names
        study, runs = prepare(ref.file)
        rows: dict[str, list] = {}
        for r in runs:
            rows.setdefault(r.group_id, []).append(r)
        groups = list(rows.values())
        d, why = pick_run([[store.run_dir(results, study.name, r.run_id) for r in g]
                           for g in groups], [g[0].config for g in groups])
        label = next(r.display for r in runs
                     if store.run_dir(results, study.name, r.run_id) == d)
        return d, f"study {study.name}: picked run {d.name[:12]} ({label}; {why})"
    plan = json.loads((ref.results / store.STUDY_JSON).read_text())
    dirs = [[ref.results / rid for rid in row["run_ids"]] for row in plan["rows"]]
    configs = [_run_config(ds[0]) for ds in dirs]
    keep = [i for i, c in enumerate(configs) if c is not None]
    if not keep:
        raise FusionLabError(f"study {ref.name!r} has no trained runs in "
                             f"{ref.results.parent}/: run `fusionlab run` on its study "
                             "file first")
    d, why = pick_run([dirs[i] for i in keep], [configs[i] for i in keep])
    label = next(row["label"] for row in plan["rows"] if d.name in row["run_ids"])
    return d, f"study {ref.name}: picked run {d.name[:12]} ({label}; {why})"


def load_trained(run_dir: str | Path,
                 weights: str = "last") -> tuple[FusionModel, RunConfig, list[str]]:
    """The model of a run (CPU, eval mode) with its last epoch's weights (``checkpoint.pt``)
    or, with ``weights="best"``, the best-validation epoch's (``best.pt``)."""
    run_dir = Path(run_dir)
    if weights not in ("last", "best"):
        raise FusionLabError(f"unknown weights {weights!r}: use last or best")
    ckpt = run_dir / (store.CHECKPOINT if weights == "last" else store.BEST_WEIGHTS)
    if weights == "best" and not ckpt.is_file():
        raise FusionLabError(
            f"run {run_dir.name[:12]} has no {store.BEST_WEIGHTS}: it is kept only for runs "
            "trained with a validation split (dataset.val_fraction > 0); use the last weights")
    if not ckpt.is_file():
        raise FusionLabError(
            f"run {run_dir.name[:12]} has no {store.CHECKPOINT}: train it with `fusionlab run` "
            "first (or it ran with train.keep_checkpoint: false, which deletes it at the end)")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    cfg = from_dict(state["config"])
    # The weights come from the checkpoint: never fetch pretrained ones.
    model_cfg = dataclasses.replace(cfg.model, pretrained=False)
    model = build_model(model_cfg, state["num_classes"])
    # torch.compile (train.compile) stores the wrapped modules under "_orig_mod".
    weights = {k.replace("._orig_mod", ""): v for k, v in state["model"].items()}
    model.load_state_dict(weights)
    model.eval()
    names = list(state.get("class_names") or [str(i) for i in range(state["num_classes"])])
    return model, cfg, names


def sample_images(cfg: RunConfig, n: int) -> tuple[torch.Tensor, list[int]]:
    """``n`` test images of the run's dataset, evenly spaced over the split (deterministic).

    Returns the normalised images (n, 3, S, S) as the model sees them at test time, and
    their labels.
    """
    source, _ = open_source(cfg.dataset.name, cfg.dataset.root, cfg.dataset.options)
    t = cfg.train
    tf = FGVCTransform(t.image_size, t.resize or t.image_size, train=False)
    total = len(source.test)
    idx = sorted({int(i) for i in np.linspace(0, total - 1, min(n, total))})
    items = [source.test[i] for i in idx]
    images = torch.stack([tf(source.load_tensor(item)) for item, _ in items])
    return normalise(images), [y for _, y in items]


@torch.no_grad()
def extract_maps(model: FusionModel, images: torch.Tensor) -> Maps:
    """The LH pathway's maps and SA masks of ``images``, resized to the images' size."""
    model.eval()
    out = model(images, return_maps=True)
    size = images.shape[-2:]

    def resized(maps: list[torch.Tensor]) -> np.ndarray:
        up = [F.interpolate(m.float(), size=size, mode="bilinear", align_corners=False)
              for m in reversed(maps)]  # high level first
        return torch.stack([u[:, 0] for u in up], dim=1).cpu().numpy()

    attended = resized([a.float().norm(dim=1, keepdim=True) for a in out["attended"]])
    sa = resized(out["masks"]["sa"]) if "sa" in out["masks"] else None
    pred = out["combined"].argmax(1).cpu().numpy()
    return Maps(list(reversed(model.level_names)), attended, sa, pred)


def figure3(run_dir: str | Path, out: str | Path, n: int = 4, cell_px: int = 160,
            weights: str = "last") -> tuple[Path, list[str]]:
    """Draw Figure 3 for a run (``weights``: last or best); returns the PNG and notes."""
    if n < 1:
        raise FusionLabError(f"--images must be at least 1, got {n}")
    model, cfg, names = load_trained(run_dir, weights)
    images, labels = sample_images(cfg, n)
    maps = extract_maps(model, images)
    notes = []
    if model.batch_dependent:
        notes.append(
            f"this run's predictions depend on the test batch (ConvLSTM over the minibatch): "
            f"the {len(images)} images drawn ran as one batch, top row first, so each row's "
            f"maps depend on the rows above it (training tested in batches of "
            f"{cfg.train.batch_size})" + ("; with one image it sees a zero state"
                                          if len(images) == 1 else ""))
    if maps.sa is None:
        attention = resolve_parts(cfg.model)[1]
        notes.append(f"this run has no SA masks (attention: {attention}): "
                     "drawing the image and the LH maps only")
    path = draw(images, maps, out, [names[y] for y in labels], cell_px,
                predicted=[names[int(y)] for y in maps.pred])
    return path, notes
