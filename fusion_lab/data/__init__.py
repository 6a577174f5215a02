"""Datasets -> DataLoaders: the one entry point the training loop calls (``build_data``).
May import: config, registries, errors (and torch).

A dataset is a class registered in ``fusion_lab.registries.DATASETS`` (contract in
``fusion_lab.data.source``); the catalogue is in ``registry/datasets/``. This module opens
it, carves the validation split from train (stratified by class, seeded by ``val_seed``),
and wraps each split in a loader that keeps a GPU fed and skips unreadable images.
Loaders yield uint8 batches; ``on_device(loader, device)`` normalises them on the device.

Determinism: the train order and each sample's crop and flip come from ``(seed, epoch)``
only, through seeds the sampler hands to each sample (``fusion_lab.data.sampling``); no
global RNG is used or consumed, so ``workers=0`` and ``workers>0`` give identical batches.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from torch import Generator
from torch.utils.data import DataLoader, Sampler

from fusion_lab.data.device import DeviceLoader, on_device
from fusion_lab.data.loading import (
    SkipLog,
    SkippingLoader,
    SplitDataset,
    ignore_stop_signals,
    quiet_fd_sharer,
)
from fusion_lab.data.sampling import EpochSampler, ShardedBatches, stratified_split
from fusion_lab.data.source import ImageSource
from fusion_lab.data.transforms import FGVCTransform
from fusion_lab.errors import DatasetError
from fusion_lab.registries import DATASETS, load_builtin

if TYPE_CHECKING:
    from fusion_lab.config import DatasetConfig

__all__ = ["DataBundle", "DeviceLoader", "ImageSource", "build_data", "on_device", "open_source"]

DEFAULT_MAX_UNREADABLE = 0.01  # fraction of a split; option `max_unreadable` of any dataset


@dataclass
class DataBundle:
    train: DataLoader  # shuffled, drop_last=False
    val: DataLoader | None  # None when val_fraction == 0
    test: DataLoader
    num_classes: int
    class_names: list[str]
    train_size: int
    val_size: int
    test_size: int
    _sampler: EpochSampler = field(repr=False, default=None)
    _log: SkipLog = field(repr=False, default=None)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass over ``train`` the one of ``epoch`` (order and augmentation).

        Without a call, each pass over ``train`` moves on to the next epoch by itself.
        """
        self._sampler.set_epoch(epoch)

    def skipped(self) -> int:
        """Unreadable images skipped so far, all splits together."""
        return self._log.count()

    def skipped_files(self) -> list[str]:
        return self._log.files()


def open_source(name: str, root: str | None, options: dict[str, Any]) -> tuple[ImageSource, float]:
    """Instantiate the registered dataset ``name``; returns it and its ``max_unreadable``."""
    if name not in DATASETS:
        load_builtin()
    cls = DATASETS.get(name)
    options = dict(options or {})
    max_unreadable = float(options.pop("max_unreadable", DEFAULT_MAX_UNREADABLE))
    try:
        inspect.signature(cls).bind(root, **options)
    except TypeError:
        params = [p for p in inspect.signature(cls).parameters if p != "root"]
        valid = ", ".join([*params, "max_unreadable"])
        raise DatasetError(
            f"dataset {name!r} does not take options {sorted(options)}; valid options: {valid}"
        ) from None
    source = cls(root, **options)
    for split in ("train", "test"):
        if not getattr(source, split):
            raise DatasetError(f"dataset {name!r} at {root}: the {split} split is empty")
    return source, max_unreadable


