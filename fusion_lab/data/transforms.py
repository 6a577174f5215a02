"""Train and test transforms of the recipes on uint8 tensors, with their own random generator.

Train: resize to ``resize`` x ``resize`` (the reference code's 600x600), random crop
``image_size`` (448), horizontal flip with probability 1/2.
Test (and val): resize to ``resize`` x ``resize``, centre crop ``image_size``.

Input and output are uint8 tensors [3, H, W]: batches cross the worker boundary as uint8
(4x fewer bytes than float32) and are converted and normalised on the device the model
runs on (``normalise``; the training loop calls it through ``fusion_lab.data.device``).
Resizing uses torchvision's antialiased bilinear kernel on uint8; PIL's (the pipeline
before, ``fixtures.legacy``) rounds differently, so pixels differ by a few levels
(measured bound in tests/test_decode.py).

The random choices never use torch's or Python's global RNG: each sample gets a
``torch.Generator`` seeded from (run seed, epoch, index) by the train sampler (see
``fusion_lab.data.sampling``), so the augmentation of a sample is the same in the main
process and in any worker, whichever worker draws it.
"""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def crop_box(image_size: int, resize: int, train: bool,
             generator: torch.Generator | None, flip: bool = True) -> tuple[int, int, bool]:
    """(top, left, flip) of the crop in the ``resize`` square: random in train, else centred.

    ``flip=False`` never mirrors but draws the same random numbers, so the crops stay the
    ones a flipping transform would take.
    """
    s, r = image_size, resize
    if not train:
        return (r - s) // 2, (r - s) // 2, False
    if generator is None:
        raise ValueError("the train transform needs a generator")
    top, left, flip_draw = torch.randint(0, 1 << 30, (3,), generator=generator).tolist()
    return top % (r - s + 1), left % (r - s + 1), flip and bool(flip_draw & 1)


def resize_square(image: torch.Tensor, side: int) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> [..., 3, side, side], antialiased bilinear (no-op if square)."""
    if image.shape[-2:] == (side, side):
        return image
    # here, not at the top: torchvision (a slow import) only once an image is resized
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2.functional import resize

    return resize(image, [side, side], interpolation=InterpolationMode.BILINEAR, antialias=True)


def crop_flip(image: torch.Tensor, top: int, left: int, size: int, flip: bool) -> torch.Tensor:
    """The ``size`` square at (top, left) of [..., H, W], mirrored when ``flip``."""
    image = image[..., top:top + size, left:left + size]
    return image.flip(-1) if flip else image


class FGVCTransform:
    """uint8 tensor [3, H, W] -> uint8 tensor [3, image_size, image_size] (contiguous).

    Args:
        image_size: side of the crop fed to the model.
        resize: side of the square the image is first resized to (>= image_size).
        train: random crop and flip (needs a generator) instead of a centre crop.
        flip: whether the train transform mirrors half of the images (resize == image_size
            gives no crop, e.g. the reference code's Stanford Cars recipe).
    """

    def __init__(self, image_size: int, resize: int, train: bool, flip: bool = True):
        if resize < image_size:
            raise ValueError(f"resize ({resize}) must be >= image_size ({image_size})")
        self.image_size = image_size
        self.resize = resize
        self.train = train
        self.flip = flip

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        image = resize_square(image, self.resize)
        top, left, flip = crop_box(self.image_size, self.resize, self.train, generator, self.flip)
        return crop_flip(image, top, left, self.image_size, flip).contiguous()

    def __repr__(self) -> str:
        kind = "train" if self.train else "test"
        return f"FGVCTransform({kind}, resize={self.resize}, image_size={self.image_size})"


def normalisation(device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean * 255 and 1 / (std * 255), float32 [1, 3, 1, 1] on ``device``."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32) * 255.0
    inv_std = 1.0 / (torch.tensor(IMAGENET_STD, dtype=torch.float32) * 255.0)
    return mean.view(1, 3, 1, 1).to(device), inv_std.view(1, 3, 1, 1).to(device)


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float32 ImageNet-normalised, on the images' device and layout.

    The same arithmetic in float32 as the former in-worker numpy normalisation, so a given
    uint8 batch gives the same floats bit for bit.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"normalise expects uint8 images, got {images.dtype}")
    mean, inv_std = normalisation(images.device)
    return (images.float() - mean) * inv_std
