"""`fusionlab plot STUDY --tuning`: each row's expected best validation accuracy against
the number of trials (Dodge et al., EMNLP 2019; ``analysis.tuning.expected_max`` over the
row's n trials, k = 1..n), with the trials themselves as points (no torch, no pyplot).
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from fusion_lab.analysis.plot import PALETTE
from fusion_lab.analysis.tuning import curve, read_tuning, tuning_records
from fusion_lab.errors import FusionLabError


def plot_tuning(study_dir: Path, out: str | Path) -> Path:
    """Draw the expected-max curves of a tuned study and write them as a PNG."""
    if read_tuning(study_dir) is None:
        raise FusionLabError(f"{study_dir.name} was not tuned (no tuning.json): --tuning "
                             "needs a study with a tune: block, run with `fusionlab run`")
    recs = [r for r in tuning_records(study_dir) if r["val_accs"]]
    if not recs:
        raise FusionLabError(f"{study_dir.name}: no trial has finished yet")
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for i, r in enumerate(recs):
        colour = PALETTE[i % len(PALETTE)]
        cell = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in r["grid"].items())
        name = f"{r['label']} [{cell}]" if cell else r["label"]
        ks = range(1, len(r["val_accs"]) + 1)
        ax.plot(ks, curve(r["val_accs"]), color=colour, label=name)
        ax.scatter(ks, r["val_accs"], color=colour, s=12, alpha=0.5)  # trial i at x = i
    ax.set_xlabel("trials (k)")
    ax.set_ylabel("expected best validation accuracy (%)")
    ax.set_title(f"{study_dir.name}: expected max over k trials (points: the trials)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    if out.parent and not out.parent.is_dir():
        raise FusionLabError(f"cannot write {out}: folder {out.parent}/ does not exist")
    fig.savefig(out, dpi=110)
    return out
