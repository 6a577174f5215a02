"""Shared test setup: one CPU thread, a fixed seed per test, and registry isolation."""

from __future__ import annotations

import sys

import pytest
import torch

from fusion_lab import registries

# The tests' tensors are tiny: on a busy 2-core machine one intra-op thread was 3-4x
# faster than two (no oversubscription of the cores other processes use).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def isolated_registries(monkeypatch):
    """Whatever a test registers or loads as a plugin is gone after it.

    Restores every registry's names and descriptions, the set of loaded plugins, the
    entry-point flag and the plugin modules in ``sys.modules``.
    """
    load = registries.load_builtin
    load()  # the built-ins stay: they are part of the snapshot
    saved = {kind: (dict(reg._items), dict(reg._docs), dict(reg._papers))
             for kind, reg in registries.KINDS.items()}
    modules = set(sys.modules)
    monkeypatch.setattr(registries, "_loaded_plugins", set())
    monkeypatch.setattr(registries, "_loaded_entry_points", True)
    yield registries
    for kind, (items, docs, papers) in saved.items():
        reg = registries.KINDS[kind]
        reg._items.clear()
        reg._items.update(items)
        reg._docs.clear()
        reg._docs.update(docs)
        reg._papers.clear()
        reg._papers.update(papers)
    for name in set(sys.modules) - modules:
        if name.startswith("fusion_lab_plugin_") or name.startswith("fl_test_"):
            del sys.modules[name]
