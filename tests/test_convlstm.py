"""The ConvLSTM layer against its equations, computed by hand.

i = sigmoid(W_i * [x, h] + b_i), f = sigmoid(W_f * [x, h] + b_f),
o = sigmoid(W_o * [x, h] + b_o), g = tanh(W_g * [x, h] + b_g),
c' = f * c + i * g, h' = o * tanh(c'); the gates are stacked i, f, o, g in the one conv.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fusion_lab.registry.fusion_convlstm import ConvLSTM

IMPLS = ["fast", "subpixel", "plain"]


def _randomise(lstm: ConvLSTM) -> None:
    # Large enough weights that every gate matters (no gate saturated at 0.5 everywhere).
    with torch.no_grad():
        lstm.gates.weight.normal_(0.0, 0.5)
        lstm.gates.bias.normal_(0.0, 0.5)


def _step_1x1(x, h, c, weight, bias):
    """One step with a 1x1 kernel written as an einsum over channels."""
    z = torch.cat([x, h], dim=1)  # (B, Cin + Ch, H, W)
    w = weight[:, :, 0, 0]  # (4 Ch, Cin + Ch)
    pre = torch.einsum("oc,bchw->bohw", w, z) + bias[None, :, None, None]
    hid = h.shape[1]
    pi, pf, po, pg = (pre[:, k * hid:(k + 1) * hid] for k in range(4))
    i, f, o, g = torch.sigmoid(pi), torch.sigmoid(pf), torch.sigmoid(po), torch.tanh(pg)
    c_new = f * c + i * g
    return o * torch.tanh(c_new), c_new


def _step_conv(x, h, c, weight, bias):
    """One step with any odd kernel: F.conv2d per gate on concat(x, h)."""
    z = torch.cat([x, h], dim=1)
    hid = h.shape[1]
    pad = weight.shape[-1] // 2
    pre = [F.conv2d(z, weight[k * hid:(k + 1) * hid], bias[k * hid:(k + 1) * hid], padding=pad)
           for k in range(4)]  # i, f, o, g in that order
    i, f, o, g = torch.sigmoid(pre[0]), torch.sigmoid(pre[1]), torch.sigmoid(pre[2]), \
        torch.tanh(pre[3])
    c_new = f * c + i * g
    return o * torch.tanh(c_new), c_new


def _by_hand(xs, lstm, step):
    B, _, H, W = xs[0].shape
    h = torch.zeros(B, lstm.hidden, H, W)
    c = torch.zeros(B, lstm.hidden, H, W)  # zero initial state, as in the paper's code
    out = []
    for x in xs:
        h, c = step(x, h, c, lstm.gates.weight, lstm.gates.bias)
        out.append(h)
    return out, c


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kernel,step", [(1, _step_1x1), (3, _step_conv)], ids=["1x1", "3x3"])
def test_sequence_matches_equations(impl, kernel, step):
    lstm = ConvLSTM(in_channels=3, hidden=4, kernel_size=kernel, impl=impl)
    _randomise(lstm)
    xs = [torch.randn(2, 3, 5, 6) for _ in range(3)]  # a 3-step sequence, non-square maps
    expected, _ = _by_hand(xs, lstm, step)
    with torch.no_grad():
        got = lstm(xs)
    assert len(got) == 3
    for t, (g, e) in enumerate(zip(got, expected)):
        assert g.shape == (2, 4, 5, 6)
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-5, msg=f"step {t + 1}")
    # The state really carries over: step 2 differs from a step started from zero.
    fresh, _ = step(xs[1], torch.zeros(2, 4, 5, 6), torch.zeros(2, 4, 5, 6),
                    lstm.gates.weight, lstm.gates.bias)
    assert (got[1] - fresh).abs().max() > 1e-3


@pytest.mark.parametrize("kernel,step", [(1, _step_1x1), (3, _step_conv)], ids=["1x1", "3x3"])
def test_single_step_from_nonzero_state(kernel, step):
    lstm = ConvLSTM(in_channels=2, hidden=3, kernel_size=kernel)
    _randomise(lstm)
    x = torch.randn(2, 2, 4, 4)
    h, c = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        h_got, c_got = lstm.step(x, (h, c))
    h_exp, c_exp = step(x, h, c, lstm.gates.weight, lstm.gates.bias)
    torch.testing.assert_close(c_got, c_exp, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(h_got, h_exp, atol=1e-6, rtol=1e-5)


def test_fast_and_plain_agree_with_gradients():
    fast = ConvLSTM(4, 5, 3, impl="fast")
    _randomise(fast)
    plain = ConvLSTM(4, 5, 3, impl="plain")
    plain.load_state_dict(fast.state_dict())
    xs = [torch.randn(2, 4, 7, 9) for _ in range(3)]
    out_f, out_p = fast(xs), plain(xs)
    for a, b in zip(out_f, out_p):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    sum(o.square().sum() for o in out_f).backward()
    sum(o.square().sum() for o in out_p).backward()
    torch.testing.assert_close(fast.gates.weight.grad, plain.gates.weight.grad,
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fast.gates.bias.grad, plain.gates.bias.grad, atol=1e-5, rtol=1e-4)


def test_unknown_impl_is_an_error():
    with pytest.raises(ValueError, match="impl"):
        ConvLSTM(2, 2, impl="cuda")
