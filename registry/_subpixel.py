"""A convolution of a nearest-upsampled map, computed at the map's own resolution.

Nearest upsampling copies source pixel ``idx[i]`` to output position ``i`` (per axis), so
the ``k`` taps of a ``k x k`` convolution (stride 1, padding ``k // 2``) centred on output
``i`` read source pixels ``idx[i + a]``, ``a = -r..r``: only a few distinct ones. Output
positions whose taps land on the same source offsets (their *pattern*; for an integer
factor ``s``, the ``s`` phases, several sharing one pattern) are one small convolution at
the source's resolution, with the weights of the taps that land on the same source pixel
summed (a sub-pixel decomposition). Each pattern pair (rows x columns) is one conv whose
kernel is cropped to the offsets it uses; one gather assembles the output.

Where both axes grow by one integer factor ``s`` (F5 -> F3 x4, F4 -> F3 x2 on even
sizes), ``conv_shuffled`` does it with ONE conv over the features and a ``pixel_shuffle``
instead: x2 folds the 3x3 weight into 4 phase kernels of 2x2 (16 taps per source pixel
instead of 36 per 4 outputs); x4 runs the 9 taps as a 1x1 conv and adds them into the 16
phases by a constant 0/1 conv per gate channel (9 taps per source pixel over the input
channels, then 16 x 2x2 x 9 one-channel MACs, instead of 144 per 16 outputs). Zeros in
the embedded kernels and one extra border group per axis are computed (and counted). The
general path above (``conv_patterns``) serves other ratios. Same parameters; the result
equals ``conv2d(interpolate(x, size, mode="nearest"), w, b, padding=k // 2)`` up to float
rounding (the summed taps change the order of the additions).
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
    x's resolution (odd square kernel, stride 1; each axis upsampling, see ``upsampling``):
    one conv and a pixel shuffle where both axes grow by one integer factor
    (``conv_shuffled``), else one small conv per pattern pair and a gather."""
    (h, w), (out_h, out_w) = x.shape[-2:], size
    s = integer_factor(h, out_h)
    if s > 1 and s == integer_factor(w, out_w):
        return conv_shuffled(x, weight, bias, s)
    return conv_patterns(x, weight, bias, size)


