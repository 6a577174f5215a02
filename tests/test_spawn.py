"""Starting processes (``orchestrate.spawn``): exit statuses of children killed by a signal."""

import sys

import pytest

from fusion_lab.orchestrate import spawn


def _py(code: str) -> tuple[list[str], dict]:
    import os

    return [sys.executable, "-c", code], dict(os.environ)


KILL9 = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
TERM = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"


@pytest.mark.parametrize("codes,expected", [
    ([KILL9, "pass"], 137),  # was 0: max(-9, 0)
    (["pass", TERM], 143),
    ([TERM, "raise SystemExit(1)"], 143),
    (["raise SystemExit(3)", "pass"], 3),
    (["pass", "pass"], 0),
], ids=["SIGKILL", "SIGTERM", "SIGTERM and 1", "3", "0"])
def test_a_child_killed_by_a_signal_is_a_failure_128_plus_its_number(codes, expected, capsys):
    assert spawn.run_forwarding([_py(c) for c in codes]) == expected
    err = capsys.readouterr().err
    if expected > 128:
        assert "killed by SIG" in err, err


def test_exit_status_maps_signals_and_the_worst_failure_wins():
    assert spawn.exit_status([0, -9]) == 137
    assert spawn.exit_status([1, -15]) == 143
    assert spawn.exit_status([0, 2]) == 2
    assert spawn.exit_status([]) == 0


def test_a_child_stops_when_its_parent_is_killed_9(tmp_path):
    """What --gpus workers and torchrun's workers do: die_with_parent at their start."""
    import os
    import signal
    import subprocess
    import time

    marker = f"child-of-{tmp_path.name}"
    child = ("import sys, time; from fusion_lab.orchestrate import spawn; "
             "spawn.die_with_parent(); print('ready', flush=True); time.sleep(60)")
    middle = ("import os, sys; from fusion_lab.orchestrate import spawn; "
              f"sys.exit(spawn.run_forwarding([([sys.executable, '-c', {child!r}, "
              f"{marker!r}], dict(os.environ))]))")
    proc = subprocess.Popen([sys.executable, "-c", middle], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 5
        while _alive(marker) and time.time() < deadline:
            time.sleep(0.05)
        assert not _alive(marker), "the child went on after its parent was killed"
    finally:
        for pid in _alive(marker):
            os.kill(pid, signal.SIGKILL)


def _alive(text: str) -> list[int]:
    import os

    out = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            if text.encode() in open(f"/proc/{p}/cmdline", "rb").read() and \
                    open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
                out.append(int(p))
        except OSError:
            pass
    return out
