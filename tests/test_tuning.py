"""Tuning (issue 22): the tune: block, trials planned in advance, the choice, final runs,
the tuning table and the expected-max estimator.

The known-answer tests replace ``train_run`` with a stand-in whose validation accuracy is
a known function of ``train.lr_new`` (a peak at 0.03 in log space): the machinery around
it (planning, the runner's claims and files, the choice, the final runs, the table) is
the real one, and the right answer can be computed by hand from the points.
"""

import itertools
import json
import math
import textwrap
from pathlib import Path

import pytest
from cli_run import run_cli

from fusion_lab import store
from fusion_lab.analysis.tuning import expected_max
from fusion_lab.orchestrate.study_run import RunOptions, run_study
from fusion_lab.plan.tuning import choose

TINY = Path(__file__).parent / "plugins" / "tiny_backbone.py"
STUDY = """
name: tuned
plugins: [{tiny}]
base:
  dataset:
    name: synthetic_fgvc
    val_fraction: 0.25
    options: {{num_classes: 3, train_per_class: 8, test_per_class: 3, image_size: 32}}
  model: {{backbone: tiny_cnn, width: 8, hidden: 8}}
  train: {{epochs: {epochs}, batch_size: 6, image_size: 32, resize: 36, workers: 0,
           lr_backbone: 0.01, lr_new: 0.01}}
variants:
  - {{label: Baseline, model: {{preset: baseline}}}}
  - {{label: HL, model: {{preset: hl}}}}
seeds: [0, 1]
baseline: Baseline
tune:
  space: {{train.lr_new: {{log_uniform: [0.001, 1.0]}}}}
  trials: {trials}
  seed: 100
"""


def write_study(tmp_path, trials=6, epochs=2, extra=""):
    p = tmp_path / "tuned.yaml"
    p.write_text(textwrap.dedent(STUDY.format(tiny=TINY, trials=trials, epochs=epochs)) + extra)
    return p


def objective(lr):
    """The known validation accuracy (%): 90 at lr_new = 0.03, falling off in log10(lr)."""
    return 90.0 - 20.0 * (math.log10(lr) - math.log10(0.03)) ** 2


@pytest.fixture
def fake_training(monkeypatch):
    """train_run replaced: each epoch's line carries objective(lr_new) as val_acc, and the
    test accuracy is that plus the seed (so the final runs' seeds are told apart)."""
    from fusion_lab.training import train

    calls = []

    def fake(run_dir, cfg, run_id, device="auto", progress=None, before_write=None, **kw):
        calls.append(run_id)
        val = objective(cfg.train.lr_new)
        for epoch in range(cfg.train.epochs):
            store.append_jsonl(Path(run_dir) / store.METRICS_JSONL,
                               {"epoch": epoch + 1, "val_acc": val, "test_acc": val + cfg.seed})
        return {"final": {"acc": val + cfg.seed, "heads": {}}, "epochs": cfg.train.epochs,
                "val_size": 10000, "test_size": 9, "setup_s": 0.0, "train_time_s": 0.0}

    monkeypatch.setattr(train, "train_run", fake)
    return calls


def test_expected_max_matches_brute_force_over_k_subsets_with_replacement():
    for values in ([3.0], [1.0, 2.0], [5.0, 1.0, 3.0], [2.0, 2.0, 7.0, 4.0]):
        n = len(values)
        for k in range(1, 5):
            tuples = list(itertools.product(values, repeat=k))
            brute = sum(max(t) for t in tuples) / n ** k
            assert expected_max(values, k) == pytest.approx(brute)


def test_choice_takes_the_best_and_breaks_a_tie_within_one_image_by_trial_number():
    # 50 validation images: one image is 2 points
    assert choose([(0, 60.0, 50), (1, 70.0, 50), (2, 64.0, 50)]) == 1
    assert choose([(0, 60.0, 50), (1, 70.0, 50), (2, 68.0, 50)]) == 1
    assert choose([(0, 68.0, 50), (1, 70.0, 50)]) == 0  # tied: the earlier trial
    assert choose([(0, None, 50), (1, 40.0, 50)]) == 1  # a failed trial is not chosen
    assert choose([(0, None, 50)]) is None