def build_data(cfg: DatasetConfig, *, image_size: int, resize: int, batch_size: int,
               workers: int, seed: int, device: str = "cpu", rank: int = 0,
               world_size: int = 1) -> DataBundle:
    """Loaders for the train, val and test splits of the dataset ``cfg`` names.

    Args:
        cfg: the study's dataset section (name, root, options, val_fraction, val_seed,
            decode: trusted as resolved and validated by planning).
        image_size: crop fed to the model; resize: square side the image is resized to first.
        batch_size: per loader; workers: DataLoader processes (0: load in this process).
        seed: the run's seed (train order and augmentation).
        device: pinned memory is used when it starts with "cuda".
        rank, world_size: with world_size > 1 (DDP), the train loader yields this
            process's share of each global batch of ``batch_size`` (``ShardedBatches``).
    """
    source, max_unreadable = open_source(cfg.name, cfg.root, cfg.options)
    check_square_size(source, cfg, resize)
    train_samples, val_samples = carve_val(source, cfg)
    train_tf = FGVCTransform(image_size, resize, train=True)
    test_tf = FGVCTransform(image_size, resize, train=False)
    log = SkipLog(cfg.name, max_unreadable)
    make = partial(split_loader, source, decode=cfg.decode, log=log,
                   options=loader_options(batch_size, workers, seed, device))
    train_sampler = EpochSampler(len(train_samples), seed, shuffle=True)
    if world_size > 1:
        train = make("train", train_samples, train_tf,
                     batch_sampler=ShardedBatches(train_sampler, batch_size, rank, world_size))
    else:
        train = make("train", train_samples, train_tf, sampler=train_sampler)
    val = None
    if val_samples:
        val = make("val", val_samples, test_tf, sampler=EpochSampler(len(val_samples), seed, False))
    test = make("test", source.test, test_tf, sampler=EpochSampler(len(source.test), seed, False))
    return DataBundle(
        train=train,
        val=val,
        test=test,
        num_classes=source.num_classes,
        class_names=list(source.class_names),
        train_size=len(train_samples),
        val_size=len(val_samples),
        test_size=len(source.test),
        _sampler=train_sampler,
        _log=log,
    )


def check_square_size(source: ImageSource, cfg: DatasetConfig, resize: int) -> None:
    """A cache of pre-resized squares (``fusionlab data cache``) must match ``train.resize``."""
    cached = source.square_size
    if cached is not None and cached != resize:
        raise DatasetError(
            f"dataset {cfg.name!r} at {cfg.root} holds {cached}x{cached} images but the run resizes "
            f"to {resize} (train.resize); set train.resize={cached} or write a cache with "
            f"--size {resize}"
        )


def carve_val(source: ImageSource, cfg: DatasetConfig) -> tuple[list, list]:
    """(train, val) samples: val is ``cfg.val_fraction`` of train, stratified by class."""
    if cfg.val_fraction <= 0:
        return source.train, []
    labels = [y for _, y in source.train]
    tr, va = stratified_split(labels, cfg.val_fraction, cfg.val_seed)
    return [source.train[i] for i in tr], [source.train[i] for i in va]


def loader_options(batch_size: int, workers: int, seed: int, device: str) -> dict[str, Any]:
    """DataLoader arguments shared by every split's loader (one generator for them all)."""
    options: dict[str, Any] = {
        "batch_size": batch_size,
        "num_workers": workers,
        "pin_memory": device.startswith("cuda"),
        "persistent_workers": workers > 0,
        "drop_last": False,
        # Our own generator: DataLoader would otherwise draw its base seed from the
        # global RNG at each pass, shifting the state the training loop relies on.
        "generator": Generator().manual_seed(seed),
    }
    if workers > 0:
        options["prefetch_factor"] = 4
        options["worker_init_fn"] = ignore_stop_signals
        quiet_fd_sharer()  # Ctrl-C in mid-transfer: no traceback from the fd sharer thread
    return options


def split_loader(source: ImageSource, split: str, samples: list, transform: FGVCTransform, *,
                 decode: str, log: SkipLog, options: dict[str, Any],
                 sampler: Sampler | None = None,
                 batch_sampler: Sampler | None = None) -> SkippingLoader:
    """The one way a split's loader is built: every split, with or without DDP.

    Args:
        source, samples, transform: what the split's ``SplitDataset`` reads and applies.
        decode: ``dataset.decode`` (where JPEG files are decoded), for every split.
        log: the SkipLog all splits share; options: from ``loader_options``.
        sampler: yields the split's indices, batched by ``options["batch_size"]``; or
        batch_sampler: yields whole batches (DDP's ``ShardedBatches``), which then replaces
            ``batch_size`` and ``drop_last``.
    """
    dataset = SplitDataset(source, samples, transform, decode)
    if batch_sampler is not None:
        rest = {k: v for k, v in options.items() if k not in ("batch_size", "drop_last")}
        return SkippingLoader(dataset, split=split, log=log, batch_sampler=batch_sampler, **rest)
    return SkippingLoader(dataset, split=split, log=log, sampler=sampler, **options)
