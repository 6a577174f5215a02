"""`fusionlab describe`: build models and print their structure, size and cost."""

from __future__ import annotations

import click

from fusion_lab.config import ModelConfig
from fusion_lab.registries import PRESETS, load_plugins

BATCH = 16  # the released code's test batch on CUB and Aircraft


@click.command("describe")
@click.argument("presets", nargs=-1)
@click.option("--backbone", default="resnet50", show_default=True)
@click.option("--classes", "num_classes", default=200, show_default=True, type=int)
@click.option("--image-size", default=448, show_default=True, type=int)
@click.option("--flops/--no-flops", default=True, help="Count forward FLOPs (batch 1).")
@click.option("--plugin", "plugins", multiple=True, help="Plugin module or .py file to load.")
@click.option("--fusion", "fusions", multiple=True,
              help="Describe this fusion instead of presets (repeatable; 'all': every one).")
@click.option("--attention", "attentions", multiple=True,
              help="Describe this attention instead of presets (repeatable; 'all': every one).")
@click.option("--width", type=int, default=None,
              help="Fused channels with --fusion/--attention (default: the preset's).")
def describe(presets: tuple[str, ...], backbone: str, num_classes: int, image_size: int,
             flops: bool, plugins: tuple[str, ...], fusions: tuple[str, ...],
             attentions: tuple[str, ...], width: int | None) -> None:
    """Build PRESETS (default: every registered preset, plugins' included, in the order they
    were registered) and print parameters and GFLOPs. A study file instead of presets: each
    of its rows' models as that study builds them (backbone, classes, image size).

    With --fusion/--attention: each component swapped into the first PRESET (default
    cn_cnn), with its own parameters and GFLOPs beside the whole model's."""
    # here, not at the top: `--help` and a usage mistake answer without importing torch
    import torch

    from fusion_lab.cli.describe_parts import describe_parts
    from fusion_lab.models.assemble import build_model, count_parameters, resolve_parts
    from fusion_lab.models.profile import image_gflops

    if fusions or attentions:
        describe_parts(fusions, attentions, presets[0] if presets else None, backbone,
                       num_classes, image_size, list(plugins), width)
        return
    if len(presets) == 1 and presets[0].endswith((".yaml", ".yml")):
        _describe_study(presets[0], flops)
        return

    load_plugins(list(plugins))  # and the catalogue
    presets = presets or tuple(PRESETS.in_order())
    click.echo(f"{'preset':<16} {'fusion':<9} {'attention':<9} {'head':<12} "
               f"{'params':>12} {'GFLOPs':>8}  heads")
    notes = []
    for preset in presets:
        cfg = ModelConfig(preset=preset, backbone=backbone)
        model = build_model(cfg, num_classes).eval()
        fusion, attention, head = resolve_parts(cfg)
        gf = f"{image_gflops(model, image_size, BATCH):>8.2f}" if flops else f"{'-':>8}"
        mark = "*" if flops and model.batch_dependent else " "
        if mark == "*":
            notes.append(f"* {preset}: per image in a batch of {BATCH}; its predictions "
                         "depend on the batch (ConvLSTM over the minibatch)")
        with torch.no_grad():
            heads = list(model(torch.zeros(2, 3, 64, 64))["logits"])
        click.echo(f"{preset:<16} {fusion:<9} {attention:<9} {head:<12} "
                   f"{count_parameters(model):>12,} {gf}{mark} {','.join(heads)}")
    click.echo(f"({backbone}, {num_classes} classes, " + (
        f"FLOPs at {image_size}x{image_size}, batch 1, 2 per multiply-add)" if flops
        else "FLOPs not counted: --no-flops)"))
    for note in notes:
        click.echo(note)


def _describe_study(study_file: str, flops: bool) -> None:
    """One line per row of a study: its model's parts, parameters and GFLOPs at the row's
    own image size and number of classes (the study validated first, as `run` does)."""
    # here, not at the top: `--help` and a usage mistake answer without importing torch
    from fusion_lab.analysis.bench import num_classes
    from fusion_lab.models.assemble import build_model, count_parameters
    from fusion_lab.models.profile import image_gflops
    from fusion_lab.plan.planning import prepare

    study, runs = prepare(study_file)
    rows = {r.group_id: r for r in reversed(runs)}  # one run per row, the first seed's
    width = max(len(r.display) for r in rows.values())
    click.echo(f"{'row':<{width}} {'fusion':<9} {'attention':<9} {'head':<12} "
               f"{'params':>12} {'GFLOPs':>8}  at")
    for r in sorted(rows.values(), key=runs.index):
        m, t = r.config.model, r.config.train
        model = build_model(m, num_classes(r.config)).eval()
        gf = f"{image_gflops(model, t.image_size, BATCH):>8.2f}" if flops else f"{'-':>8}"
        click.echo(f"{r.display:<{width}} {m.fusion:<9} {m.attention:<9} {m.head:<12} "
                   f"{count_parameters(model):>12,} {gf}  {m.backbone}, "
                   f"{t.image_size}x{t.image_size}")
    click.echo(f"(study {study.name}: {len(rows)} rows; FLOPs per image, 2 per multiply-add)")
