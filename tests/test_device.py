"""The helpers training, bench and the benchmark scripts share: device placement, timing."""

from __future__ import annotations

import torch

from fusion_lab.config import ModelConfig
from fusion_lab.models.assemble import build_model
from fusion_lab.models.profile import round_robin
from fusion_lab.training.device import device_name, prepare_model


def test_round_robin_takes_the_callables_in_turn_and_drops_the_warm_up():
    calls, synced, rounds = [], [], []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = round_robin(fns, repeats=3, warmup=2, sync=lambda: synced.append(1),
                        on_round=lambda r, t: rounds.append((r, sorted(t))))
    assert calls == ["a", "b"] * 5
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    assert all(dt >= 0 for v in times.values() for dt in v)
    assert len(synced) == 2 * len(calls)  # before and after every call
    assert rounds == [(r, ["a", "b"]) for r in range(5)]


def test_prepare_model_on_the_cpu_keeps_the_default_layout_and_does_not_compile():
    model = build_model(ModelConfig(preset="cn_cnn", backbone="small_cnn", width=8, hidden=8), 3)
    placed, channels_last = prepare_model(model, torch.device("cpu"), channels_last=True,
                                          compile=True)
    assert channels_last is False  # channels_last and compile are CUDA-only, as in training
    assert isinstance(placed.fusion, torch.nn.Module)
    assert not type(placed.fusion).__name__.startswith("OptimizedModule")
    assert all(p.device.type == "cpu" for p in placed.parameters())


def test_device_name_of_the_cpu_gives_its_threads():
    assert device_name(torch.device("cpu")) == f"cpu ({torch.get_num_threads()} threads)"
