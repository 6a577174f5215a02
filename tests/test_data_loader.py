"""build_data: batches, determinism, the val split, unreadable images and `data check`."""

from __future__ import annotations

import pytest
import torch
from dataset_trees import corrupt, load_datasets, make_imagefolder

from fusion_lab.config import DatasetConfig
from fusion_lab.data import build_data, on_device
from fusion_lab.data.sampling import stratified_split
from fusion_lab.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from fusion_lab.errors import DatasetError

load_datasets()

TINY = {"num_classes": 3, "train_per_class": 6, "test_per_class": 2, "image_size": 24}


def tiny(val_fraction=0.0, **kw):
    cfg = DatasetConfig(name="synthetic_fgvc", options=TINY, val_fraction=val_fraction)
    args = {"image_size": 16, "resize": 20, "batch_size": 4, "workers": 0, "seed": 0} | kw
    return build_data(cfg, **args)


def epoch_batches(bundle, epoch):
    bundle.set_epoch(epoch)
    return list(bundle.train)


def same(a, b):
    return len(a) == len(b) and all(
        torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b)
    )


def test_batches_have_the_promised_types_and_sizes():
    b = tiny(val_fraction=1 / 3)
    assert (b.num_classes, len(b.class_names)) == (3, 3)
    assert (b.train_size, b.val_size, b.test_size) == (12, 6, 6)
    b.set_epoch(0)
    x, y = next(iter(b.train))
    assert x.dtype == torch.uint8 and x.shape == (4, 3, 16, 16)  # uint8 across processes
    assert y.dtype == torch.int64 and y.shape == (4,)
    b.set_epoch(0)
    xf, yf = next(iter(on_device(b.train, "cpu")))  # what the model gets: normalised floats
    assert xf.dtype == torch.float32 and xf.shape == (4, 3, 16, 16) and torch.equal(yf, y)
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    back = (xf * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)) * 255
    assert torch.allclose(back, x.float(), atol=1e-3)
    b.set_epoch(0)
    xc, _ = next(iter(on_device(b.train, "cpu", channels_last=True)))  # as on CUDA
    assert xc.is_contiguous(memory_format=torch.channels_last) and torch.equal(xc, xf)
    assert sum(len(y) for _, y in b.train) == 12  # drop_last=False
    assert sum(len(y) for _, y in b.test) == 6
    assert b.skipped() == 0 and b.skipped_files() == []
    assert tiny().val is None


def test_train_batches_depend_only_on_seed_and_epoch():
    b = tiny()
    first = epoch_batches(b, 3)
    epoch_batches(b, 5)  # something else in between
    assert same(first, epoch_batches(b, 3))
    assert same(first, epoch_batches(tiny(), 3))  # a fresh process state (resume)
    assert not same(first, epoch_batches(b, 4))
    assert not same(first, epoch_batches(tiny(seed=1), 3))
    torch.manual_seed(123)  # the global RNG plays no part
    assert same(first, epoch_batches(tiny(), 3))


def test_workers_give_the_same_batches_as_the_main_process():
    serial = epoch_batches(tiny(), 2)
    parallel = tiny(workers=2)
    assert same(serial, epoch_batches(parallel, 2))
    assert same(epoch_batches(tiny(), 1), epoch_batches(parallel, 1))  # persistent workers


def test_augmentation_differs_between_epochs_but_test_does_not():
    b = tiny()
    # Same image, two epochs: find label-sorted sums of images to compare contents.
    e0 = torch.cat([x for x, _ in epoch_batches(b, 0)]).sum(dim=(1, 2, 3)).sort().values
    e1 = torch.cat([x for x, _ in epoch_batches(b, 1)]).sum(dim=(1, 2, 3)).sort().values
    assert not torch.allclose(e0, e1)
    assert same(list(b.test), list(b.test))


def test_val_split_disjoint_stratified_deterministic():
    labels = [c for c in range(4) for _ in range(10)]
    tr, va = stratified_split(labels, 0.2, seed=7)
    assert not set(tr) & set(va) and sorted(tr + va) == list(range(40))
    assert [sum(labels[i] == c for i in va) for c in range(4)] == [2, 2, 2, 2]
    assert stratified_split(labels, 0.2, seed=7) == (tr, va)
    assert stratified_split(labels, 0.2, seed=8) != (tr, va)
    # A class with two images keeps one for training.
    tr2, va2 = stratified_split([0, 0, 1, 1, 1, 1, 1, 1, 1, 1], 0.5, seed=0)
    assert sum(1 for i in tr2 if i < 2) == 1


