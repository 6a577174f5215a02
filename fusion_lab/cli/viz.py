"""`fusionlab viz RUN_OR_STUDY`: draw Figure 3 (LH maps and SA masks) of a trained run."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("viz")
@click.argument("run_or_study")
@click.option("--images", "n_images", default=4, show_default=True, type=int,
              help="Test images to draw, one row each.")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="PNG file to write [default: figure3-<study>-<run id>.png].")
@click.option("--results", default="results", show_default=True,
              type=click.Path(file_okay=False), help="The results folder.")
@click.option("--tag", default=None, metavar="NAME",
              help="A tag of the study (`fusionlab run --tag NAME`, or scratch), "
                   "results/<study>/tags/NAME/.")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE_OR_FILE",
              help="Import a plugin first (the plugin files a run was trained with are "
                   "imported without it, from the run's summary).")
@click.option("--score", is_flag=True,
              help="Score the SA masks (pointing game, energy share) on the test split "
                   "instead of drawing; prints them and writes attention_<weights>.json.")
@click.option("--limit", default=None, type=int,
              help="With --score: this many test images, evenly spaced [default: all].")
@click.option("--weights", default="last", show_default=True,
              type=click.Choice(["last", "best"]),
              help="last epoch (checkpoint.pt) or best validation epoch (best.pt).")
def viz(run_or_study: str, n_images: int, out: str | None, results: str, tag: str | None,
        plugins: tuple[str, ...], score: bool, limit: int | None, weights: str) -> None:
    """Draw the LH pathway's maps and the SA masks of a trained run for a few test images,
    or with --score, score the masks against where the bird and its parts are.

    RUN_OR_STUDY: a run folder, a run id (or a unique prefix of one), or a study (a study
    name, a results/<study> folder or a studies/*.yaml file; then its CN-CNN-like run: the
    last row with spatial attention). With --tag, among the runs of that tag of the study.
    """
    # here, not at the top: `--help` and a usage mistake answer without importing torch
    from fusion_lab.maps.viz import figure3, study_run
    from fusion_lab.plan.find import find_run, recorded_plugins
    from fusion_lab.registries import load_plugins

    recorded, gone = recorded_plugins(run_or_study, results, tag)
    for line in gone:
        click.echo(line, err=True)
    load_plugins(list(plugins) + recorded)
    run_dir, picked = find_run(run_or_study, results, study_run, tag)
    if picked:
        click.echo(picked, err=True)
    if score:
        # here, not at the top: `--help` and a usage mistake answer without importing torch
        from fusion_lab.maps.viz_score import score_run

        _, lines = score_run(run_dir, weights, limit)
        click.echo("\n".join(lines))
        return
    if limit is not None:
        click.echo("--limit applies to --score only; ignored", err=True)
    if out is None:
        out = f"figure3-{Path(run_dir).parent.name}-{Path(run_dir).name[:8]}.png"
    path, notes = figure3(run_dir, out, n_images, weights=weights)
    for note in notes:
        click.echo(note, err=True)
    click.echo(str(path))
