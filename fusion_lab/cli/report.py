"""`fusionlab report STUDY`: one self-contained HTML page of a study (no torch unless it
draws Figure 3)."""

from __future__ import annotations

import click

from fusion_lab.analysis.report import write_report
from fusion_lab.plan.find import find_study
from fusion_lab.registries import load_plugins


@click.command("report")
@click.argument("study")
@click.option("--results", default="results", show_default=True,
              type=click.Path(file_okay=False), help="The results folder.")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="HTML file to write [default: results/<study>/report.html].")
@click.option("--tag", default=None, metavar="NAME",
              help="A tag of the study (`fusionlab run --tag NAME`, or scratch), "
                   "results/<study>/tags/NAME/.")
@click.option("--metric", default="final", show_default=True,
              help="final | best_val: which accuracy the table and the bars show.")
@click.option("--no-figures", is_flag=True,
              help="Tables only: no learning curves, no Figure 3 drawn.")
@click.option("--figure3", "figure3_png", default=None, type=click.Path(dir_okay=False),
              help="Inline this Figure 3 PNG (from `fusionlab viz`) instead of drawing one.")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE_OR_FILE",
              help="Import a plugin first (to draw Figure 3 of a run whose plugin file "
                   "is no longer where its summary.json says).")
def report(study: str, results: str, out: str | None, tag: str | None, metric: str,
           no_figures: bool,
           figure3_png: str | None, plugins: tuple[str, ...]) -> None:
    """Write one HTML file holding the study's table (Δs with their intervals, notes), its
    learning curves and Δ bars, Figure 3 and its scores (where runs were scored with `viz
    --score`), the cost profile, and per run its status, provenance and config. Runs not
    done are named in a banner at the top. The file needs no network to view.

    STUDY: a study name, a results/<study> folder or a studies/*.yaml file (with --tag:
    that tag of it; the page goes to results/<study>/tags/<tag>/report.html).
    """
    if plugins:
        load_plugins(list(plugins))
    study_dir = find_study(study, results, tag).require_results()
    path, notes = write_report(study_dir, out, metric=metric, figures=not no_figures,
                               figure3_png=figure3_png)
    for note in notes:
        click.echo(note if note.startswith("warning:") else f"warning: {note}", err=True)
    click.echo(str(path))
