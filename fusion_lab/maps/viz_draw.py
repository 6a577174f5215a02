"""Figure 3's picture: a grid of test images, their LH maps and SA masks, and a footer that
says how to read them (colour bars, how the maps are scaled).

``render`` builds the matplotlib Figure (object API, no pyplot state); ``draw`` writes it
as a PNG. Each cell is exactly ``cell_px`` pixels square; the footer below the grid holds
a colour bar for the LH maps (each map min-max scaled to its own range: where, not how
much) and one for the SA masks (absolute values in [0, 1]). The image column names each
image's true class and the model's prediction, wrapped, never cut.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from fusion_lab.data.transforms import IMAGENET_MEAN, IMAGENET_STD

DPI = 100
FONT = 7  # points: about 5.5 pixels a character at DPI
LH_TEXT = ("LH maps: norm over channels of the attended map, min-max scaled per map "
           "(0 = that map's min, 1 = its max): where, not how much; not comparable "
           "between maps")
SA_TEXT = "SA masks: the mask's own value in [0, 1], over the image (alpha 0.5)"


def unnormalise(images: torch.Tensor) -> np.ndarray:
    """ImageNet-normalised (N, 3, H, W) tensors -> (N, H, W, 3) floats in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images.cpu() * std + mean).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def columns(maps: Any) -> list[str]:
    """Column titles of the figure: the image, attended maps, then SA masks."""
    cols = ["image"] + [f"LH {lv}" for lv in maps.levels]
    return cols + ([f"SA {lv}" for lv in maps.levels] if maps.sa is not None else [])


def _wrap(text: str, px: float) -> list[str]:
    return textwrap.wrap(text, max(8, int(px / 5.5))) or [""]


def _caption(i: int, title: str, labels: list[str] | None, predicted: list[str] | None,
             px: float) -> str:
    """The image cell's text: the column title (first row), the true and predicted class."""
    lines = [title] if i == 0 else []
    if labels is not None:
        lines += _wrap(f"true: {labels[i]}", px)
    if predicted is not None:
        mark = "" if labels is None else (" (right)" if predicted[i] == labels[i]
                                          else " (wrong)")
        lines += _wrap(f"pred: {predicted[i]}{mark}", px)
    return "\n".join(lines)


def render(images: torch.Tensor, maps: Any, labels: list[str] | None = None,
           cell_px: int = 160, predicted: list[str] | None = None) -> Any:
    """The figure: one row per image, each cell ``cell_px`` square, the footer below."""
    pics, cols = unnormalise(images), columns(maps)
    n, width = len(pics), len(cols) * cell_px
    keys = [("LH", "viridis", LH_TEXT)] + ([("SA", "jet", SA_TEXT)] if maps.sa is not None
                                            else [])
    bar_px = width / len(keys)
    text_lines = max(len(_wrap(t, bar_px - 10)) for _, _, t in keys)
    footer = 34 + 11 * text_lines
    height = n * cell_px + footer
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    for i in range(n):
        cells = [("image", None)] + [("map", maps.attended[i, j]) for j in range(len(maps.levels))]
        if maps.sa is not None:
            cells += [("mask", maps.sa[i, j]) for j in range(len(maps.levels))]
        for j, (kind, m) in enumerate(cells):
            ax = fig.add_axes((j * cell_px / width, 1 - (i + 1) * cell_px / height,
                               cell_px / width, cell_px / height))
            ax.set_axis_off()
            if kind == "map":  # each map scaled to its own range: where, not how much
                lo, hi = float(m.min()), float(m.max())
                ax.imshow((m - lo) / (hi - lo) if hi > lo else m * 0, cmap="viridis",
                          vmin=0, vmax=1)
            else:
                ax.imshow(pics[i])
                if kind == "mask":
                    ax.imshow(m, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            text = (_caption(i, cols[j], labels, predicted, cell_px) if kind == "image"
                    else cols[j] if i == 0 else "")
            if text:
                ax.text(0.02, 0.98, text, transform=ax.transAxes, fontsize=FONT, va="top",
                        bbox={"facecolor": "white", "alpha": 0.7, "pad": 1, "lw": 0})
    for k, (name, cmap, text) in enumerate(keys):
        _colour_bar(fig, (k * bar_px + 5) / width, (footer - 14) / height,
                    (bar_px - 10) / width, 8 / height, name, cmap, _wrap(text, bar_px - 10))
    return fig


def _colour_bar(fig: Any, x: float, y: float, w: float, h: float, name: str, cmap: str,
                text: list[str]) -> None:
    """A horizontal colour bar in the footer with what it means written under it."""
    cax = fig.add_axes((x, y, w, h))
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), cax=cax, orientation="horizontal")
    bar.set_ticks([0, 1], labels=["min", "max"] if name == "LH" else ["0", "1"])
    bar.ax.tick_params(labelsize=FONT, length=2, pad=1)
    low, high = bar.ax.get_xticklabels()
    low.set_horizontalalignment("left")  # inside the bar's ends, never cut at the edge
    high.set_horizontalalignment("right")
    bar.set_label("\n".join(text), fontsize=FONT, labelpad=1)


def draw(images: torch.Tensor, maps: Any, out: str | Path, labels: list[str] | None = None,
         cell_px: int = 160, predicted: list[str] | None = None) -> Path:
    """Write the figure of ``render`` as a PNG; returns its path."""
    fig = render(images, maps, labels, cell_px, predicted)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, format="png")
    return out
