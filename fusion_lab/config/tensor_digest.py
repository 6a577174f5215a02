"""The SHA-256 of the tensors a torch weights file holds, read without torch.

``torch.save`` writes a zip whose entries sit in a folder named after the file (``a/data.pkl``,
``a/data/0``, ...), plus a serialization id: the same weights saved as ``a.pt`` and as
``b.pt`` are different bytes. ``tensors_sha256`` hashes what the file means instead: every
tensor's name (its key path, e.g. ``state_dict.conv.weight``), dtype, shape and element
bytes in row-major order, sorted by name. The pickle is read with a restricted unpickler
that rebuilds tensors as (storage, offset, shape, stride) records and nothing else, so no
code from the file runs and torch is not imported (study expansion needs this).
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ITEM_SIZES = {"Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4,
              "Short": 2, "Char": 1, "Byte": 1, "Bool": 1, "ComplexFloat": 8,
              "ComplexDouble": 16}


@dataclass
class _Tensor:
    storage: tuple[str, str]  # (storage type, key of its zip entry)
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class _Opaque:
    """Whatever else the pickle names (a device, a namespace): accepted, ignored."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Opaque:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _rebuild(storage: Any, offset: int, shape: tuple, stride: tuple, *rest: Any) -> _Tensor:
    return _Tensor(storage, offset, tuple(shape), tuple(stride))


class _Reader(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, *rest: data
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch" and name.endswith("Storage"):
            return name[: -len("Storage")]
        return type(name, (_Opaque,), {})

    def persistent_load(self, pid: Any) -> tuple[str, str]:
        _, storage_type, key, *_ = pid  # ('storage', type, key, location, numel)
        return (storage_type if isinstance(storage_type, str) else "?", str(key))


def _leaves(obj: Any, name: str = "") -> list[tuple[str, _Tensor]]:
    if isinstance(obj, _Tensor):
        return [(name, obj)]
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return []
    return [leaf for key, value in items
            for leaf in _leaves(value, f"{name}.{key}" if name else str(key))]


def _element_bytes(t: _Tensor, data: bytes, size: int) -> bytes:
    """The tensor's elements in row-major order (a strided view gathered element by element)."""
    numel, expected, step = 1, [], 1
    for n in t.shape:
        numel *= n
    for n in reversed(t.shape):
        expected.insert(0, step)
        step *= n
    if numel == 0:
        return b""
    if all(n == 1 or s == e for n, s, e in zip(t.shape, t.stride, expected)):
        return data[t.offset * size:(t.offset + numel) * size]
    out = bytearray()
    for index in itertools.product(*(range(n) for n in t.shape)):
        at = t.offset + sum(i * s for i, s in zip(index, t.stride))
        out += data[at * size:(at + 1) * size]
    return bytes(out)


def tensors_sha256(path: str | Path) -> str | None:
    """SHA-256 (hex) of the tensors of a ``torch.save`` zip file; None for any other file
    (an old-format pickle, safetensors, bytes that are no weights): hash those whole."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            pkl = next((n for n in names if n.endswith("/data.pkl") and n.count("/") == 1), None)
            if pkl is None:
                return None
            folder = pkl[: -len("data.pkl")]
            leaves = _leaves(_Reader(z.open(pkl)).load())
            h = hashlib.sha256()
            for name, t in sorted(leaves, key=lambda leaf: leaf[0]):
                kind, key = t.storage
                size = ITEM_SIZES.get(kind)
                if size is None:
                    return None
                data = z.read(f"{folder}data/{key}")
                h.update(f"{name}\0{kind}\0{list(t.shape)}\0".encode())
                h.update(hashlib.sha256(_element_bytes(t, data, size)).digest())
            return h.hexdigest()
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, KeyError, ValueError,
            TypeError, AttributeError, IndexError, EOFError):
        return None
