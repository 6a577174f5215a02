"""Where the object and its discriminative parts are in an image, for scoring attention.

A dataset that knows (``synthetic_fgvc`` draws them; ``cub200`` ships boxes and part
points) returns a ``Regions`` per test item from its ``regions(item)`` method, in the
pixel coordinates of the image ``load(item)`` returns. ``through_test_transform`` moves
them through the test transform (resize to ``resize`` x ``resize``, centre crop
``image_size``, as ``fusion_lab.data.transforms.FGVCTransform``), so they line up with the
model's input. No torch (outside ``fusion_lab.data``, whose package imports torch), so the
table path can score-read without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image


@dataclass
class Regions:
    """The object's box and its parts in one image.

    ``size`` is (width, height) of the image the coordinates are in; ``box`` is
    (x0, y0, x1, y1) in pixels (continuous: pixel (i, j) spans x in [j, j+1)); parts are
    masks (fraction of each pixel covered, (height, width)) or points (x, y) of the visible
    parts, or both.
    """

    size: tuple[int, int]
    box: tuple[float, float, float, float]
    part_masks: dict[str, np.ndarray] = field(default_factory=dict)
    part_points: dict[str, tuple[float, float]] = field(default_factory=dict)


def through_test_transform(reg: Regions, resize: int, image_size: int) -> Regions:
    """``reg`` after the test transform: resize to resize x resize, centre crop image_size."""
    w, h = reg.size
    sx, sy = resize / w, resize / h
    off = (resize - image_size) // 2

    def point(x: float, y: float) -> tuple[float, float]:
        return x * sx - off, y * sy - off

    x0, y0 = point(*reg.box[:2])
    x1, y1 = point(*reg.box[2:])
    clip = lambda v: float(min(max(v, 0.0), image_size))  # noqa: E731
    masks = {}
    for name, m in reg.part_masks.items():
        # the same resampling as the image's (bilinear), on the coverage fractions
        big = Image.fromarray(m.astype(np.float32), mode="F").resize((resize, resize),
                                                                      Image.BILINEAR)
        masks[name] = np.asarray(big)[off:off + image_size, off:off + image_size].copy()
    points = {k: point(*p) for k, p in reg.part_points.items()}
    points = {k: p for k, p in points.items()
              if 0 <= p[0] < image_size and 0 <= p[1] < image_size}  # cropped away: gone
    return Regions((image_size, image_size), (clip(x0), clip(y0), clip(x1), clip(y1)),
                   masks, points)


def box_pixels(reg: Regions) -> np.ndarray:
    """Boolean (height, width): the pixels whose centre lies inside the box."""
    w, h = reg.size
    x0, y0, x1, y1 = reg.box
    cx, cy = np.arange(w) + 0.5, np.arange(h) + 0.5
    return ((cy >= y0) & (cy <= y1))[:, None] & ((cx >= x0) & (cx <= x1))[None, :]


def part_pixels(reg: Regions, radius: float) -> np.ndarray:
    """Boolean (height, width): on a part, i.e. at least half covered by a part mask, or
    within ``radius`` pixels (pixel centre to point) of a visible part point."""
    w, h = reg.size
    out = np.zeros((h, w), bool)
    for m in reg.part_masks.values():
        out |= m >= 0.5
    if reg.part_points:
        cy, cx = np.mgrid[0:h, 0:w] + 0.5
        for x, y in reg.part_points.values():
            out |= (cx - x) ** 2 + (cy - y) ** 2 <= radius ** 2
    return out
