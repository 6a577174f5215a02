"""Image files -> uint8 tensors [3, H, W] (RGB): libjpeg-turbo first, PIL as the judge.

The fast path reads a file's bytes and decodes a JPEG with ``torchvision.io.decode_jpeg``
(libjpeg-turbo) into RGB; a grayscale JPEG's channel is repeated, as PIL's
``convert("RGB")`` does. Everything else goes through the dataset's own ``load`` (PIL),
which returns RGB:

- a CMYK JPEG (four channels: PIL's conversion is the reference for it);
- a file that is not a JPEG (PNG, ...), or a JPEG the fast path cannot decode (truncated,
  corrupt: torchvision raises "Image is incomplete or truncated" where PIL raises
  "image file is truncated"), is handed to PIL, whose verdict is final. So an unreadable
  file is detected exactly as before this path existed: if PIL could read it, it is read;
  if not, PIL's error is raised and the loader skips and counts the file;
- a dataset that overrides ``load`` (in-memory data, plugins returning PIL images) is
  always loaded through it.

Both decoders are libjpeg-turbo with the same settings here: on the JPEGs we tested the
fast path's pixels equal PIL's exactly (tests/test_decode.py checks it).
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Any

import numpy as np
import torch
from PIL import Image

# torchvision 0.29 announces that its decoders will move to TorchCodec; the call works
# and nothing a user can do about it, so the warning is not repeated for every image.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision")

JPEG_MAGIC = b"\xff\xd8\xff"


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """A PIL image (any mode) -> uint8 tensor [3, H, W], RGB."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    array = np.asarray(image)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def uint8_to_pil(image: torch.Tensor) -> Image.Image:
    """uint8 tensor [3, H, W] -> PIL RGB image (for dataset hooks written for PIL)."""
    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())


def whole_jpeg(data: bytes) -> bool:
    """A JPEG that ends with its end-of-image marker (zero padding after it allowed).

    Anything else (truncated, or followed by other data) is left to PIL: torchvision 0.29
    refuses truncated files, but other libjpeg-turbo builds and nvJPEG may fill the missing
    rows with grey without an error, so PIL judges these whatever the version.
    """
    return data.startswith(JPEG_MAGIC) and data.rstrip(b"\0").endswith(b"\xff\xd9")


def decode_jpeg_bytes(data: bytes) -> torch.Tensor | None:
    """A JPEG's pixels as uint8 [3, H, W] RGB, or None when the fast path cannot say.

    None means: not a JPEG, or libjpeg-turbo (through torchvision) refused it, or its
    header says it is larger than PIL would open (checked before decoding); the caller then
    asks PIL, whose answer is final.
    """
    if not whole_jpeg(data) or over_pixel_limit(data):
        return None
    # here, not at the top: torchvision's decoders (a slow import) only once a JPEG is decoded
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        image = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                            mode=ImageReadMode.UNCHANGED)
    except RuntimeError:
        return None
    if image.shape[0] == 1:  # grayscale: PIL's convert("RGB") repeats the channel
        image = image.expand(3, -1, -1).contiguous()
    elif image.shape[0] != 3:
        # CMYK/YCCK: Adobe's inverted CMYK and PIL's conversion have variants; let PIL do it.
        return None
    return image


def over_pixel_limit(data: bytes) -> bool:
    """Whether PIL would refuse the image as a decompression bomb, judged from its header.

    ``Image.open`` reads only the header, so a 20000x20000 JPEG is refused without
    decoding it (the decoder would allocate 400 MB, and 1.2 GB more as RGB). Between
    ``MAX_IMAGE_PIXELS`` and twice that PIL only warns and decodes, and so does the fast path.
    """
    if Image.MAX_IMAGE_PIXELS is None:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)):
                return False
        except Image.DecompressionBombError:
            return True
        except Exception:
            return False  # the decoder, then PIL, judge a damaged header


def is_path(item: Any) -> bool:
    return isinstance(item, (str, os.PathLike))