def test_val_comes_from_train_never_from_test():
    b = tiny(val_fraction=0.5)
    val_images = torch.cat([x for x, _ in b.val])
    test_images = torch.cat([x for x, _ in b.test])
    assert not any(torch.equal(v, t) for v in val_images for t in test_images)


@pytest.fixture
def folder(tmp_path):
    return make_imagefolder(tmp_path, {"a": (50, 2), "b": (50, 2)})


def folder_data(root, workers=0, **options):
    cfg = DatasetConfig(name="imagefolder", root=str(root), options=options)
    return build_data(cfg, image_size=16, resize=20, batch_size=8, workers=workers, seed=0)


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_image_is_skipped_and_counted(folder, workers):
    corrupt(folder / "train/a/img3.png")
    b = folder_data(folder, workers, max_unreadable=0.05)
    seen = sum(len(y) for _, y in b.train)
    assert seen == 99
    assert b.skipped() == 1 and b.skipped_files()[0].endswith("img3.png")
    list(b.train)  # a second epoch does not count the same file twice
    assert b.skipped() == 1


def test_truncated_image_is_skipped(folder):
    from dataset_trees import write_image

    write_image(folder / "test/b/big.jpg", 0, size=(200, 150))
    corrupt(folder / "test/b/big.jpg", how="truncate")
    b = folder_data(folder, max_unreadable=0.5)
    assert sum(len(y) for _, y in b.test) == 4
    assert b.skipped_files() == [str(folder / "test/b/big.jpg")]


def test_too_many_unreadable_images_is_an_error(folder):
    for j in range(2):  # 2 of 100 train images > the default 1%
        corrupt(folder / f"train/b/img{j}.png")
    b = folder_data(folder)
    with pytest.raises(DatasetError, match="unreadable"):
        list(b.train)


def test_data_check_command(folder, capsys):
    from fusion_lab.cli import main

    corrupt(folder / "train/a/img3.png")
    main(["data", "check", "imagefolder", str(folder), "-o", "max_unreadable=0.05"])
    out = capsys.readouterr().out
    assert "classes:  2" in out and "train:    100" in out and "test:     4" in out
    assert "img3.png" in out
    corrupt(folder / "test/b/img0.png")  # 1 of 4 test images: over the default 1%
    with pytest.raises(SystemExit) as info:
        main(["data", "check", "imagefolder", str(folder)])
    assert info.value.code == 2


def test_data_check_missing_root_is_one_line(tmp_path, capsys):
    from fusion_lab.cli import main

    with pytest.raises(SystemExit) as info:
        main(["data", "check", "cub200", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "cub200" in err


def test_prefetching_hands_out_every_batch_in_order_one_ahead():
    """The CUDA prefetch loop, with the stream calls replaced by a log (no GPU here)."""
    from contextlib import contextmanager

    from fusion_lab.data.device import DeviceLoader

    events = []

    class Logged(DeviceLoader):
        def prepare(self, images, labels):
            events.append(("prepare", len(events)))
            return super().prepare(images, labels)

        @contextmanager
        def _on(self, stream):
            events.append("side stream")
            yield

        def _hand_over(self, batch, stream):
            events.append("hand over")

    b = tiny()
    b.set_epoch(2)
    plain = list(on_device(b.train, "cpu"))
    b.set_epoch(2)
    got = []
    for images, labels in Logged(b.train, "cpu")._prefetching(stream=None):
        got.append((images, labels))
        prepared = sum(1 for e in events if isinstance(e, tuple))
        assert prepared == min(len(got) + 1, len(plain))  # the next batch is already prepared
    n = len(plain)
    assert same(got, plain) and n == 5  # 18 train images, batches of 4
    assert events.count("hand over") == n and events.count("side stream") == n


@pytest.mark.parametrize("decode", ["cpu", "gpu"])
def test_every_loader_decodes_where_the_config_says_with_or_without_ddp(decode):
    # Building a loader with decode="gpu" needs no CUDA (only decoding a batch does).
    cfg = DatasetConfig(name="synthetic_fgvc", options=TINY, val_fraction=1 / 3, decode=decode)
    for rank, world_size in [(0, 1), (0, 2), (1, 2)]:
        b = build_data(cfg, image_size=16, resize=20, batch_size=4, workers=0, seed=0,
                       rank=rank, world_size=world_size)
        for split, loader in [("train", b.train), ("val", b.val), ("test", b.test)]:
            assert loader.dataset.decode == decode, (split, rank, world_size)
