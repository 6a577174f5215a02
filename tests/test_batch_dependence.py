"""Models whose predictions depend on the test batch: found, recorded, marked, warned about.

Every preset but the released-code one must give an image the same prediction whatever
else is in its batch (eval mode); ``cn_cnn_released`` must not, and says so: in the
summary, in ``fusionlab table`` (a footnote, read without torch) and when it is evaluated
one image at a time.
"""

from __future__ import annotations

import json
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from fusion_lab.analysis.table import tables
from fusion_lab.cli import main
from fusion_lab.config import ModelConfig
from fusion_lab.errors import FusionLabWarning
from fusion_lab.models.assemble import build_model
from fusion_lab.registries import PRESETS, load_builtin
from fusion_lab.training.train import evaluate, precision

load_builtin()


@pytest.mark.parametrize("preset", PRESETS.list())
def test_prediction_depends_on_the_batch_only_where_the_model_says_so(preset):
    model = build_model(ModelConfig(preset=preset, backbone="small_cnn", width=16), 5).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        whole = model(x)["combined"]
        alone = torch.cat([model(x[i:i + 1])["combined"] for i in range(4)])
        flipped = model(x.flip(0))["combined"].flip(0)
    if preset == "cn_cnn_released":
        assert model.batch_dependent
        assert (whole - alone).abs().max() > 1e-4 and (whole - flipped).abs().max() > 1e-4
    else:
        assert not model.batch_dependent
        torch.testing.assert_close(whole, alone, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(whole, flipped, atol=1e-5, rtol=1e-5)


def _loader(batch_size: int) -> DataLoader:
    # loaders yield uint8 images (normalised on the device by evaluate)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    data = TensorDataset(images, torch.tensor([0, 1, 2, 3]))
    return DataLoader(data, batch_size=batch_size)


@pytest.mark.parametrize("preset,batch,warned", [("cn_cnn_released", 1, True),
                                                 ("cn_cnn_released", 2, False),
                                                 ("cn_cnn", 1, False)])
def test_evaluating_a_batch_model_one_image_at_a_time_warns(preset, batch, warned):
    model = build_model(ModelConfig(preset=preset, backbone="small_cnn", width=16), 5)
    prec = precision("off", torch.device("cpu"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate(model, _loader(batch), torch.device("cpu"), prec, False)
    ours = [w for w in caught if issubclass(w.category, FusionLabWarning)]
    assert bool(ours) == warned
    if warned:
        assert "zero state" in str(ours[0].message)


@pytest.mark.parametrize("preset,images,warned", [("cn_cnn_released", 5, True),
                                                  ("cn_cnn_released", 4, False),
                                                  ("cn_cnn", 5, False)])
def test_a_last_test_batch_of_one_image_warns_for_a_batch_model(preset, images, warned):
    model = build_model(ModelConfig(preset=preset, backbone="small_cnn", width=16), 5)
    data = TensorDataset(torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8),
                         torch.arange(images) % 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate(model, DataLoader(data, batch_size=2), torch.device("cpu"),
                 precision("off", torch.device("cpu")), False)
    ours = [w for w in caught if issubclass(w.category, FusionLabWarning)]
    assert bool(ours) == warned
    if warned:
        assert "alone in its batch" in str(ours[0].message)


TINY = Path(__file__).parent / "plugins" / "tiny_backbone.py"
STUDY = f"""
name: batchdep
plugins: [{TINY}]
base:
  dataset:
    name: synthetic_fgvc
    options: {{num_classes: 3, train_per_class: 4, test_per_class: 2, image_size: 32}}
  model: {{backbone: tiny_cnn, width: 8, hidden: 8}}
  train: {{epochs: 1, batch_size: BATCH, image_size: 32, resize: 36, workers: 0}}
variants:
  - {{label: paper, model: {{preset: cn_cnn}}}}
  - {{label: code, model: {{preset: cn_cnn_released}}}}
seeds: [0]
baseline: paper
"""


def _train(tmp_path: Path, batch: int) -> Path:
    study = tmp_path / "batchdep.yaml"
    study.write_text(textwrap.dedent(STUDY).replace("BATCH", str(batch)))
    results = tmp_path / "results"
    main(["run", str(study), "--results", str(results), "--device", "cpu",
          "--progress", "off", "--no-table"])
    return results


def test_summary_and_table_say_which_rows_depend_on_the_test_batch(tmp_path):
    results = _train(tmp_path, 3)
    by_label = {s["label"]: s for s in (json.loads(p.read_text())
                                        for p in results.glob("batchdep/*/summary.json"))}
    assert by_label["code"]["batch_dependent"] is True
    assert by_label["code"]["test_batch_size"] == 3
    assert by_label["paper"]["batch_dependent"] is False

    text = tables(["batchdep"], results).text
    lines = {line.split()[0]: line for line in text.splitlines()
             if line.startswith(("paper", "code"))}
    assert "§" in lines["code"] and "§" not in lines["paper"]
    assert "§ predictions depend on the test batch (tested in batches of 3, unshuffled)" in text
    records = json.loads(tables(["batchdep"], results, fmt="json").text)
    assert {r["label"]: r["batch_dependent"] for r in records} == {"paper": False,
                                                                    "code": True}
    assert {r["row"] for r in records} == {"paper", "code"}
    assert r"\S{}" in tables(["batchdep"], results, fmt="latex").text

    from fusion_lab.maps.viz import figure3

    dirs = {s["label"]: p.parent for s, p in ((json.loads(p.read_text()), p)
                                              for p in results.glob("batchdep/*/summary.json"))}
    _, notes = figure3(dirs["code"], tmp_path / "code.png", n=2, cell_px=32)
    assert any("depend on the test batch" in n for n in notes)
    _, notes = figure3(dirs["paper"], tmp_path / "paper.png", n=2, cell_px=32)
    assert not any("depend on the test batch" in n for n in notes)


def test_a_batch_of_one_is_refused_before_training(tmp_path, capsys):
    # Training and testing share train.batch_size; a batch of one image trains nothing
    # (BatchNorm), so it is a validation error; evaluating a batch-dependent model in
    # batches of 1 elsewhere warns (test above).
    with pytest.raises(SystemExit) as e:
        _train(tmp_path, 1)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "train.batch_size must be >= 2, got 1" in err
    assert not (tmp_path / "results" / "batchdep").exists()
