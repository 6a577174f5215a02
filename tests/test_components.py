"""Every registered fusion, attention, head and preset, assembled and trained one step.

Parametrised from the registries at collection time (like timm's test_models.py): a newly
registered component is tested the moment it exists. Tiny inputs, random weights.
"""

from __future__ import annotations

import pytest
import torch

from fusion_lab.config import ModelConfig
from fusion_lab.errors import ConfigError
from fusion_lab.models.assemble import build_model, check_model_config, model_loss
from fusion_lab.registries import ATTENTIONS, FUSIONS, HEADS, PRESETS, load_builtin

load_builtin()
ALL_FUSIONS = FUSIONS.list()
ALL_ATTENTIONS = ATTENTIONS.list()
ALL_HEADS = HEADS.list()
ALL_PRESETS = PRESETS.list()

BACKBONE = "resnet10t"  # smallest timm ResNet; strides 8/16/32 on the last three stages
WIDTH = 16
K = 5
B = 2  # BatchNorm needs more than one sample in training mode


def _model(**kw) -> torch.nn.Module:
    kw.setdefault("backbone", BACKBONE)
    kw.setdefault("width", WIDTH)
    return build_model(ModelConfig(**kw), K)


def _check_train_step(model: torch.nn.Module, size: tuple[int, int]) -> dict:
    """Forward with maps, check shapes and values, backward, check every gradient."""
    model.train()
    x = torch.randn(B, 3, *size)
    y = torch.arange(B) % K
    out = model(x, return_maps=True)

    assert out["logits"], "no head produced logits"
    for name, lg in out["logits"].items():
        assert lg.shape == (B, K), name
        assert torch.isfinite(lg).all(), name
    assert out["combined"].shape == (B, K)
    torch.testing.assert_close(out["combined"], torch.stack(list(out["logits"].values())).mean(0))

    fused, attended = out["fused"], out["attended"]
    assert [f.shape[1] for f in fused] == list(model.fusion.out_channels)
    assert len(attended) == len(fused)
    for f, a in zip(fused, attended):
        assert a.shape == f.shape
        assert f.shape[0] == B
        assert torch.isfinite(f).all() and torch.isfinite(a).all()

    loss = model_loss(out, y)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters that get no gradient: {missing}"
    for n, p in model.named_parameters():
        assert torch.isfinite(p.grad).all(), n
    # Each submodule with parameters learns something (a single BN1d bias in front of
    # Linear + BN1d legitimately gets a zero gradient, whole modules never should).
    for part in ("backbone", "fusion", "attention", "head"):
        grads = [p.grad for p in getattr(model, part).parameters()]
        if grads:
            assert any(g.abs().sum() > 0 for g in grads), f"{part} gets only zero gradients"
    return out


# Every registered fusion meets every one of CN-CNN's attentions, and every registered
# attention meets every one of CN-CNN's fusions: each entry is trained against the parts it
# must fit, without the full catalogue's product (7 x 23 pairs, over a minute on 2 cores).
PAPER_FUSIONS = ["none", "fpn_add", "convlstm"]
PAPER_ATTENTIONS = ["none", "sa", "ca", "sa+ca"]
PAIRS = sorted({(f, a) for f in ALL_FUSIONS for a in PAPER_ATTENTIONS}
               | {(f, a) for f in PAPER_FUSIONS for a in ALL_ATTENTIONS})


@pytest.mark.parametrize("fusion,attention", PAIRS)
def test_fusion_x_attention(fusion, attention):
    model = _model(fusion=fusion, attention=attention, head="multi_level")
    out = _check_train_step(model, (64, 64))
    assert len(out["logits"]) == len(model.fusion.out_channels) + 1  # + the concat head


# odd sizes: every fusion under CN-CNN's full attention, every attention after FPN addition
ODD_PAIRS = sorted({(f, "sa+ca") for f in ALL_FUSIONS} | {("fpn_add", a) for a in ALL_ATTENTIONS})


@pytest.mark.parametrize("fusion,attention", ODD_PAIRS)
def test_fusion_x_attention_odd_size(fusion, attention):
    # 97x131: stage ratios are not powers of two, so every resize must hit an exact size.
    model = _model(fusion=fusion, attention=attention, head="multi_level")
    _check_train_step(model, (97, 131))


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_preset(preset):
    model = _model(preset=preset)
    _check_train_step(model, (64, 64))
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))  # eval works on a single sample
    assert out["combined"].shape == (1, K)


@pytest.mark.parametrize("head", ALL_HEADS)
def test_head(head):
    model = _model(fusion="none", attention="none", head=head)
    _check_train_step(model, (64, 64))


@pytest.mark.parametrize("fusion", ALL_FUSIONS)
def test_fusion_contract(fusion):
    """Any fusion: list of maps (low level first) in, list of maps with .out_channels out."""
    in_channels = [8, 12, 20]
    sizes = [(12, 10), (6, 5), (3, 3)]
    module = FUSIONS.get(fusion)(in_channels, 16)
    feats = [torch.randn(B, c, *s) for c, s in zip(in_channels, sizes)]
    out = module(feats)
    assert isinstance(out, list) and len(out) == len(module.out_channels) >= 1
    for m, c in zip(out, module.out_channels):
        assert m.shape[:2] == (B, c)


@pytest.mark.parametrize("attention", ALL_ATTENTIONS)
def test_attention_contract(attention):
    channels = [16, 16, 16]
    module = ATTENTIONS.get(attention)(channels)
    maps = [torch.randn(B, 16, s, s + 1) for s in (8, 4, 2)]
    attended, masks = module(maps)
    assert [a.shape for a in attended] == [m.shape for m in maps]
    assert isinstance(masks, dict)
    for key, per_level in masks.items():
        assert len(per_level) == len(maps), key


