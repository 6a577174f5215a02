"""`fusionlab plot STUDY`: learning curves and the final comparison of a study as a PNG (no torch)."""

from __future__ import annotations

import click

from fusion_lab.analysis.plot import plot_study
from fusion_lab.analysis.tuning_plot import plot_tuning
from fusion_lab.plan.find import find_study


@click.command("plot")
@click.argument("study")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="PNG file to write [default: plot-<study>.png].")
@click.option("--results", default="results", show_default=True,
              type=click.Path(file_okay=False), help="The results folder.")
@click.option("--metric", default="final", show_default=True,
              help="final | best_val: which accuracy the bar panel compares.")
@click.option("--tuning", is_flag=True,
              help="A tuned study: expected best validation accuracy against the number "
                   "of trials (Dodge et al. 2019), the trials as points.")
def plot(study: str, out: str | None, results: str, metric: str, tuning: bool) -> None:
    """Draw test accuracy and train loss per epoch (mean ± sd over seeds, one line per row)
    and the final Δs with their 95% intervals; one panel row per grid cell.

    STUDY: a study name, a results/<study> folder or a studies/*.yaml file.
    """
    study_dir = find_study(study, results).require_results()
    if tuning:
        click.echo(str(plot_tuning(study_dir, out or f"tuning-{study_dir.name}.png")))
        return
    path, notes = plot_study(study_dir, out or f"plot-{study_dir.name}.png", metric)
    for note in notes:
        click.echo(note, err=True)
    click.echo(str(path))
