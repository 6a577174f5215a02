"""Photo-like test images: multi-octave noise that compresses like a textured photograph.

Smooth gradients make JPEG decoding and resizing look cheaper than on real photos, and
white noise makes them look dearer. ``textured_image`` sums band-limited noise from coarse
to pixel scale; at 500x375 and JPEG quality 75-90 it gives files of about 35-75 kB, the
size range of CUB-200-2011's images (1.1 GB for 11,788 images, about 95 kB on average).
Used by ``scripts/bench_loader.py`` and the tests.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def textured_image(height: int, width: int, seed: int) -> np.ndarray:
    """uint8 [height, width, 3]: noise at 4 scales (6 cells across, 25, 100, every pixel)."""
    rng = np.random.default_rng(seed)
    out = torch.zeros(3, height, width)
    for cells, amp in [(6, 70.0), (25, 45.0), (100, 35.0), (width, 30.0)]:
        small = torch.from_numpy(rng.normal(0, 1, (3, max(2, cells * height // width), cells)))
        out += F.interpolate(small.float()[None], size=(height, width), mode="bicubic")[0] * amp / 3
    return (out + 128).clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def jpeg_bytes(image: np.ndarray | Image.Image, quality: int = 85, **save_args) -> bytes:
    """Encode an RGB array (or a PIL image of any mode) as JPEG."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality, **save_args)
    return buf.getvalue()
