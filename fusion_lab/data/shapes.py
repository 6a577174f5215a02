"""Procedural generic objects: the renderer behind the ``synthetic_shapes`` source task.

``synthetic_shapes`` is to ``synthetic_fgvc`` what ImageNet is to CUB: a generic task to
pretrain a backbone on, sharing no class with the fine-grained target. An image shows one
object on a cluttered background; its class is the object's outline (8 shapes) crossed
with the texture printed on it (4 textures), so 32 classes:

- shapes: disc, square, triangle, diamond, star, cross, ring, crescent;
- textures: plain, stripes, dots, checks (frequency and angle drawn per image).

Everything else is drawn per image and shared by all classes: object, ink, background and
clutter colours, pose (rotation, scale, position), one to three small "parts" (coloured
knobs on the object's rim), lighting gradient and pixel noise. No bird, wing or marker
arrangement appears, so no target class is seen in pretraining.

Same drawing style as ``fusion_lab.data.synthetic`` (numpy on a 2x grid, box-filtered).
"""

from __future__ import annotations

import colorsys

import numpy as np

from fusion_lab.data.synthetic import _canvas, _ellipse, _finish, _random_colour, _triangle

SHAPES = ["disc", "square", "triangle", "diamond", "star", "cross", "ring", "crescent"]
TEXTURES = ["plain", "stripes", "dots", "checks"]
MAX_SHAPE_CLASSES = len(SHAPES) * len(TEXTURES)


def shape_class_name(label: int) -> str:
    return f"{TEXTURES[label % len(TEXTURES)]} {SHAPES[label // len(TEXTURES)]}"


def _shape_mask(x: np.ndarray, y: np.ndarray, shape: int) -> np.ndarray:
    """The object's outline in local coordinates (about the unit disc)."""
    r = np.hypot(x, y)
    name = SHAPES[shape]
    if name == "disc":
        return r <= 0.9
    if name == "square":
        return np.maximum(np.abs(x), np.abs(y)) <= 0.75
    if name == "triangle":
        return _triangle(x, y, [(0.0, -0.95), (0.95, 0.7), (-0.95, 0.7)])
    if name == "diamond":
        return np.abs(x) / 0.75 + np.abs(y) <= 1.0
    if name == "star":
        return r <= 0.55 + 0.4 * np.cos(5 * np.arctan2(y, x))
    if name == "cross":
        return ((np.abs(x) < 0.3) & (np.abs(y) < 0.95)) | ((np.abs(y) < 0.3) & (np.abs(x) < 0.95))
    if name == "ring":
        return (r <= 0.95) & (r >= 0.55)
    return (r <= 0.95) & (np.hypot(x - 0.5, y) > 0.75)  # crescent


def _texture(x: np.ndarray, y: np.ndarray, texture: int, freq: float) -> np.ndarray:
    """Where the ink goes on the object (local coordinates, so it turns with the object)."""
    name = TEXTURES[texture]
    if name == "plain":
        return np.zeros_like(x, dtype=bool)
    if name == "stripes":
        return np.sin(freq * np.pi * x) > 0
    if name == "dots":
        u, v = (x * freq / 2) % 1.0 - 0.5, (y * freq / 2) % 1.0 - 0.5
        return u * u + v * v < 0.09
    return np.sin(freq * np.pi * x) * np.sin(freq * np.pi * y) > 0  # checks


def render_shape(rng: np.random.Generator, label: int, size: int = 64, clutter: int = 4,
                 noise: float = 5.0) -> np.ndarray:
    """One image of class ``label`` as uint8 [size, size, 3] (all randomness from ``rng``)."""
    xs, ys, img = _canvas(rng, size, clutter, 0.2)

    shape, texture = label // len(TEXTURES), label % len(TEXTURES)
    scale = rng.uniform(0.22, 0.34)
    cx, cy = rng.uniform(0.35, 0.65, 2)
    theta = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(theta), np.sin(theta)
    x = ((xs - cx) * c + (ys - cy) * s) / scale
    y = (-(xs - cx) * s + (ys - cy) * c) / scale

    body = _random_colour(rng)
    h, sat, _ = colorsys.rgb_to_hsv(*_random_colour(rng))
    value = colorsys.rgb_to_hsv(*body)[2]
    shift = rng.uniform(0.35, 0.5) * (1 if value < 0.6 else -1)
    ink = np.array(colorsys.hsv_to_rgb(h, sat, np.clip(value + shift, 0.05, 1.0)))
    mask = _shape_mask(x, y, shape)
    img[mask] = body
    img[mask & _texture(x, y, texture, rng.uniform(2.5, 4.0))] = ink
    for _ in range(rng.integers(1, 4)):  # parts: small knobs on the rim, any colour
        phi = rng.uniform(0, 2 * np.pi)
        knob = _ellipse(x, y, 0.85 * np.cos(phi), 0.85 * np.sin(phi), 0.16, 0.16)
        img[knob] = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.6, 1.0),
                                                 rng.uniform(0.6, 1.0)))

    return _finish(rng, img, size, noise)


def generate_shapes(num_classes: int, per_class: int, size: int, seed: int, stream: int,
                    **render_kwargs: float) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` images per class; image ``i`` depends only on (seed, stream, i)."""
    labels = np.repeat(np.arange(num_classes), per_class)
    images = np.empty((len(labels), size, size, 3), np.uint8)
    for i, label in enumerate(labels):
        rng = np.random.default_rng([seed, stream, 7, i])
        images[i] = render_shape(rng, int(label), size, **render_kwargs)
    return images, labels.astype(np.int64)
