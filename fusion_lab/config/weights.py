"""Weights a run starts from: named weights shipped with the package, files, content hashes.

``model.pretrained`` is ``false``, ``true`` (timm's own source), a **name** of weights
shipped in ``fusion_lab/weights/`` (``fusionlab list weights``), or the **path** of a
weights file. The rule that tells them apart: a value with a path separator (``/``) or a
file suffix (``.pt``, ``.pth``, ``.bin``, ``.ckpt``, ``.safetensors``) is a path, so
``weights.pth`` and ``./synthetic`` are files; any other word is a name.

A weights file enters a run's id by the SHA-256 of its content, never by its name or path
(``identity``): of its tensors (names, dtypes, shapes, bytes: ``tensor_digest``) for a
``torch.save`` file, since the same weights saved under two names are different bytes; of
its bytes for any other file, and for the shipped named weights (the SHA-256 their card
records, already in the ids of the runs that start from them). Regenerating a file changes
the id of every run that starts from it; moving or renaming it changes none. No torch
import here (study expansion needs this).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from fusion_lab.config.tensor_digest import tensors_sha256
from fusion_lab.errors import WeightsError

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".tar")

# name -> (file in WEIGHTS_DIR, the backbone it is for, one line for `fusionlab list`)
NAMED_WEIGHTS: dict[str, tuple[str, str, str]] = {
    "synthetic": ("small_cnn_synthetic.pt", "small_cnn",
                  "small_cnn pretrained on synthetic_shapes (32 generic objects), "
                  "studies/pretrain_synthetic.yaml"),
}

_HASHES: dict[tuple[str, str, int, int], str] = {}


def is_path(value: str) -> bool:
    """Whether a ``pretrained`` string names a file (see the module docstring)."""
    return os.sep in value or "/" in value or value.lower().endswith(FILE_SUFFIXES)


def unknown_name_message(value: str) -> str:
    close = difflib.get_close_matches(value, list(NAMED_WEIGHTS), n=3)
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    return (f"unknown pretrained weights name {value!r}{hint}; names: "
            f"{', '.join(NAMED_WEIGHTS)}. A file path needs a '/' or a suffix such as .pth "
            f"(e.g. ./{value})")


def weights_path(value: str) -> Path:
    """The file a ``pretrained`` string stands for (a name's shipped file, or the path).

    Raises ``WeightsError`` for an unknown name; a path is returned even if missing.
    """
    if is_path(value):
        return Path(value).expanduser()
    if value not in NAMED_WEIGHTS:
        raise WeightsError(unknown_name_message(value))
    return WEIGHTS_DIR / NAMED_WEIGHTS[value][0]


def named_backbone(value: str) -> str | None:
    """The backbone named weights are for (None for a path or an unknown name)."""
    if is_path(value) or value not in NAMED_WEIGHTS:
        return None
    return NAMED_WEIGHTS[value][1]


def file_sha256(path: str | Path, *, cached: bool = True) -> str:
    """SHA-256 (hex) of a file's content; raises OSError when it cannot be read.

    ``cached``: remember the digest per path, size and modification time (planning hashes
    the same weights file for every run). ``cached=False`` reads the file again, for a
    caller asking whether a file has changed (``training.provenance``).
    """
    if not cached:
        return _read_sha256(path)
    return _cached("file", path, _read_sha256)


def content_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of what a weights file holds: its tensors for a ``torch.save`` file
    (the same for a copy saved under another name), else its bytes; cached like
    ``file_sha256``. Raises OSError when it cannot be read."""
    return _cached("content", path, lambda p: tensors_sha256(p) or _read_sha256(p))


def _cached(kind: str, path: str | Path, digest: Any) -> str:
    st = os.stat(path)
    key = (kind, str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = digest(path)
    return _HASHES[key]


def _read_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def identity(pretrained: bool | str) -> Any:
    """What ``model.pretrained`` contributes to a run id: a file's content hash.

    ``true``/``false`` stay as they are. Shipped named weights (by name or by path): the
    SHA-256 of the file, as their card records; any other file: ``content_sha256``. A name
    or a path that cannot be read is kept as written: validation reports it before
    anything trains.
    """
    if not isinstance(pretrained, str):
        return pretrained
    try:
        path = weights_path(pretrained)
        shipped = path.resolve() in {(WEIGHTS_DIR / f).resolve() for f, _, _ in
                                     NAMED_WEIGHTS.values()}
        return "sha256:" + (file_sha256(path) if shipped else content_sha256(path))
    except (OSError, WeightsError):
        return pretrained


def card(value: str) -> dict | None:
    """The JSON written beside a weights file (recipe, source accuracy), if there is one."""
    path = weights_path(value)
    meta = path.with_suffix(".json")
    if not meta.is_file():
        return None
    return json.loads(meta.read_text())
