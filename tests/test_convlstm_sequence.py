"""The ConvLSTM fusion's two sequence axes, checked against their definitions.

``levels`` (the paper's text): per image, time steps F5, F4, F3. ``batch`` (the authors'
released code): per level, time steps are the images of the minibatch, zero state at the
first image. All in eval mode: in train mode BatchNorm couples the images anyway.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fusion_lab.config import ModelConfig
from fusion_lab.errors import ConfigError
from fusion_lab.models.assemble import build_model, check_model_config
from fusion_lab.registry.fusion_convlstm import ConvLSTMFusion

IMPLS = ["fast", "subpixel", "plain"]
IN_CHANNELS = [4, 6, 8]  # S3, S4, S5
SIZES = [(6, 6), (3, 3), (2, 2)]  # stride 8, 16, 32 of a 48 px image


def _fusion(sequence: str, impl: str = "fast") -> ConvLSTMFusion:
    fusion = ConvLSTMFusion(IN_CHANNELS, 5, sequence=sequence, impl=impl)
    with torch.no_grad():  # weights large enough that every gate and state matters
        for p in fusion.parameters():
            p.normal_(0.0, 0.5)
        fusion.top_bn.running_mean.normal_(0.0, 0.2)
        fusion.top_bn.running_var.uniform_(0.5, 1.5)
    return fusion.eval()


def _feats(batch: int = 4) -> list[torch.Tensor]:
    return [torch.randn(batch, c, *s) for c, s in zip(IN_CHANNELS, SIZES)]


def _run(fusion, feats):
    with torch.no_grad():
        return fusion(feats)  # low level first: F3', F4', F5'


def _changed(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a - b).abs().max().item() > 1e-4


@pytest.mark.parametrize("impl", IMPLS)
def test_batch_image_t_sees_earlier_images_only(impl):
    fusion, feats = _fusion("batch", impl), _feats()
    base = _run(fusion, feats)
    later = [f.clone() for f in feats]
    for f in later:
        f[2:] += torch.randn_like(f[2:])  # images 2 and 3 change, at every level
    out = _run(fusion, later)
    for level in range(3):
        torch.testing.assert_close(out[level][:2], base[level][:2], atol=0, rtol=0)
        assert _changed(out[level][2], base[level][2])
    earlier = [f.clone() for f in feats]
    for f in earlier:
        f[0] += torch.randn_like(f[0])  # only image 0 changes ...
    out = _run(fusion, earlier)
    for level in range(3):  # ... and image 3, untouched, changes through the state
        assert _changed(out[level][3], base[level][3])


@pytest.mark.parametrize("impl", IMPLS)
def test_batch_levels_never_meet(impl):
    fusion, feats = _fusion("batch", impl), _feats()
    base = _run(fusion, feats)
    s3 = [feats[0] + torch.randn_like(feats[0]), *feats[1:]]
    out = _run(fusion, s3)
    torch.testing.assert_close(out[2], base[2], atol=0, rtol=0)  # F5' unchanged
    torch.testing.assert_close(out[1], base[1], atol=0, rtol=0)  # F4' unchanged
    assert _changed(out[0], base[0])
    s5 = [*feats[:2], feats[2] + torch.randn_like(feats[2])]
    out = _run(fusion, s5)
    torch.testing.assert_close(out[0], base[0], atol=0, rtol=0)  # F3' unchanged
    assert _changed(out[2], base[2])


@pytest.mark.parametrize("impl", IMPLS)
def test_levels_images_are_independent_and_levels_meet(impl):
    fusion, feats = _fusion("levels", impl), _feats()
    base = _run(fusion, feats)
    other = [f.clone() for f in feats]
    for f in other:
        f[1] += torch.randn_like(f[1])
    out = _run(fusion, other)
    for level in range(3):  # in eval mode image 1 touches no other image's output
        torch.testing.assert_close(out[level][[0, 2, 3]], base[level][[0, 2, 3]],
                                   atol=1e-6, rtol=0)
    s5 = [*feats[:2], feats[2] + torch.randn_like(feats[2])]
    assert _changed(_run(fusion, s5)[0], base[0])  # F3' sees F5 (step 1 of 3)


def _lstm_step(x, h, c, weight, bias):
    """gates = conv(concat(x, h)); c' = f c + i g; h' = o tanh(c'), gates stacked i, f, o, g."""
    hid = h.shape[1]
    pre = F.conv2d(torch.cat([x, h], 1), weight, bias, padding=weight.shape[-1] // 2)
    i, f, o, g = (pre[:, k * hid:(k + 1) * hid] for k in range(4))
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


@pytest.mark.parametrize("impl", IMPLS)
def test_batch_steps_by_hand(impl):
    fusion, feats = _fusion("batch", impl), _feats(batch=2)
    size = SIZES[0]
    with torch.no_grad():  # the projections (tested elsewhere), each level at S3's size
        top = F.relu(fusion.top_bn(fusion.top_conv(F.interpolate(feats[2], size=size))))
        top = top + fusion.global_branch(feats[2])
        x4 = fusion.lower[1](F.interpolate(feats[1], size=size))
        x3 = fusion.lower[0](feats[0])
        w, b = fusion.lstm.gates.weight, fusion.lstm.gates.bias
        expected = []
        for x in (x3, x4, top):  # each level its own sequence over the two images
            zero = torch.zeros(1, 5, *size)
            h0, c0 = _lstm_step(x[:1], zero, zero, w, b)  # image 0: from the zero state
            h1, _ = _lstm_step(x[1:], h0, c0, w, b)  # image 1: from image 0's state
            expected.append(torch.cat([h0, h1]))
    for got, exp in zip(_run(fusion, feats), expected):
        torch.testing.assert_close(got, exp, atol=1e-5, rtol=1e-5)


def test_batch_fast_equals_plain_with_gradients():
    fast, plain = _fusion("batch", "fast").train(), _fusion("batch", "plain").train()
    plain.load_state_dict(fast.state_dict())
    feats = _feats(batch=3)
    out_f, out_p = fast(feats), plain(feats)
    for a, b in zip(out_f, out_p):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    sum(o.square().sum() for o in out_f).backward()
    sum(o.square().sum() for o in out_p).backward()
    grads = dict(plain.named_parameters())
    for name, p in fast.named_parameters():
        assert (p.grad - grads[name].grad).norm() <= 1e-4 * grads[name].grad.norm() + 1e-5, name


def test_a_batch_of_one_starts_from_zero():
    fusion, feats = _fusion("batch"), _feats(batch=3)
    alone = _run(fusion, [f[1:2] for f in feats])
    inside = _run(fusion, feats)
    for a, b in zip(alone, inside):  # image 1 alone never sees image 0's state
        assert _changed(a[0], b[1])


def test_unknown_sequence_is_one_line_naming_both():
    cfg = ModelConfig(preset="cn_cnn", backbone="small_cnn", fusion_args={"sequence": "time"})
    problems = check_model_config(cfg)
    assert len(problems) == 1
    assert "'levels'" in problems[0] and "'batch'" in problems[0] and "'time'" in problems[0]
    assert "\n" not in problems[0]
    with pytest.raises(ConfigError, match="sequence must be 'levels'"):
        build_model(cfg, 3)
