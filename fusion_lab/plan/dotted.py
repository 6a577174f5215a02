"""Dotted config keys (``train.epochs``) and the merging of nested config dicts: how a
study's ``--set`` overrides, variant patches and grid cells reach one run's config.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml

from fusion_lab.errors import ConfigError


def parse_override(text: str) -> tuple[str, Any]:
    """``train.epochs=1`` -> ("train.epochs", 1); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like KEY=VALUE, e.g. train.epochs=1")
    key, value = text.split("=", 1)
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_][\w]*(\.[\w+]+)*", key):
        raise ConfigError(f"override key {key!r} must be a dotted name like train.epochs")
    try:
        return key, yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({e})") from None


def get_dotted(d: dict, key: str) -> Any:
    for p in key.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


def set_dotted(d: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        if not isinstance(d.get(p), dict):
            d[p] = {}
        d = d[p]
    d[parts[-1]] = value


def deep_merge(base: dict, patch: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and not k.endswith(
            ("_args", "options")
        ):
            out[k] = deep_merge(out[k], v)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **copy.deepcopy(v)}
        else:
            out[k] = copy.deepcopy(v)
    return out


def drop_dotted(d: dict, key: str) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        d = d.get(p)
        if not isinstance(d, dict):
            return
    d.pop(parts[-1], None)
