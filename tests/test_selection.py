"""--only by label, seed or run id prefix; --rerun trains selected runs again (old ones kept)."""

import json
import textwrap

import pytest
from test_runner import STUDY

from fusion_lab import store
from fusion_lab.cli import main
from fusion_lab.plan.planning import prepare


@pytest.fixture
def study_file(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(textwrap.dedent(STUDY).replace("seeds: [0]", "seeds: [0, 1]").replace(
        "epochs: 2", "epochs: 1"))
    return p


def _run(capsys, *argv):
    try:
        main(list(argv))
        code = 0
    except SystemExit as e:
        code = e.code
    return code, *capsys.readouterr()


def test_only_takes_labels_seeds_and_run_id_prefixes(study_file, tmp_path, capsys):
    _, runs = prepare(study_file)
    r = tmp_path / "r"
    code, out, _ = _run(capsys, "run", str(study_file), "--results", str(r), "--dry-run",
                        "--only", "CN-CNN")
    listed = [line.split()[0] for line in out.splitlines() if " pending " in line]
    assert code == 0 and listed == [x.run_id for x in runs if x.label == "CN-CNN"]
    code, out, _ = _run(capsys, "run", str(study_file), "--results", str(r), "--dry-run",
                        "--only", "Baseline:1", "--only", runs[-1].run_id[:10])
    listed = [line.split()[0] for line in out.splitlines() if " pending " in line]
    want = [x.run_id for x in runs if (x.label, x.seed) == ("Baseline", 1) or x is runs[-1]]
    assert listed == want
    code, _, err = _run(capsys, "run", str(study_file), "--results", str(r), "--only", "HL")
    assert code == 2 and "--only 'HL': no run of study" in err and "Baseline, CN-CNN" in err
    assert not r.exists()  # nothing written


def test_rerun_trains_the_selected_runs_again_and_keeps_the_old_ones(study_file, tmp_path,
                                                                      capsys):
    study, runs = prepare(study_file)
    r = tmp_path / "r"
    assert _run(capsys, "run", str(study_file), "--results", str(r), "--no-table",
                "--progress", "off")[0] == 0
    target = next(x for x in runs if (x.label, x.seed) == ("Baseline", 0))
    d = store.run_dir(r, study.name, target.run_id)
    before = {x.run_id: json.loads((store.run_dir(r, study.name, x.run_id) / "summary.json")
                                   .read_text())["finished"] for x in runs}
    old_inode = (d / "summary.json").stat().st_ino
    # a plain rerun trains nothing that is done
    code, _, err = _run(capsys, "run", str(study_file), "--results", str(r), "--no-table",
                        "--progress", "off", "--only", "Baseline:0")
    assert code == 0 and (d / "summary.json").stat().st_ino == old_inode
    code, _, err = _run(capsys, "run", str(study_file), "--results", str(r), "--no-table",
                        "--progress", "off", "--only", "Baseline:0", "--rerun")
    assert code == 0 and "set aside in" in err
    kept = list((r / study.name / ".replaced").iterdir())
    assert len(kept) == 1 and kept[0].name.startswith(target.run_id)
    # the old files moved aside whole; the run trained again into new ones
    assert (kept[0] / "summary.json").stat().st_ino == old_inode
    assert (d / "summary.json").stat().st_ino != old_inode
    assert json.loads((d / "summary.json").read_text())["status"] == "done"
    for x in runs:  # every other run untouched
        if x is not target:
            s = json.loads((store.run_dir(r, study.name, x.run_id) / "summary.json").read_text())
            assert s["finished"] == before[x.run_id]
    code, out, err = _run(capsys, "table", study.name, "--results", str(r))
    assert code == 0 and "warning" not in err  # the set-aside copy is not read as a run
