"""`fusionlab export RUN_OR_STUDY --out FILE`: a run's backbone as a weights file."""

from __future__ import annotations

import sys

import click


@click.command("export")
@click.argument("run_or_study")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Weights file to write; its card goes beside it with suffix .json.")
@click.option("--results", default="results", show_default=True,
              type=click.Path(file_okay=False), help="The results folder.")
@click.option("--tag", default=None, metavar="NAME",
              help="A tag of the study (`fusionlab run --tag NAME`, or scratch), "
                   "results/<study>/tags/NAME/.")
def export(run_or_study: str, out: str, results: str, tag: str | None) -> None:
    """Write the backbone of a finished run to a file that `model.pretrained` can name.

    RUN_OR_STUDY: a run folder, a run id (or a unique prefix), or a study name or file with
    exactly one finished run. Beside OUT, OUT.json records the file's SHA-256, the run's
    recipe and its accuracy on its own test split (the source-task accuracy).
    """
    # here, not at the top: `--help` and a usage mistake answer without importing torch
    from fusion_lab.analysis.export import card_text, export_backbone, finished_run
    from fusion_lab.plan.find import find_run, recorded_plugins
    from fusion_lab.registries import load_plugins

    recorded, gone = recorded_plugins(run_or_study, results, tag)
    for line in gone:
        click.echo(line, err=True)
    load_plugins(recorded)  # a run's own plugin components (its backbone may be one)
    run_dir, _ = find_run(run_or_study, results, finished_run, tag)
    card = export_backbone(run_dir, out, command=" ".join(["fusionlab", *sys.argv[1:]]))
    click.echo(card_text(card))
