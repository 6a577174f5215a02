"""`fusionlab viz`: Figure 3 of a trained run (a tiny study trained in a few seconds)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fusion_lab import store
from fusion_lab.cli import main
from fusion_lab.errors import FusionLabError
from fusion_lab.maps.viz import (
    draw,
    extract_maps,
    figure3,
    load_trained,
    render,
    sample_images,
    study_run,
)
from fusion_lab.orchestrate.runner import train_study
from fusion_lab.plan.find import find_run
from fusion_lab.plan.planning import prepare

TINY = Path(__file__).parent / "plugins" / "tiny_backbone.py"
STUDY = f"""
name: tinyviz
plugins: [{TINY}]
base:
  dataset:
    name: synthetic_fgvc
    options: {{num_classes: 3, train_per_class: 4, test_per_class: 3, image_size: 32}}
  model: {{backbone: tiny_cnn, width: 8, hidden: 8}}
  train: {{epochs: 1, batch_size: 6, image_size: 32, resize: 36, workers: 0,
           lr_backbone: 0.01, lr_new: 0.01}}
variants:
  - {{label: Baseline, model: {{preset: baseline}}}}
  - {{label: CN-CNN, model: {{preset: cn_cnn}}}}
  - {{label: HL, model: {{preset: hl}}}}
