"""``timm:NAME``: every attention block timm ships, applied per level after fusion.

One adapter, not one class per block: ``timm:NAME`` builds ``timm.layers.get_attn(NAME)``
once per level (``block(channels, **attention_args)``). The names are whatever the
installed timm's ``get_attn`` accepts, read from its own module each time they are asked
for (every string literal of that module that ``get_attn`` turns into a class), so a block
a later timm adds is listed and usable with no change here.

Each name is probed once on a tiny input (16 channels, batch 2, maps of 7x9, 2x3 and 1x1,
training mode, random state saved and restored): a block that cannot be built from its
channels alone or cannot keep a map's shape at any size (e.g. ``bottleneck`` needs a fixed
feature size, ``halo`` sizes divisible by its block) is listed with the reason and refused
by validation in one line. The probe also finds the block's spatial map, if it computes
one: the last submodule output of shape (B, 1, H, W) (CBAM's spatial gate, GCNet's
attention-pooling logits). It is returned as the "sa" mask (so ``fusionlab viz`` and the
attention table treat it like CN-CNN's SA): as it is when it lies in [0, 1], else read as
logits of a softmax over positions (GCNet) and shown relative to its peak.
"""

from __future__ import annotations

import ast
import inspect
import sys
from functools import lru_cache

import torch
from torch import nn

from fusion_lab.errors import ConfigError
from fusion_lab.registries import ATTENTIONS

PREFIX = "timm:"
_PROBE_SIZES = ((7, 9), (2, 3), (1, 1))

# Where each timm block comes from, by class name (a class not here shows timm's module).
PAPERS = {
    "SEModule": "Hu et al., CVPR 2018",
    "EffectiveSEModule": "Lee & Park, CVPR 2020 (CenterMask)",
    "EcaModule": "Wang et al., CVPR 2020",
    "CecaModule": "Wang et al., CVPR 2020 (circular padding, timm)",
    "GatherExcite": "Hu et al., NeurIPS 2018",
    "GlobalContext": "Cao et al., ICCV Workshops 2019",
    "CbamModule": "Woo et al., ECCV 2018",
    "LightCbamModule": "Woo et al., ECCV 2018 (timm's light variant)",
    "CoordAttn": "Hou et al., CVPR 2021",
    "SimpleCoordAttn": "Hou et al., CVPR 2021 (timm's simplified variant)",
    "EfficientLocalAttn": "Xu & Wan, arXiv 2403.01123, 2024",
    "StripAttn": "Hou et al., CVPR 2021 (timm's strip variant)",
    "SelectiveKernel": "Li et al., CVPR 2019",
    "SplitAttn": "Zhang et al., CVPR Workshops 2022 (ResNeSt)",
    "LambdaLayer": "Bello, ICLR 2021",
    "BottleneckAttn": "Srinivas et al., CVPR 2021",
    "HaloAttn": "Vaswani et al., CVPR 2021",
    "NonLocalAttn": "Wang et al., CVPR 2018",
    "BatNonLocalAttn": "Chi et al., ECCV 2020",
}


def _get_attn():
    import timm.layers

    return timm.layers.get_attn  # looked up each time: the installed (or patched) timm's


def _block_class(get_attn, name: str):
    """``get_attn(name)``'s class (None where it refuses the name)."""
    try:
        cls = get_attn(name)
    except Exception:  # timm answers an unknown name with `assert False`
        return None
    return cls if callable(cls) else None


def _class_name(cls) -> str:
    return getattr(getattr(cls, "func", cls), "__name__", str(cls))


@lru_cache(maxsize=4)
def _names_for(get_attn) -> dict[str, str | None]:
    """Every name ``get_attn`` accepts -> None if usable per level, else why not."""
    source = inspect.getsource(sys.modules[get_attn.__module__])
    candidates = {node.value.lower() for node in ast.walk(ast.parse(source))
                  if isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and node.value.isidentifier()}
    found = {}
    for name in sorted(candidates):
        cls = _block_class(get_attn, name)
        if cls is not None:
            found[PREFIX + name] = _probe(cls)[0]
    return found


def timm_attention_names() -> dict[str, str | None]:
    """``timm:NAME`` for every name the installed timm's ``get_attn`` accepts -> None when
    it runs per level, else one line saying why it cannot."""
    return _names_for(_get_attn())


