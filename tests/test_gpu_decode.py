"""GPU decoding (dataset.decode: gpu) without a GPU: the same code runs on the CPU.

On the CPU, torchvision's batched ``decode_jpeg`` is libjpeg-turbo, so the GPU path's
batches must equal the CPU path's exactly; that checks the batching, the order, the crop
and flip travelling with the encoded bytes, and every fallback. nvJPEG's own pixels are
checked by scripts/gpu_check.sh on a CUDA machine.
"""

from __future__ import annotations

import pytest
import torch
from dataset_trees import corrupt, load_datasets, write_image
from fixtures.texture import jpeg_bytes, textured_image

from fusion_lab import store as S
from fusion_lab.config import DatasetConfig
from fusion_lab.data import build_data, on_device
from fusion_lab.data.gpu_decode import Encoded, PendingBatch, decode_many
from fusion_lab.errors import DatasetError

load_datasets()


@pytest.fixture
def mixed(tmp_path):
    """JPEGs of several sizes, a gray JPEG, PNGs, a truncated and a garbage JPEG."""
    for c in range(2):
        for j in range(9):
            path = tmp_path / "train" / f"c{c}" / f"img{j}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(jpeg_bytes(textured_image(30 + 3 * j, 40 + c, 10 * c + j), 80))
        write_image(tmp_path / "train" / f"c{c}" / "img9.png", c)
        write_image(tmp_path / "test" / f"c{c}" / "t.jpg", c)
    gray = tmp_path / "train/c0/gray.jpg"
    gray.write_bytes(jpeg_bytes(textured_image(30, 40, 99).mean(2).astype("uint8"), 80))
    corrupt(tmp_path / "train/c1/img3.jpg", how="truncate")  # judged by PIL in the worker
    corrupt(tmp_path / "train/c0/img5.jpg")  # not a JPEG: the same
    # Looks whole (JPEG start and end markers) but is not: the batched device decode fails,
    # the file is retried alone, then decoded on the CPU, where PIL refuses it.
    (tmp_path / "train/c1/img6.jpg").write_bytes(b"\xff\xd8\xff" + b"nonsense" * 40 + b"\xff\xd9")
    return tmp_path


def batches(root, decode, workers=0, epoch=1):
    cfg = DatasetConfig(name="imagefolder", root=str(root), decode=decode,
                        options={"max_unreadable": 0.2})
    data = build_data(cfg, image_size=16, resize=20, batch_size=5, workers=workers, seed=3)
    data.set_epoch(epoch)
    return list(on_device(data.train, "cpu")), data


@pytest.mark.parametrize("workers", [0, 2])
def test_gpu_decoding_gives_the_cpu_paths_batches_and_skips(mixed, workers):
    cpu, cpu_data = batches(mixed, "cpu")
    gpu, gpu_data = batches(mixed, "gpu", workers)
    assert [len(y) for _, y in gpu] == [len(y) for _, y in cpu]
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        assert xg.dtype == torch.float32 and torch.equal(xc, xg) and torch.equal(yc, yg)
    assert sorted(gpu_data.skipped_files()) == sorted(cpu_data.skipped_files())
    assert gpu_data.skipped() == 3


def test_pending_batches_carry_encoded_jpegs_and_decoded_others(mixed):
    cfg = DatasetConfig(name="imagefolder", root=str(mixed), decode="gpu",
                        options={"max_unreadable": 0.2})
    data = build_data(cfg, image_size=16, resize=20, batch_size=32, workers=0, seed=0)
    (pending, labels), = list(data.test)
    assert isinstance(pending, PendingBatch) and len(pending) == len(labels) == 2
    assert all(isinstance(x, Encoded) for x in pending.items)  # test JPEGs: not decoded
    (train, _), = [b for b in build_data(cfg, image_size=16, resize=20, batch_size=32,
                                         workers=0, seed=0).train]
    kinds = {type(x).__name__ for x in train.items}
    assert kinds == {"Encoded", "Tensor"}  # the PNGs were decoded in the worker


def test_one_bad_file_does_not_cost_the_batch(mixed):
    good = [torch.frombuffer(bytearray(jpeg_bytes(textured_image(20, 20, s))), dtype=torch.uint8)
            for s in range(3)]
    bad = torch.frombuffer(bytearray(jpeg_bytes(textured_image(20, 20, 9))[:300]),
                           dtype=torch.uint8)
    out = decode_many([good[0], bad, good[1], good[2]], torch.device("cpu"))
    assert out[1] is None and all(o is not None and o.shape == (3, 20, 20) for o in out[::2])
    assert decode_many([], torch.device("cpu")) == []


def test_unknown_decode_value_is_one_error(mixed):
    with pytest.raises(DatasetError, match="dataset.decode"):
        batches(mixed, "nvjpeg")


def test_too_many_unreadable_files_still_stop_a_gpu_decoded_run(mixed):
    cfg = DatasetConfig(name="imagefolder", root=str(mixed), decode="gpu")  # default 1%
    data = build_data(cfg, image_size=16, resize=20, batch_size=5, workers=0, seed=0)
    with pytest.raises(DatasetError, match="unreadable"):
        list(on_device(data.train, "cpu"))


def _run(args, capsys):
    from fusion_lab.cli import main

    with pytest.raises(SystemExit) as info:
        main(args)
    return info.value.code, capsys.readouterr().err


def test_gpu_decoding_on_a_cpu_run_is_one_error_before_training(tmp_path, capsys):
    code, err = _run(["run", "studies/quickstart.yaml", "--results", str(tmp_path),
                      "--device", "cpu", "--set", "dataset.decode=gpu"], capsys)
    assert code == 2 and "needs a CUDA device" in err and err.count("\n") == 1
    assert not list(tmp_path.rglob("summary.json"))


def test_a_study_with_an_unknown_decoder_is_refused_by_validation(tmp_path, capsys):
    code, err = _run(["run", "studies/quickstart.yaml", "--results", str(tmp_path),
                      "--dry-run", "--set", "dataset.decode=nvjpeg"], capsys)
    assert code == 2 and "decode must be one of cpu, gpu" in err


def test_training_through_the_gpu_decode_path_equals_the_cpu_path(mixed, tmp_path):
    """train_run consumes pending batches: on the CPU both paths train the same model."""
    from fusion_lab import config as C
    from fusion_lab.training.train import train_run

    results = {}
    for decode in ("cpu", "gpu"):
        cfg = C.resolve(C.from_dict({
            "dataset": {"name": "imagefolder", "root": str(mixed), "decode": decode,
                        "options": {"max_unreadable": 0.2}},
            "model": {"backbone": "small_cnn", "fusion": "none", "attention": "none",
                      "head": "linear"},
            "train": {"epochs": 2, "batch_size": 4, "image_size": 16, "resize": 20,
                      "workers": 0, "optimizer": "adamw", "lr_backbone": 0.01, "lr_new": 0.01},
        }))
        run_dir = tmp_path / decode
        run_dir.mkdir()
        results[decode] = train_run(run_dir, cfg, "id", device="cpu")
    cpu, gpu = results["cpu"], results["gpu"]
    assert gpu["skipped_images"] == cpu["skipped_images"] == 3
    assert gpu["final"] == cpu["final"]
    losses = [[r["train_loss"] for r in S.read_jsonl(tmp_path / d / "metrics.jsonl")]
              for d in ("cpu", "gpu")]
    assert losses[0] == losses[1] and len(losses[0]) == 2
