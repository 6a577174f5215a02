"""`fusionlab config STUDY`: every run as it would train, seen before anything trains."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from fusion_lab.cli import main
from fusion_lab.plan.planning import prepare

TINY = Path(__file__).parent / "plugins" / "tiny_backbone.py"
STUDY = f"""
name: seen
plugins: [{TINY}]
base:
  dataset: {{name: synthetic_fgvc, options: {{num_classes: 3, train_per_class: 8,
             test_per_class: 2, image_size: 32}}}}
  model: {{backbone: tiny_cnn, width: 8, hidden: 8}}
  train: {{epochs: 3, batch_size: 4, image_size: 32, resize: 32, workers: 0}}
variants:
  - {{label: Baseline, model: {{preset: baseline}}}}
  - {{label: CN-CNN, model: {{preset: cn_cnn}}}}
seeds: [0, 1]
"""


@pytest.fixture
def study(tmp_path):
    p = tmp_path / "seen.yaml"
    p.write_text(textwrap.dedent(STUDY))
    return p


def _blocks(text: str) -> list[tuple[list[str], dict]]:
    """(comment lines, YAML config) per run."""
    out = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        head = [line for line in lines if line.startswith("# ")]
        out.append((head, yaml.safe_load("\n".join(lines[len(head):]))))
    return out


def test_config_shows_every_run_with_its_id_size_and_time(study, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["config", str(study), "--repeats", "1", "--device", "cpu"])
    blocks = _blocks(capsys.readouterr().out)
    _, runs = prepare(study)
    assert len(blocks) == len(runs) == 4
    for (head, cfg), r in zip(blocks, runs):
        assert head[0] == f"# {r.label}  seed {r.seed}  run {r.run_id[:12]}"
        assert "parameters" in head[1] and "GFLOPs per image" in head[1]
        assert "to train on cpu" in head[1] and "estimate" in head[1]
        assert "(18 steps of " in head[1]  # 3 epochs x (24 train images // batch 4)
        assert cfg["model"]["fusion"] == r.config.model.fusion  # the resolved config
        assert cfg["train"]["lr_new"] == r.config.train.lr_new and cfg["seed"] == r.seed
    assert not (tmp_path / "results").exists()  # nothing written, nothing trained


def test_config_diff_shows_only_what_differs_from_the_base(study, capsys):
    main(["config", str(study), "--diff", "--no-estimate"])
    blocks = _blocks(capsys.readouterr().out)
    assert len(blocks) == 4 and all(len(head) == 1 for head, _ in blocks)
    baseline = blocks[0][1]  # seed 0, as the base: only the model's parts differ
    assert set(baseline) == {"model"} and baseline["model"]["fusion"] == "none"
    assert "width" not in baseline["model"]  # the same in the base
    # the base resolves with the default preset (cn_cnn): only the preset's name and seed
    assert blocks[3][1] == {"model": {"preset": "cn_cnn"}, "seed": 1}


def test_config_stops_on_the_same_mistakes_as_run(study, capsys):
    with pytest.raises(SystemExit) as e:
        main(["config", str(study), "--set", "train.epochs=0", "--no-estimate"])
    assert e.value.code == 2
    assert "train.epochs must be >= 1, got 0" in capsys.readouterr().err
