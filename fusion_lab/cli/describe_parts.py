"""`fusionlab describe --fusion NAME --attention NAME`: a component's own size and cost.

Each named fusion (or attention) is swapped into one preset's model (default: the default
preset, cn_cnn) and the model is built on the meta device (shapes only: ResNet50 at 448 is
counted in a second on a CPU). Printed per component: its paper, its own parameters and
forward GFLOPs (counted on the backbone's real map shapes, batch 1), and the whole model's.
"""

from __future__ import annotations

import click
import torch
from torch.utils.flop_counter import FlopCounterMode

from fusion_lab.config import ModelConfig
from fusion_lab.errors import ConfigError, UnknownComponentError
from fusion_lab.models.assemble import build_model, resolve_parts
from fusion_lab.registries import ATTENTIONS, FUSIONS, PRESETS, load_plugins


def describe_parts(fusions: tuple[str, ...], attentions: tuple[str, ...], preset: str | None,
                   backbone: str, num_classes: int, image_size: int,
                   plugins: list[str], width: int | None = None) -> None:
    """Print one row per named component ('all': every registered one of its kind)."""
    load_plugins(plugins)
    preset = preset or PRESETS.default
    rows = [("fusion", n) for n in _expand(FUSIONS, fusions)]
    rows += [("attention", n) for n in _expand(ATTENTIONS, attentions)]
    base = resolve_parts(ModelConfig(preset=preset, backbone=backbone))
    click.echo(f"{'kind':<10} {'name':<14} {'own params':>11} {'own GFLOPs':>10} "
               f"{'model params':>13} {'GFLOPs':>7}  paper")
    for kind, name in rows:
        extra = {"width": width} if width else {}
        cfg = ModelConfig(preset=preset, backbone=backbone, pretrained=False, **{kind: name},
                          **extra)
        try:
            with torch.device("meta"):
                model = build_model(cfg, num_classes).eval()
        except ConfigError as e:  # e.g. CA's link on one fused level: say so, go on
            click.echo(f"{kind:<10} {name:<14} (does not fit preset {preset}: {e})")
            continue
        own_p, own_f, all_f = _costs(model, kind, image_size)
        reg = FUSIONS if kind == "fusion" else ATTENTIONS
        all_p = sum(p.numel() for p in model.parameters())
        click.echo(f"{kind:<10} {name:<14} {own_p:>11,} {own_f:>10.4f} {all_p:>13,} "
                   f"{all_f:>7.3f}  {reg.paper(name)}")
    click.echo(f"({backbone}, preset {preset}: fusion {base[0]}, attention {base[1]}, head "
               f"{base[2]}; width {width or 'preset'}; {num_classes} classes; FLOPs at {image_size}x{image_size}, batch 1, "
               "2 per multiply-add)")


def _expand(reg, names: tuple[str, ...]) -> list[str]:
    """'all' -> every usable name of the registry; an unknown name -> its one-line error."""
    out: list[str] = []
    for n in names:
        if n == "all":
            out += [m for m in reg.list() if m not in out]
        elif n not in reg:
            raise UnknownComponentError(reg.unknown_message(n))
        elif n not in out:
            out.append(n)
    return out


def _costs(model, kind: str, image_size: int) -> tuple[int, float, float]:
    """(the part's parameters, its GFLOPs, the whole model's GFLOPs), on meta tensors."""
    part = model.fusion if kind == "fusion" else model.attention
    x = torch.zeros(1, 3, image_size, image_size, device="meta")
    with torch.no_grad():
        with FlopCounterMode(display=False) as whole:
            model(x)
        feats = model.backbone(x)
        inputs = feats if kind == "fusion" else model.fusion(feats)
        with FlopCounterMode(display=False) as own:
            part(inputs)
    return (sum(p.numel() for p in part.parameters()), own.get_total_flops() / 1e9,
            whole.get_total_flops() / 1e9)
