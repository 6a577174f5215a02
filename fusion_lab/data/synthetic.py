"""Procedural fine-grained birds: the renderer behind the ``synthetic_fgvc`` dataset.

Every image shows one bird-like silhouette (tail, body, patterned wing, head, eye, legs)
on a cluttered background. A class is fixed by two *local* details only:

- the wing's pattern (5 kinds: bands, bars, checks, diagonals, a front patch), each
  covering exactly half of the wing by symmetry, in an ink colour drawn per image;
- which of three marker colours (red, yellow, blue) sits on which of three small parts of
  equal area (beak, crown, throat patch): 6 arrangements.

Everything else is drawn per image from distributions shared by all classes: body, ink,
background and clutter colours, pose (rotation, scale, position, flip), lighting gradient,
brightness and noise. Every image contains the same marker colours on the same area, so
colour statistics (mean colour, histograms) carry no class information by construction.
See docs/synthetic_fgvc.md for the rationale.

Rendering is implicit-function drawing with numpy on a 2x grid, box-filtered down
(anti-aliasing); about a millisecond per 64x64 image. ``render_with_masks`` also returns
where the bird and its discriminative parts are (fractions of each pixel covered), from
the same random draws, so the image is bit-identical to ``render``'s.
"""

from __future__ import annotations

import colorsys
from typing import Any

import numpy as np

PATTERNS = ["capped", "barred", "checked", "diagonal", "patched"]
PARTS = ["beak", "crown", "throat"]
REGIONS = ["bird", "beak", "crown", "throat", "wing"]  # what render_with_masks returns
MARKERS = {"red": 0.0, "yellow": 0.15, "blue": 0.62}  # hues
# Cyclic shifts first, so the first three arrangements differ on every part.
ARRANGEMENTS = [(0, 1, 2), (1, 2, 0), (2, 0, 1), (0, 2, 1), (1, 0, 2), (2, 1, 0)]
MAX_CLASSES = len(PATTERNS) * len(ARRANGEMENTS)
UNIT = 0.9 / 1.7  # bird length (1.7 local units) is 90% of the image at scale 1


