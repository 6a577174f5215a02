"""Weights a run starts from: names vs paths, loading into registered backbones, run ids."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from fusion_lab import config
from fusion_lab.config import ModelConfig, RunConfig
from fusion_lab.config.weights import WEIGHTS_DIR, is_path, weights_path
from fusion_lab.errors import ConfigError, WeightsError
from fusion_lab.models.assemble import build_model, check_model_config
from fusion_lab.models.backbones import build_backbone
from fusion_lab.registries import BACKBONES, load_builtin
from fusion_lab.store import run_ids


@pytest.mark.parametrize("value,path", [
    ("synthetic", False), ("my_weights", False),
    ("./synthetic", True), ("w.pth", True), ("w.safetensors", True), ("/a/b", True),
    ("runs/x", True),
])
def test_a_name_is_told_from_a_path_by_one_rule(value, path):
    assert is_path(value) is path


def test_the_name_synthetic_is_the_shipped_file():
    assert weights_path("synthetic") == WEIGHTS_DIR / "small_cnn_synthetic.pt"


def test_an_unknown_name_is_one_clear_problem_before_building():
    problems = check_model_config(ModelConfig(preset="baseline", backbone="small_cnn",
                                              pretrained="synthtic"))
    assert len(problems) == 1
    assert "unknown pretrained weights name 'synthtic'" in problems[0]
    assert "'synthetic'" in problems[0] and "./synthtic" in problems[0]


def test_named_weights_for_another_backbone_are_refused():
    with pytest.raises(ConfigError, match="are for backbone 'small_cnn', not 'resnet18'"):
        build_model(ModelConfig(preset="baseline", backbone="resnet18",
                                pretrained="synthetic"), 3)


@pytest.mark.parametrize("name", sorted(set(BACKBONES.list()) | {"small_cnn"}))
def test_every_registered_backbone_loads_a_local_file(name, tmp_path):
    load_builtin()
    source = build_backbone(name)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)  # differ from any fresh initialisation
    path = tmp_path / "w.pth"
    torch.save(source.state_dict(), path)
    loaded = build_backbone(name, pretrained=str(path))
    fresh = build_backbone(name)
    for (key, want), got, other in zip(source.state_dict().items(),
                                       loaded.state_dict().values(),
                                       fresh.state_dict().values()):
        assert torch.equal(got, want), key
        if want.is_floating_point() and key.endswith("weight"):
            assert not torch.equal(other, want), key


def test_small_cnn_refuses_a_file_that_does_not_fit(tmp_path):
    import timm

    path = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), path)
    with pytest.raises(WeightsError, match="does not fit backbone 'small_cnn'") as err:
        build_model(ModelConfig(preset="baseline", backbone="small_cnn",
                                pretrained=str(path)), 3)
    assert len(str(err.value)) < 1000


def test_small_cnn_has_no_hub_weights():
    with pytest.raises(WeightsError, match="pretrained: synthetic"):
        build_backbone("small_cnn", pretrained=True)


def _id(pretrained) -> str:
    cfg = config.resolve(RunConfig(model=ModelConfig(backbone="small_cnn",
                                                     pretrained=pretrained)))
    return run_ids(config.result_dict(cfg))[0]


def test_a_weights_file_enters_the_run_id_by_its_content(tmp_path):
    a, b = tmp_path / "a.pth", tmp_path / "sub" / "b.pth"
    b.parent.mkdir()
    a.write_bytes(b"weights one")
    b.write_bytes(b"weights one")
    assert _id(str(a)) == _id(str(b))  # same content, other name and folder
    assert _id(str(a)) != _id(False)
    b.write_bytes(b"weights two")  # regenerated file: a new run
    assert _id(str(a)) != _id(str(b))


def test_a_name_and_the_path_of_its_file_are_one_run():
    assert _id("synthetic") == _id(str(weights_path("synthetic")))


def test_hashing_weights_at_planning_time_needs_no_torch(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"some weights")
    code = (
        "import sys\n"
        "from fusion_lab import config\n"
        "from fusion_lab.config import ModelConfig, RunConfig\n"
        f"cfg = config.resolve(RunConfig(model=ModelConfig(pretrained={str(path)!r})))\n"
        "assert config.result_dict(cfg)['model']['pretrained'].startswith('sha256:')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_torch_file_counts_by_its_tensors_not_its_name(tmp_path):
    # torch.save puts the file's name inside its zip: the same weights saved as a.pth and
    # b.pth are different bytes, and were two runs.
    from fusion_lab.config.weights import file_sha256

    weights = {"conv.weight": torch.randn(4, 3), "t": torch.randn(3, 4).t(),
               "steps": torch.tensor(7)}
    a, b = tmp_path / "a.pth", tmp_path / "sub" / "b.pth"
    b.parent.mkdir()
    torch.save(weights, a)
    torch.save({k: v.contiguous() for k, v in weights.items()}, b)  # same values, other layout
    assert file_sha256(a) != file_sha256(b)
    assert _id(str(a)) == _id(str(b))
    torch.save({**weights, "steps": torch.tensor(8)}, b)  # one value differs: another run
    assert _id(str(a)) != _id(str(b))
    torch.save({**weights, "steps": torch.tensor(7.0)}, b)  # another dtype: another run
    assert _id(str(a)) != _id(str(b))


def test_the_shipped_weights_keep_the_identity_their_card_records():
    from fusion_lab.config.weights import card, identity

    assert identity("synthetic") == "sha256:" + card("synthetic")["sha256"]
    assert identity(str(weights_path("synthetic"))) == identity("synthetic")


def test_hashing_a_torch_file_at_planning_time_needs_no_torch(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"w": torch.ones(2, 2)}, path)
    code = (
        "import sys\n"
        "from fusion_lab.config.tensor_digest import tensors_sha256\n"
        f"assert tensors_sha256({str(path)!r}) is not None\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
