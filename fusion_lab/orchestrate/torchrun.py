"""torchrun as ``fusionlab run --nproc`` starts it: the same launcher, minus its tracebacks.

A SIGTERM or SIGINT to torchrun (a scheduler's, or Ctrl-C) makes it stop its processes
and raise; process 0 has already said what happened to the run, so this exits with the
signal's status and says nothing more. A process that failed has printed its own error;
torchrun's table of failed processes is kept, its Python traceback is not.

SIGUSR2 (SLURM's warning before a time limit, sent to every process of the job step) is
ignored here and, inherited, in the training processes: inside a cluster task the task
process above handles it (it stops this torchrun with SIGTERM, then requeues).

This process, and each of its training processes, dies with its parent (SIGTERM, see
``spawn.die_with_parent``): a ``kill -9`` of ``fusionlab run`` or of this torchrun leaves
no process training on.
"""

from __future__ import annotations

import os
import signal
import sys


def main(argv: list[str] | None = None) -> None:
    if hasattr(signal, "SIGUSR2"):
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    # here, after SIGUSR2 is ignored: nothing may run before that (a SLURM warning signal would kill this process)
    from fusion_lab.orchestrate.spawn import PARENT_ENV, die_with_parent

    die_with_parent()
    os.environ[PARENT_ENV] = str(os.getpid())  # the training processes die with this one
    # here: torch after this process has its parent-death signal and its parent's pid set
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(argv)
    except SignalException as e:
        sys.exit(128 + int(e.sigval))
    except ChildFailedError as e:
        print(e.format_msg(), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
