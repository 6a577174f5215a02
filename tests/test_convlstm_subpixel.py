"""The sub-pixel input half of the ConvLSTM's gate conv (issue 21) against the plain path.

A 3x3 conv of a nearest-upsampled map, computed at the map's own resolution, must equal
``conv2d(interpolate(x))`` (float64: to rounding; float32: within 1e-5), and ``impl:
subpixel`` must equal ``impl: plain`` on every ConvLSTM preset, both sequences, odd sizes,
with gradients and BN running statistics too.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from fusion_lab.config import ModelConfig
from fusion_lab.models.assemble import build_model
from fusion_lab.registry._subpixel import conv_patterns, conv_upsampled, folds_weight, upsampling
from fusion_lab.registry.fusion_convlstm import ConvLSTMFusion

# (source H, W) -> (output H, W): x2, x4, and non-integer ratios of odd-sized inputs
RESIZES = [((4, 4), (8, 8)), ((2, 2), (8, 8)), ((3, 5), (6, 10)), ((7, 7), (25, 25)),
           ((13, 13), (25, 25)), ((4, 5), (13, 17)), ((5, 3), (9, 12))]


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("src,out", RESIZES)
def test_conv_of_upsampled_map_equals_the_conv_at_source_resolution(src, out, k):
    assert upsampling(src[0], out[0]) and upsampling(src[1], out[1])
    x = torch.randn(2, 3, *src, dtype=torch.float64)
    w, b = torch.randn(4, 3, k, k, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    expected = F.conv2d(F.interpolate(x, size=out, mode="nearest"), w, b, padding=k // 2)
    torch.testing.assert_close(conv_upsampled(x, w, b, out), expected, atol=1e-12, rtol=0)


def test_downsizing_is_no_upsampling():
    assert not upsampling(8, 4) and not upsampling(5, 5) and upsampling(5, 6)


def _fusion_pair(sequence: str, sizes, batch: int = 3):
    chans = [8, 12, 16]
    ref = ConvLSTMFusion(chans, 6, sequence=sequence, impl="plain")
    with torch.no_grad():  # weights large enough that every gate and state matters
        for p in ref.parameters():
            p.normal_(0.0, 0.5)
    fast = ConvLSTMFusion(chans, 6, sequence=sequence, impl="subpixel")
    fast.load_state_dict(ref.state_dict())
    feats = [torch.randn(batch, c, *s) for c, s in zip(chans, sizes)]
    return fast, ref, feats


def _same_grads(fast, plain, tol: float = 1e-5) -> None:
    """Every gradient within ``tol`` of the model's largest gradient entry: gradients are
    sums over many pixels, and a bias followed by BatchNorm has a gradient that is zero
    up to rounding, so no per-entry relative tolerance fits them."""
    grads = dict(plain.named_parameters())
    scale = max(p.grad.abs().max() for p in grads.values())
    for name, p in fast.named_parameters():
        assert (p.grad - grads[name].grad).abs().max() <= tol * scale, name


# S3, S4, S5 sizes: exact x2/x4; odd (x2 rounded up); 7 -> 25 and 13 -> 25; S4 = S3
SIZES = [[(8, 8), (4, 4), (2, 2)], [(7, 9), (4, 5), (2, 3)], [(25, 25), (13, 13), (7, 7)],
         [(6, 6), (6, 6), (3, 3)]]


@pytest.mark.parametrize("sequence", ["levels", "batch"])
@pytest.mark.parametrize("sizes", SIZES, ids=["x2x4", "odd", "25", "same"])
def test_subpixel_fusion_equals_plain_with_gradients(sequence, sizes):
    fast, plain, feats = _fusion_pair(sequence, sizes)
    outs = {}
    for name, m in (("fast", fast.train()), ("plain", plain.train())):
        out = m(feats)
        weights = [torch.randn_like(o, generator=torch.Generator().manual_seed(i))
                   for i, o in enumerate(out)]
        sum((o * w).sum() for o, w in zip(out, weights)).backward()
        outs[name] = out
    for a, b in zip(outs["fast"], outs["plain"]):
        assert a.shape == b.shape == (3, 6, *sizes[0])
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    _same_grads(fast, plain)
    # BN's batch statistics come from the resized map in both (unequal copies at 7 -> 25)
    torch.testing.assert_close(fast.top_bn.running_var, plain.top_bn.running_var)
    torch.testing.assert_close(fast.top_bn.running_mean, plain.top_bn.running_mean)


@pytest.mark.parametrize("preset", ["cn_cnn", "cn_cnn_released"])
@pytest.mark.parametrize("hw", [(32, 32), (50, 37), (36, 44)])
def test_every_convlstm_preset_subpixel_equals_plain(preset, hw):
    # small_cnn: taps at strides 4, 8, 16 (32: 8, 4, 2; 50x37: 13x10, 7x5, 4x3; 36x44:
    # 9x11, 5x6, 3x3): exact x2 and x4, odd sizes, non-integer ratios.
    # float32: outputs within 1e-5. float64: gradients of the whole model equal to
    # rounding (in float32 the backbone's BatchNorms amplify rounding in its gradients to
    # about 1e-5 of their size, for the fast path as much as for this one).
    torch.manual_seed(0)
    fast = build_model(ModelConfig(preset=preset, backbone="small_cnn", pretrained=False,
                                   fusion_args={"impl": "subpixel"}), 5)
    plain = build_model(ModelConfig(preset=preset, backbone="small_cnn", pretrained=False,
                                    fusion_args={"impl": "plain"}), 5)
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(3, 3, *hw)
    with torch.no_grad():
        torch.testing.assert_close(fast.train()(x)["combined"], plain.train()(x)["combined"],
                                   atol=1e-5, rtol=1e-5)
    fast, plain, x = fast.double(), plain.double(), x.double()
    out_f, out_p = fast(x)["combined"], plain(x)["combined"]
    out_f.square().sum().backward()
    out_p.square().sum().backward()
    _same_grads(fast, plain, 1e-10)


def _flops(module, feats) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module.eval()(feats)
    return counter.get_total_flops()


@pytest.mark.parametrize("n", [8, 32])
def test_subpixel_flops_are_what_the_decomposition_predicts(n):
    # Exact x2 (S4) and x4 (S5) at S3 = n x n, k = 3. Zeros in embedded kernels are
    # counted, as the conv computes them. Per axis, outputs s*p + 1 .. s*p + s read
    # source pixels p, p + 1 (m = 2) for s = 2 and 4: n / s + 1 groups per axis.
    # x2 (phase kernels folded): one conv, 4 phases x 2x2 taps per group, plus the
    # folding matmul (the 9 taps of each weight pair -> 4 phases x 2x2).
    # x4 (taps first): a 1x1 conv with 9 taps per source pixel, then a constant 0/1 conv
    # per gate channel, 9 tap maps -> 16 phases, 2x2 kernel, per group.
    # fast: 9 taps per output pixel at n x n for both.
    sizes = [(n, n), (n // 2, n // 2), (n // 4, n // 4)]
    subpixel, plain, feats = _fusion_pair("levels", sizes, batch=2)
    fast = ConvLSTMFusion([8, 12, 16], 6, impl="fast")
    fast.load_state_dict(plain.state_dict())
    batch, c_in, gates = 2, 6, 4 * 6
    per_tap = 2 * batch * c_in * gates  # 2 FLOPs per MAC, one tap at one pixel
    x2 = per_tap * (2 * 2) * (2 * 2) * (n // 2 + 1) ** 2 + 2 * gates * c_in * 9 * 4 * 4
    x4 = (per_tap * 9 * (n // 4) ** 2
          + 2 * (batch * gates) * 9 * (4 * 4) * (2 * 2) * (n // 4 + 1) ** 2)
    saved = 2 * per_tap * 9 * n * n - x2 - x4
    assert _flops(fast, feats) - _flops(subpixel, feats) == saved
    assert (saved > 0) == (n == 32)  # at 8x8 the border groups cost more than they save


def _count_convs(monkeypatch) -> list[tuple[int, ...]]:
    """Record the weight shape of every ``F.conv2d`` call from now on."""
    calls, conv2d = [], F.conv2d

    def counting(x, weight, *args, **kwargs):
        calls.append(tuple(weight.shape))
        return conv2d(x, weight, *args, **kwargs)

    monkeypatch.setattr(F, "conv2d", counting)
    return calls


@pytest.mark.parametrize("s", [2, 3, 4])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_integer_factor_is_one_conv_over_the_features_and_equals_the_general_path(
        monkeypatch, s, k):
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    w, b = torch.randn(7, 5, k, k, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
    general = conv_patterns(x, w, b, (3 * s, 4 * s))
    calls = _count_convs(monkeypatch)
    out = conv_upsampled(x, w, b, (3 * s, 4 * s))
    torch.testing.assert_close(out, general, atol=1e-12, rtol=0)
    over_features = [c for c in calls if c[1] == 5]  # convs that read x (5 channels)
    assert len(over_features) == 1
    # folded: that conv alone; taps first: plus one constant 0/1 conv over the k*k taps
    assert len(calls) == (1 if folds_weight(s, k) else 2)
    if not folds_weight(s, k):
        assert calls[1][:2] == (s * s, k * k)


def test_integer_factor_path_in_the_fusion_is_one_conv_per_level(monkeypatch):
    # x2x4 sizes, cn_cnn's kernel 3: F4 (x2) folds its weight: 1 conv; F5 (x4) runs the
    # taps first: 1 conv over the features plus the constant 0/1 conv; F3: 1 conv.
    subpixel, _, feats = _fusion_pair("levels", SIZES[0])
    lstm = subpixel.lstm
    maps = [torch.randn(3, 6, 2, 2), torch.randn(3, 6, 4, 4), torch.randn(3, 6, 8, 8)]
    calls = _count_convs(monkeypatch)
    for m in maps:
        lstm.input_gates(m, (8, 8))
    over_features = [c for c in calls if c[1] == 6]
    assert len(over_features) == 3 and len(calls) == 4
