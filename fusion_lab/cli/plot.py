"""`fusionlab plot STUDY`: learning curves and the final comparison of a study as a PNG (no torch)."""

from __future__ import annotations

import click

from fusion_lab.analysis.plot import plot_study
from fusion_lab.analysis.tuning_plot import plot_tuning
from fusion_lab.plan.find import find_study


@click.command("plot")
@click.argument("study")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="PNG file to write [default: plot-<study>.png, plot-<study>-<tag>.png].")
@click.option("--results", default="results", show_default=True,
              type=click.Path(file_okay=False), help="The results folder.")
@click.option("--tag", default=None, metavar="NAME",
              help="A tag of the study (`fusionlab run --tag NAME`, or scratch), "
                   "results/<study>/tags/NAME/.")
@click.option("--metric", default="final", show_default=True,
              help="final | best_val: which accuracy the bar panel compares.")
@click.option("--tuning", is_flag=True,
              help="A tuned study: expected best validation accuracy against the number "
                   "of trials (Dodge et al. 2019), the trials as points.")
def plot(study: str, out: str | None, results: str, tag: str | None, metric: str,
         tuning: bool) -> None:
    """Draw test accuracy and train loss per epoch (mean ± sd over seeds, one line per row)
    and the final Δs with their 95% intervals; one panel row per grid cell.

    STUDY: a study name, a results/<study> folder or a studies/*.yaml file (with --tag:
    that tag of it).
    """
    ref = find_study(study, results, tag)
    study_dir = ref.require_results()
    name = f"{ref.name}-{tag}" if tag else study_dir.name
    if tuning:
        click.echo(str(plot_tuning(study_dir, out or f"tuning-{name}.png")))
        return
    path, notes = plot_study(study_dir, out or f"plot-{name}.png", metric)
    for note in notes:
        click.echo(note, err=True)
    click.echo(str(path))