# --- masks and the CA link ----------------------------------------------------------------

def test_masks_shapes_and_application():
    model = _model(preset="cn_cnn").eval()
    with torch.no_grad():
        out = model(torch.randn(B, 3, 64, 96), return_maps=True)
    fused, attended, masks = out["fused"], out["attended"], out["masks"]
    assert set(masks) == {"sa", "ca"}
    for f, a, sa, ca in zip(fused, attended, masks["sa"], masks["ca"]):
        Bf, C, H, W = f.shape
        assert sa.shape == (Bf, 1, H, W)
        assert ca.shape == (Bf, C, 1, 1)
        assert ((sa > 0) & (sa < 1)).all() and ((ca > 0) & (ca < 1)).all()
        torch.testing.assert_close(a, sa * f + ca * f)  # SA * F + CA * F


@pytest.mark.parametrize("attention", ["ca", "sa+ca"])
def test_ca_low_to_high_link(attention):
    model = _model(fusion="convlstm", attention=attention).eval()
    with torch.no_grad():
        out = model(torch.randn(B, 3, 64, 64), return_maps=True)
        raw = [m(f) for m, f in zip(model.attention.ca, out["fused"])]  # unlinked masks
    ca3, ca4, ca5 = out["masks"]["ca"]
    torch.testing.assert_close(ca3, raw[0])
    linked4 = (raw[1] + raw[0]) / 2  # CA4 := (CA4 + CA3) / 2
    torch.testing.assert_close(ca4, linked4)
    torch.testing.assert_close(ca5, (raw[2] + linked4) / 2)  # CA5 := (CA5 + mixed CA4) / 2
    assert (ca5 - raw[2]).abs().max() > 1e-6  # the link changed something


def test_ca_link_can_be_switched_off():
    model = _model(fusion="convlstm", attention="ca", attention_args={"link": False}).eval()
    with torch.no_grad():
        out = model(torch.randn(B, 3, 64, 64), return_maps=True)
        raw = [m(f) for m, f in zip(model.attention.ca, out["fused"])]
    for got, exp in zip(out["masks"]["ca"], raw):
        torch.testing.assert_close(got, exp)


@pytest.mark.parametrize("size", [(64, 64), (97, 131)], ids=["64x64", "97x131"])
def test_fused_maps_size(size):
    """Reference code: every fused map at S3's size. resize_back: each level's own size."""
    model = _model(preset="cn_cnn").eval()
    x = torch.randn(B, 3, *size)
    with torch.no_grad():
        out = model(x, return_maps=True)
    s3 = out["features"][0].shape[-2:]
    assert all(f.shape[-2:] == s3 for f in out["fused"])

    back = _model(preset="cn_cnn", resize_back=True).eval()
    with torch.no_grad():
        out = back(x, return_maps=True)
    assert [f.shape[-2:] for f in out["fused"]] == [f.shape[-2:] for f in out["features"]]
    for a, sa, f in zip(out["attended"], out["masks"]["sa"], out["fused"]):
        assert a.shape == f.shape and sa.shape[-2:] == f.shape[-2:]


def test_backbone_levels_of_resnet():
    model = _model(preset="cn_cnn")
    assert model.backbone.reductions == [8, 16, 32]
    assert model.level_names == ["s3", "s4", "s5"]
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), return_maps=True)
    assert [f.shape[-1] for f in out["features"]] == [8, 4, 2]
    assert set(out["logits"]) == {"s3", "s4", "s5", "concat"}


def test_concat_head_can_be_switched_off():
    model = _model(preset="cn_cnn", concat_head=False).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert set(out["logits"]) == {"s3", "s4", "s5"}


# --- the assembler's errors ---------------------------------------------------------------

@pytest.mark.parametrize(
    "field,value,valid",
    [
        ("fusion", "convlsm", "convlstm"),
        ("attention", "sa+cb", "sa+ca"),
        ("head", "multilevel", "multi_level"),
        ("preset", "cn-cnn", "cn_cnn"),
    ],
)
def test_unknown_component_in_config(field, value, valid):
    cfg = ModelConfig(backbone=BACKBONE, **{field: value})
    with pytest.raises(ConfigError) as err:
        build_model(cfg, K)
    msg = str(err.value)
    assert repr(value) in msg
    assert f"did you mean {valid!r}" in msg
    assert "valid names" in msg


def test_bad_component_arguments_say_what_is_taken():
    cfg = ModelConfig(backbone=BACKBONE, preset="cn_cnn", fusion_args={"hiden": 3})
    with pytest.raises(ConfigError) as err:
        build_model(cfg, K)
    msg = str(err.value)
    assert "'hiden'" in msg and "convlstm" in msg
    for arg in ("kernel_size", "global_branch", "impl"):
        assert arg in msg


def test_all_config_problems_at_once():
    cfg = ModelConfig(backbone="resnet5O", preset="hl", attention="sa+cx",
                      fusion_args={"upsampel": "bilinear"}, head_args={"hiden": 3})
    problems = check_model_config(cfg)
    text = "\n".join(problems)
    assert len(problems) == 4, text
    assert "'sa+cx'" in text and "'upsampel'" in text and "'hiden'" in text
    assert "'resnet5O'" in text
    with pytest.raises(ConfigError) as err:
        build_model(cfg, K)
    assert err.value.problems == problems


def test_resize_back_unsupported_fusion_is_a_config_error():
    problems = check_model_config(ModelConfig(backbone=BACKBONE, preset="hl", resize_back=True))
    assert any("resize_back" in p and "fpn_add" in p for p in problems)


def test_valid_config_has_no_problems():
    for preset in ALL_PRESETS:
        assert check_model_config(ModelConfig(backbone=BACKBONE, preset=preset)) == []