def class_factors(label: int) -> tuple[int, tuple[int, int, int]]:
    """(wing pattern index, marker index per part) of a class."""
    return label % len(PATTERNS), ARRANGEMENTS[label // len(PATTERNS)]


def class_name(label: int) -> str:
    pattern, arrangement = class_factors(label)
    names = list(MARKERS)
    parts = ", ".join(f"{names[m]} {p}" for p, m in zip(PARTS, arrangement))
    return f"{PATTERNS[pattern]} wing; {parts}"


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A colour from the distribution shared by bodies, backgrounds and clutter."""
    h, s, v = rng.random(), rng.uniform(0.05, 0.7), rng.uniform(0.25, 0.95)
    return np.array(colorsys.hsv_to_rgb(h, s, v))


def _marker_colour(rng: np.random.Generator, hue: float) -> np.ndarray:
    h = (hue + rng.uniform(-0.03, 0.03)) % 1.0
    return np.array(colorsys.hsv_to_rgb(h, rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0)))


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float,
             angle: float = 0.0) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    u, v = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def _triangle(x: np.ndarray, y: np.ndarray, pts: list[tuple[float, float]]) -> np.ndarray:
    (x1, y1), (x2, y2), (x3, y3) = pts
    d1 = (x - x2) * (y1 - y2) - (x1 - x2) * (y - y2)
    d2 = (x - x3) * (y2 - y3) - (x2 - x3) * (y - y3)
    d3 = (x - x1) * (y3 - y1) - (x3 - x1) * (y - y1)
    neg = (d1 < 0) | (d2 < 0) | (d3 < 0)
    pos = (d1 > 0) | (d2 > 0) | (d3 > 0)
    return ~(neg & pos)


def _canvas(rng: np.random.Generator, size: int, clutter: float, max_blob: float
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 2x-resolution background: grid coordinates in [0, 1] and an image of one random
    colour with ``Poisson(clutter)`` random ellipses (semi-axes 0.03 to ``max_blob``)."""
    n = 2 * size  # render at 2x, then box-filter down (``_finish``)
    ys, xs = np.mgrid[0:n, 0:n].astype(np.float32)
    xs, ys = (xs + 0.5) / n, (ys + 0.5) / n
    img = np.empty((n, n, 3), np.float32)
    img[:] = _random_colour(rng)
    for _ in range(rng.poisson(clutter)):
        cx, cy = rng.uniform(-0.1, 1.1, 2)
        rx, ry = rng.uniform(0.03, max_blob), rng.uniform(0.03, max_blob)
        img[_ellipse(xs, ys, cx, cy, rx, ry, rng.uniform(0, np.pi))] = _random_colour(rng)
    return xs, ys, img


def _finish(rng: np.random.Generator, img: np.ndarray, size: int, noise: float) -> np.ndarray:
    """Box-filter the 2x image down, then lighting (global brightness times a linear
    gradient in a random direction) and pixel noise; uint8 [size, size, 3]."""
    img = img.reshape(size, 2, size, 2, 3).mean(axis=(1, 3))
    phi = rng.uniform(0, 2 * np.pi)
    g = np.linspace(-0.5, 0.5, size, dtype=np.float32)
    ramp = np.cos(phi) * g[None, :] + np.sin(phi) * g[:, None]
    light = rng.uniform(0.75, 1.2) * (1.0 + rng.uniform(0, 0.5) * ramp)
    img = img * light[..., None] * 255.0
    img += rng.normal(0.0, rng.uniform(0.3, 1.0) * noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _wing_ink(u: np.ndarray, v: np.ndarray, pattern: int) -> np.ndarray:
    """Pattern on wing coordinates in [-1, 1]; every pattern inks exactly half the wing."""
    pi = np.pi
    if pattern == 0:
        return v < 0  # upper half
    if pattern == 1:
        return np.sin(3 * pi * u) > 0  # three bars across
    if pattern == 2:
        return np.sin(2 * pi * u) * np.sin(pi * v) > 0  # 2x2 checks
    if pattern == 3:
        return np.sin(1.5 * pi * (u + v)) > 0  # diagonal bands
    return u > 0  # front half


def render(rng: np.random.Generator, label: int, size: int = 64, max_rotation: float = 25.0,
           clutter: int = 5, noise: float = 5.0) -> np.ndarray:
    """One image of class ``label`` as uint8 [size, size, 3].

    Args:
        rng: the image's own generator (all randomness comes from it).
        max_rotation: largest in-plane rotation of the bird, degrees.
        clutter: mean number of background shapes.
        noise: largest standard deviation of the pixel noise, in 0-255 units.
    """
    return _render(rng, label, size, max_rotation, clutter, noise, masks=False)[0]


def render_with_masks(rng: np.random.Generator, label: int, size: int = 64,
                      max_rotation: float = 25.0, clutter: int = 5,
                      noise: float = 5.0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``render``'s image and the visible area of the bird and of each part in it.

    Returns:
        (the same uint8 image as ``render`` from the same generator state,
        {region: float32 [size, size] fraction of each pixel covered}) for the REGIONS:
        the whole bird, and the discriminative parts as seen (a part hidden under a later
        drawn one, like the wing under the head, is not counted).
    """
    return _render(rng, label, size, max_rotation, clutter, noise, masks=True)


def _render(rng: np.random.Generator, label: int, size: int, max_rotation: float,
            clutter: int, noise: float, masks: bool) -> tuple[np.ndarray, dict | None]:
    """One image (and its visible regions when ``masks``).

    The helpers are called in this order because each one's draws from ``rng`` come after
    the previous one's: changing the order changes every image (and the run ids).
    """
    xs, ys, img = _background(rng, size, clutter)
    pattern, arrangement = class_factors(label)
    x, y = _pose(rng, xs, ys, max_rotation)
    shapes = _draw_bird(img, x, y, pattern, arrangement, _palette(rng))
    regions = _visible_regions(shapes, size) if masks else None
    return _finish(rng, img, size, noise), regions


def _background(rng: np.random.Generator, size: int, clutter: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Background clutter: blobs and a branch-like bar, colours from the shared distribution."""
    xs, ys, img = _canvas(rng, size, clutter, 0.25)
    if rng.random() < 0.6:
        img[_ellipse(xs, ys, rng.uniform(0.2, 0.8), rng.uniform(0.55, 0.9), 0.9, 0.025,
                     rng.uniform(-0.3, 0.3))] = _random_colour(rng)
    return xs, ys, img


def _pose(rng: np.random.Generator, xs: np.ndarray, ys: np.ndarray, max_rotation: float
          ) -> tuple[np.ndarray, np.ndarray]:
    """Bird pose: local coordinates (x forward, y down) of every pixel."""
    scale = rng.uniform(0.85, 1.1) * UNIT
    theta = np.deg2rad(rng.uniform(-max_rotation, max_rotation))
    cx, cy = 0.5 + rng.uniform(-0.08, 0.08), 0.5 + rng.uniform(-0.08, 0.08)
    c, s = np.cos(theta), np.sin(theta)
    x = ((xs - cx) * c + (ys - cy) * s) / scale
    y = (-(xs - cx) * s + (ys - cy) * c) / scale
    if rng.random() < 0.5:
        x = -x
    return x, y


def _palette(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """(body, ink, dark, marker colours) of one bird."""
    body = _random_colour(rng)
    # Ink contrasts with the body in brightness (light on dark or dark on light) so the
    # pattern is visible; its hue stays random, hence class-independent.
    hsv = colorsys.rgb_to_hsv(*_random_colour(rng))
    shift = rng.uniform(0.35, 0.5) * (1 if colorsys.rgb_to_hsv(*body)[2] < 0.6 else -1)
    ink = np.array(colorsys.hsv_to_rgb(hsv[0], hsv[1], np.clip(
        colorsys.rgb_to_hsv(*body)[2] + shift, 0.05, 1.0)))
    dark = np.array([0.05, 0.05, 0.05]) + 0.1 * rng.random(3)
    markers = [_marker_colour(rng, h) for h in MARKERS.values()]
    return body, ink, dark, markers


def _draw_bird(img: np.ndarray, x: np.ndarray, y: np.ndarray, pattern: int,
               arrangement: tuple[int, int, int], palette: tuple) -> dict[str, Any]:
    """Paint the bird onto ``img`` in place, back to front; returns each shape's mask."""
    body, ink, dark, markers = palette
    legs = np.zeros_like(x, dtype=bool)
    for dx in (-0.08, 0.08):  # legs
        leg = (np.abs(x - dx) < 0.025) & (y > 0.15) & (y < 0.42)
        img[leg] = dark
        legs |= leg
    tail = _triangle(x, y, [(-0.35, 0.0), (-0.8, -0.16), (-0.8, 0.16)])
    img[tail] = body  # tail
    trunk = _ellipse(x, y, 0.0, 0.0, 0.42, 0.22)
    img[trunk] = body
    wing = _ellipse(x, y, -0.06, -0.02, 0.34, 0.17, 0.1)
    cw, sw = np.cos(0.1), np.sin(0.1)
    u = ((x + 0.06) * cw + (y + 0.02) * sw) / 0.34
    v = (-(x + 0.06) * sw + (y + 0.02) * cw) / 0.17
    img[wing & _wing_ink(u, v, pattern)] = ink
    head = _ellipse(x, y, 0.42, -0.15, 0.15, 0.15)
    img[head] = body  # head
    parts = [  # three small parts of equal area (0.03 local units^2)
        _triangle(x, y, [(0.54, -0.24), (0.54, -0.06), (0.87, -0.15)]),  # beak
        _ellipse(x, y, 0.42, -0.29, 0.13, 0.0735),  # crown
        _ellipse(x, y, 0.30, 0.02, 0.11, 0.0868),  # throat
    ]
    for mask, m in zip(parts, arrangement):
        img[mask] = markers[m]
    eye = _ellipse(x, y, 0.47, -0.17, 0.03, 0.03)
    img[eye] = dark  # eye
    return {"legs": legs, "tail": tail, "trunk": trunk, "wing": wing, "head": head,
            "parts": parts, "eye": eye}


def _visible_regions(shapes: dict[str, Any], size: int) -> dict[str, np.ndarray]:
    """The visible area of each region at half resolution: what later shapes cover is taken away."""
    hidden = shapes["eye"].copy()
    seen: dict[str, np.ndarray] = {}
    for name, mask in reversed(list(zip(PARTS, shapes["parts"]))):
        seen[name] = mask & ~hidden
        hidden |= mask
    seen["wing"] = shapes["wing"] & ~hidden & ~shapes["head"]
    seen["bird"] = (shapes["legs"] | shapes["tail"] | shapes["trunk"] | shapes["wing"]
                    | shapes["head"] | hidden)
    return {k: seen[k].reshape(size, 2, size, 2).mean(axis=(1, 3)).astype(np.float32)
            for k in REGIONS}


def generate(num_classes: int, per_class: int, size: int, seed: int, stream: int,
             **render_kwargs: float) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` images of each class: (uint8 [N, size, size, 3], int64 labels [N]).

    Image ``i`` of ``stream`` depends only on (seed, stream, i), so train (stream 0) and
    test (stream 1) never share an image and a subset is reproducible on its own.
    """
    labels = np.repeat(np.arange(num_classes), per_class)
    images = np.empty((len(labels), size, size, 3), np.uint8)
    for i, label in enumerate(labels):
        rng = np.random.default_rng([seed, stream, i])
        images[i] = render(rng, int(label), size, **render_kwargs)
    return images, labels.astype(np.int64)


