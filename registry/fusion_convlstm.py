"""``convlstm``: CN-CNN's navigation from high to low level (Sec. 2.2 of the paper).

Every level is brought to the lowest level's spatial size and projected to ``out_channels``
(the top level by 1x1 conv + BN + ReLU plus a global-pooling branch, the others by a plain
1x1 conv with bias). The sequence, high level first, runs through one ConvLSTM layer
(3x3 kernel, zero initial state, gates i, f, o, g from one conv over concat(x, h)); the
hidden state after step t replaces the level fed at step t.

Cheaper than the authors' code, same parameters and outputs (``impl="fast"``):
- the 1x1 projections run at each level's own resolution before the nearest-neighbour
  resize (a pointwise conv commutes with nearest resizing; BN + ReLU run after it, on the
  resized map, so batch statistics are unchanged);
- the gate conv is split into its input and hidden halves (same weight tensor): the input
  halves of all steps run as one batched conv, and the hidden half is skipped at the first
  step, where the state is zero.
``impl="subpixel"`` (issue 21) also runs the input half on F5 and F4 at their own
resolution (``registry/_subpixel.py``): a 3x3 conv of a nearest-upsampled map is, per
output phase, a smaller conv of the source map with the taps that land on the same source
pixel summed (where a resize is no upsampling, the map is resized and convolved as
before); integer factors run as one conv per level and a pixel shuffle. 20% fewer
forward FLOPs at 448, but not measurably faster per train step on the busy CPU it was
measured on (docs/performance.md), so it is an explicit option, not the default.
``impl="plain"`` computes it the authors' way instead (resize then project; concat and the
full gate conv at every step): the reference that tests and benchmarks compare against.
All three compute the same function; in float32 they differ only in the order of the
additions.

``sequence`` chooses the recurrence axis (docs/model.md, "What the released code really
runs"):
- ``levels`` (the paper's text): time steps are the levels, F5 then F4 then F3, per image.
- ``batch`` (the authors' released code): per level, the time steps are the images of the
  minibatch in order, from a zero state at the first image of every batch; the levels never
  meet inside the LSTM, and image t's output depends on images 0..t-1 of its batch, so
  its prediction depends on the batch it is evaluated in (``batch_dependent``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusion_lab.errors import ConfigError
from fusion_lab.registries import FUSIONS
from fusion_lab.registry._common import CN_CNN, resize_to
from fusion_lab.registry._subpixel import conv_upsampled, first_index, upsampling

SEQUENCES = ("levels", "batch")
IMPLS = ("fast", "subpixel", "plain")


class ConvLSTM(nn.Module):
    """One ConvLSTM layer over a sequence of equally sized maps.

    Args:
        in_channels: channels of each input map.
        hidden: channels of the hidden and cell states.
        kernel_size: size of the gate convolution.
        impl: "fast" or "subpixel" (input and hidden halves of the gate conv apart;
            subpixel: ``input_gates`` of an upsampled map at its own size) or "plain"
            (concat + conv every step).
    """

    def __init__(self, in_channels: int, hidden: int, kernel_size: int = 3, impl: str = "fast"):
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {', '.join(IMPLS)}, got {impl!r}")
        self.in_channels, self.hidden, self.impl = in_channels, hidden, impl
        self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel_size,
                               padding=kernel_size // 2, bias=True)

    @staticmethod
    def _update(gates: torch.Tensor, c: torch.Tensor | None):
        i, f, o, g = gates.chunk(4, dim=1)
        i, f, o, g = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), torch.tanh(g)
        c = i * g if c is None else f * c + i * g  # c0 = 0 drops the forget term
        return o * torch.tanh(c), c

    def step(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None):
        """One textbook step: gates = conv(concat(x, h)); returns (h, c)."""
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden, *x.shape[-2:])
            state = (zeros, zeros)
        h, c = state
        return self._update(self.gates(torch.cat([x, h], dim=1)), c)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Hidden state after each step, in input order."""
        if self.impl == "plain":
            out, state = [], None
            for x in xs:
                state = self.step(x, state)
                out.append(state[0])
            return out
        B = xs[0].shape[0]
        # Input halves of all steps in one conv: (T*B, C, H, W) -> T chunks of (B, 4h, H, W)
        return self.recur(list(self.input_gates(torch.cat(xs, dim=0)).split(B, dim=0)))

    def input_gates(self, x: torch.Tensor, size: tuple[int, int] | None = None):
        """The input half of the gate conv, with the bias, on ``x`` nearest-resized to
        ``size`` (x's own size when None): at x's resolution where the resize upsamples
        both axes and impl is "subpixel", else on the resized map."""
        w_x = self.gates.weight[:, : self.in_channels]
        if size is not None and tuple(x.shape[-2:]) != tuple(size):
            (h, w), (out_h, out_w) = x.shape[-2:], size
            if self.impl == "subpixel" and upsampling(h, out_h) and upsampling(w, out_w):
                return conv_upsampled(x, w_x, self.gates.bias, (out_h, out_w))
            x = resize_to(x, size)
        return F.conv2d(x, w_x, self.gates.bias, padding=self.gates.padding)

    def recur(self, gx: list[torch.Tensor]) -> list[torch.Tensor]:
        """Hidden state after each step, given each step's input half (``input_gates``)."""
        w_h = self.gates.weight[:, self.in_channels :]
        out, h, c = [], None, None
        for g in gx:
            gates = g if h is None else g + F.conv2d(h, w_h, padding=self.gates.padding)
            h, c = self._update(gates, c)
            out.append(h)
        return out