seeds: [0]
baseline: Baseline
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny study, trained once for the module: (study file, results, {label: run dir})."""
    tmp = tmp_path_factory.mktemp("viz")
    study_file = tmp / "tinyviz.yaml"
    study_file.write_text(textwrap.dedent(STUDY))
    results = tmp / "results"
    study, runs = prepare(study_file)
    out = train_study(study, runs, results, device="cpu")
    assert not out.failed
    return study_file, results, {r.label: store.run_dir(results, study.name, r.run_id) for r in runs}


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_study_file_picks_the_cn_cnn_run(trained):
    study_file, results, dirs = trained
    d, note = find_run(str(study_file), results, study_run)
    assert d == dirs["CN-CNN"]  # the last row with SA (HL, after it, has no attention)
    assert "CN-CNN" in note
    # a study name, a run id prefix and the folder itself name runs too
    assert find_run("tinyviz", results, study_run)[0] == dirs["CN-CNN"]
    assert find_run(dirs["HL"].name[:10], results, study_run)[0] == dirs["HL"]
    assert find_run(str(dirs["Baseline"]), results, study_run)[0] == dirs["Baseline"]


@pytest.mark.parametrize("n", [1, 3])
def test_png_has_one_row_per_image(trained, tmp_path, n):
    _, _, dirs = trained
    path, notes = figure3(dirs["CN-CNN"], tmp_path / "f.png", n=n, cell_px=40)
    assert notes == []
    # image + 3 LH maps + 3 SA masks per row, 40 px each; the colour bars' footer below
    width, height = png_size(path)
    assert width == 7 * 40 and 30 <= height - n * 40 <= 200
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (width, height)


def test_figure_says_how_to_read_it(trained):
    _, _, dirs = trained
    model, cfg, names = load_trained(dirs["CN-CNN"])
    images, labels = sample_images(cfg, 3)
    maps = extract_maps(model, images)
    with torch.no_grad():
        pred = model(images)["combined"].argmax(1).tolist()
    assert list(maps.pred) == pred  # the model's prediction, drawn beside the true class
    true, guess = [names[y] for y in labels], [names[p] for p in pred]
    assert max(len(t) for t in true) > 28  # the synthetic class names are long
    fig = render(images, maps, true, cell_px=160, predicted=guess)
    cells = [ax for ax in fig.axes if ax.images]
    assert len(cells) == 3 * 7
    for ax in cells:  # each cell exactly 160 px square
        box = ax.get_window_extent()
        assert (round(box.width), round(box.height)) == (160, 160)
    captions = [" ".join(t.get_text().split("\n")) for ax in cells[::7] for t in ax.texts]
    for caption, t, g in zip(captions, true, guess):  # whole names, not cut at 28 characters
        assert f"true: {t}" in caption and f"pred: {g}" in caption
        assert ("(right)" if t == g else "(wrong)") in caption
    bars = [ax for ax in fig.axes if not ax.images and ax.get_xlabel()]
    lh, sa = (" ".join(ax.get_xlabel().split("\n")) for ax in bars)
    assert "LH maps" in lh and "min-max scaled per map" in lh and "SA masks" in sa
    assert [t.get_text() for t in bars[0].get_xticklabels()] == ["min", "max"]
    assert [t.get_text() for t in bars[1].get_xticklabels()] == ["0", "1"]


def test_maps_come_from_the_model(trained):
    _, _, dirs = trained
    model, cfg, _ = load_trained(dirs["CN-CNN"])
    images, labels = sample_images(cfg, 3)
    assert images.shape == (3, 3, 32, 32) and len(set(labels)) > 1  # spread over classes
    maps = extract_maps(model, images)
    assert maps.levels == ["s5", "s4", "s3"]  # high level first
    assert maps.attended.shape == (3, 3, 32, 32) and maps.sa.shape == (3, 3, 32, 32)
    assert np.isfinite(maps.attended).all() and (maps.sa >= 0).all() and (maps.sa <= 1).all()
    for kind in (maps.attended, maps.sa):
        assert not np.allclose(kind[0], kind[1])  # between images
        assert not np.allclose(kind[:, 0], kind[:, 2])  # between levels
    # what is drawn for s3 is the network's s3 map (stride 8: 4x4), only enlarged
    with torch.no_grad():
        raw = model(images, return_maps=True)["attended"][0].norm(dim=1).numpy()
    assert raw.shape == (3, 4, 4)
    assert np.allclose(maps.attended[:, 2].mean(axis=(1, 2)), raw.mean(axis=(1, 2)), rtol=0.1)
    assert maps.attended[:, 2].max() <= raw.max() + 1e-5


def test_drawing_changes_with_the_weights(trained, tmp_path):
    _, _, dirs = trained
    model, cfg, _ = load_trained(dirs["CN-CNN"])
    images, _ = sample_images(cfg, 2)
    first = draw(images, extract_maps(model, images), tmp_path / "a.png", cell_px=40)
    again = draw(images, extract_maps(model, images), tmp_path / "b.png", cell_px=40)
    with torch.no_grad():
        for p in model.attention.parameters():
            p.add_(torch.randn_like(p))
    changed = draw(images, extract_maps(model, images), tmp_path / "c.png", cell_px=40)

    def pixels(p):
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"), dtype=np.int16)

    assert np.array_equal(pixels(first), pixels(again))  # deterministic
    assert np.abs(pixels(first) - pixels(changed)).sum() > 0


def test_run_without_sa_draws_what_exists(trained, tmp_path):
    _, _, dirs = trained
    path, notes = figure3(dirs["Baseline"], tmp_path / "b.png", n=2, cell_px=40)
    width, height = png_size(path)
    assert width == 2 * 40 and height > 2 * 40  # image + the one level's map; the footer
    assert "no SA masks" in notes[0]


def test_cli_writes_png_and_says_which_run(trained, tmp_path, capsys):
    study_file, results, dirs = trained
    out = tmp_path / "fig.png"
    main(["viz", str(study_file), "--images", "2", "--out", str(out), "--results", str(results)])
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out)
    assert dirs["CN-CNN"].name[:12] in captured.err
    width, height = png_size(out)  # 2 rows of 160 px cells (the default), the footer
    assert width == 7 * 160 and 2 * 160 < height < 3 * 160


def test_run_without_checkpoint_is_one_error(trained, tmp_path, capsys):
    _, results, dirs = trained
    ckpt = dirs["HL"] / "checkpoint.pt"
    ckpt.rename(tmp_path / "moved.pt")
    try:
        with pytest.raises(FusionLabError, match="fusionlab run.*keep_checkpoint"):
            figure3(dirs["HL"], tmp_path / "x.png")
        with pytest.raises(SystemExit) as e:
            main(["viz", str(dirs["HL"]), "--out", str(tmp_path / "x.png")])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err
    finally:
        (tmp_path / "moved.pt").rename(ckpt)


def test_unknown_run_is_an_error(trained):
    _, results, _ = trained
    with pytest.raises(FusionLabError, match="no run folder"):
        find_run("ffffffffzz", results, study_run)


# --- fusionlab viz --score ------------------------------------------------------------

def test_score_run_scores_every_level_and_writes_them(trained, monkeypatch):
    import json

    import fusion_lab.maps.viz_score as vs
    from fusion_lab.maps.viz import Maps

    _, _, dirs = trained
    scores, lines = vs.score_run(dirs["CN-CNN"], limit=4)
    assert list(scores["levels"]) == ["s5", "s4", "s3"] and scores["images"] == 4
    assert scores["weights"] == "last" and scores["epoch"] == 1 and scores["limit"] == 4
    assert json.loads((dirs["CN-CNN"] / "attention_last.json").read_text()) == scores
    for s in scores["levels"].values():
        assert 0 <= s["point_box"] <= 100 and 0 <= s["energy_box"] <= 1
        assert 0 < s["area_box"] < 1 and s["images"] == 4
    assert "epoch 1" in lines[0] and "4 of 9 test images" in lines[0]
    assert lines[2].startswith("s5")

    # uniform masks score exactly the box's area share, image by image
    real = vs.extract_maps

    def uniform(model, images):
        m = real(model, images)
        return Maps(m.levels, m.attended, np.full_like(m.sa, 0.5))

    monkeypatch.setattr(vs, "extract_maps", uniform)
    flat, _ = vs.score_run(dirs["CN-CNN"])
    assert flat["images"] == 9 and flat["limit"] is None  # the whole test split
    for s in flat["levels"].values():
        assert s["energy_box"] == pytest.approx(s["area_box"], abs=1e-9)


def test_score_needs_sa_masks_and_best_weights_need_best_pt(trained, capsys):
    from fusion_lab.maps.viz_score import score_run

    _, _, dirs = trained
    with pytest.raises(FusionLabError, match="no spatial attention masks"):
        score_run(dirs["Baseline"])
    with pytest.raises(FusionLabError, match="no best.pt.*validation split"):
        score_run(dirs["CN-CNN"], weights="best")
    main(["viz", str(dirs["CN-CNN"]), "--score", "--limit", "2"])
    out = capsys.readouterr().out
    assert "point box %" in out and "2 of 9 test images" in out


def test_viz_and_export_load_the_plugins_a_run_was_trained_with(trained, tmp_path):
    # A fresh process (no plugin imported yet) names the run by its id: the run's summary
    # records its plugin files (tiny_cnn, its backbone), which viz and export load without
    # --plugin; before, both failed with "unknown backbone 'tiny_cnn'".
    _, results, dirs = trained
    run = dirs["CN-CNN"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for argv in (["viz", run.name[:12], "--images", "1", "--out", str(tmp_path / "f.png")],
                 ["export", run.name[:12], "--out", str(tmp_path / "b.pt")]):
        done = subprocess.run([sys.executable, "-m", "fusion_lab", *argv, "--results",
                               str(results)], capture_output=True, text=True, env=env,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "Traceback" not in done.stderr
    assert (tmp_path / "f.png").is_file() and (tmp_path / "b.pt").is_file()
