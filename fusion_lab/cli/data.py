"""`fusionlab data check|cache NAME [ROOT] ...`: inspect a dataset, or write a resized copy.

``check`` prints the number of classes, the split sizes (with the val split a study would
carve) and every image that fails to decode; exits with an error when more than
``max_unreadable`` of a split is unreadable, as a run would. ``cache`` writes the images
resized to ``--size`` squares once (``fusion_lab.data.cache``).
"""

from __future__ import annotations

import time

import click
import yaml

from fusion_lab.errors import ConfigError


def _parse_options(pairs: tuple[str, ...]) -> dict:

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option takes key=value, got {pair!r}")
        options[key.strip()] = yaml.safe_load(value) if value else ""
    return options


@click.group()
def data() -> None:
    """Check datasets, or write a pre-resized copy."""


@data.command("check")
@click.argument("name")
@click.argument("root", required=False)
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="A dataset option (repeatable), e.g. -o level=family.")
@click.option("--val-fraction", type=float, default=0.0, show_default=True,
              help="Also show the sizes of this val split.")
@click.option("--no-decode", is_flag=True, help="Only read the annotations; skip decoding.")
@click.option("--threads", type=int, default=4, show_default=True, help="Decoding threads.")
def check_cmd(name: str, root: str | None, options: tuple[str, ...], val_fraction: float,
              no_decode: bool, threads: int) -> None:
    """Print the classes, split sizes and unreadable images of dataset NAME at ROOT."""
    # here, not at the top: `--help` and a usage mistake answer without importing torch
    from fusion_lab.data import open_source
    from fusion_lab.data.check import check
    from fusion_lab.data.sampling import stratified_split
    from fusion_lab.errors import DatasetError

    source, max_unreadable = open_source(name, root, _parse_options(options))
    report = check(name, source, threads, decode=not no_decode,
                   progress=lambda n: click.echo(f"  decoded {n} images", err=True))
    click.echo(f"dataset:  {name}" + (f" ({root})" if root else ""))
    click.echo(f"classes:  {report.num_classes}")
    if val_fraction > 0:
        tr, va = stratified_split([y for _, y in source.train], val_fraction, 0)
        click.echo(f"train:    {len(tr)} (+ val {len(va)} at val_fraction={val_fraction:g})")
    else:
        click.echo(f"train:    {report.train_size}")
    click.echo(f"test:     {report.test_size}")
    if no_decode:
        return
    bad = [item for items in report.unreadable.values() for item in items]
    click.echo(f"unreadable: {len(bad)} of {report.scanned}")
    for item in bad:
        click.echo(f"  {item}")
    over = report.too_many(max_unreadable)
    if over:
        counts = ", ".join(f"{len(report.unreadable[s])} in {s}" for s in over)
        raise DatasetError(
            f"dataset {name!r}: too many unreadable images ({counts}), more than "
            f"max_unreadable={max_unreadable:g} of the split; a run would stop"
        )


@data.command("cache")
@click.argument("name")
@click.argument("root")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--size", type=int, default=600, show_default=True,
              help="Side of the resized squares: the runs' train.resize.")
@click.option("--quality", type=click.IntRange(50, 100), default=95, show_default=True,
              help="JPEG quality of the cached images.")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="A dataset option (repeatable), e.g. -o remove_banner=true.")
@click.option("--threads", type=int, default=2, show_default=True, help="Worker threads.")
def cache_cmd(name: str, root: str, out: str, size: int, quality: int,
              options: tuple[str, ...], threads: int) -> None:
    """Write dataset NAME at ROOT to OUT, every image resized to SIZE x SIZE (JPEG).

    Train on it with dataset: {name: cache, root: OUT} and train.resize equal to --size.
    """
    # here, not at the top: `--help` and a usage mistake answer without importing torch
    from fusion_lab.data import open_source
    from fusion_lab.data.cache import write_cache
    from fusion_lab.errors import DatasetError

    if size < 16:
        raise DatasetError(f"--size must be at least 16, got {size}")
    opts = _parse_options(options)
    source, _ = open_source(name, root, opts)
    start = time.perf_counter()
    report = write_cache(source, name, opts, out, size, quality, threads,
                         progress=lambda n: click.echo(f"  wrote {n} images", err=True))
    seconds = time.perf_counter() - start
    click.echo(f"cache:      {out} ({name} at {size}x{size}, JPEG quality {quality})")
    click.echo(f"images:     {report.images} in {seconds:.1f} s")
    click.echo(f"disk:       {report.bytes_written / 1e6:.1f} MB "
               f"({report.bytes_written / max(1, report.images) / 1e3:.1f} kB per image)")
    click.echo(f"unreadable: {len(report.unreadable)}")
    for item in report.unreadable:
        click.echo(f"  {item}")
    click.echo(f"use it:     dataset: {{name: cache, root: {out}}} with train.resize: {size}")