@lru_cache(maxsize=64)
def integer_factor(n_in: int, n_out: int) -> int:
    """``s`` where a nearest resize from n_in to n_out copies each source pixel to ``s``
    consecutive positions (``idx[i] == i // s``, checked against torch's rounding); else 0."""
    s = n_out // n_in
    ok = s >= 1 and n_out == s * n_in and source_index(n_in, n_out) == tuple(
        i // s for i in range(n_out))
    return s if ok else 0


@lru_cache(maxsize=16)
def shuffle_plan(s: int, k: int) -> tuple[int, int, int]:
    """Per axis, for factor ``s`` and kernel ``k``: ``(t, lo, m)``. Output positions are
    grouped ``s * p + t .. s * p + t + s - 1`` (one group per source position ``p``, plus
    one before the first when ``t > 0``); a group's taps read source pixels
    ``p + lo .. p + lo + m - 1``. ``t`` is chosen to make the common window ``m`` smallest
    (k = 3: m = 2, t = 1 for s = 2 and s = 4; ties: the smallest t)."""
    r = k // 2
    def window(t: int) -> tuple[int, int]:  # (m, lo)
        lo = (t - r) // s
        return (t + s - 1 + r) // s - lo + 1, lo
    t = min(range(s), key=lambda t: (window(t)[0], t))
    m, lo = window(t)
    return t, lo, m


@lru_cache(maxsize=16)
def tap_matrix(s: int, k: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The constant 0/1 map from a ``k x k`` kernel's taps to the ``s * s`` phase kernels,
    ``(s * m * s * m, k * k)``, rows ordered (phase row, window row, phase col, window col):
    each phase kernel holds, at each window offset, the sum of the taps that land there."""
    t, lo, m = shuffle_plan(s, k)
    axis = torch.zeros(s * m, k, dtype=torch.float64)
    for q in range(s):
        for a in range(k):  # tap a of output s * p + t + q reads p + (t + q + a - r) // s
            axis[q * m + (t + q + a - k // 2) // s - lo, a] = 1.0
    return torch.kron(axis, axis).to(dtype=dtype, device=device)


def folds_weight(s: int, k: int) -> bool:
    """Whether ``conv_shuffled`` folds the weight into ``s * s`` phase kernels (each
    ``m x m``: ``s * s * m * m`` taps per source pixel) rather than running the ``k * k``
    taps first. Measured on a 2-core CPU (docs/performance.md): folding wins at s = 2,
    k = 3 (16 taps vs 9) and loses at s = 4 (64 vs 9), so it folds below twice k * k."""
    m = shuffle_plan(s, k)[2]
    return s * s * m * m < 2 * k * k


def conv_shuffled(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  s: int) -> torch.Tensor:
    """``conv2d(interpolate(x, scale_factor=s, "nearest"), weight, bias, padding=k // 2)``
    at x's resolution, ending in ``pixel_shuffle(s)`` and a crop. Groups of ``s`` outputs
    per axis read an ``m``-pixel source window (``shuffle_plan``), so:
    - folded (``folds_weight``): ONE conv whose output channels are the ``s * s`` phase
      kernels (``m x m``, zeros where a phase reads fewer source pixels), a linear map of
      ``weight`` (``tap_matrix``, so the gradient reaches ``weight``) — the classic
      sub-pixel convolution;
    - taps first: ONE 1x1 conv with ``k * k * O`` outputs (each tap's weight), then a
      constant 0/1 ``m x m`` conv per output channel (``tap_matrix`` again) that adds the
      taps into the ``s * s`` phases; the bias goes on the centre tap (every output sums
      exactly one, never from the padding)."""
    (o, i, k, _), (h, w) = weight.shape, x.shape[-2:]
    t, lo, m = shuffle_plan(s, k)
    first = -1 if t > 0 else 0  # first group: p = -1 covers outputs t - s .. t - 1
    pad = (-(first + lo), m - 1 + lo)  # zeros before / after the source, per axis
    taps = tap_matrix(s, k, weight.dtype, weight.device)  # (s m s m, k k)
    if folds_weight(s, k):
        folded = weight.reshape(o * i, k * k) @ taps.T
        kernel = folded.view(o, i, s, m, s, m).permute(0, 2, 4, 1, 3, 5)
        phase_bias = None if bias is None else bias.repeat_interleave(s * s)
        y = _conv_padded(x, kernel.reshape(o * s * s, i, m, m), phase_bias, pad)
    else:
        centre = (k * k) // 2
        tap_bias = None if bias is None else F.pad(bias.view(o, 1), (centre, centre)).flatten()
        z = F.conv2d(x, weight.permute(0, 2, 3, 1).reshape(o * k * k, i, 1, 1), tap_bias)
        shift = taps.view(s, m, s, m, k * k).permute(0, 2, 4, 1, 3).reshape(s * s, k * k, m, m)
        y = _conv_padded(z.view(-1, k * k, h, w), shift, None, pad)
        y = y.view(*x.shape[:-3], o * s * s, *y.shape[-2:])
    c0 = -(s * first + t)  # shuffled position of output 0
    return F.pixel_shuffle(y, s)[..., c0:c0 + s * h, c0:c0 + s * w]


def _conv_padded(x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor | None,
                 pad: tuple[int, int]) -> torch.Tensor:
    """``conv2d`` of x zero-padded by ``pad`` (before, after) on both spatial axes."""
    if pad[0] == pad[1] >= 0:
        return F.conv2d(x, kernel, bias, padding=pad[0])
    return F.conv2d(F.pad(x, (pad[0], pad[1], pad[0], pad[1])), kernel, bias)


def conv_patterns(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  size: tuple[int, int]) -> torch.Tensor:
    """``conv_upsampled`` for any upsampling resize: one conv per pattern pair, each with
    its kernel cropped to the source offsets it uses, and one gather."""
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
