"""The house plan (setup.cfg's import-linter contracts) holds, and would catch a breach."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")


def _lint(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([LINT, "--no-cache", "setup.cfg"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_import_contracts_hold_on_the_package():
    done = _lint(ROOT, ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


@pytest.mark.parametrize("module, line, broken", [
    # the store (bottom) importing the orchestrator (top): a layer breach and a circle
    ("store/lease.py", "from fusion_lab.orchestrate import runner", [
        "fusion_lab.store is not allowed to import fusion_lab.orchestrate",
        "No cycles are allowed in fusion_lab",
        "fusion_lab.store is not allowed to import torch"]),
    # the orchestrator importing analysis (the CLI prints tables, not the runner)
    ("orchestrate/runner.py", "from fusion_lab.analysis import table", [
        "fusion_lab.orchestrate is not allowed to import fusion_lab.analysis"]),
    # the plan importing torch itself
    ("plan/study.py", "import torch", ["fusion_lab.plan is not allowed to import torch"]),
    # the registries importing anything above them
    ("registries.py", "from fusion_lab import config", [
        "fusion_lab.registries is not allowed to import fusion_lab.config"]),
])
def test_a_back_import_breaks_a_contract(tmp_path, module, line, broken):
    shutil.copytree(ROOT / "fusion_lab", tmp_path / "fusion_lab",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pt"))
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    target = tmp_path / "fusion_lab" / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    done = _lint(tmp_path, tmp_path)
    assert done.returncode == 1, done.stdout[-3000:]
    for text in broken:
        assert text in done.stdout, done.stdout[-3000:]


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_the_machinery_never_imports_the_catalogue_by_name():
    # registry/ installs as fusion_lab.registry from another folder, so import-linter's graph
    # cannot see it: this is that contract. The catalogue is loaded by
    # fusion_lab.registries.load_builtin (importlib, by name) and used through the registries.
    offenders = []
    for path in sorted((ROOT / "fusion_lab").rglob("*.py")):
        bad = [m for m in _imported_modules(path)
               if m == "fusion_lab.registry" or m.startswith("fusion_lab.registry.")]
        offenders += [f"{path.relative_to(ROOT)}: {m}" for m in bad]
    assert offenders == []


def test_importing_the_plan_store_config_and_cli_imports_no_torch():
    code = ("import sys; import fusion_lab.plan.planning, fusion_lab.plan.study, "
            "fusion_lab.store.lease, fusion_lab.config, fusion_lab.cli, fusion_lab.registries; "
            "bad = [m for m in ('torch', 'timm', 'torchvision') if m in sys.modules]; "
            "assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
