"""The figures measured on the authors' implementation (docs/model.md).

Parameter counts must match exactly: they pin down every layer's shape (the global
pooling branch, the ConvLSTM gate conv, the hidden width 512 vs 256, the fourth head).
FLOPs: the plain ConvLSTM computes it the authors' way and must reproduce their 127.28
GFLOPs; the default (fast) one must cost no more, and at most 113 GFLOPs.
The fast ConvLSTM fusion must give the plain one's outputs.
"""

from __future__ import annotations

import pytest
import timm
import torch

from fusion_lab.config import ModelConfig
from fusion_lab.models.assemble import build_model, count_parameters
from fusion_lab.models.profile import forward_gflops

REFERENCE_GFLOPS = 127.28  # reference CN-CNN, ResNet50, 448x448, batch 1
SPEED_TARGET_GFLOPS = 113.0  # the speed issue's budget for the default implementation


def _cn_cnn(num_classes: int, **fusion_args) -> torch.nn.Module:
    cfg = ModelConfig(preset="cn_cnn", backbone="resnet50", fusion_args=fusion_args)
    return build_model(cfg, num_classes)


@pytest.fixture(scope="module")
def cn_cnn_200():
    return _cn_cnn(200)


@pytest.fixture(scope="module")
def cn_cnn_plain_200():
    # Parameters only and shape-level FLOP counting: the meta device skips allocation.
    with torch.device("meta"):
        return _cn_cnn(200, impl="plain")


# --- parameters -------------------------------------------------------------------------

def test_cn_cnn_resnet50_parameters_200_classes(cn_cnn_200):
    assert count_parameters(cn_cnn_200) == 30_909_331


@pytest.mark.parametrize("num_classes,expected", [(196, 30_304_131), (100, 30_205_443)])
def test_cn_cnn_resnet50_parameters_other_class_counts(num_classes, expected):
    with torch.device("meta"):  # counting needs shapes, not values
        model = _cn_cnn(num_classes)
    assert count_parameters(model) == expected


def test_plain_impl_has_the_same_parameters(cn_cnn_plain_200):
    assert count_parameters(cn_cnn_plain_200) == 30_909_331


def test_timm_resnet50_baseline_parameters():
    with torch.device("meta"):
        model = timm.create_model("resnet50", num_classes=200)
    assert count_parameters(model) == 23_917_832


def test_baseline_preset_matches_timm_resnet50():
    """The 'baseline' preset is the backbone + GAP + one linear layer: timm's resnet50."""
    with torch.device("meta"):
        model = build_model(ModelConfig(preset="baseline", backbone="resnet50"), 200)
    assert count_parameters(model) == 23_917_832


# --- FLOPs ------------------------------------------------------------------------------

def test_cn_cnn_forward_gflops_at_448(cn_cnn_200):
    gflops = forward_gflops(cn_cnn_200, 448)
    assert gflops <= REFERENCE_GFLOPS * 1.01
    assert gflops <= SPEED_TARGET_GFLOPS
    # Still the same computation: nothing but the ConvLSTM's zero-state half can be skipped.
    assert gflops > 0.75 * REFERENCE_GFLOPS


def test_plain_impl_reproduces_reference_gflops(cn_cnn_plain_200):
    # FlopCounterMode counts from shapes, so a meta-device model gives the same count
    # without running 127 GFLOPs on two CPU cores.
    gflops = forward_gflops(cn_cnn_plain_200, 448)
    assert gflops == pytest.approx(REFERENCE_GFLOPS, rel=0.01)


# --- fast == plain ----------------------------------------------------------------------

def _pair(backbone: str = "resnet10t", num_classes: int = 5):
    fast = build_model(ModelConfig(preset="cn_cnn", backbone=backbone, width=32), num_classes)
    plain = build_model(
        ModelConfig(preset="cn_cnn", backbone=backbone, width=32,
                    fusion_args={"impl": "plain"}),
        num_classes,
    )
    plain.load_state_dict(fast.state_dict())
    return fast, plain


def _assert_same_outputs(a: dict, b: dict) -> None:
    assert len(a["fused"]) == len(b["fused"]) == 3
    for fa, fb in zip(a["fused"], b["fused"]):
        torch.testing.assert_close(fa, fb, atol=1e-5, rtol=0)
    assert a["logits"].keys() == b["logits"].keys()
    for name in a["logits"]:
        torch.testing.assert_close(a["logits"][name], b["logits"][name], atol=1e-5, rtol=0)
    torch.testing.assert_close(a["combined"], b["combined"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [(64, 64), (97, 131)], ids=["64x64", "97x131"])
def test_fast_convlstm_fusion_equals_plain(size):
    fast, plain = _pair()
    x = torch.randn(2, 3, *size)
    for mode in ("train", "eval"):
        fast.train(mode == "train")
        plain.train(mode == "train")
        with torch.no_grad():
            _assert_same_outputs(fast(x, return_maps=True), plain(x, return_maps=True))
    # Training-mode BN statistics were updated identically by the train pass.
    for (name, a), b in zip(fast.state_dict().items(), plain.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=name)


def test_fast_convlstm_fusion_equals_plain_resize_back():
    fast, plain = _pair()
    for m in (fast, plain):
        m.fusion.resize_back = True
    x = torch.randn(2, 3, 97, 131)
    with torch.no_grad():
        _assert_same_outputs(fast(x, return_maps=True), plain(x, return_maps=True))


def test_fast_convlstm_fusion_gradients_equal_plain():
    fast, plain = _pair()
    x = torch.randn(2, 3, 64, 64)
    y = torch.tensor([1, 3])
    for m in (fast, plain):
        out = m(x)
        sum(torch.nn.functional.cross_entropy(v, y) for v in out["logits"].values()).backward()
    grads_plain = dict(plain.named_parameters())
    for name, p in fast.named_parameters():
        q = grads_plain[name]
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:  # fp32 sums in another order: compare relative norms
            assert (p.grad - q.grad).norm() <= 1e-3 * q.grad.norm() + 1e-4, name


def test_fast_and_plain_same_parameter_count_small():
    fast, plain = _pair()
    assert count_parameters(fast) == count_parameters(plain)
