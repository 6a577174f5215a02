"""`fusionlab table`: paper-style ablation tables from the results store (no torch)."""

from __future__ import annotations

import click


@click.command("table")
@click.argument("studies", nargs=-1)
@click.option("--results", "results", default="results", show_default=True,
              type=click.Path(file_okay=False), help="The results folder.")
@click.option("--metric", default="final", show_default=True,
              help="final (last epoch) | best_val (test acc at the best validation epoch).")
@click.option("--format", "fmt", default="plain", show_default=True,
              help="plain | github | latex | csv | json.")
@click.option("--heads", is_flag=True, help="Add one accuracy column per classifier head.")
@click.option("--pivot", nargs=2, default=None, metavar="ROW COL",
              help="2-D table of mean accuracy; axes: grid axes, label or dotted config keys.")
@click.option("--cost", is_flag=True, help="Join the cost profile from `fusionlab bench`.")
@click.option("--ci", is_flag=True,
              help="Add each Δ's 95% interval and how it was computed (paired/Welch/binomial).")
@click.option("--tag", default=None, metavar="NAME",
              help="The runs made with `fusionlab run --tag NAME` (or --set: scratch), "
                   "results/<study>/tags/NAME/, instead of the study's own.")
@click.option("--attention", is_flag=True,
              help="Join the attention scores of `fusionlab viz RUN --score` (per level).")
def table(studies: tuple[str, ...], results: str, metric: str, fmt: str, heads: bool,
          pivot: tuple[str, str] | None, cost: bool, ci: bool, tag: str | None,
          attention: bool) -> None:
    """Print one table per STUDY (a name, a results/<study> folder or a studies/*.yaml file).

    With no STUDY, every study in the results folder (with --tag: every study that has
    that tag). Without --tag, a line under the tables names the studies' tags.
    """
    from fusion_lab.analysis.table import tables  # pandas is imported only when the command runs

    out = tables(list(studies), results=results, metric=metric, fmt=fmt, heads=heads,
                 pivot=tuple(pivot) if pivot else None, cost=cost, ci=ci, attention=attention, tag=tag)
    click.echo(out.text)
    for warning in out.warnings:
        click.echo(warning, err=True)
