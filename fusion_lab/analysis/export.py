"""Export a trained run's backbone as a weights file another study can start from.

``export_backbone`` reads a finished run's ``checkpoint.pt`` and writes

- ``OUT``: ``{"state_dict": backbone weights, "head": classifier weights, "backbone": name,
  "num_classes": K}``; ``state_dict`` is the backbone's own state dict (a timm backbone's
  keys are those of the timm model), so ``model.pretrained: OUT`` loads it strictly into
  the same backbone (timm's loader and ours both read the ``state_dict`` key);
- ``OUT`` with suffix ``.json``: the file's SHA-256 and that of its tensors
  (``content_sha256``: what the id of a run starting from the file records, the same for
  the run exported under any other name), the run's id and full config (the
  recipe), its source dataset and its last-epoch test accuracy on that dataset (the source
  accuracy), measured on ``test_size`` held-out images, and the command that made it.

Pretraining then fine-tuning in stages is two studies and one ``fusionlab export``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from fusion_lab.config.weights import content_sha256, file_sha256
from fusion_lab.errors import FusionLabError
from fusion_lab.plan.find import StudyRef
from fusion_lab.store import (
    CHECKPOINT,
    STUDY_JSON,
    SUMMARY_JSON,
    read_json,
    write_json,
)


def finished_run(ref: StudyRef, results: Path) -> tuple[Path, str | None]:
    """The run of a study that ``fusionlab export`` exports: its one finished run (e.g. a
    pretraining study with one seed); otherwise the message lists its runs so that one can
    be named by id.

    The rule for a study in ``fusion_lab.plan.find.find_run``, which turns a command-line
    argument into a run folder (``results``: unused, the study's folder says it all).
    """
    ref.require_results()
    plan = read_json(ref.results / STUDY_JSON) or {"rows": []}
    ids = [rid for row in plan["rows"] for rid in row["run_ids"]]
    done = [rid for rid in ids if (read_json(ref.results / rid / SUMMARY_JSON) or {})
            .get("status") == "done"]
    if len(done) == 1:
        return ref.results / done[0], None
    if not done:
        raise FusionLabError(f"study {ref.name!r} has no finished run in "
                             f"{ref.results.parent}/: run `fusionlab run` on its study file "
                             "first")
    raise FusionLabError(f"study {ref.name!r} has {len(done)} finished runs; name one by its "
                         "id: " + ", ".join(d[:12] for d in done))


def export_backbone(run_dir: str | Path, out: str | Path,
                    command: str | None = None) -> dict[str, Any]:
    """Write the backbone (and classifier) of a finished run to ``out``; returns the card."""
    run_dir, out = Path(run_dir), Path(out)
    summary = read_json(run_dir / SUMMARY_JSON) or {}
    if summary.get("status") != "done":
        raise FusionLabError(f"run {run_dir.name[:12]} is not finished "
                             f"(status {summary.get('status', 'missing')}); train it first")
    ckpt = run_dir / CHECKPOINT
    if not ckpt.is_file():
        raise FusionLabError(f"run {run_dir.name[:12]} has no {CHECKPOINT} (it ran with "
                             "train.keep_checkpoint: false); train it again to export it")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    weights = {k.replace("._orig_mod", ""): v for k, v in state["model"].items()}
    backbone = {k[len("backbone."):]: v for k, v in weights.items() if k.startswith("backbone.")}
    if backbone and all(k.startswith("body.") for k in backbone):  # TimmBackbone: timm's keys
        backbone = {k[len("body."):]: v for k, v in backbone.items()}
    head = {k[len("head."):]: v for k, v in weights.items() if k.startswith("head.")}
    cfg = state["config"]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    torch.save({"state_dict": backbone, "head": head, "backbone": cfg["model"]["backbone"],
                "num_classes": state["num_classes"]}, tmp)
    tmp.replace(out)
    acc, n = summary["final"]["acc"], summary.get("test_size")
    card = {
        "file": out.name,
        "sha256": file_sha256(out),
        "content_sha256": content_sha256(out),
        "backbone": cfg["model"]["backbone"],
        "source_dataset": cfg["dataset"],
        "source_accuracy": acc,
        "source_test_size": n,
        "source_accuracy_se": (100 * math.sqrt(acc / 100 * (1 - acc / 100) / n)
                               if n else None),
        "source_accuracy_note": "last-epoch top-1 accuracy (%) of the run's backbone and "
                                "linear head on the dataset's test split",
        "run_id": summary.get("run_id") or run_dir.name,
        "study": summary.get("study") or run_dir.parent.name,
        "recipe": cfg,
        "wall_time_s": summary.get("wall_time_s"),
        "device": summary.get("device"),
        "versions": summary.get("versions"),
        "made_by": command,
    }
    write_json(out.with_suffix(".json"), card)
    return card


def load_head(path: str | Path) -> dict[str, torch.Tensor]:
    """The classifier weights an exported file carries (the source task's head)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state["head"]


def card_text(card: dict[str, Any]) -> str:
    se = card.get("source_accuracy_se")
    se_text = f" ± {se:.2f} (binomial SE)" if se is not None else ""
    return (f"{card['file']}: backbone {card['backbone']}, source {card['source_dataset']['name']}"
            f" accuracy {card['source_accuracy']:.2f}%{se_text} on {card['source_test_size']} "
            f"test images; sha256 {card['sha256'][:16]}...")


def card_json(card: dict[str, Any]) -> str:
    return json.dumps(card, indent=2)
