"""Helper for tests that go through the command line as a user types it."""

from __future__ import annotations


def run_cli(args, capsys):
    """(exit code, stdout, stderr) of one `fusionlab` command."""
    from fusion_lab.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
