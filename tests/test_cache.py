"""`fusionlab data cache`: a pre-resized copy a study can train from."""

from __future__ import annotations

import json

import pytest
import torch
from cli_run import run_cli
from dataset_trees import corrupt, load_datasets
from fixtures.texture import jpeg_bytes, textured_image

from fusion_lab.config import DatasetConfig
from fusion_lab.data import build_data, on_device
from fusion_lab.errors import DatasetError

load_datasets()


@pytest.fixture
def folder(tmp_path):
    for c in ("b_owl", "a_tit"):
        for j in range(6):
            for split in ("train", "test") if j < 2 else ("train",):
                path = tmp_path / "src" / split / c / f"{j}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(jpeg_bytes(textured_image(30 + 5 * j, 44, j + 7 * len(split))))
    corrupt(tmp_path / "src/train/a_tit/3.jpg", how="truncate")
    return tmp_path


def data(root, name, resize, **options):
    cfg = DatasetConfig(name=name, root=str(root), options={"max_unreadable": 0.2, **options})
    return build_data(cfg, image_size=16, resize=resize, batch_size=64, workers=0, seed=0)


def test_cache_keeps_classes_splits_order_and_unreadable_files(folder, capsys):
    out = folder / "cache"
    code, text, _ = run_cli(["data", "cache", "imagefolder", str(folder / "src"), str(out),
                             "--size", "24", "--quality", "95"], capsys)
    assert code == 0, text
    assert "unreadable: 1" in text and "3.jpg" in text and "kB per image" in text
    index = json.loads((out / "index.json").read_text())
    assert index["size"] == 24 and index["class_names"] == ["a_tit", "b_owl"]
    src, cached = data(folder / "src", "imagefolder", 24), data(out, "cache", 24)
    assert (cached.class_names, cached.train_size, cached.test_size) == (
        src.class_names, src.train_size, src.test_size)
    from PIL import Image

    files = sorted((out / "images").rglob("*.jpg"))
    assert len(files) == 12 + 4 - 1 and all(Image.open(f).size == (24, 24) for f in files)
    # Same crops of nearly the same pixels. JPEG q95 re-encoding (4:2:0 chroma) moved
    # these 24-pixel squares of pixel-scale noise by 3.9 levels on average (measured;
    # 1.4 for a 600x600 photo-like image); another image would be about 50 levels away.
    for a, b in ((src.test, cached.test), (src.train, cached.train)):
        (xa, ya), = list(on_device(a, "cpu"))
        (xb, yb), = list(on_device(b, "cpu"))
        assert torch.equal(ya, yb)
        assert (xa - xb).abs().mean() * 0.226 * 255 < 6  # mean error in levels
    assert cached.skipped() == 1 and "3.jpg" in cached.skipped_files()[0]


def test_a_run_that_resizes_differently_from_the_cache_is_refused(folder, capsys):
    out = folder / "cache"
    run_cli(["data", "cache", "imagefolder", str(folder / "src"), str(out), "--size", "24"],
            capsys)
    with pytest.raises(DatasetError, match="train.resize=24"):
        data(out, "cache", 20)


def test_a_folder_that_is_no_cache_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(["data", "check", "cache", str(tmp_path)], capsys)
    assert code == 2 and err.count("\n") == 1 and "fusionlab data cache" in err


def test_a_study_on_a_cache_of_another_size_is_refused_before_training(folder, capsys):
    out = folder / "cache"
    run_cli(["data", "cache", "imagefolder", str(folder / "src"), str(out), "--size", "24"],
            capsys)
    code, _, err = run_cli(["run", "studies/quickstart.yaml", "--results", str(folder / "r"),
                            "--dry-run", "--set", "dataset.name=cache",
                            "--set", f"dataset.root={out}", "--set", "dataset.options={}"],
                           capsys)
    assert code == 2 and "holds 24x24 images but train.resize is" in err


def _cached_from(tmp_path, source):
    out = tmp_path / f"cache_of_{source}"
    out.mkdir()
    (out / "index.json").write_text(json.dumps(
        {"format": 1, "dataset": source, "options": {}, "size": 64, "quality": 95,
         "class_names": ["a", "b"], "train": [], "test": []}))
    return str(out)


@pytest.mark.parametrize("source", ["cub200", "stanford_cars", "imagefolder"])
def test_a_cache_trains_with_its_source_datasets_recipe(tmp_path, source):
    # Before: `dataset: {name: cache}` took the generic recipe, so a cached CUB row was
    # another experiment than the CUB row it stands for (e.g. layer4 at the backbone's rate).
    from fusion_lab.config import RunConfig, resolve
    from fusion_lab.config.recipes import dataset_recipe

    cached = resolve(RunConfig(dataset=DatasetConfig(name="cache",
                                                     root=_cached_from(tmp_path, source))))
    direct = resolve(RunConfig(dataset=DatasetConfig(name=source, root="unused")))
    keys = ("epochs", "batch_size", "resize", "lr_backbone", "lr_new", "backbone_high_lr_stages")
    assert {k: getattr(cached.train, k) for k in keys} == {k: getattr(direct.train, k)
                                                           for k in keys}
    assert cached.train.batch_size == dataset_recipe(source)["batch_size"]
