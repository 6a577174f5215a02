"""`fusionlab bench`: the cost profile of a study's variants, and `fusionlab table --cost`."""

from __future__ import annotations

import contextlib
import io
import json
import textwrap
from pathlib import Path

import pytest

from fusion_lab import store
from fusion_lab.cli import main
from fusion_lab.models.assemble import build_model
from fusion_lab.plan.planning import prepare
from fusion_lab.plan.study import study_plan

TINY = Path(__file__).parent / "plugins" / "tiny_backbone.py"
STUDY = f"""
name: tinycost
plugins: [{TINY}]
base:
  dataset:
    name: synthetic_fgvc
    options: {{num_classes: 3, train_per_class: 2, test_per_class: 2, image_size: 32}}
  model: {{backbone: tiny_cnn, hidden: 8}}
  train: {{epochs: 1, batch_size: 6, image_size: 48, workers: 0}}
variants:
  - {{label: Baseline, model: {{preset: baseline}}}}
  - {{label: CN-CNN, model: {{preset: cn_cnn}}}}
grid: {{model.width: [4, 8]}}
seeds: [0, 1]
baseline: Baseline
"""
ROW_KEYS = {"label", "grid", "params", "gflops", "train_ips", "infer_ips", "train_ratio",
            "infer_ratio", "peak_mem_mb", "train_ips_range", "infer_ips_range",
            "train_ratio_range", "infer_ratio_range"}
REPEATS = 3


@pytest.fixture(scope="module")
def benched(tmp_path_factory):
    """The tiny study benched once through the CLI: (study file, results, cost, stdout)."""
    tmp = tmp_path_factory.mktemp("bench")
    study_file = tmp / "tinycost.yaml"
    study_file.write_text(textwrap.dedent(STUDY))
    results = tmp / "results"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        main(["bench", str(study_file), "--results", str(results), "--device", "cpu",
              "--repeats", str(REPEATS), "--image-size", "32", "--batch-size", "2"])
    cost = json.loads((results / "tinycost" / "cost.json").read_text())
    return study_file, results, cost, buf.getvalue()


def test_cost_json_has_the_documented_format(benched):
    study_file, _, cost, _ = benched
    _, runs = prepare(study_file)
    assert set(cost) == {"device", "measured", "image_size", "batch_size", "baseline",
                         "conditions", "rows"}
    assert cost["device"].startswith("cpu") and cost["baseline"] == "Baseline"
    assert (cost["image_size"], cost["batch_size"]) == (32, 2)  # the flags win
    # one row per group: 2 variants x 2 grid cells; the 2 seeds collapse
    assert set(cost["rows"]) == {r.group_id for r in runs} and len(cost["rows"]) == 4
    for row in cost["rows"].values():
        assert set(row) == ROW_KEYS
        assert row["train_ips"] > 0 and row["infer_ips"] > 0 and row["peak_mem_mb"] > 0
        assert row["grid"] in ({"model.width": 4}, {"model.width": 8})


def test_params_are_those_of_the_built_models(benched):
    study_file, _, cost, _ = benched
    _, runs = prepare(study_file)
    for r in runs:
        model = build_model(r.config.model, 3)
        assert cost["rows"][r.group_id]["params"] == sum(p.numel() for p in model.parameters())


def test_ratios_are_against_the_baseline_of_the_same_cell(benched):
    _, _, cost, _ = benched
    rows = list(cost["rows"].values())
    for width in (4, 8):
        cell = {r["label"]: r for r in rows if r["grid"] == {"model.width": width}}
        base = cell["Baseline"]
        assert base["train_ratio"] == 1.0 and base["infer_ratio"] == 1.0
        for r in cell.values():
            assert r["train_ratio"] == pytest.approx(r["train_ips"] / base["train_ips"])
            assert r["infer_ratio"] == pytest.approx(r["infer_ips"] / base["infer_ips"])
        # more modules, more FLOPs: fusion + attention + heads on the same backbone
        assert cell["CN-CNN"]["gflops"] > cell["Baseline"]["gflops"] > 0
        assert cell["CN-CNN"]["params"] > cell["Baseline"]["params"]
    wide = {r["label"]: r for r in rows if r["grid"] == {"model.width": 8}}
    narrow = {r["label"]: r for r in rows if r["grid"] == {"model.width": 4}}
    assert wide["CN-CNN"]["params"] > narrow["CN-CNN"]["params"]