def test_known_answer_best_trial_found_and_every_row_the_same_budget(
        tmp_path, fake_training, capsys):
    study = write_study(tmp_path, trials=6)
    results = tmp_path / "results"
    report = run_study(RunOptions(study, results=results, device="cpu", progress="off"))
    assert report.code == 0 and report.finished
    doc = json.loads((results / "tuned" / "tuning.json").read_text())
    assert len(doc["rows"]) == 2
    for row in doc["rows"]:
        lrs = [t["params"]["train.lr_new"] for t in row["trials"]]
        assert len(lrs) == 6 and all(t["status"] == "done" for t in row["trials"])
        assert all(t["epochs"] == 2 for t in row["trials"])
        best = max(range(6), key=lambda i: objective(lrs[i]))  # by hand, from the points
        assert row["chosen"] == best
        assert row["chosen_params"] == {"train.lr_new": lrs[best]}
        assert len(row["final_run_ids"]) == 2 and len(row["shared_run_ids"]) == 2
    # the same points for every row, all within the space
    points = [[t["params"] for t in row["trials"]] for row in doc["rows"]]
    assert points[0] == points[1]
    assert all(0.001 <= p["train.lr_new"] <= 1.0 for p in points[0])
    # trials (2 rows x 6) + shared recipe (2 x 2 seeds) + finals (2 x 2 seeds), once each
    assert len(fake_training) == len(set(fake_training)) == 12 + 4 + 4
    before = len(fake_training)
    run_study(RunOptions(study, results=results, device="cpu", progress="off"))
    assert len(fake_training) == before  # a rerun trains nothing
    code, out, _ = run_cli(["table", "tuned", "--results", str(results)], capsys)
    assert code == 0 and "Tuned" in out and "Shared recipe" in out and "12/" not in out
    assert "6/6" in out and "lr_new=" in out
    for fmt in ("json", "csv", "latex"):
        code, out, _ = run_cli(["table", "tuned", "--results", str(results), "--format", fmt],
                               capsys)
        assert code == 0 and "Baseline" in out
    recs = json.loads(run_cli(["table", "tuned", "--results", str(results),
                               "--format", "json"], capsys)[1])
    hl = next(r for r in recs if r["label"] == "HL")
    # both rows tuned to the same point by the same objective: test acc = val + seed
    assert hl["delta_tuned"] == pytest.approx(0.0)
    assert hl["tuned_acc"] == pytest.approx(objective(hl["chosen"]["train.lr_new"]) + 0.5)


@pytest.mark.parametrize("patch, needle", [
    ("  space: {train.lr_nw: {uniform: [0.1, 0.2]}}", "tune.space.train.lr_nw: not a config"),
    ("  space: {train.lr_new: {uniform: [0.2, 0.1]}}", "low < high"),
    ("  space: {train.lr_new: {log_uniform: [0.0, 0.1]}}", "log range must be above 0"),
    ("  trials: 0", "tune.trials must be an integer >= 1"),
    ("  sampler: random", "unknown tune.sampler 'random'"),
    ("  pruner: median", "unknown tune.pruner 'median'"),
    ("VAL0", "needs a validation split"),
    ("VARIANT", "variant 'HL' sets train.lr_new, which tune.space searches"),
])
def test_bad_tune_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, patch, needle):
    text = textwrap.dedent(STUDY.format(tiny=TINY, trials=3, epochs=1))
    if patch == "VAL0":
        text = text.replace("val_fraction: 0.25", "val_fraction: 0.0")
    elif patch == "VARIANT":
        text = text.replace("{label: HL, model: {preset: hl}}",
                            "{label: HL, model: {preset: hl}, train: {lr_new: 0.1}}")
    else:
        key = patch.split(":")[0].strip()
        text = "\n".join(ln for ln in text.splitlines() if not ln.startswith(f"  {key}:"))
        text += "\n" + patch + "\n"
    p = tmp_path / "tuned.yaml"
    p.write_text(text)
    results = tmp_path / "results"
    code, out, err = run_cli(["run", str(p), "--results", str(results), "--device", "cpu"],
                             capsys)
    assert code == 2, err
    assert needle in err and len(err.strip().splitlines()) == 1, err
    assert not results.exists()


def fusionlab(*args, **kw):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-m", "fusion_lab", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def finished_trials(results):
    return {p.parent.name: (json.loads(p.read_text()).get("finished"), p.stat().st_mtime_ns)
            for p in Path(results).glob("tuned/trials/*/summary.json")}


def table_json(results, capsys):
    code, out, err = run_cli(["table", "tuned", "--results", str(results), "--format",
                              "json"], capsys)
    assert code == 0, err
    return json.loads(out)


def test_dry_run_lists_trials_then_final_runs_with_their_status(tmp_path, capsys, fake_training):
    study = write_study(tmp_path, trials=3)
    results = tmp_path / "results"
    code, out, _ = run_cli(["run", str(study), "--results", str(results), "--dry-run"], capsys)
    assert code == 0 and not results.exists()
    assert "[trials]" in out and "6 runs" in out and "[shared recipe]" in out
    assert "[final] planned once every trial has finished" in out
    run_study(RunOptions(study, results=results, device="cpu", progress="off"))
    code, out, _ = run_cli(["run", str(study), "--results", str(results), "--dry-run"], capsys)
    assert "[final]" in out and "4 runs" in out and "4 done" in out and "6 done" in out


