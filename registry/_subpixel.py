"""A convolution of a nearest-upsampled map, computed at the map's own resolution.

Nearest upsampling copies source pixel ``idx[i]`` to output position ``i`` (per axis), so
the ``k`` taps of a ``k x k`` convolution (stride 1, padding ``k // 2``) centred on output
``i`` read source pixels ``idx[i + a]``, ``a = -r..r``: only a few distinct ones. Output
positions whose taps land on the same source offsets (their *pattern*; for an integer
factor ``s``, the ``s`` phases, several sharing one pattern) are one small convolution at
the source's resolution, with the weights of the taps that land on the same source pixel
summed (a sub-pixel decomposition). Each pattern pair (rows x columns) is one conv whose
kernel is cropped to the offsets it uses; one gather assembles the output.

At F3's size from F5 (4x) a 3x3 conv costs 25 source-resolution taps per 16 output
pixels instead of 144; from F4 (2x), 16 per 4 instead of 36. Same parameters; the
result equals ``conv2d(interpolate(x, size, mode="nearest"), w, b, padding=k // 2)`` up
to float rounding (the summed taps change the order of the additions).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F


@lru_cache(maxsize=64)
def source_index(n_in: int, n_out: int) -> tuple[int, ...]:
    """For each output position of a nearest resize from ``n_in`` to ``n_out``, its source
    position, read off ``F.interpolate`` itself (so it matches torch's rounding)."""
    ramp = torch.arange(n_in, dtype=torch.float32).view(1, 1, n_in, 1)
    out = F.interpolate(ramp, size=(n_out, 1), mode="nearest")
    return tuple(int(v) for v in out.flatten().tolist())


def first_index(n_in: int, n_out: int) -> list[int]:
    """For each source position, the first output position holding its copy."""
    first: dict[int, int] = {}
    for i, s in enumerate(source_index(n_in, n_out)):
        first.setdefault(s, i)
    return [first[s] for s in range(n_in)]


def upsampling(n_in: int, n_out: int) -> bool:
    """Whether a nearest resize from n_in to n_out copies every source pixel at least once
    and moves by at most one source pixel per output pixel (what the decomposition needs)."""
    if n_out <= n_in:
        return False
    idx = source_index(n_in, n_out)
    return (idx[0] == 0 and idx[-1] == n_in - 1
            and all(b - a in (0, 1) for a, b in zip(idx, idx[1:])))


@lru_cache(maxsize=64)
def _patterns(n_in: int, n_out: int, k: int):
    """Per axis: the distinct patterns (source offset of each tap, -r..r), and each output
    position's pattern number. A tap beyond the border reads the zero padding: offset to
    source -1 (before) or n_in (after), which the padded source holds as zeros."""
    idx, r = source_index(n_in, n_out), k // 2
    patterns: dict[tuple[int, ...], int] = {}
    which = []
    for i in range(n_out):
        offs = []
        for a in range(-r, r + 1):
            j = i + a
            src = -1 if j < 0 else n_in if j >= n_out else idx[j]
            offs.append(src - idx[i])
        which.append(patterns.setdefault(tuple(offs), len(patterns)))
    return list(patterns), which


@lru_cache(maxsize=64)
def _fold_plan(patterns: tuple[tuple[int, ...], ...]) -> tuple[list[tuple[int, int, int]], list[int]]:
    """Where each pattern's folded taps go along one kernel axis: per pattern (first source
    offset, first row, rows) in the folded axis, and for each (pattern, tap) its row."""
    spans, dest, row = [], [], 0
    for pattern in patterns:
        lo, hi = min(pattern), max(pattern)
        spans.append((lo, row, hi - lo + 1))
        dest += [row + d - lo for d in pattern]
        row += hi - lo + 1
    return spans, dest


def _fold(weight: torch.Tensor, patterns, dim: int) -> tuple[torch.Tensor, list]:
    """``weight`` with the taps along ``dim`` that land on one source offset summed, for
    every pattern at once (one ``index_add``: no FLOPs, a cheap backward); and each
    pattern's (first source offset, first row, rows) in the result."""
    spans, dest = _fold_plan(tuple(patterns))
    shape = list(weight.shape)
    shape[dim] = sum(n for _, _, n in spans)
    src = torch.cat([weight] * len(spans), dim)
    index = torch.tensor(dest, device=weight.device)
    return weight.new_zeros(shape).index_add(dim, index, src), spans


@lru_cache(maxsize=64)
def _gather_index(in_hw: tuple[int, int], out_hw: tuple[int, int], k: int) -> torch.Tensor:
    """Flat index of each output pixel into the stacked (pattern pair, source row, source
    column) outputs of ``conv_upsampled``, row-major."""
    (h, w), (out_h, out_w) = in_hw, out_hw
    (_, row_pat), (col_pats, col_pat) = _patterns(h, out_h, k), _patterns(w, out_w, k)
    src_h = torch.tensor(source_index(h, out_h)).view(-1, 1)
    src_w = torch.tensor(source_index(w, out_w)).view(1, -1)
    pair = torch.tensor(row_pat).view(-1, 1) * len(col_pats) + torch.tensor(col_pat).view(1, -1)
    return ((pair * h + src_h) * w + src_w).flatten()


def conv_upsampled(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   size: tuple[int, int]) -> torch.Tensor:
    """``conv2d(interpolate(x, size, "nearest"), weight, bias, padding=k // 2)`` computed at
    x's resolution (odd square kernel, stride 1; each axis upsampling, see ``upsampling``)."""
    k, (h, w) = weight.shape[-1], x.shape[-2:]
    r = k // 2
    (ph, _), (pw, _) = _patterns(h, size[0], k), _patterns(w, size[1], k)
    xp = F.pad(x, (r, r, r, r))
    folded, spans_h = _fold(weight, ph, 2)
    folded, spans_w = _fold(folded, pw, 3)  # (O, I, rows of all patterns, cols of all)
    outs = []
    for lo_h, row, n_h in spans_h:
        for lo_w, col, n_w in spans_w:
            kern = folded[:, :, row:row + n_h, col:col + n_w]
            part = xp[..., lo_h + r:lo_h + r + h + n_h - 1, lo_w + r:lo_w + r + w + n_w - 1]
            outs.append(F.conv2d(part, kern, bias))
    stacked = torch.stack(outs, dim=2).flatten(2)  # (B, O, pairs * h * w)
    index = _gather_index((h, w), tuple(size), k).to(x.device)
    return stacked.index_select(2, index).view(*x.shape[:-3], weight.shape[0], *size)
