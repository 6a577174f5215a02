"""`fusionlab table` on results folders written by hand after docs/results-format.md.

Expected numbers are computed here from the accuracies written into the fixtures
(statistics.mean / stdev, the binomial formula), never copied from the table's output.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from fusion_lab.analysis.table import tables
from fusion_lab.analysis.table_formats import latex_escape
from fusion_lab.cli.table import table as table_cmd
from fusion_lab.errors import FusionLabError

TEST_SIZE = 1000
# 97.5% quantiles from printed tables: Student t by degrees of freedom, and the normal
T1, T2, T4, Z = 12.706, 4.303, 2.776, 1.960


# --- writing a results store by hand ---------------------------------------------------

def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
                          ).hexdigest()


def _config(seed: int, backbone="resnet18", dataset="cub200", fusion="fpn_add", lr=1e-3):
    return {"dataset": {"name": dataset, "root": None, "val_fraction": 0.0},
            "model": {"backbone": backbone, "fusion": fusion, "attention": "sa+ca"},
            "train": {"epochs": 2, "lr_new": lr}, "seed": seed}


def _ids(cfg: dict) -> tuple[str, str]:
    return _digest(cfg), _digest({k: v for k, v in cfg.items() if k != "seed"})


class StudyWriter:
    """Writes results/<name>/ : study.json, run folders and their files."""

    def __init__(self, results: Path, name: str, seeds, baseline="Baseline", reference=None,
                 grid_axes=()):
        self.dir = results / name
        self.dir.mkdir(parents=True)
        self.study = {"name": name, "describe": f"{name} study", "baseline": baseline,
                      "seeds": list(seeds), "grid_axes": list(grid_axes),
                      "reference": reference or {}, "rows": [],
                      "updated": "2026-11-27T10:00:00+00:00"}

    def row(self, label, runs, grid=None, in_plan=True, **cfg_kw):
        """runs: one (status, acc) per seed; status done | failed | running | pending | none
        (none: no folder at all) | config (config.json only, no summary)."""
        grid = grid or {}
        run_ids, group_id = [], None
        for seed, spec in zip(self.study["seeds"], runs):
            cfg = _config(seed, **cfg_kw)
            run_id, group_id = _ids(cfg)
            run_ids.append(run_id)
            self._run(run_id, group_id, label, grid, seed, cfg, *spec)
        if in_plan:
            self.study["rows"].append({"label": label, "grid": grid, "group_id": group_id,
                                       "run_ids": run_ids})
        return group_id

    def _run(self, run_id, group_id, label, grid, seed, cfg, status, acc=None, heads=None,
             best_val=None, error=None):
        if status == "none":
            return
        d = self.dir / run_id
        d.mkdir()
        ident = {"run_id": run_id, "group_id": group_id, "study": self.study["name"],
                 "label": label, "grid": grid, "seed": seed}
        (d / "config.json").write_text(json.dumps({**ident, "config": cfg}))
        if status == "running":  # claimed on another machine, fresh heartbeat: running
            (d / "claim").write_text(json.dumps({"pid": 1, "host": "elsewhere-" +
                                                 socket.gethostname(), "ts": time.time(),
                                                 "token": "t", "lease_s": 300.0}))
        if status not in ("done", "failed"):
            return
        final = {"acc": acc, "heads": heads or {}} if status == "done" else None
        (d / "summary.json").write_text(json.dumps({
            **ident, "status": status, "error": error, "final": final,
            "best_val": best_val if status == "done" else None,
            "test_size": TEST_SIZE, "val_size": 0, "num_classes": 200, "epochs": 2,
            "wall_time_s": 1.0, "device": "cpu", "versions": {}, "git_commit": None,
            "skipped_images": 0, "finished": "2026-11-27T10:00:00+00:00"}))

    def save(self):
        (self.dir / "study.json").write_text(json.dumps(self.study))


def binom_se(acc: float) -> float:
    p = acc / 100
    return 100 * math.sqrt(p * (1 - p) / TEST_SIZE)


# accuracies written into the fixtures
BASE = [80.0, 81.0, 82.0]
HL = [84.0, 85.0, 86.0]  # delta +4 against a seed SE of sqrt(1/3 + 1/3): real
HLLH = [81.2, 82.2, 83.2]  # delta +1.2: between 1 and 2 seed SEs, within noise
CN = 83.0  # one seed: delta +2, between 1 and 2 binomial SEs: within noise
CONV = 88.0  # one seed: delta +7, beyond the binomial noise
STALE = 70.0  # an edited study's old Baseline config
HEADS = {0: {"l3": 70.0, "l4": 75.0}, 1: {"l3": 72.0, "l4": 76.0}, 2: {"l3": 74.0, "l4": 80.0}}


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return build_results(tmp_path / "results")


def build_results(res: Path) -> Path:
    """Two studies: "ablation" (complete, incomplete, failed, edited) and "grid"."""
    w = StudyWriter(res, "ablation", seeds=[0, 1, 2],
                    reference={"paper": {"Baseline": 84.1, "CN-CNN": 87.3}})
    w.row("Baseline", [("done", a, HEADS[i]) for i, a in enumerate(BASE)])
    w.row("HL", [("done", a) for a in HL], fusion="hl")
    w.row("HL+LH", [("done", a) for a in HLLH], fusion="hl+lh")
    w.row("CN-CNN", [("done", CN), ("failed", None, None, None, "RuntimeError: CUDA OOM"),
                     ("running",)], fusion="cn")
    w.row("w/ ConvLSTM", [("done", CONV), ("none",), ("config",)], fusion="convlstm")
    w.row("Baseline", [("done", STALE)], in_plan=False, lr=0.5)  # edited study leftover
    w.save()
    g = StudyWriter(res, "grid", seeds=[0, 1], grid_axes=["model.backbone"])
    for backbone, base, cn in (("resnet18", [70.0, 72.0], [75.0, 77.0]),
                               ("resnet50", [80.0, 80.4], [80.2, 80.8])):
        g.row("Baseline", [("done", a) for a in base], grid={"model.backbone": backbone},
              backbone=backbone)
        g.row("CN-CNN", [("done", a) for a in cn], grid={"model.backbone": backbone},
              backbone=backbone, fusion="convlstm")
    g.save()
    return res


GRID = {("Baseline", "resnet18"): [70.0, 72.0], ("CN-CNN", "resnet18"): [75.0, 77.0],
        ("Baseline", "resnet50"): [80.0, 80.4], ("CN-CNN", "resnet50"): [80.2, 80.8]}


def records(results: Path, *studies, **kw) -> dict[str, dict]:
    """Rows of the current plan by "study/label (grid)"."""
    out = tables(list(studies), results=results, fmt="json", **kw)
    grid = lambda r: f" ({', '.join(r['grid'].values())})" if r["grid"] else ""  # noqa: E731
    return {f"{r['study']}/{r['label']}{grid(r)}": r for r in json.loads(out.text)
            if r["in_plan"]}


def line(text: str, start: str, skip: str = "‡") -> str:
    """The one line starting with ``start`` (lines containing ``skip`` left out)."""
    hits = [ln for ln in text.splitlines()
            if ln.strip().startswith(start + " ") and skip not in ln]
    assert len(hits) == 1, (start, text)
    return hits[0]


def pm(values) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


# --- the table ----------------------------------------------------------------------

def test_plain_table_shows_mean_sample_std_n_reference_and_deltas(results):
    text = tables(["ablation"], results=results).text
    base = line(text, "Baseline")
    assert pm(BASE) in base and "resnet18" in base and "cub200" in base and "84.1" in base
    assert "(base)" in base
    hl = line(text, "HL")
    assert pm(HL) in hl
    assert f"{statistics.mean(HL) - statistics.mean(BASE):+.2f}" in hl and "≈" not in hl
    hllh = line(text, "HL+LH")
    assert f"{statistics.mean(HLLH) - statistics.mean(BASE):+.2f} ≈" in hllh
    cn = line(text, "CN-CNN")
    assert f"{CN:.2f}" in cn and "±" not in cn and "1/3 †" in cn and "87.3" in cn
    assert f"{CN - statistics.mean(BASE):+.2f} ≈" in cn
    conv = line(text, "w/ ConvLSTM")
    assert f"{CONV - statistics.mean(BASE):+.2f}" in conv and "≈" not in conv
    assert "ddof=1" in text and "†" in text and "within noise" in text


def test_noise_flags_follow_the_rule(results):
    recs = records(results, "ablation")
    b = statistics.mean(BASE)
    # both rows n = 3 on the same seeds, but every difference is the same (+4, +1.2):
    # a zero spread of differences says nothing, so Welch's t (df 4 for equal n and sd)
    se = math.sqrt(statistics.variance(HL) / 3 + statistics.variance(BASE) / 3)
    for label, accs in (("HL", HL), ("HL+LH", HLLH)):
        r, d = recs[f"ablation/{label}"], statistics.mean(accs) - b
        assert r["noise_basis"] == "welch" and r["df"] == pytest.approx(4.0)
        assert r["se_diff"] == pytest.approx(se)
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((d - T4 * se, d + T4 * se), abs=1e-3)
        assert r["within_noise"] is (abs(d) < T4 * se)
    assert recs["ablation/HL"]["within_noise"] is False
    assert recs["ablation/HL+LH"]["within_noise"] is True
    # one seed: binomial SE of each row's accuracy, combined, normal quantile
    se1 = math.sqrt(binom_se(CN) ** 2 + binom_se(b) ** 2)
    cn = recs["ablation/CN-CNN"]
    assert cn["se_diff"] == pytest.approx(se1) and cn["noise_basis"] == "binomial"
    assert cn["df"] is None  # infinite: JSON has no infinity
    assert cn["delta"] == pytest.approx(CN - b) and cn["within_noise"] is True
    assert cn["ci_low"] == pytest.approx(CN - b - Z * se1, abs=1e-3)
    conv = recs["ablation/w/ ConvLSTM"]
    assert conv["within_noise"] is (abs(CONV - b) < Z * math.sqrt(binom_se(CONV) ** 2
                                                                  + binom_se(b) ** 2))
    assert conv["within_noise"] is False
    assert recs["ablation/Baseline"]["is_baseline"] and recs["ablation/Baseline"]["delta"] is None


def test_failed_and_unfinished_runs_are_listed(results):
    text = tables(["ablation"], results=results).text
    notes = text.split("Not done")[1]
    assert "failed: RuntimeError: CUDA OOM" in line(notes, _prefix(results, "CN-CNN", 1))
    assert "running" in line(notes, _prefix(results, "CN-CNN", 2))
    assert "pending" in line(notes, _prefix(results, "w/ ConvLSTM", 1))  # no folder at all
    assert "pending" in line(notes, _prefix(results, "w/ ConvLSTM", 2))  # config, no summary
    assert "seed 1" in line(notes, _prefix(results, "CN-CNN", 1))


def _prefix(results: Path, label: str, seed_index: int) -> str:
    study = json.loads((results / "ablation/study.json").read_text())
    row = next(r for r in study["rows"] if r["label"] == label)
    return row["run_ids"][seed_index][:8]


def test_two_configs_with_one_label_stay_separate_rows(results):
    recs = json.loads(tables(["ablation"], results=results, fmt="json").text)
    bases = [r for r in recs if r["label"] == "Baseline"]
    assert len(bases) == 2 and bases[0]["group_id"] != bases[1]["group_id"]
    stale = next(r for r in bases if not r["in_plan"])
    assert stale["mean"] == STALE and stale["n"] == 1
    current = next(r for r in bases if r["in_plan"])
    assert current["mean"] == pytest.approx(statistics.mean(BASE)) and current["n"] == 3
    text = tables(["ablation"], results=results).text
    assert f"[{stale['group_id'][:8]}] ‡" in text and f"[{current['group_id'][:8]}]" in text


def test_grid_rows_take_deltas_within_their_grid_cell(results):
    recs = records(results, "grid")
    for bb in ("resnet18", "resnet50"):
        cn, base = GRID[("CN-CNN", bb)], GRID[("Baseline", bb)]
        r = recs[f"grid/CN-CNN ({bb})"]
        assert r["backbone"] == bb and r["std"] == pytest.approx(statistics.stdev(cn))
        assert r["delta"] == pytest.approx(statistics.mean(cn) - statistics.mean(base))
    # resnet18: +5 on both seeds (no spread of differences): Welch, df 2, so a 5-point
    # gap over 2 vs 2 seeds of sd 1.41 is within noise (the old 2·SE rule called it real)
    r18 = recs["grid/CN-CNN (resnet18)"]
    se = math.sqrt(statistics.variance([75.0, 77.0]) / 2 + statistics.variance([70.0, 72.0]) / 2)
    assert r18["noise_basis"] == "welch" and r18["df"] == pytest.approx(2.0)
    assert r18["ci_low"] == pytest.approx(5 - T2 * se, abs=1e-3) and 5 > 2 * se
    assert r18["within_noise"] is True
    # resnet50: differences by seed 0.2 and 0.4: paired, df 1
    r50 = recs["grid/CN-CNN (resnet50)"]
    half = T1 * statistics.stdev([0.2, 0.4]) / math.sqrt(2)
    assert r50["noise_basis"] == "paired" and r50["df"] == pytest.approx(1.0)
    assert (r50["ci_low"], r50["ci_high"]) == pytest.approx((0.3 - half, 0.3 + half), abs=1e-3)
    assert r50["within_noise"] is True


def test_all_studies_when_none_named(results):
    text = tables([], results=results).text
    assert text.index("ablation: ablation study") < text.index("grid: grid study")


def test_heads_are_seed_means(results):
    text = tables(["ablation"], results=results, heads=True).text
    assert "head l3" in text.splitlines()[1] and "head l4" in text.splitlines()[1]
    base = line(text, "Baseline")
    assert f"{statistics.mean(h['l3'] for h in HEADS.values()):.2f}" in base
    assert f"{statistics.mean(h['l4'] for h in HEADS.values()):.2f}" in base


# --- pivot --------------------------------------------------------------------------

def test_pivot_on_label_and_grid_axis(results):
    text = tables(["grid"], results=results, pivot=("label", "model.backbone")).text
    header = line(text, "label \\ model.backbone")
    assert header.index("resnet18") < header.index("resnet50")
    for label in ("Baseline", "CN-CNN"):
        row = line(text, label)
        assert row.index(pm(GRID[(label, "resnet18")])) < row.index(pm(GRID[(label, "resnet50")]))


def test_pivot_on_a_config_key(results):
    text = tables(["grid"], results=results, pivot=("model.fusion", "model.backbone")).text
    assert pm(GRID[("CN-CNN", "resnet50")]) in line(text, "convlstm")
    assert pm(GRID[("Baseline", "resnet18")]) in line(text, "fpn_add")


@pytest.mark.parametrize("flag", ["heads", "cost", "ci"])
def test_pivot_says_which_flags_it_does_not_show(results, flag):
    out = tables(["grid"], results=results, pivot=("label", "model.backbone"), **{flag: True})
    assert out.warnings == [f"--{flag} not shown in a --pivot table"]
    assert "CI" not in out.text and "interval" not in out.text.splitlines()[1]
    res = CliRunner().invoke(table_cmd, ["grid", "--results", str(results), "--ci",
                                         "--pivot", "label", "model.backbone"])
    assert res.exit_code == 0 and "--ci not shown in a --pivot table" in res.stderr


def test_pivot_json_gives_one_record_per_config(results):
    out = json.loads(tables(["grid"], results=results, fmt="json",
                            pivot=("label", "model.backbone")).text)
    cells = {(r["pivot_row"], r["pivot_col"]): r["mean"] for r in out}
    assert cells == {k: pytest.approx(statistics.mean(v)) for k, v in GRID.items()}


def test_pivot_unknown_key_is_a_user_error(results):
    with pytest.raises(FusionLabError, match="unknown pivot key 'model.fusoin'.*model.backbone"):
        tables(["grid"], results=results, pivot=("model.fusoin", "label"))


# --- metric -------------------------------------------------------------------------

def test_best_val_uses_best_val_acc_and_says_when_missing(tmp_path):
    w = StudyWriter(tmp_path, "val", seeds=[0, 1])
    bv = [{"epoch": 3, "val_acc": 90.0, "acc": 77.0, "heads": {}},
          {"epoch": 5, "val_acc": 91.0, "acc": 79.0, "heads": {}}]
    w.row("Baseline", [("done", 80.0, None, bv[0]), ("done", 81.0, None, bv[1])])
    w.row("CN-CNN", [("done", 85.0), ("done", 86.0)], fusion="cn")  # no validation split
    w.save()
    recs = records(tmp_path, "val", metric="best_val")
    assert recs["val/Baseline"]["mean"] == pytest.approx(78.0)
    assert recs["val/CN-CNN"]["mean"] is None and recs["val/CN-CNN"]["n"] == 0
    text = tables(["val"], results=tmp_path, metric="best_val").text
    assert "2 finished run(s) have no best_val" in text and "at the epoch with the best" in text
    assert records(tmp_path, "val")["val/CN-CNN"]["mean"] == pytest.approx(85.5)


# --- cost ---------------------------------------------------------------------------

def test_cost_columns_join_by_group_id(results):
    study = json.loads((results / "ablation/study.json").read_text())
    gid = study["rows"][0]["group_id"]
    (results / "ablation/cost.json").write_text(json.dumps({
        "device": "cpu", "measured": "x", "image_size": 448, "batch_size": 4,
        "baseline": "Baseline", "rows": {gid: {"label": "Baseline", "grid": {},
                                               "params": 23917832, "gflops": 32.7,
                                               "train_ips": 10.1, "infer_ips": 30.2,
                                               "train_ratio": 1.0, "infer_ratio": 1.0,
                                               "peak_mem_mb": 812.0}}}))
    text = tables(["ablation"], results=results, cost=True).text
    base = line(text, "Baseline")
    assert "23.9" in base and "32.70" in base and "10.1 (×1.00)" in base and "812" in base
    assert "missing from cost.json" in text
    rec = records(results, "ablation", cost=True)["ablation/HL"]
    assert rec["params"] is None
    text = tables(["grid"], results=results, cost=True).text
    assert "no cost profile: run fusionlab bench grid" in text


def test_cost_cells_show_the_spread_and_the_conditions(results):
    study = json.loads((results / "ablation/study.json").read_text())
    gid = study["rows"][1]["group_id"]
    (results / "ablation/cost.json").write_text(json.dumps({
        "device": "cuda:0 (NVIDIA H200)", "measured": "x", "image_size": 448,
        "batch_size": 32, "baseline": "Baseline",
        "conditions": {"repeats": 7, "warmup": 1, "cpu": "AMD EPYC", "cpus": 16,
                       "load_avg_start": [5.1, 4.0, 3.0], "load_avg_end": [6.25, 4.1, 3.0]},
        "rows": {gid: {"label": "HL", "grid": {}, "params": 25e6, "gflops": 40.0,
                       "train_ips": 1234.4, "train_ips_range": [980.0, 1301.6],
                       "train_ratio": 0.5, "train_ratio_range": [0.2, 1.05],
                       "infer_ips": 0.184, "infer_ips_range": [0.15, 0.2],
                       "infer_ratio": 0.61, "infer_ratio_range": [0.6, 0.62],
                       "peak_mem_mb": 812.0}}}))
    text = tables(["ablation"], results=results, cost=True).text
    hl = line(text, "HL")
    assert "1234 [980-1302] (×0.50 [0.20-1.05])" in hl
    assert "0.184 [0.15-0.2] (×0.61 [0.60-0.62])" in hl
    assert ("Cost measured on cuda:0 (NVIDIA H200), 448x448, batch 32; 7 round-robin "
            "rounds after 1 warm-up; load average 5.10 -> 6.25 (1 min) on 16 CPUs") in text
    rec = records(results, "ablation", cost=True)["ablation/HL"]
    assert rec["train_ratio_range"] == [0.2, 1.05]


# --- formats ------------------------------------------------------------------------

def test_csv_is_machine_readable(results):
    out = tables(["ablation", "grid"], results=results, fmt="csv")
    rows = list(csv.DictReader(io.StringIO(out.text)))
    hl = next(r for r in rows if r["row"] == "HL")
    assert float(hl["mean"]) == pytest.approx(statistics.mean(HL))
    assert float(hl["std"]) == pytest.approx(statistics.stdev(HL))
    assert hl["n"] == "3" and hl["within_noise"] == "False" and hl["study"] == "ablation"
    assert {r["study"] for r in rows} == {"ablation", "grid"}
    assert any("Not done" in w for w in out.warnings)  # notes go to stderr


def test_github_and_latex(results):
    gh = tables(["ablation"], results=results, fmt="github").text
    assert gh.splitlines()[1].startswith("| Row") and "|-" in gh.splitlines()[2]
    # a blank line ends the Markdown table before its footnotes (else they join the table)
    lines = gh.splitlines()
    last_row = max(i for i, ln in enumerate(lines) if ln.startswith("|"))
    assert lines[last_row + 1] == "" and lines[last_row + 2].startswith("Acc: mean")
    tex = tables(["ablation"], results=results, fmt="latex").text
    for cmd in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}"):
        assert cmd in tex
    assert r"$\pm$" in tex and "HL+LH" in tex
    assert latex_escape("50% a_b & #1 ~") == r"50\% a\_b \& \#1 \textasciitilde{}"


def test_latex_escapes_labels(tmp_path):
    w = StudyWriter(tmp_path, "esc", seeds=[0])
    w.row("Baseline", [("done", 80.0)])
    w.row("drop 50% & a_b #1", [("done", 81.0)], fusion="x")
    w.save()
    tex = tables(["esc"], results=tmp_path, fmt="latex").text
    assert r"drop 50\% \& a\_b \#1" in tex


def test_latex_minus_signs_and_missing_values_differ(tmp_path):
    w = StudyWriter(tmp_path, "neg", seeds=[0, 1], reference={"paper": {"Baseline": 84.1}})
    w.row("Baseline", [("done", 80.0), ("done", 81.0)])
    w.row("CN-CNN", [("done", 77.0), ("done", 79.5)], fusion="cn")  # Δ -2.25, no paper value
    w.save()
    tex = tables(["neg"], results=tmp_path, fmt="latex", ci=True).text
    row = next(ln for ln in tex.splitlines() if ln.startswith("CN-CNN &"))
    cells = [c.strip() for c in row.removesuffix(r"\\").split(" & ")]
    assert "--" in cells  # the missing paper value: an en dash
    assert "$-$2.25" in row and not re.search(r"(?<![$\w])-\d", row)  # no hyphen as minus
    assert cells[0] == "CN-CNN"  # a hyphen in a label stays one


# --- arguments, errors, CLI ---------------------------------------------------------

def test_study_by_folder_and_by_yaml(results, tmp_path):
    by_folder = tables([str(results / "grid")], results=tmp_path / "elsewhere").text
    assert "grid: grid study" in by_folder
    yml = tmp_path / "studies" / "g.yaml"
    yml.parent.mkdir()
    yml.write_text("name: grid\nseeds: [0, 1]\n")
    assert "grid: grid study" in tables([str(yml)], results=results).text


@pytest.mark.parametrize("kw, match", [
    ({"studies": ["nope"]}, "no results for study 'nope'.*ablation, grid"),
    ({"fmt": "xlsx"}, "unknown format 'xlsx'"),
    ({"metric": "best"}, "unknown metric 'best'"),
])
def test_user_errors(results, kw, match):
    with pytest.raises(FusionLabError, match=match):
        tables(results=results, **{"studies": ["grid"], **kw})


def test_empty_results_folder(tmp_path):
    with pytest.raises(FusionLabError, match="no studies in"):
        tables([], results=tmp_path)


def test_cli(results):
    runner = CliRunner()
    res = runner.invoke(table_cmd, ["ablation", "--results", str(results), "--heads"])
    assert res.exit_code == 0, res.output
    assert pm(BASE) in line(res.output, "Baseline") and "head l3" in res.output
    res = runner.invoke(table_cmd, ["grid", "--results", str(results),
                                    "--pivot", "label", "model.backbone", "--format", "json"])
    assert res.exit_code == 0 and len(json.loads(res.stdout)) == 4
    res = runner.invoke(table_cmd, ["nope", "--results", str(results)])
    assert isinstance(res.exception, FusionLabError)


def test_cli_main_prints_user_error_as_one_line(results, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fusion_lab", "table", "nope",
                           "--results", str(results)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: no results for study 'nope'")


def test_table_path_does_not_import_torch(results):
    code = ("import sys, fusion_lab.cli.table, fusion_lab.analysis.table, fusion_lab.analysis.aggregate;"
            f"fusion_lab.analysis.table.tables([], results={str(results)!r});"
            "bad = [m for m in ('torch', 'timm', 'torchvision') if m in sys.modules];"
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_identical_seeds_fall_back_to_the_binomial_se(tmp_path):
    w = StudyWriter(tmp_path, "det", seeds=[0, 1])
    w.row("Baseline", [("done", 80.0), ("done", 80.0)])
    w.row("B", [("done", 80.6), ("done", 80.6)], fusion="b")
    w.save()
    r = records(tmp_path, "det")["det/B"]
    se = math.sqrt(binom_se(80.6) ** 2 + binom_se(80.0) ** 2)
    assert r["noise_basis"] == "binomial" and r["se_diff"] == pytest.approx(se)
    assert r["within_noise"] is (0.6 < Z * se) is True


def test_missing_test_size_is_not_called_noise(tmp_path):
    w = StudyWriter(tmp_path, "nots", seeds=[0])
    w.row("Baseline", [("done", 80.0)])
    w.row("B", [("done", 80.1)], fusion="b")
    w.save()
    for p in (tmp_path / "nots").glob("*/summary.json"):
        s = json.loads(p.read_text())
        del s["test_size"]
        p.write_text(json.dumps(s))
    assert records(tmp_path, "nots")["nots/B"]["within_noise"] is None
    text = tables(["nots"], results=tmp_path).text
    assert "+0.10 ?" in line(text, "B") and "no test_size" in text


def test_cli_default_results_folder_and_stderr_notes(results, monkeypatch):
    monkeypatch.chdir(results.parent)
    res = CliRunner().invoke(table_cmd, ["--format", "json"])
    assert res.exit_code == 0, res.output
    recs = json.loads(res.stdout)  # stdout stays machine-readable
    assert {r["study"] for r in recs} == {"ablation", "grid"}
    assert "failed: RuntimeError: CUDA OOM" in res.stderr


def test_missing_results_folder(tmp_path):
    with pytest.raises(FusionLabError, match="no results folder"):
        tables([], results=tmp_path / "nothing")


def test_study_with_nothing_finished_yet(tmp_path):
    w = StudyWriter(tmp_path, "fresh", seeds=[0, 1])
    w.row("Baseline", [("none",), ("running",)])
    w.save()
    text = tables(["fresh"], results=tmp_path).text
    row = line(text, "Baseline")
    assert "0/2 †" in row and "±" not in row
    assert "pending" in text and "running" in text
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank/study.json").write_text(json.dumps({**w.study, "name": "blank",
                                                            "rows": []}))
    assert "no runs yet" in tables(["blank"], results=tmp_path).text


def test_a_study_without_baseline_has_no_delta_column_and_says_why(tmp_path):
    w = StudyWriter(tmp_path, "nobase", seeds=[0], baseline=None)
    w.row("A", [("done", 80.0)])
    w.row("B", [("done", 82.0)], fusion="cn")
    w.save()
    text = tables(["nobase"], results=tmp_path).text
    assert "Δ" not in text.splitlines()[1]  # the header row
    assert "names no `baseline:` row" in text


# --- intervals, --ci and the planning line ------------------------------------------

def test_paired_seeds_give_a_narrower_interval_than_other_seeds(tmp_path):
    w = StudyWriter(tmp_path, "small", seeds=[0, 1, 2, 3])
    w.row("Baseline", [("done", 80.0), ("done", 82.0), ("done", 84.0), ("none",)])
    # same seeds 0-2, differences 3, 2, 4 (mean 3, sd 1): paired t, df 2
    w.row("P", [("done", 83.0), ("done", 84.0), ("done", 88.0), ("none",)], fusion="p")
    # seeds 1-3, Δ = +4, sd 2 each: Welch, df 4
    w.row("W", [("none",), ("done", 84.0), ("done", 86.0), ("done", 88.0)], fusion="w")
    w.save()
    recs = records(tmp_path, "small")
    p, wr = recs["small/P"], recs["small/W"]
    half = T2 / math.sqrt(3)
    assert p["noise_basis"] == "paired" and p["within_noise"] is False
    assert (p["ci_low"], p["ci_high"]) == pytest.approx((3 - half, 3 + half), abs=1e-3)
    se = math.sqrt(4 / 3 + 4 / 3)
    assert wr["noise_basis"] == "welch" and wr["within_noise"] is True
    assert (wr["ci_low"], wr["ci_high"]) == pytest.approx((4 - T4 * se, 4 + T4 * se), abs=1e-3)
    text = tables(["small"], results=tmp_path, ci=True).text
    assert "95% CI of Δ" in text.splitlines()[1]
    assert f"[{3 - half:+.2f}, {3 + half:+.2f}] paired" in line(text, "P")
    assert "+4.00 ≈" in line(text, "W") and "welch" in line(text, "W")
    assert "paired t: P; Welch t: W" in text
    compact = tables(["small"], results=tmp_path).text
    assert "CI" not in compact.splitlines()[1] and "paired" not in line(compact, "P")


@pytest.mark.parametrize("delta, need", [(1.0, "about 17 seeds per row"),
                                         (0.5, "more than 50 seeds per row")])
def test_planning_line_uses_the_pooled_spread(tmp_path, delta, need):
    # every row has sd 1 (pooled s = 1): Δ / s = 1 needs 17 seeds per row (Cohen's table
    # for 80% power at the 5% level); Δ / s = 0.5 needs 64, more than the cap of 50
    w = StudyWriter(tmp_path, "plan", seeds=[0, 1, 2])
    w.row("Baseline", [("done", 80.0), ("done", 81.0), ("done", 82.0)])
    w.row("B", [("done", 81.0 + delta), ("done", 82.0 + delta), ("done", 80.0 + delta)],
          fusion="b")
    w.row("C", [("done", 90.0), ("done", 91.0), ("done", 92.0)], fusion="c")
    w.save()
    plan = line(tables(["plan"], results=tmp_path).text, "Planning:")
    assert "s = 1.00 (df 6)" in plan and need in plan and f"{delta:+.2f}, B" in plan


def test_planning_leaves_out_rows_without_seed_spread(tmp_path):
    # C ran 3 identical seeds (a deterministic run): pooling its zero spread would give
    # s = sqrt(4 / 6) with df 6; only the rows with a spread count: s = 1 with df 4
    w = StudyWriter(tmp_path, "plan", seeds=[0, 1, 2])
    w.row("Baseline", [("done", 80.0), ("done", 81.0), ("done", 82.0)])
    w.row("B", [("done", 82.0), ("done", 83.0), ("done", 81.0)], fusion="b")
    w.row("C", [("done", 90.0), ("done", 90.0), ("done", 90.0)], fusion="c")
    w.save()
    plan = line(tables(["plan"], results=tmp_path).text, "Planning:")
    assert "s = 1.00 (df 4)" in plan and "about 17 seeds per row" in plan


def test_planning_skips_a_zero_delta(tmp_path):
    # B equals the baseline: no number of seeds detects a Δ of 0; plan for C's Δ instead
    w = StudyWriter(tmp_path, "zero", seeds=[0, 1, 2])
    w.row("Baseline", [("done", 80.0), ("done", 81.0), ("done", 82.0)])
    w.row("B", [("done", 80.0), ("done", 82.0), ("done", 81.0)], fusion="b")
    w.row("C", [("done", 81.0), ("done", 82.0), ("done", 83.0)], fusion="c")
    w.save()
    plan = line(tables(["zero"], results=tmp_path).text, "Planning:")
    assert "more than" not in plan and "(+1.00, C)" in plan and "about 17" in plan
    assert "A Δ of 0 (B) is left out" in plan
    only = StudyWriter(tmp_path, "only", seeds=[0, 1])
    only.row("Baseline", [("done", 80.0), ("done", 81.0)])
    only.row("B", [("done", 81.0), ("done", 80.0)], fusion="b")
    only.save()
    plan = line(tables(["only"], results=tmp_path).text, "Planning:")
    assert "more than" not in plan and "every Δ shown is 0" in plan


def test_a_binomial_interval_says_why(tmp_path):
    # 3 seeds each, no spread in either row: binomial, but not "one seed"
    w = StudyWriter(tmp_path, "det", seeds=[0, 1, 2])
    w.row("Baseline", [("done", 80.0)] * 3)
    w.row("B", [("done", 82.0)] * 3, fusion="b")
    w.row("C", [("done", 83.0), ("none",), ("none",)], fusion="c")
    w.save()
    text = tables(["det"], results=tmp_path).text
    assert "binomial (no seed spread): B" in text and "binomial (one seed): C" in text


def test_planning_without_seed_spread_says_so(tmp_path):
    w = StudyWriter(tmp_path, "one", seeds=[0])
    w.row("Baseline", [("done", 80.0)])
    w.row("B", [("done", 82.0)], fusion="b")
    w.save()
    text = tables(["one"], results=tmp_path).text
    assert "no seed spread yet" in line(text, "Planning:")
    assert "binomial (one seed): B" in text


def test_cli_ci_flag(results):
    res = CliRunner().invoke(table_cmd, ["grid", "--results", str(results), "--ci"])
    assert res.exit_code == 0, res.output
    assert "paired" in line(res.output, "CN-CNN (resnet50)")