def _probe(cls, **kw) -> tuple[str | None, str | None, bool]:
    """(why the block cannot run per level or None, its spatial map's submodule or None,
    whether that map lies in [0, 1])."""
    seen: list[tuple[str, torch.Tensor]] = []
    spatial, gate = None, True
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.manual_seed(0)
        try:
            block = cls(16, **kw).train()
        except Exception as e:
            return f"{_class_name(cls)}(channels) cannot be built: {_short(e)}", None, gate
        hooks = [m.register_forward_hook(lambda _m, _i, out, name=name: seen.append((name, out)))
                 for name, m in block.named_modules() if name]
        try:
            for h, w in _PROBE_SIZES:
                seen.clear()
                x = torch.randn(2, 16, h, w)
                with torch.no_grad():
                    y = block(x)
                if not torch.is_tensor(y) or y.shape != x.shape:
                    return f"{_class_name(cls)} does not keep a map's shape", None, gate
                if (h, w) == _PROBE_SIZES[0]:
                    maps = [(n, o) for n, o in seen
                            if torch.is_tensor(o) and o.shape == (2, 1, h, w)]
                    if maps:
                        spatial = maps[-1][0]
                        gate = bool(maps[-1][1].min() >= 0 and maps[-1][1].max() <= 1)
        except Exception as e:
            return (f"{_class_name(cls)} fails on a {h}x{w} map ({_short(e)}); it needs "
                    "fixed or divisible map sizes, which per-level attention cannot promise"), None, gate
        finally:
            for hook in hooks:
                hook.remove()
    return None, spatial, gate


def _short(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:120] if text else type(e).__name__


def as_mask(m: torch.Tensor, gate: bool) -> torch.Tensor:
    """A block's (B, 1, H, W) spatial map as a mask in [0, 1]: as it is for a gate (a map
    the probe found in [0, 1]), else softmax over positions (GCNet's attention pooling)
    divided by its peak."""
    if gate:
        return m
    w = torch.softmax(m.flatten(1), dim=1).view_as(m)
    return w / w.flatten(1).amax(dim=1).view(-1, 1, 1, 1)


class TimmAttention(nn.Module):
    """One timm attention block per level, built by ``timm.layers.get_attn``.

    Subclassed once per name by ``resolve`` (``timm_name``, ``masks``, ``spatial``).

    Args:
        channels: channels of each fused map, low level first.
        **block_args: passed to every level's block (e.g. ``rd_ratio`` for ``timm:se``).
    """

    timm_name = ""
    masks: tuple[str, ...] = ()
    spatial: str | None = None  # the submodule whose output is the spatial map
    gate = True  # whether that map is already in [0, 1] (else: logits over positions)

    def __init__(self, channels: list[int], **block_args):
        super().__init__()
        problems = self.check_args(**block_args)
        if problems:
            raise ConfigError(problems)
        cls = _get_attn()(self.timm_name)
        self.blocks = nn.ModuleList(cls(c, **block_args) for c in channels)

    @classmethod
    def check_args(cls, **block_args) -> list[str]:
        """Arguments the timm block does not take (one line, naming those it takes)."""
        block = _get_attn()(cls.timm_name)
        params = inspect.signature(block).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return []
        taken = list(params)[1:]
        return [f"attention '{PREFIX}{cls.timm_name}' ({_class_name(block)}) takes no "
                f"argument {k!r}; it takes: {', '.join(taken) or 'none'}"
                for k in block_args if k not in params or k == next(iter(params))]

    def forward(self, maps: list[torch.Tensor]):
        if self.spatial is None:
            return [block(x) for block, x in zip(self.blocks, maps)], {}
        out, sa = [], []
        for block, x in zip(self.blocks, maps):
            kept: list[torch.Tensor] = []  # the block's spatial map, caught on its way
            hook = block.get_submodule(self.spatial).register_forward_hook(
                lambda _m, _i, o, kept=kept: kept.append(o))
            try:
                out.append(block(x))
            finally:
                hook.remove()
            sa.append(as_mask(kept[-1], self.gate))
        return out, {"sa": sa}


_CLASSES: dict[tuple[int, str], type] = {}


def resolve(full_name: str) -> type:
    """The adapter class for ``timm:NAME`` (the same class each time it is asked for)."""
    get_attn = _get_attn()
    name = full_name[len(PREFIX):]
    key = (id(get_attn), name)
    if key not in _CLASSES:
        block = _block_class(get_attn, name)
        _, spatial, gate = _probe(block)
        own = getattr(block, "func", block).__dict__.get("__doc__")  # not nn.Module's
        doc = inspect.cleandoc(own or "").splitlines()
        about = doc[0].strip(" .'\"") if doc else ""
        _CLASSES[key] = type(f"Timm_{name}", (TimmAttention,), {
            "__module__": __name__,
            "__doc__": f"timm's {_class_name(block)} per level"
                       + (f": {about}" if about else "") + ("; spatial map as 'sa'" if spatial
                                                             else ""),
            "timm_name": name,
            "masks": ("sa",) if spatial else (),
            "spatial": spatial,
            "gate": gate,
            "paper": PAPERS.get(_class_name(block), f"see {getattr(block, '__module__', 'timm')}"),
        })
    return _CLASSES[key]


ATTENTIONS.add_prefix(PREFIX, timm_attention_names, resolve)
