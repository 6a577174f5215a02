"""`fusionlab list [KIND] [PATTERN]`: registered components with their descriptions and papers.

A prefix family (``timm:NAME`` attentions) is listed in full: the names that cannot be used
here come after the others, each with the reason.
"""

from __future__ import annotations

import fnmatch

import click

from fusion_lab.config.weights import NAMED_WEIGHTS, card
from fusion_lab.errors import FusionLabError
from fusion_lab.registries import KINDS, load_plugins


@click.command("list")
@click.argument("kind", required=False)
@click.argument("pattern", required=False)
@click.option("--plugin", "plugins", multiple=True, help="Plugin module or .py file to load.")
def list_cmd(kind: str | None, pattern: str | None, plugins: tuple[str, ...]) -> None:
    """List registered components of KIND (all kinds and the shipped weights if omitted),
    filtered by PATTERN.

    For backbones, PATTERN also lists timm's model names (e.g. 'convnext*').
    """
    from fusion_lab.orchestrate import launchers  # noqa: F401  (registers the built-in ones)

    load_plugins(list(plugins))
    if kind in ("weights", "weight"):
        _list_weights()
        return
    if kind is not None and kind not in KINDS:
        singular = {k.rstrip("s"): k for k in KINDS}
        if kind in singular:
            kind = singular[kind]
        else:
            raise FusionLabError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}, weights")
    for name in [kind] if kind else list(KINDS):
        reg = KINDS[name]
        names = reg.list(pattern)
        click.echo(f"{name}:")
        for n in names:
            paper = reg.paper(n)
            click.echo(f"  {n:<16} {reg.describe(n)}" + (f" [{paper}]" if paper else ""))
        refused = {n: why for n, why in reg.refused().items()
                   if not pattern or fnmatch.fnmatchcase(n, pattern)}
        for n, why in refused.items():  # a family name it knows but cannot use here
            click.echo(f"  {n:<16} (not usable: {why})")
        if pattern and not names and not refused and name != "backbones":
            click.echo(f"  (no {reg.kind} matches {pattern!r})")
        if name == "backbones":
            # here, not at the top: timm's names only when backbones are listed
            from fusion_lab.models.backbones import timm_model_names

            timm_names = timm_model_names(pattern)
            if kind and pattern:
                for n in timm_names:
                    click.echo(f"  {n:<16} timm")
            else:
                click.echo(f"  (any of timm's {len(timm_names)} models with features_only; "
                           "`fusionlab list backbones 'resnet*'` lists them)")
    if kind is None:
        _list_weights()


def _list_weights() -> None:
    """Named weights shipped with fusion_lab (`model.pretrained: NAME`)."""
    click.echo("weights:")
    for name, (_, backbone, about) in NAMED_WEIGHTS.items():
        c = card(name)
        acc = f"; source accuracy {c['source_accuracy']:.1f}%" if c else "; file missing"
        click.echo(f"  {name:<16} for {backbone}: {about}{acc}")
