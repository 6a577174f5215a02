"""Where a model config's unset fields come from: its preset, and ``model.init``'s default.

``complete_model`` is the one place that fills them; ``fusion_lab.config.resolve`` calls it
for every run (planning resolves each run once), and ``fusion_lab.models.assemble`` only
for a ``ModelConfig`` built by hand that was never resolved (``is_resolved``). The preset
of a config that names none is the catalogue's declared default (``PRESETS.default``, set
in ``registry/presets.py``; reading the attribute loads nothing).
"""

from __future__ import annotations

import copy
import difflib
import typing
from typing import Any

from fusion_lab.errors import ConfigError
from fusion_lab.registries import PRESETS

INIT_DEFAULT = "pytorch"  # model.init where neither the config nor its preset sets it
# The model fields a resolved config always has set: filled by the preset, or init's default.
RESOLVED_FIELDS = ("fusion", "attention", "head", "init")
_PARTS = {"fusion_args": "fusion", "attention_args": "attention", "head_args": "head"}


def default_preset(presets: dict[str, dict]) -> str:
    """The name of the preset a config that names none gets (the catalogue declares it)."""
    name = PRESETS.default
    if name is None:
        raise ConfigError("no default preset is declared (PRESETS.set_default); set "
                          f"model.preset to one of {', '.join(sorted(presets))}")
    return name


def unknown_preset(name: Any, presets: dict[str, dict]) -> str:
    """One line naming the closest presets and every valid one (the registries' wording)."""
    close = difflib.get_close_matches(str(name), list(presets), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return f"unknown preset {name!r}: {hint}valid names: {', '.join(sorted(presets))}"


def apply_preset(m: Any, presets: dict[str, dict]) -> None:
    """Fill model config ``m`` from its preset (default: the catalogue's), in place;
    idempotent.

    A preset fills the fields the config leaves None (fusion, attention, head, init, ...);
    its ``fusion_args`` / ``attention_args`` / ``head_args`` go under the config's own
    (a key the config sets wins) when that component is the preset's.
    """
    name = m.preset or default_preset(presets)
    base = presets.get(name)
    if base is None:
        raise ConfigError(unknown_preset(name, presets))
    hints = typing.get_type_hints(type(m))
    for key, value in base.items():
        if key in _PARTS:
            continue
        if key not in hints or key == "preset":
            raise ConfigError(f"preset {name!r} sets {key!r}, which is no model field")
        if getattr(m, key) is None:
            setattr(m, key, copy.deepcopy(value))
    for key, part in _PARTS.items():
        if key in base and getattr(m, part) == base.get(part):
            setattr(m, key, {**copy.deepcopy(base[key]), **getattr(m, key)})


def complete_model(m: Any, presets: dict[str, dict] | None) -> None:
    """Fill model config ``m`` in place: its preset (when ``presets`` are given), then
    ``init``'s default where neither set it."""
    if presets is not None:
        apply_preset(m, presets)
    if m.init is None:
        m.init = INIT_DEFAULT


def is_resolved(m: Any) -> bool:
    """Whether model config ``m`` has been through ``complete_model`` with the presets:
    its parts and init are set (every run's config is; a hand-built one may not be)."""
    return all(getattr(m, key) is not None for key in RESOLVED_FIELDS)