@FUSIONS.register("convlstm", paper=CN_CNN)
class ConvLSTMFusion(nn.Module):
    """CN-CNN's HL pathway: levels fused high to low by a ConvLSTM (the paper's method).

    Args:
        in_channels: channels of the backbone maps, low level first.
        out_channels: channels of the projections, hidden state and fused maps.
        kernel_size: the gate conv's kernel.
        global_branch: add the top level's global-pooling branch.
        resize_back: resize the fused maps to their own level's size (the paper).
        impl: "fast", "subpixel" (issue 21: F5's and F4's input halves at their own
            size) or "plain" (the authors' order of operations); the same function.
        sequence: "levels" (the paper's text) or "batch" (the released code).
        bn_momentum: momentum of the top level's two BatchNorms (released code: 0.01).
    """

    def __init__(
        self,
        in_channels: list[int],
        out_channels: int = 256,
        kernel_size: int = 3,
        global_branch: bool = True,
        resize_back: bool = False,
        impl: str = "fast",
        sequence: str = "levels",
        bn_momentum: float = 0.1,
    ):
        super().__init__()
        problems = self.check_args(impl=impl, sequence=sequence)
        if problems:
            raise ConfigError(problems)
        top = in_channels[-1]
        self.top_conv = nn.Conv2d(top, out_channels, 1, bias=False)
        self.top_bn = nn.BatchNorm2d(out_channels, momentum=bn_momentum)
        self.global_branch = None
        if global_branch:
            self.global_branch = nn.Sequential(
                nn.AdaptiveAvgPool2d(1),
                nn.Conv2d(top, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels, momentum=bn_momentum),
                nn.ReLU(inplace=True),
            )
        self.lower = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels[:-1])
        self.lstm = ConvLSTM(out_channels, out_channels, kernel_size, impl=impl)
        self.resize_back, self.impl, self.sequence = resize_back, impl, sequence
        self.batch_dependent = sequence == "batch"  # predictions depend on the batch
        self.out_channels = [out_channels] * len(in_channels)

    @staticmethod
    def check_args(impl: str = "fast", sequence: str = "levels", **_) -> list[str]:
        """Bad argument values, found before the model is built (one line each)."""
        problems = []
        if sequence not in SEQUENCES:
            problems.append(f"fusion 'convlstm': sequence must be 'levels' (the paper's text: "
                            f"F5, F4, F3 as time steps) or 'batch' (the released code: per "
                            f"level over the images of the minibatch), got {sequence!r}")
        if impl not in IMPLS:
            problems.append(f"fusion 'convlstm': impl must be one of {', '.join(IMPLS)}, "
                            f"got {impl!r}")
        return problems

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        size = feats[0].shape[-2:]  # the lowest level's, e.g. S3: 56x56 at 448 input
        if self.impl == "subpixel":  # each step's input half, from maps at their own size
            run, seq = self.lstm.recur, self._input_halves(feats, size)
        else:
            run, seq = self.lstm, self._resized(feats, size)
        if self.sequence == "levels":
            fused = run(seq)
        else:  # per level, over the batch: B steps, each holding image t of every level
            steps = torch.stack(seq, dim=1).unbind(0)  # B x (L, C, H, W)
            fused = list(torch.stack(run(list(steps)), dim=1).unbind(0))  # L x (B, ...)
        fused = fused[::-1]  # low level first: F3', F4', F5'
        if self.resize_back:  # the paper: maps resized to their own level's size
            fused = [resize_to(m, f.shape[-2:], "bilinear") for m, f in zip(fused, feats)]
        return fused

    def _top(self, top: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        top = F.relu(self.top_bn(top))
        if self.global_branch is not None:
            top = top + self.global_branch(feat)  # (B, C, 1, 1) broadcast
        return top

    def _resized(self, feats: list[torch.Tensor], size) -> list[torch.Tensor]:
        """The LSTM's inputs at the lowest level's size, high level first: F5, F4, F3."""
        if self.impl == "plain":  # the authors' order: resize, then project
            top = self.top_conv(resize_to(feats[-1], size))
            lower = [conv(resize_to(f, size)) for conv, f in zip(self.lower, feats[:-1])]
        else:  # project at each level's own resolution, then resize (same result)
            top = resize_to(self.top_conv(feats[-1]), size)
            lower = [resize_to(conv(f), size) for conv, f in zip(self.lower, feats[:-1])]
        return [self._top(top, feats[-1]), *reversed(lower)]

    def _input_halves(self, feats: list[torch.Tensor], size) -> list[torch.Tensor]:
        """Each step's input half of the gate conv (bias included), high level first, from
        the projected maps at their own resolution (``ConvLSTM.input_gates``). The top
        level's BN takes its batch statistics over the resized map, as the other paths do
        (a non-integer resize copies some pixels more often), and one copy of each source
        pixel is read back from it."""
        top = self._top(resize_to(self.top_conv(feats[-1]), size), feats[-1])
        (h, w), (out_h, out_w) = feats[-1].shape[-2:], size
        if (h, w) != (out_h, out_w) and upsampling(h, out_h) and upsampling(w, out_w):
            rows = torch.tensor(first_index(h, out_h), device=top.device)
            cols = torch.tensor(first_index(w, out_w), device=top.device)
            top = top.index_select(-2, rows).index_select(-1, cols)
        maps = [top, *(conv(f) for conv, f in zip(self.lower[::-1], feats[-2::-1]))]
        return [self.lstm.input_gates(m, size) for m in maps]
