"""Storage faults and the failure path: a full or read-only disk is one `error:` line, temp
files removed, results already written intact; recording a failure never fails itself."""

import json
import os
import textwrap

import pytest
from dataset_trees import make_imagefolder
from test_runner import TINY

from fusion_lab.cli import main
from fusion_lab.orchestrate.runner import run_dir
from fusion_lab.plan.planning import prepare

FOLDER_STUDY = f"""
name: folder
plugins: [{TINY}]
base:
  dataset: {{name: imagefolder, root: ROOT}}
  model: {{backbone: tiny_cnn, width: 8, hidden: 8, preset: baseline}}
  train: {{epochs: 1, batch_size: 4, image_size: 32, resize: 36, workers: 0,
           lr_backbone: 0.01, lr_new: 0.01}}
variants:
  - {{label: Baseline}}
seeds: [0, 1]
baseline: Baseline
"""


def test_an_unreadable_image_with_a_non_utf8_name_fails_its_runs_and_records_them(
        tmp_path, capsys):
    root = make_imagefolder(tmp_path / "data", {"ant": (3, 1), "cat": (3, 1)})
    bad = os.fsencode(root / "train" / "cat") + b"/bad\xff.png"
    with open(bad, "wb") as f:
        f.write(b"this is not an image" * 10)
    study_file = tmp_path / "folder.yaml"
    study_file.write_text(textwrap.dedent(FOLDER_STUDY).replace("ROOT", str(root)))
    results = tmp_path / "results"
    with pytest.raises(SystemExit) as e:  # was: UnicodeEncodeError out of the failure path
        main(["run", str(study_file), "--results", str(results), "--device", "cpu",
              "--progress", "off", "--no-table"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "2 run(s) failed" in err, err
    study, runs = prepare(study_file)
    for r in runs:  # both runs recorded, the study went on past the first
        d = run_dir(results, study, r)
        summary = json.loads((d / "summary.json").read_text())
        assert summary["status"] == "failed" and "bad" in summary["error"], summary
        log = (d / "error.log").read_text()
        assert "bad\\xff.png" in log, log[-2000:]  # the undecodable byte, spelled out