def test_figures_come_with_their_spread_over_rounds(benched):
    _, _, cost, _ = benched
    for row in cost["rows"].values():
        for kind in ("train", "infer"):
            lo, hi = row[f"{kind}_ips_range"]
            assert 0 < lo <= row[f"{kind}_ips"] <= hi  # the median lies inside the range
            r_lo, r_hi = row[f"{kind}_ratio_range"]
            assert 0 < r_lo <= r_hi
    base = next(r for r in cost["rows"].values() if r["label"] == "Baseline")
    assert base["train_ratio_range"] == [1.0, 1.0]  # each round against itself


def test_the_conditions_are_recorded(benched):
    _, _, cost, out = benched
    c = cost["conditions"]
    assert (c["repeats"], c["warmup"]) == (REPEATS, 1)
    assert len(c["load_avg_start"]) == len(c["load_avg_end"]) == 3
    assert min(c["load_avg_start"] + c["load_avg_end"]) >= 0 and c["cpus"] >= 1
    first = out.splitlines()[0]  # device, image size, batch, rounds and load, printed
    assert first.startswith("cpu") and "32x32, batch 2" in first
    assert f"{REPEATS} round-robin rounds" in first and "load average" in first


def test_bench_prints_a_table(benched):
    _, _, cost, out = benched
    assert "train img/s" in out and "peak MB" in out
    assert out.count("CN-CNN") == 2 and "width=8" in out
    cn = next(r for r in cost["rows"].values()
              if r["label"] == "CN-CNN" and r["grid"] == {"model.width": 8})
    line = next(ln for ln in out.splitlines() if ln.startswith("CN-CNN [width=8]"))
    lo, hi = cn["train_ratio_range"]
    assert f"(x{cn['train_ratio']:.2f} [{lo:.2f}-{hi:.2f}])" in line


def test_table_cost_shows_the_columns(benched, capsys):
    study_file, results, cost, _ = benched
    study, runs = prepare(study_file)
    store.write_json(results / study.name / "study.json", study_plan(study, runs))
    for r in runs:  # finished runs as `fusionlab run` records them (accuracy only)
        store.write_json(store.run_dir(results, study.name, r.run_id) / "summary.json", {
            "run_id": r.run_id, "group_id": r.group_id, "study": study.name,
            "label": r.label, "grid": r.grid, "seed": r.seed, "status": "done",
            "error": None, "final": {"acc": 50.0 + r.seed, "heads": {}}, "best_val": None,
            "test_size": 6, "num_classes": 3, "epochs": 1})
    capsys.readouterr()
    main(["table", "tinycost", "--results", str(results), "--cost"])
    text = capsys.readouterr().out
    for column in ("Params (M)", "GFLOPs", "train img/s", "infer img/s", "peak MB"):
        assert column in text
    cn = next(r for r in cost["rows"].values()
              if r["label"] == "CN-CNN" and r["grid"] == {"model.width": 8})
    line = next(ln for ln in text.splitlines() if ln.startswith("CN-CNN (8)"))
    assert f"×{cn['train_ratio']:.2f}" in line and "no cost profile" not in text
    lo, hi = cn["train_ratio_range"]
    assert f"[{lo:.2f}-{hi:.2f}]" in line  # the spread, as bench printed it
    assert "Cost measured on cpu" in text and "round-robin rounds" in text


def test_unknown_study_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", str(tmp_path / "nope.yaml"), "--results", str(tmp_path)])
    assert e.value.code == 2 and "not found" in capsys.readouterr().err
