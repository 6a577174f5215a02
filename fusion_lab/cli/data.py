"""`fusionlab data check NAME [ROOT] [--option k=v ...]`: sizes and unreadable files.

Prints the number of classes, the split sizes (with the val split a study would carve) and
every image that fails to decode; exits with an error when more than ``max_unreadable``
of a split is unreadable, as a run would.
"""

from __future__ import annotations

import click


def _parse_options(pairs: tuple[str, ...]) -> dict:
    import yaml

    from fusion_lab.errors import ConfigError

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option takes key=value, got {pair!r}")
        options[key.strip()] = yaml.safe_load(value) if value else ""
    return options


@click.group()
def data() -> None:
    """Check datasets."""


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
