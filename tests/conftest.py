"""Shared test setup: one CPU thread, a fixed seed per test, and registry hygiene."""

from __future__ import annotations

import pytest
import torch

# The tests' tensors are tiny: on a busy 2-core machine one intra-op thread was 3-4x
# faster than two (no oversubscription of the cores other processes use).
torch.set_num_threads(1)


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
