"""Tags (issue 20, "Iterating safely" 1): runs made with `--tag NAME`, or with `--set`s
that change the study's runs, go to results/<study>/tags/<NAME>/ and never change what the
study's own table shows; `table --tag` reads them and `table` names them.

``train_run`` is replaced by a stand-in (as in test_tuning): what changed is where runs
go, which the real planner, runner, claims, study.json and tables decide. Its accuracy
is a known function of the run (50 + 10 x epochs + seed, + 5 for CN-CNN), so a smoke row
(1 epoch) and a real row (2 epochs) are told apart in a table.
"""

import json
import textwrap
from pathlib import Path

import pytest
from cli_run import run_cli
from test_runner import STUDY

from fusion_lab import store
from fusion_lab.orchestrate.launchers import Launcher, train_task
from fusion_lab.orchestrate.study_run import RunOptions, run_study
from fusion_lab.plan.planning import prepare
from fusion_lab.plan.tags import changes_plan


@pytest.fixture
def study_file(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(textwrap.dedent(STUDY).replace("seeds: [0]", "seeds: [0, 1]"))
    return p


@pytest.fixture
def fake_training(monkeypatch):
    from fusion_lab.training import train

    calls = []

    def fake(run_dir, cfg, run_id, device="auto", progress=None, before_write=None, **kw):
        calls.append(run_id)
        acc = 50.0 + 10 * cfg.train.epochs + cfg.seed + 5 * (cfg.model.fusion == "convlstm")
        for epoch in range(cfg.train.epochs):
            store.append_jsonl(Path(run_dir) / store.METRICS_JSONL,
                               {"epoch": epoch + 1, "test_acc": acc, "train_loss": 1.0})
        return {"final": {"acc": acc, "heads": {}}, "epochs": cfg.train.epochs,
                "test_size": 9, "setup_s": 0.0, "train_time_s": 0.0}

    monkeypatch.setattr(train, "train_run", fake)
    return calls


def run(capsys, study_file, results, *args):
    return run_cli(["run", str(study_file), "--results", str(results), "--device", "cpu",
                    "--progress", "off", *args], capsys)


def table(capsys, results, *args):
    return run_cli(["table", "tiny", "--results", str(results), *args], capsys)


def folders(path):
    return sorted(p.name for p in Path(path).iterdir()) if Path(path).is_dir() else []


def test_the_issue_smoke_command_leaves_the_study_and_its_table_as_they_were(
        study_file, tmp_path, capsys, fake_training):
    results = tmp_path / "results"
    assert run(capsys, study_file, results, "--no-table")[0] == 0
    plan_before = (results / "tiny" / "study.json").read_bytes()
    runs_before = folders(results / "tiny")
    code, table_before, _ = table(capsys, results)
    assert code == 0 and "70.50 ± 0.71" in table_before and "‡" not in table_before
    # was: written into results/tiny, study.json rewritten, the real rows marked ‡
    code, out, err = run(capsys, study_file, results, "--set", "train.epochs=1",
                         "--set", "seeds=[0]")
    assert code == 0, err
    assert (f"so they are kept apart from its own table, in {results}/tiny/tags/scratch/: "
            f"`fusionlab table tiny --results {results} --tag scratch` shows them; --tag "
            "NAME names them") in err
    assert "tiny/tags/scratch" in out and "60.00" in out  # the table printed: the smoke runs
    assert (results / "tiny" / "study.json").read_bytes() == plan_before
    assert folders(results / "tiny") == sorted(runs_before + ["tags"])
    scratch = json.loads((results / "tiny/tags/scratch/study.json").read_text())
    assert scratch["name"] == "tiny/tags/scratch" and scratch["seeds"] == [0]
    assert len([p for p in folders(results / "tiny/tags/scratch") if len(p) == 64]) == 2
    code, table_after, _ = table(capsys, results)
    assert code == 0
    assert table_after == table_before.rstrip("\n") + (
        f"\n\ntags: scratch (2 runs); fusionlab table tiny --results {results} "
        "--tag scratch\n")
    code, smoke, _ = table(capsys, results, "--tag", "scratch")
    assert code == 0 and smoke.startswith("tiny/tags/scratch") and "60.00" in smoke
    assert "70.50" not in smoke and "‡" not in smoke


def test_a_named_tag_holds_its_runs_and_its_own_table(study_file, tmp_path, capsys,
                                                       fake_training):
    results = tmp_path / "results"
    code, _, err = run(capsys, study_file, results, "--tag", "smoke", "--set",
                       "train.epochs=1", "--no-table")
    assert code == 0 and "note:" not in err, err
    assert folders(results / "tiny") == ["tags"]  # nothing of the study's own
    assert folders(results / "tiny" / "tags") == ["smoke"]
    code, out, _ = table(capsys, results, "--tag", "smoke")
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("tiny/tags/smoke")
    assert [line.split()[0] for line in lines[3:5]] == ["Baseline", "CN-CNN"]
    assert "60.50 ± 0.71" in out and "65.50 ± 0.71" in out
    # the study itself has no results: the error says where its runs are
    code, _, err = table(capsys, results)
    assert code == 2 and err.count("\n") == 1
    assert "tags: smoke (4 runs); fusionlab table tiny --results" in err
    # a dry run with the tag finds them done; the tag's own runs train nothing again
    code, out, _ = run(capsys, study_file, results, "--tag", "smoke", "--set",
                       "train.epochs=1", "--dry-run")
    assert code == 0 and "study tiny/tags/smoke: 4 runs" in out and "4 done" in out
    # plot and report read a tag too
    code, out, err = run_cli(["plot", "tiny", "--results", str(results), "--tag", "smoke",
                              "--out", str(tmp_path / "p.png")], capsys)
    assert code == 0 and (tmp_path / "p.png").stat().st_size > 0, err
    code, out, err = run_cli(["report", "tiny", "--results", str(results), "--tag",
                              "smoke", "--no-figures"], capsys)
    page = results / "tiny/tags/smoke/report.html"
    assert code == 0 and out.strip() == str(page) and "60.50" in page.read_text()
    code, _, err = table(capsys, results, "--tag", "other")
    assert code == 2 and err.count("\n") == 1 and "has no tag 'other'" in err
    assert "tags: smoke (4 runs)" in err


def test_table_names_every_tag_of_a_study_after_its_table(study_file, tmp_path, capsys,
                                                          fake_training):
    results = tmp_path / "results"
    run(capsys, study_file, results, "--no-table")
    run(capsys, study_file, results, "--no-table", "--tag", "smoke", "--set",
        "train.epochs=1", "--set", "seeds=[0]")
    run(capsys, study_file, results, "--no-table", "--set", "train.epochs=3",
        "--only", "Baseline:1")
    code, out, _ = table(capsys, results)
    assert code == 0 and out.splitlines()[-1] == (
        f"tags: scratch (1 run), smoke (2 runs); fusionlab table tiny --results {results} "
        "--tag scratch")
    # CSV and JSON stay machine-readable: the line goes to stderr
    code, out, err = table(capsys, results, "--format", "json")
    assert code == 0 and len(json.loads(out)) == 2 and "tags: scratch (1 run)" in err
    # with no study named, --tag shows that tag of every study that has it
    code, out, _ = run_cli(["table", "--results", str(results), "--tag", "smoke"], capsys)
    assert code == 0 and out.startswith("tiny/tags/smoke") and "tags:" not in out


@pytest.mark.parametrize("args", [["--tag", "../up"], ["--tag", "a/b"], ["--tag", ""],
                                  ["--tag", "x" * 41], ["--set", "tag=a b"]])
def test_a_bad_tag_name_is_one_line_and_nothing_is_written(study_file, tmp_path, capsys,
                                                           fake_training, args):
    results = tmp_path / "results"
    code, out, err = run(capsys, study_file, results, *args)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "is not a tag name: use up to 40 letters, digits" in err
    assert not results.exists() and fake_training == []
    code, _, err = run_cli(["table", "tiny", "--results", str(results), "--tag", "a/b"],
                           capsys)
    assert code == 2 and err.count("\n") == 1 and "is not a tag name" in err


def test_a_set_that_changes_no_run_writes_to_the_study_itself(study_file, tmp_path, capsys,
                                                              fake_training):
    results = tmp_path / "results"
    # train.workers and train.log_every are out of the run id; seeds as written
    code, _, err = run(capsys, study_file, results, "--no-table", "--set", "train.workers=1",
                       "--set", "train.log_every=5", "--set", "seeds=[0, 1]")
    assert code == 0 and "note:" not in err, err
    assert "tags" not in folders(results / "tiny") and len(folders(results / "tiny")) == 5
    _, runs = prepare(study_file)
    plan = json.loads((results / "tiny" / "study.json").read_text())
    assert [i for row in plan["rows"] for i in row["run_ids"]] == [r.run_id for r in runs]
    # the same ids but fewer runs would rewrite study.json: scratch
    code, _, err = run(capsys, study_file, results, "--no-table", "--set", "seeds=[0]",
                       "--dry-run")
    assert code == 0 and "tags/scratch" in err


def test_where_the_data_is_counts_as_the_study_as_written(study_file, tmp_path):
    """``--set dataset.root`` (and a weights file) say where things are on this machine:
    the real-data studies are run with them, into their own folder."""
    study, runs = prepare(study_file, ["dataset.root=/data/elsewhere"])
    assert not changes_plan(study_file, study, runs, ["dataset.root=/data/elsewhere"])
    both = ["dataset.root=/data/elsewhere", "train.epochs=1"]
    study, runs = prepare(study_file, both)
    assert changes_plan(study_file, study, runs, both)


def test_a_tag_reaches_the_tasks_a_launcher_starts(study_file, tmp_path, fake_training):
    """A cluster task plans the study again from its file and the job's overrides: the tag
    travels in them (--set tag=NAME), so the task trains into the tag's folders."""
    from fusion_lab.registries import LAUNCHERS

    class Tasks(Launcher):
        """Trains each pending run as a cluster task does (train_task), one by one."""

        def launch(self, job):
            for r in job.pending:
                train_task(str(job.study_file), job.overrides, str(job.results), r.run_id,
                           device=job.device)
            return 0

    LAUNCHERS.register("fl_test_tasks")(Tasks)
    try:
        results = tmp_path / "results"
        for tag, overrides in (("smoke", []), (None, ["train.epochs=1"])):
            report = run_study(RunOptions(study_file, overrides=overrides, results=results,
                                          device="cpu", progress="off",
                                          launcher="fl_test_tasks", tag=tag))
            where = results / "tiny" / "tags" / (tag or "scratch")
            assert report.finished and report.code == 0 and not report.failed
            assert sorted(folders(where)) == sorted(["study.json"] + [r.run_id
                                                                      for r in report.runs])
            assert all(store.run_status(where / r.run_id) == "done" for r in report.runs)
        assert folders(results / "tiny") == ["tags"]
    finally:
        LAUNCHERS._items.pop("fl_test_tasks", None)
        LAUNCHERS._docs.pop("fl_test_tasks", None)


def test_a_tuned_study_with_a_tag_keeps_its_trials_and_final_runs_in_the_tag(
        tmp_path, capsys, monkeypatch):
    from test_tuning import write_study

    from fusion_lab.training import train

    def fake(run_dir, cfg, run_id, device="auto", progress=None, before_write=None, **kw):
        for epoch in range(cfg.train.epochs):
            store.append_jsonl(Path(run_dir) / store.METRICS_JSONL,
                               {"epoch": epoch + 1, "val_acc": 80.0, "test_acc": 70.0})
        return {"final": {"acc": 70.0, "heads": {}}, "epochs": cfg.train.epochs,
                "val_size": 100, "test_size": 9, "setup_s": 0.0, "train_time_s": 0.0}

    monkeypatch.setattr(train, "train_run", fake)
    study, results = write_study(tmp_path, trials=2), tmp_path / "results"
    code, out, _ = run_cli(["run", str(study), "--results", str(results), "--dry-run",
                            "--tag", "smoke"], capsys)
    assert code == 0 and not results.exists()
    assert "study tuned/tags/smoke/trials: 4 runs" in out
    assert "study tuned/tags/smoke/shared: 4 runs" in out
    code, out, err = run_cli(["run", str(study), "--results", str(results), "--device",
                              "cpu", "--progress", "off", "--tag", "smoke"], capsys)
    assert code == 0, err
    assert folders(results / "tuned") == ["tags"]
    tag = results / "tuned" / "tags" / "smoke"
    assert {"trials", "shared", "study.json", "tuning.json"} <= set(folders(tag))
    assert json.loads((tag / "tuning.json").read_text())["name"] == "tuned/tags/smoke"
    code, out, _ = run_cli(["table", "tuned", "--results", str(results), "--tag", "smoke"],
                           capsys)
    assert code == 0 and "Baseline" in out
