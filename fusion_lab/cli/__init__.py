"""The `fusionlab` command: a thin click layer over the library, one command per file. The
top layer: it may import every package; nothing imports it.

Subcommands are imported only when invoked, so `fusionlab table` never imports torch.
A ``FusionLabError`` becomes one line on stderr and exit status 2; a Ctrl-C exits 130, a
SIGTERM while a run trains 143 (the run is recorded as interrupted).
"""

from __future__ import annotations

import importlib
import sys
import warnings

import click

from fusion_lab import __version__
from fusion_lab.errors import FusionLabError, FusionLabWarning
from fusion_lab.store.lease import RunInterrupted

# name -> (module, attribute, one-line help)
COMMANDS = {
    "run": ("fusion_lab.cli.run", "run", "Train every missing run of a study."),
    "table": ("fusion_lab.cli.table", "table", "Print paper-style ablation tables."),
    "list": ("fusion_lab.cli.list_cmd", "list_cmd", "List registered components."),
    "describe": ("fusion_lab.cli.describe", "describe", "Build models and print their size."),
    "data": ("fusion_lab.cli.data", "data", "Check datasets, or write a pre-resized copy."),
    "viz": ("fusion_lab.cli.viz", "viz", "Draw Figure 3 maps of a trained run."),
    "plot": ("fusion_lab.cli.plot", "plot", "Draw a study's learning curves and Δs as a PNG."),
    "bench": ("fusion_lab.cli.bench", "bench", "Measure the cost of a study's variants."),
    "export": ("fusion_lab.cli.export", "export", "Write a run's backbone as a weights file."),
    "report": ("fusion_lab.cli.report", "report", "Write a study as one self-contained HTML page."),
    "config": ("fusion_lab.cli.config_cmd", "config_cmd",
               "Show every run's config, size and estimated time, before training."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="fusionlab")
def cli() -> None:
    """fusion_lab: ablation studies of multi-layer feature fusion for FGVC."""


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """FusionLabWarning as one `warning: ...` line on stderr; others as Python shows them."""
    if issubclass(category, FusionLabWarning):
        click.echo(f"warning: {message}", err=True)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def main(argv: list[str] | None = None) -> None:
    warnings.showwarning = _show_warning
    try:
        cli.main(args=argv, prog_name="fusionlab", standalone_mode=False)
    except FusionLabError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:  # a usage mistake: click's own one-message form
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except BaseException as e:
        if not isinstance(e, RunInterrupted):
            raise
        click.echo(f"{e}: the run is recorded as interrupted; rerun to resume it", err=True)
        sys.exit(128 + e.signum)


if __name__ == "__main__":
    main()
