"""timm backbones plug in by name; local weights files load exactly or fail clearly.

No downloads: every weights file here is a randomly initialised timm model saved to tmp_path.
"""

from __future__ import annotations

import pytest
import timm
import torch

from fusion_lab.config import ModelConfig
from fusion_lab.errors import ConfigError, FusionLabError, UnknownComponentError, WeightsError
from fusion_lab.models.assemble import build_model, model_loss
from fusion_lab.models.backbones import TimmBackbone

# Four families with different stems, stage layouts and blocks (BN, LayerNorm, SE).
FAMILIES = ["resnet18", "convnext_atto", "regnetx_002", "mobilenetv3_small_050"]


@pytest.mark.parametrize("preset", ["cn_cnn", "hl+lh"])
@pytest.mark.parametrize("backbone", FAMILIES)
def test_family_trains_one_step(backbone, preset):
    model = build_model(ModelConfig(preset=preset, backbone=backbone, width=32), 4)
    assert len(model.backbone.out_channels) == len(model.backbone.reductions) == 3
    assert model.backbone.reductions == sorted(model.backbone.reductions)  # low level first
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, 3])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    out = model(x, return_maps=True)
    assert [f.shape[1] for f in out["features"]] == model.backbone.out_channels
    loss = model_loss(out, y)
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()

    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    for part in ("backbone.", "fusion.", "attention.", "head."):
        assert any(n.startswith(part) for n in changed), f"{part} did not change"
    with torch.no_grad():
        assert torch.isfinite(model_loss(model(x), y))


# --- local weights files ----------------------------------------------------------------

@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    state = timm.create_model("resnet18").state_dict()  # random init: no download
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(state, path)
    return path, state


def test_local_weights_arrive(resnet18_file):
    path, state = resnet18_file
    backbone = TimmBackbone("resnet18", pretrained=str(path))
    got = dict(backbone.body.named_parameters())
    # A freshly built backbone differs, so equality means the file was loaded.
    assert not torch.equal(TimmBackbone("resnet18").body.conv1.weight, state["conv1.weight"])
    assert torch.equal(got["conv1.weight"], state["conv1.weight"])
    assert torch.equal(got["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    assert torch.equal(dict(backbone.body.named_buffers())["bn1.running_var"],
                       state["bn1.running_var"])


def test_local_weights_through_the_assembler(resnet18_file):
    path, state = resnet18_file
    model = build_model(ModelConfig(preset="cn_cnn", backbone="resnet18", width=16,
                                    pretrained=str(path)), 3)
    assert torch.equal(model.backbone.body.layer2[0].conv1.weight, state["layer2.0.conv1.weight"])


def test_weights_file_with_other_class_count_loads(tmp_path):
    """A fine-tuned checkpoint (e.g. 200 CUB classes) is a valid backbone initialisation."""
    state = timm.create_model("resnet18", num_classes=200).state_dict()
    torch.save(state, tmp_path / "cub.pth")
    backbone = TimmBackbone("resnet18", pretrained=str(tmp_path / "cub.pth"))
    assert torch.equal(backbone.body.conv1.weight, state["conv1.weight"])


def test_missing_weights_file(tmp_path):
    missing = str(tmp_path / "nowhere" / "resnet18.pth")
    with pytest.raises(WeightsError) as err:
        TimmBackbone("resnet18", pretrained=missing)
    assert missing in str(err.value) and isinstance(err.value, FusionLabError)
    with pytest.raises(ConfigError, match="nowhere"):  # found before building anything
        build_model(ModelConfig(backbone="resnet18", pretrained=missing), 3)


def test_weights_of_another_architecture(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(timm.create_model("resnet34").state_dict(), path)
    with pytest.raises(WeightsError) as err:
        TimmBackbone("resnet18", pretrained=str(path))
    msg = str(err.value)
    assert str(path) in msg and "resnet18" in msg
    assert len(msg) < 1000  # one readable message, not every key of ResNet34


def test_weights_with_garbage_keys(tmp_path):
    path = tmp_path / "garbage.pth"
    torch.save({"foo": torch.zeros(3), "bar.weight": torch.ones(2, 2)}, path)
    with pytest.raises(WeightsError, match="does not fit backbone 'resnet18'"):
        TimmBackbone("resnet18", pretrained=str(path))


def test_weights_with_wrong_shapes(tmp_path):
    state = timm.create_model("resnet18").state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)  # 7x7 in resnet18
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="conv1.weight"):
        TimmBackbone("resnet18", pretrained=str(tmp_path / "bad.pth"))


