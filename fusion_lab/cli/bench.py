"""`fusionlab bench STUDY`: the cost of every variant of a study (writes cost.json)."""

from __future__ import annotations

import click


@click.command("bench")
@click.argument("study")
@click.option("--results", default="results", show_default=True,
              type=click.Path(file_okay=False), help="The results folder (cost.json goes there).")
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--batch-size", type=int, default=None, help="[default: the study's train.batch_size]")
@click.option("--image-size", type=int, default=None, help="[default: the study's train.image_size]")
@click.option("--repeats", type=int, default=5, show_default=True,
              help="Timed rounds over all variants (after one warm-up round); medians.")
@click.option("--num-classes", type=int, default=None,
              help="Classes of the heads, when the dataset is not at hand to count them.")
@click.option("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads).")
@click.option("--no-memory", is_flag=True, help="Skip the peak-memory subprocesses.")
def bench(study: str, results: str, device: str, batch_size: int | None,
          image_size: int | None, repeats: int, num_classes: int | None,
          threads: int | None, no_memory: bool) -> None:
    """Measure parameters, GFLOPs, train/inference images/s and peak memory of each variant.

    STUDY: a study file or a study name (studies/NAME.yaml). Synthetic inputs: no
    dataset is read. Writes RESULTS/<study>/cost.json, shown by `fusionlab table --cost`.
    """
    # here, not at the top: `--help` and a usage mistake answer without importing torch
    import torch

    from fusion_lab import store
    from fusion_lab.analysis.bench import bench_study, format_cost
    from fusion_lab.plan.find import find_study
    from fusion_lab.plan.planning import prepare

    if threads:
        torch.set_num_threads(threads)
    st, runs = prepare(find_study(study, results).require_file())
    cost = bench_study(st, runs, results, device=device, batch_size=batch_size,
                       image_size=image_size, repeats=repeats, classes=num_classes,
                       memory=not no_memory, log=lambda s: click.echo(s, err=True))
    click.echo(format_cost(cost))
    click.echo(f"wrote {store.study_dir(results, st.name) / store.COST_JSON}", err=True)
