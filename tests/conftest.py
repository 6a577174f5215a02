"""Shared test setup: two CPU threads, a fixed seed per test, and registry hygiene."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def scratch_names():
    """Names registered during a test, removed from their registries afterwards.

    Usage: ``scratch_names.append((FUSIONS, "my_name"))`` before registering.
    """
    added: list = []
    yield added
    for reg, name in added:
        reg._items.pop(name, None)
        reg._docs.pop(name, None)
