"""scripts/offline_install.sh installs fusion_lab with no index, as on the GPU machine.

The GPU machine has python3 with torch, torchvision, timm, ... setuptools and wheel
preinstalled and no internet. This test builds that situation: a throw-away venv made with
``--system-site-packages`` from the base interpreter (which has setuptools and wheel), this
environment's packages made visible through a .pth file (the "preinstalled" torch & co), and
pip forbidden to reach any index. The install must succeed, and the command it replaced
(``pip install -e . --no-deps``, with build isolation) must fail there, or this test would
not be testing the offline case.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _interpreter_with_build_tools() -> str | None:
    """This Python's base interpreter, or the system's of the same version, with
    setuptools and wheel installed (as the GPU machine's python3 has them)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    check = f"import sys, setuptools, wheel; assert sys.version.startswith('{version}.')"
    for base in (getattr(sys, "_base_executable", sys.executable), "/usr/bin/python3"):
        if Path(base).exists() and subprocess.run([base, "-c", check],
                                                  capture_output=True).returncode == 0:
            return base
    return None


@pytest.mark.slow
def test_offline_install_into_a_system_site_packages_venv(tmp_path):
    base = _interpreter_with_build_tools()
    if base is None:
        pytest.skip("no python of this version with setuptools and wheel to build with")
    env_dir = tmp_path / "venv"
    subprocess.run([base, "-m", "venv", "--system-site-packages", "--without-pip", str(env_dir)],
                   check=True)
    py = env_dir / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # This environment's torch, timm, ... stand for the GPU machine's preinstalled packages.
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    Path(site, "preinstalled.pth").write_text("".join(p + "\n" for p in ours))
    offline = {**os.environ, "PIP_NO_INDEX": "1", "PIP_INDEX_URL": "http://127.0.0.1:9/",
               "PIP_FIND_LINKS": "", "PYTHONNOUSERSITE": "1"}
    offline.pop("VIRTUAL_ENV", None)
    if subprocess.run([py, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        pytest.skip(f"{base} has no pip")

    old = subprocess.run([py, "-m", "pip", "install", "-q", "-e", ".", "--no-deps"], cwd=REPO,
                         env=offline, capture_output=True, text=True)
    assert old.returncode != 0 and "setuptools" in old.stderr  # the failure being fixed

    new = subprocess.run(["bash", "scripts/offline_install.sh"], cwd=REPO,
                         env={**offline, "PYTHON": str(py)}, capture_output=True, text=True)
    assert new.returncode == 0, new.stdout + new.stderr
    assert f"installed from {REPO / 'fusion_lab'}" in new.stdout
    listed = subprocess.run([py, "-m", "fusion_lab", "list", "datasets"], cwd=tmp_path,
                            env=offline, capture_output=True, text=True)
    assert listed.returncode == 0 and "cache" in listed.stdout, listed.stderr


def test_offline_install_says_what_is_missing_without_setuptools(tmp_path):
    env_dir = tmp_path / "bare"
    venv.create(env_dir, with_pip=False)  # no setuptools, no wheel
    done = subprocess.run(["bash", "scripts/offline_install.sh"], cwd=REPO,
                          env={**os.environ, "PYTHON": str(env_dir / "bin" / "python")},
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "setuptools or wheel" in done.stderr
