"""`fusionlab plot`: the figure's artists carry the study's numbers (results written by hand).

Expected values are computed here from the numbers written into metrics.jsonl and the
summaries (statistics.mean / stdev, printed t quantiles), never read back from the code.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from matplotlib.collections import LineCollection
from test_table import StudyWriter

from fusion_lab.analysis.aggregate import load_results
from fusion_lab.analysis.curves import load_curves
from fusion_lab.analysis.plot import draw, plot_study
from fusion_lab.cli.plot import plot as plot_cmd
from fusion_lab.errors import FusionLabError

T1 = 12.706  # Student t, 97.5%, df 1
EPOCHS = 4
# (label, backbone) -> final accuracy per seed; the curve rises linearly to it
GRID = {("Baseline", "resnet18"): [70.0, 72.0], ("CN-CNN", "resnet18"): [75.0, 77.0],
        ("Baseline", "resnet50"): [80.0, 80.4], ("CN-CNN", "resnet50"): [80.2, 80.8]}


def acc_at(final: float, epoch: int) -> float:
    return final * epoch / EPOCHS


def loss_at(seed: int, epoch: int) -> float:
    return 2.0 / epoch + 0.5 * seed


def write_metrics(study_dir: Path, epochs: int = EPOCHS) -> None:
    for d in study_dir.iterdir():
        summary = d / "summary.json"
        if not summary.is_file():
            continue
        s = json.loads(summary.read_text())
        lines = [{"epoch": e, "lr": 0.1, "train_loss": loss_at(s["seed"], e),
                  "test_acc": acc_at(s["final"]["acc"], e), "val_acc": None}
                 for e in range(1, epochs + 1)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


@pytest.fixture
def grid_study(tmp_path: Path) -> Path:
    g = StudyWriter(tmp_path, "grid", seeds=[0, 1], grid_axes=["model.backbone"])
    for (label, bb), accs in GRID.items():
        g.row(label, [("done", a) for a in accs], grid={"model.backbone": bb}, backbone=bb,
              fusion="fpn_add" if label == "Baseline" else "convlstm")
    g.save()
    write_metrics(g.dir)
    return g.dir


def figure(study_dir: Path):
    res = load_results(study_dir)
    return draw(res, load_curves(study_dir, res.runs))[0]


def test_one_panel_row_per_grid_cell_and_one_line_per_row(grid_study):
    axes = figure(grid_study).axes
    assert len(axes) == 6  # 2 grid cells x (accuracy, loss, bars)
    for i, bb in enumerate(("resnet18", "resnet50")):
        acc_ax, loss_ax = axes[3 * i], axes[3 * i + 1]
        assert bb in acc_ax.get_title() and "test accuracy" in acc_ax.get_title()
        for ax in (acc_ax, loss_ax):
            assert [ln.get_label() for ln in ax.lines] == ["Baseline (n=2)", "CN-CNN (n=2)"]
            assert len(ax.collections) == 2  # one band per row
        for ln, label in zip(acc_ax.lines, ("Baseline", "CN-CNN")):
            accs = GRID[(label, bb)]
            assert list(ln.get_xdata()) == list(range(1, EPOCHS + 1))
            want = [statistics.mean(acc_at(a, e) for a in accs) for e in range(1, EPOCHS + 1)]
            assert list(ln.get_ydata()) == pytest.approx(want)


def test_band_is_mean_plus_minus_sample_sd(grid_study):
    loss_ax = figure(grid_study).axes[1]
    # loss differs between seeds 0 and 1 by 0.5 at every epoch: sd = 0.5 / sqrt(2)
    band = loss_ax.collections[0].get_paths()[0].vertices
    at2 = band[band[:, 0] == 2][:, 1]
    mean = statistics.mean(loss_at(s, 2) for s in (0, 1))
    sd = statistics.stdev(loss_at(s, 2) for s in (0, 1))
    assert sorted(set(at2.round(9))) == pytest.approx([mean - sd, mean + sd])


def test_the_figure_says_the_band_is_one_sd_not_an_interval(grid_study, tmp_path):
    axes = figure(grid_study).axes
    for ax in (axes[0], axes[1], axes[3], axes[4]):  # every curve panel
        title = ax.get_legend().get_title().get_text()
        assert "±1 sd" in title and "not an interval" in title
    # a panel without any band (one seed per row) does not claim one
    w = StudyWriter(tmp_path, "single", seeds=[0])
    w.row("Baseline", [("done", 70.0)])
    w.row("B", [("done", 75.0)], fusion="b")
    w.save()
    write_metrics(w.dir)
    acc_ax = figure(w.dir).axes[0]
    assert not acc_ax.collections and "sd" not in acc_ax.get_legend().get_title().get_text()


def test_train_loss_is_drawn_per_head(grid_study):
    # as training records it: the sum of the heads' cross-entropies; CN-CNN has four heads
    heads = {"Baseline": {"s5": 1.0}, "CN-CNN": {"s3": 1.0, "s4": 1.0, "s5": 1.0, "cat": 1.0}}
    for d in grid_study.iterdir():
        if not (d / "metrics.jsonl").is_file():
            continue
        label = json.loads((d / "config.json").read_text())["label"]
        lines = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        for x in lines:
            x["test_heads"] = heads[label]
            x["train_loss"] *= len(heads[label])
        (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    loss_ax = figure(grid_study).axes[1]
    assert "per head" in loss_ax.get_ylabel()
    want = [statistics.mean(loss_at(s, e) for s in (0, 1)) for e in range(1, EPOCHS + 1)]
    for ln in loss_ax.lines:  # both rows: the per-head loss written, not 4x it for CN-CNN
        assert list(ln.get_ydata()) == pytest.approx(want)


def visible_ticks(ax) -> list[float]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(ax.figure).draw()
    lo, hi = ax.get_xlim()
    return [float(t) for t in ax.get_xticks() if lo <= t <= hi]


@pytest.mark.parametrize("epochs", [1, 2, EPOCHS])
def test_epoch_ticks_are_whole_epochs(tmp_path, epochs):
    w = StudyWriter(tmp_path, "short", seeds=[0, 1])
    w.row("Baseline", [("done", 70.0), ("done", 71.0)])
    w.row("B", [("done", 75.0), ("done", 77.0)], fusion="b")
    w.save()
    write_metrics(w.dir, epochs=epochs)
    for ax in figure(w.dir).axes[:2]:
        ticks = visible_ticks(ax)
        assert ticks and all(t == int(t) for t in ticks), ticks
        assert set(range(1, epochs + 1)) <= set(ticks)
        # the ±1 sd over the two seeds shows, at one epoch too (a zero-width band would not)
        band = ax.collections[1]
        box = band.get_paths()[0].get_extents()
        mean = ax.lines[1].get_ydata()[0]
        assert box.height > 0 and box.y0 < mean < box.y1
        assert box.width > 0 or (isinstance(band, LineCollection) and band.get_linewidth()[0] > 1)


def test_bars_show_deltas_with_their_intervals(grid_study):
    axes = figure(grid_study).axes
    r18, r50 = axes[2], axes[5]
    widths = [p.get_width() for p in r50.patches]
    d50 = statistics.mean(GRID[("CN-CNN", "resnet50")]) - statistics.mean(
        GRID[("Baseline", "resnet50")])
    assert widths == pytest.approx([0.0, d50])
    # resnet50: paired by seed (differences 0.2, 0.4), df 1
    half = T1 * statistics.stdev([0.2, 0.4]) / math.sqrt(2)
    bars = next(c for c in r50.containers if hasattr(c, "errorbar"))
    segments = bars.errorbar.lines[2][0].get_segments()
    xs = sorted(float(x) for x in segments[1][:, 0])
    assert xs == pytest.approx([d50 - half, d50 + half], abs=1e-3)
    labels = [t.get_text() for t in r50.get_yticklabels()]
    # as in the table: "(base)" on the baseline, ≈ where the interval holds 0
    assert labels == ["Baseline (base)", "CN-CNN ≈"]
    assert [p.get_width() for p in r18.patches] == pytest.approx([0.0, 5.0])


def test_every_axis_label_lies_inside_the_figure(grid_study, tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = figure(grid_study)
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)  # the constrained layout places the labels
    width = fig.bbox.width
    for ax in fig.axes:
        for label in (ax.xaxis.label, ax.yaxis.label):
            box = label.get_window_extent(renderer)
            assert 0 <= box.x0 and box.x1 <= width, (label.get_text(), box, width)


def test_one_seed_has_no_band_and_unfinished_epochs_count(tmp_path):
    w = StudyWriter(tmp_path, "one", seeds=[0, 1], baseline=None)
    w.row("A", [("done", 80.0), ("none",)])
    w.row("B", [("done", 60.0), ("done", 70.0)], fusion="b")
    w.save()
    write_metrics(w.dir)
    b_dir = next(d for d in w.dir.iterdir() if (d / "metrics.jsonl").is_file()
                 and json.loads((d / "config.json").read_text())["label"] == "B"
                 and json.loads((d / "config.json").read_text())["seed"] == 1)
    lines = (b_dir / "metrics.jsonl").read_text().splitlines()[:2]  # seed 1 stopped at epoch 2
    (b_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    acc_ax, _, bar_ax = figure(w.dir).axes
    assert [ln.get_label() for ln in acc_ax.lines] == ["A (n=1)", "B (n=2)"]
    assert len(acc_ax.collections) == 1  # B only
    b = acc_ax.lines[1]
    assert list(b.get_ydata()) == pytest.approx(
        [statistics.mean([acc_at(60, 1), acc_at(70, 1)]), statistics.mean([acc_at(60, 2),
                                                                          acc_at(70, 2)]),
         acc_at(60, 3), acc_at(60, 4)])
    # no baseline: bars are mean accuracies
    assert [p.get_width() for p in bar_ax.patches] == pytest.approx([80.0, 65.0])


def test_plot_writes_a_png_and_the_cli_prints_its_path(grid_study, tmp_path):
    out, notes = plot_study(grid_study, tmp_path / "f.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and notes == []
    res = CliRunner().invoke(plot_cmd, ["grid", "--results", str(grid_study.parent),
                                        "--out", str(tmp_path / "g.png")])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(tmp_path / "g.png") and (tmp_path / "g.png").is_file()


def test_a_study_without_epochs_is_one_clear_error(tmp_path):
    w = StudyWriter(tmp_path, "fresh", seeds=[0])
    w.row("Baseline", [("running",)])
    w.save()
    with pytest.raises(FusionLabError, match="no finished epochs yet"):
        plot_study(w.dir, tmp_path / "x.png")
    proc = subprocess.run([sys.executable, "-m", "fusion_lab", "plot", "nope",
                           "--results", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: no results for study 'nope'")


def test_best_val_without_a_validation_split_is_one_line(grid_study, tmp_path):
    with pytest.raises(FusionLabError, match="no best_val accuracy.*validation split.*"
                                             "use --metric final"):
        plot_study(grid_study, tmp_path / "x.png", metric="best_val")
    assert not (tmp_path / "x.png").exists()  # no figure with an empty panel
    res = CliRunner().invoke(plot_cmd, ["grid", "--results", str(grid_study.parent),
                                        "--metric", "best_val", "--out", str(tmp_path / "y.png")])
    assert res.exit_code != 0 and not (tmp_path / "y.png").exists()
    # one row with a validation split: drawn, and the notes say why the other has no bar
    w = StudyWriter(tmp_path, "val", seeds=[0])
    bv = {"epoch": 1, "val_acc": 90.0, "acc": 77.0, "heads": {}}
    w.row("Baseline", [("done", 80.0, None, bv)])
    w.row("B", [("done", 85.0)], fusion="b")
    w.save()
    write_metrics(w.dir)
    out, notes = plot_study(w.dir, tmp_path / "v.png", metric="best_val")
    assert out.is_file() and any("no best_val" in n for n in notes)
    assert any("1 row(s) have no finished run with a best_val accuracy" in n for n in notes)


def test_plot_does_not_import_torch(grid_study, tmp_path):
    code = ("import sys, fusion_lab.cli;"
            f"args = ['plot', {str(grid_study)!r}, '--out', {str(tmp_path / 'f.png')!r}];"
            "fusion_lab.cli.cli.main(args=args, standalone_mode=False);"
            "bad = [m for m in ('torch', 'timm', 'torchvision') if m in sys.modules];"
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "f.png").is_file()


def test_whiskers_are_cut_at_100_points(tmp_path):
    # 2 vs 2 seeds, differences 10 and 50 by seed: paired t (df 1) reaches far beyond ±100
    w = StudyWriter(tmp_path, "wide", seeds=[0, 1])
    w.row("Baseline", [("done", 40.0), ("done", 40.0)])
    w.row("B", [("done", 50.0), ("done", 90.0)], fusion="b")
    w.save()
    write_metrics(w.dir)
    bar_ax = figure(w.dir).axes[2]
    bars = next(c for c in bar_ax.containers if hasattr(c, "errorbar"))
    xs = sorted(float(x) for x in bars.errorbar.lines[2][0].get_segments()[1][:, 0])
    half = T1 * statistics.stdev([10.0, 50.0]) / math.sqrt(2)
    assert 30 - half < -100 and 30 + half > 100  # the interval itself
    assert xs == pytest.approx([-100.0, 100.0]) and "cut at ±100" in bar_ax.get_xlabel()
