"""What ran: the code, plugins, library versions and GPU behind a run's results.

``record(plugin_files)`` is what ``fusionlab run`` stores in each run's ``summary.json``;
``plugin_changes`` is what ``fusionlab table`` checks it against. Only ``record`` imports
torch (when it is called), so the table stays torch-free.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from fusion_lab import __version__
from fusion_lab.config.weights import file_sha256

PROJECT = Path(__file__).resolve().parents[2]


def plugin_digest(path: str | Path) -> str | None:
    """SHA-256 of a plugin file's bytes as they are now (never cached), or None if unreadable."""
    try:
        return file_sha256(path, cached=False)
    except OSError:
        return None


def _git(*args: str) -> str | None:
    if not (PROJECT / ".git").exists() or shutil.which("git") is None:
        return None
    try:
        out = subprocess.run(["git", "-C", str(PROJECT), *args], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the fusion_lab checkout; (None, None) outside a git checkout.

    Dirty means a tracked file differs from the commit (untracked files are not counted).
    """
    commit = (_git("rev-parse", "HEAD") or "").strip() or None
    if commit is None:
        return None, None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return commit, (bool(status.strip()) if status is not None else None)


def plugin_files(plugins: list[str], base_dir: str | Path | None = None) -> list[Path]:
    """The files of a study's plugins: .py paths resolved as ``load_plugins`` does, and the
    source file of each plugin module (already imported)."""
    files = []
    for spec in plugins:
        if spec.endswith(".py") or "/" in spec or "\\" in spec:
            candidates = [Path(spec)]
            if base_dir is not None and not Path(spec).is_absolute():
                candidates.insert(0, Path(base_dir) / spec)
            path = next((p for p in candidates if p.is_file()), None)
        else:
            module = sys.modules.get(spec)
            path = Path(module.__file__) if getattr(module, "__file__", None) else None
        if path is not None:
            files.append(path.resolve())
    return files


def versions() -> dict[str, str | None]:
    # here, not at the top: the torch-free table path imports this module
    import timm
    import torch

    try:
        # torchvision may be missing: provenance records None then
        import torchvision

        tv = torchvision.__version__
    except ImportError:
        tv = None
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": tv, "timm": timm.__version__, "fusion_lab": __version__}


def cuda_info() -> dict[str, Any] | None:
    """CUDA and cuDNN versions and the GPU's name; None without CUDA."""
    # here, not at the top: the torch-free table path imports this module
    import torch

    if not torch.cuda.is_available():
        return None
    return {"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "gpu": torch.cuda.get_device_name()}


def record(plugins: list[Path]) -> dict[str, Any]:
    """The summary fields saying what ran (docs/results-format.md)."""
    commit, dirty = git_state()
    return {"versions": versions(), "git_commit": commit, "git_dirty": dirty,
            "plugins": {str(p): plugin_digest(p) for p in plugins}, "cuda": cuda_info()}


def plugin_changes(summary: dict) -> list[str]:
    """Plugin files of a finished run whose bytes on disk differ from what it was trained with.

    A file that is no longer there is not reported (results are often read on another
    machine).
    """
    changed = []
    for path, digest in (summary.get("plugins") or {}).items():
        if digest is None or not Path(path).is_file():
            continue
        if plugin_digest(path) != digest:
            changed.append(path)
    return changed