@pytest.mark.slow
def test_kill_9_in_tuning_then_rerun_trains_no_trial_twice_and_gives_the_same_table(
        tmp_path, capsys):
    import signal
    import time

    study = write_study(tmp_path, trials=3, epochs=2)
    a, b = tmp_path / "a", tmp_path / "b"
    args = ["run", study, "--device", "cpu", "--progress", "off", "--lease", "3", "--no-table"]
    assert fusionlab(*args, "--results", a).wait(timeout=600) == 0
    p = fusionlab(*args, "--results", b)
    deadline = time.time() + 300
    while len(finished_trials(b)) < 2 and time.time() < deadline:
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    before = finished_trials(b)
    assert 2 <= len(before) < 6  # killed in the middle of the trials
    assert fusionlab(*args, "--results", b).wait(timeout=600) == 0
    after = finished_trials(b)
    assert len(after) == 6 and all(after[k] == v for k, v in before.items())
    assert table_json(a, capsys) == table_json(b, capsys)


@pytest.mark.slow
def test_two_runners_started_together_train_every_trial_once(tmp_path, capsys):
    study = write_study(tmp_path, trials=3, epochs=2)
    results = tmp_path / "results"
    args = ["run", study, "--device", "cpu", "--progress", "off", "--no-table",
            "--results", results]
    procs = [fusionlab(*args), fusionlab(*args)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    owners = [json.loads(p.read_text()).get("trained_by")
              for p in results.glob("tuned/**/summary.json")]
    assert len(owners) == 6 + 4 + 4
    for d in results.glob("tuned/**/metrics.jsonl"):  # each run's epochs once
        assert [json.loads(x)["epoch"] for x in d.read_text().splitlines()] == [1, 2]
    recs = table_json(results, capsys)
    assert all(r["trials_done"] == 3 and r["tuned_acc"] is not None for r in recs)


def test_plot_tuning_draws_a_png_and_refuses_an_untuned_study(tmp_path, capsys, fake_training):
    study = write_study(tmp_path, trials=3)
    results = tmp_path / "results"
    run_study(RunOptions(study, results=results, device="cpu", progress="off"))
    png = tmp_path / "t.png"
    code, out, err = run_cli(["plot", "tuned", "--results", str(results), "--tuning",
                              "--out", str(png)], capsys)
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (results / "tuned" / "tuning.json").unlink()
    code, _, err = run_cli(["plot", "tuned", "--results", str(results), "--tuning"], capsys)
    assert code == 2 and "was not tuned" in err


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["qmc", "tpe"])
def test_a_tuned_study_on_the_slurm_launcher_trains_its_trials_and_final_runs_in_tasks(
        tmp_path, capsys, sampler):
    """Each slurm (or ray) task loads the study again and trains one run by its id: for a
    tuned study that is a trial (under <study>/trials) or a final run, never a run of the
    study as written; the task must find it (it used to refuse: 'no longer part of study').
    submitit's local executor runs the same task function as a cluster does."""
    pytest.importorskip("submitit")
    extra = f"  shared: false\n  sampler: {sampler}\n"
    study = write_study(tmp_path, trials=2, epochs=1, extra=extra)
    results = tmp_path / "results"
    args = ["run", str(study), "--results", str(results), "--device", "cpu", "--launcher",
            "slurm", "--launcher-opt", "cluster=local", "--launcher-opt", "gpus=0", "--wait"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert "no longer part of study" not in err
    trials = list(results.glob("tuned/trials/*/summary.json"))
    finals = list(results.glob("tuned/*/summary.json"))
    assert len(trials) == 2 * 2 and len(finals) == 2 * 2  # 2 rows x (2 trials | 2 seeds)
    for p in trials + finals:
        assert json.loads(p.read_text())["status"] == "done"
    recs = table_json(results, capsys)
    assert all(r["trials_done"] == 2 and r["tuned_acc"] is not None for r in recs)


@pytest.mark.slow
def test_a_tuned_study_with_nproc_2_trains_its_trials_and_final_runs_with_ddp(
        tmp_path, capsys):
    """--nproc N: each phase (trials, then final runs) on N DDP processes under torchrun;
    every run is a DDP run (train.world_size in its config, so its own id). A pruner
    stops trials on one process only: refused with --nproc, one line."""
    study = write_study(tmp_path, trials=2, epochs=1, extra="  shared: false\n")
    results = tmp_path / "results"
    code, out, err = run_cli(["run", str(study), "--results", str(results), "--device", "cpu",
                              "--nproc", "2", "--progress", "off"], capsys)
    assert code == 0, err
    trials = [json.loads(p.read_text()) for p in results.glob("tuned/trials/*/summary.json")]
    finals = [json.loads(p.read_text()) for p in results.glob("tuned/*/summary.json")]
    assert len(trials) == 4 and len(finals) == 4  # 2 rows x (2 trials | 2 seeds)
    assert all(s["status"] == "done" and s["world_size"] == 2 for s in trials + finals)
    assert not (results / "tuned" / "trials" / "study.json").exists()
    assert all(r["trials_done"] == 2 and r["tuned_acc"] is not None
               for r in table_json(results, capsys))
    (tmp_path / "p").mkdir()
    pruned = write_study(tmp_path / "p", trials=2, epochs=2, extra="  pruner: asha\n")
    code, out, err = run_cli(["run", str(pruned), "--results", str(tmp_path / "r2"),
                              "--device", "cpu", "--nproc", "2"], capsys)
    assert code == 2 and "leave out --nproc or tune.pruner" in err and err.count("\n") == 1
    assert not (tmp_path / "r2").exists()


def test_the_tuning_table_gives_each_delta_its_paired_interval_and_marks_noise(tmp_path):
    """Known answer by hand: tuned HL - Baseline by seed = 4, 1, 7: mean 4, sd 3, se
    3/sqrt(3); t(0.975, df 2) = 4.3027 -> 4 ± 7.452 = [-3.45, +11.45], contains 0 (≈).
    CN-CNN - Baseline = -10, -11, -9: mean -10, sd 1 -> -10 ± 2.484 = [-12.48, -7.52]."""
    from fusion_lab.analysis.tuning import tuning_records, tuning_table

    study = tmp_path / "tuned"
    accs = {"Baseline": [50.0, 60.0, 55.0], "HL": [54.0, 61.0, 62.0],
            "CN-CNN": [40.0, 49.0, 46.0]}
    rows = []
    for label, values in accs.items():
        ids = []
        for seed, acc in enumerate(values):
            rid = f"{label}-{seed}"
            store.write_json(study / rid / "summary.json",
                             {"status": "done", "seed": seed, "test_size": 500,
                              "final": {"acc": acc}})
            ids.append(rid)
        rows.append({"label": label, "grid": {}, "trials": [], "final_run_ids": ids,
                     "shared_run_ids": []})
    store.write_json(study / "tuning.json", {"name": "tuned", "baseline": "Baseline",
                                             "tune": {"pruner": "none"}, "rows": rows})
    recs = {r["label"]: r for r in tuning_records(study)}
    low, high, basis = recs["HL"]["delta_tuned_ci"]
    assert basis == "paired" and recs["HL"]["delta_tuned"] == pytest.approx(4.0)
    assert (low, high) == (pytest.approx(-3.452, abs=2e-3), pytest.approx(11.452, abs=2e-3))
    low, high, _ = recs["CN-CNN"]["delta_tuned_ci"]
    assert (low, high) == (pytest.approx(-12.484, abs=2e-3), pytest.approx(-7.516, abs=2e-3))
    assert recs["Baseline"]["delta_tuned_ci"] is None and recs["HL"]["delta_shared_ci"] is None
    text = tuning_table(study)
    assert "+4.00 ≈ [-3.5, +11.5]" in text and "-10.00 [-12.5, -7.5]" in text


@pytest.mark.parametrize("sampler", ["qmc", "tpe"])
def test_rerun_only_a_row_of_a_tuned_study_tunes_that_row_again_from_scratch(
        tmp_path, fake_training, capsys, sampler):
    """--rerun --only HL: HL's trials, shared-recipe and final runs move to .replaced/
    and train again (a TPE row's recorded sequence is asked again); the Baseline's stay.
    A rerun-only that names no row is one line, exit 2, and moves nothing."""
    study = write_study(tmp_path, trials=3, extra=f"  sampler: {sampler}\n")
    results = tmp_path / "results"
    args = ["run", str(study), "--results", str(results), "--device", "cpu",
            "--progress", "off", "--no-table"]
    assert run_cli(args, capsys)[0] == 0
    first = list(fake_training)
    assert len(first) == 6 + 4 + 4
    before = json.loads((results / "tuned" / "tuning.json").read_text())
    code, _, err = run_cli(args + ["--rerun", "--only", "HL"], capsys)
    assert code == 0, err
    again = fake_training[len(first):]
    assert len(again) == 3 + 2 + 2 and set(again) <= set(first)  # HL's runs, same ids
    replaced = {p.name[:64] for p in results.glob("tuned/**/.replaced/*")}
    assert replaced == set(again)
    after = json.loads((results / "tuned" / "tuning.json").read_text())
    assert [r["chosen_params"] for r in after["rows"]] == [
        r["chosen_params"] for r in before["rows"]]  # same points, same choice
    n = len(fake_training)
    code, _, err = run_cli(args + ["--rerun", "--only", "HL:0"], capsys)
    assert code == 2 and "give row labels (Baseline, HL)" in err and err.count("\n") == 1
    assert len(fake_training) == n