def test_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights")
    with pytest.raises(WeightsError, match="cannot read weights file"):
        TimmBackbone("resnet18", pretrained=str(path))


# --- names --------------------------------------------------------------------------------

def test_unknown_backbone_suggests_names():
    with pytest.raises(UnknownComponentError) as err:
        TimmBackbone("resnet1888")
    assert "resnet18" in str(err.value)
    with pytest.raises(ConfigError) as err:
        build_model(ModelConfig(backbone="convnext_tinyy"), 3)
    assert "convnext_tiny" in str(err.value) and "similar" in str(err.value)


def test_small_cnn_taps_strides_4_8_16_and_trains():
    from fusion_lab.models.backbones import level_names

    model = build_model(ModelConfig(preset="cn_cnn", backbone="small_cnn", width=16), 5)
    x = torch.randn(2, 3, 56, 56)
    feats = model.backbone(x)
    assert [f.shape[-1] for f in feats] == [14, 7, 3]  # 56/4, 56/8, floor(56/16)
    assert [f.shape[1] for f in feats] == model.backbone.out_channels
    assert level_names(model.backbone.reductions) == ["s2", "s3", "s4"]
    loss = model_loss(model(x), torch.tensor([0, 4]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())
    # caught by validation, before anything is built (was a WeightsError at build time)
    with pytest.raises(FusionLabError, match="small_cnn has no weights on timm.s hub"):
        build_model(ModelConfig(preset="baseline", backbone="small_cnn", pretrained=True), 5)


PLUGIN_BACKBONE = '''
from torch import nn

from fusion_lab.registries import BACKBONES


@BACKBONES.register("doc_backbone")
class DocBackbone(nn.Module):
    """Written exactly as fusion_lab.registries' BACKBONES contract says."""

    @classmethod
    def check_args(cls, pretrained, out_indices):
        return [] if list(out_indices) == [-3, -2, -1] else ["doc_backbone taps 3 stages"]

    def __init__(self, pretrained=False, out_indices=(-3, -2, -1)):
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Conv2d(cin, cout, 3, 2, 1) for cin, cout in [(3, 4), (4, 6), (6, 8)])
        self.out_channels, self.reductions = [4, 6, 8], [2, 4, 8]

    def forward(self, x):
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out  # low level first
'''


def test_a_plugin_backbone_written_as_the_contract_says_builds_and_is_checked(
        tmp_path, isolated_registries, capsys):
    from fusion_lab.cli import main
    from fusion_lab.plan.planning import prepare

    (tmp_path / "doc_backbone.py").write_text(PLUGIN_BACKBONE)
    study = tmp_path / "doc.yaml"
    study.write_text(
        "name: doc\nplugins: [doc_backbone.py]\n"
        "base:\n  dataset: {name: synthetic_fgvc}\n"
        "  model: {backbone: doc_backbone, preset: cn_cnn, width: 8, hidden: 8}\n")
    _, runs = prepare(study)
    model = build_model(runs[0].config.model, 5).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out["combined"].shape == (2, 5)
    assert model.backbone.out_channels == [4, 6, 8]
    with pytest.raises(SystemExit) as e:  # its check_args hook runs at validation
        main(["run", str(study), "--results", str(tmp_path / "r"), "--dry-run",
              "--set", "model.out_indices=[0, 1]"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == f"error: {study}: model: doc_backbone taps 3 stages"
