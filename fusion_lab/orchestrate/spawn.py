"""The one place that starts processes: ``fusionlab run`` in one worker process per GPU
(``--gpus``) or on N DDP processes under torchrun (``--nproc``, a cluster task's
``nproc=N``). Every such command line is built by ``fusionlab_command``; ``run_forwarding``
starts the commands, passes a SIGTERM on to them while they run and returns their worst
exit status.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import click

from fusion_lab import store
from fusion_lab.errors import FusionLabError


def fusionlab_command(study_file: Any, overrides: list[str], results: Any, device: str,
                      progress: str, lease_s: float, fail_fast: bool = False,
                      retry_failed: bool = False, only: list[str] | None = None) -> list[str]:
    """The arguments of ``fusionlab run`` for a child process (no table: the parent prints
    it; ``only``: just these run ids, as a cluster task that trains one run asks)."""
    cmd = ["run", str(study_file), "--results", str(results), "--device", device,
           "--no-table", "--progress", progress, "--lease", str(lease_s)]
    for o in overrides:
        cmd += ["--set", o]
    for run_id in only or []:
        cmd += ["--only", run_id]
    cmd += ["--fail-fast"] if fail_fast else []
    cmd += ["--retry-failed"] if retry_failed else []
    return cmd


def torchrun_command(nproc: int, study_file: Any, overrides: list[str], results: Any,
                     device: str, progress: str, lease_s: float, fail_fast: bool = False,
                     retry_failed: bool = False, only: list[str] | None = None) -> list[str]:
    """``fusionlab run`` on ``nproc`` processes of this machine under torchrun."""
    return [sys.executable, "-m", "fusion_lab.orchestrate.torchrun", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "fusion_lab",
            *fusionlab_command(study_file, overrides, results, device, progress, lease_s,
                               fail_fast, retry_failed, only)]


def torchrun_env() -> dict[str, str]:
    """The environment of torchrun's processes: one thread each unless told otherwise."""
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def start_torchrun(nproc: int, study_file: str, overrides: list[str], results: Any,
                   device: str, fail_fast: bool, retry_failed: bool, progress: str,
                   lease_s: float, only: list[str] | None = None) -> int:
    """Run ``fusionlab run`` in ``nproc`` processes under torchrun; their exit status.

    On CUDA each process takes one GPU, so ``nproc`` may not exceed the GPUs present.
    """
    import torch  # here, not at the top: the CLI's start stays torch-free

    if device != "cpu" and torch.cuda.is_available() and nproc > torch.cuda.device_count():
        raise FusionLabError(f"--nproc {nproc} asks for more processes than the "
                             f"{torch.cuda.device_count()} GPU(s) present (one GPU each)")
    if device == "cuda" and not torch.cuda.is_available():
        raise FusionLabError("--device cuda was asked for, but torch sees no CUDA device; "
                             "use --device cpu (gloo) or auto")
    cmd = torchrun_command(nproc, study_file, overrides, results, device, progress, lease_s,
                           fail_fast=fail_fast, retry_failed=retry_failed, only=only)
    return run_forwarding([(cmd, torchrun_env())])  # a SIGTERM reaches torchrun and the run


def launch_workers(study_path: str, overrides: list[str], results: Path, gpus: list[str],
                   fail_fast: bool, retry_failed: bool, lease_s: float = store.LEASE_S,
                   device: str = "cuda") -> int:
    """One worker process per GPU, each with its own CUDA_VISIBLE_DEVICES.

    The workers share the results folder; claims keep them off each other's runs. A
    SIGTERM to this process is passed on to the workers, which record their runs as
    interrupted.
    """
    cmds = []
    for gpu in gpus:
        cmd = [sys.executable, "-m", "fusion_lab",
               *fusionlab_command(study_path, overrides, results, device, "plain", lease_s,
                                  fail_fast, retry_failed)]
        click.echo(f"worker on GPU {gpu}: started", err=True)
        cmds.append((cmd, {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}))
    return run_forwarding(cmds)


def run_forwarding(cmds: list[tuple[list[str], dict]]) -> int:
    """Start the commands (each with its environment), wait for all; their worst exit status.

    A SIGTERM to this process is passed on to them while they run.
    """
    procs: list[subprocess.Popen] = []

    def forward(signum: int, frame) -> None:
        signal_children(signum)

    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, forward) if main_thread else None
    try:
        for cmd, env in cmds:
            procs.append(subprocess.Popen(cmd, env=env))
            _CHILDREN.append(procs[-1])
        codes = [p.wait() for p in procs]
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
        for p in procs:
            if p in _CHILDREN:
                _CHILDREN.remove(p)
    return max(codes) if codes else 0


_CHILDREN: list[subprocess.Popen] = []  # what run_forwarding started and waits for


def signal_children(signum: int) -> None:
    """Send ``signum`` to the commands ``run_forwarding`` is running (safe in a handler)."""
    for p in list(_CHILDREN):
        if p.poll() is None:
            p.send_signal(signum)
