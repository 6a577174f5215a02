"""Storage faults and the failure path: a full or read-only disk is one `error:` line, temp
files removed, results already written intact; recording a failure never fails itself."""

import json
import os
import textwrap

import pytest
from dataset_trees import make_imagefolder
from test_runner import TINY

from fusion_lab import store
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


def _tiny(tmp_path, seeds="[0]"):
    from test_runner import STUDY

    p = tmp_path / "tiny.yaml"
    p.write_text(textwrap.dedent(STUDY).replace("seeds: [0]", f"seeds: {seeds}"))
    return p


def _files(results):
    return {p: p.read_bytes() for p in results.rglob("*") if p.is_file() and p.name != "claim"}


@pytest.fixture
def read_only(monkeypatch):
    """Make every write under a folder fail with EROFS, as a read-only mount does."""
    import builtins
    import errno

    real_os_open, real_open = os.open, builtins.open

    def arm(folder):
        folder = str(folder)

        def refuse(path):
            if str(path).startswith(folder):
                raise OSError(errno.EROFS, "Read-only file system", str(path))

        def os_open(path, flags, *a, **k):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                refuse(path)
            return real_os_open(path, flags, *a, **k)

        def open_(file, mode="r", *a, **k):
            if isinstance(file, (str, os.PathLike)) and set(mode) & set("wax+"):
                refuse(file)
            return real_open(file, mode, *a, **k)

        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(builtins, "open", open_)

    return arm


def test_a_read_only_results_folder_with_nothing_to_train_is_no_error(tmp_path, capsys,
                                                                        read_only):
    study_file, results = _tiny(tmp_path), tmp_path / "results"
    base = ["run", str(study_file), "--results", str(results), "--device", "cpu",
            "--progress", "off"]
    main(base + ["--no-table"])
    before = _files(results)
    capsys.readouterr()
    read_only(results)
    main(base)  # was: a traceback from writing study.json, exit 1
    out = capsys.readouterr()
    assert "Baseline" in out.out and "Traceback" not in out.err, out.err
    # something to train in a read-only folder: one line naming the folder
    with pytest.raises(SystemExit) as e:
        main(base + ["--set", "seeds=[0, 1]"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert str(results) in err and "read-only" in err, err
    assert _files(results) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file modes; the "
                    "monkeypatched read-only folder above stands in for it")
def test_a_chmod_read_only_results_folder_with_nothing_to_train_is_no_error(tmp_path):
    study_file, results = _tiny(tmp_path), tmp_path / "results"
    base = ["run", str(study_file), "--results", str(results), "--device", "cpu",
            "--progress", "off", "--no-table"]
    main(base)
    folders = [results, *(p for p in results.rglob("*") if p.is_dir())]
    for p in folders:
        p.chmod(0o555)
    try:
        main(base)
    finally:
        for p in folders:
            p.chmod(0o755)


@pytest.mark.parametrize("what_fits", ["small files", "nothing"])
def test_a_full_disk_while_training_is_one_line_and_loses_nothing(tmp_path, capsys,
                                                                   monkeypatch, what_fits):
    import errno

    import torch

    study_file, results = _tiny(tmp_path), tmp_path / "results"
    base = ["run", str(study_file), "--results", str(results), "--device", "cpu",
            "--progress", "off", "--no-table"]
    main(base)  # seed 0: two runs done before the disk fills
    before = _files(results)
    capsys.readouterr()
    # the study grows by one seed (in its file: a --set of seeds would be scratch runs)
    study_file.write_text(study_file.read_text().replace("seeds: [0]", "seeds: [0, 1]"))
    real_save, real_fsync, saves, full = torch.save, os.fsync, [], []

    def save(obj, f, *a, **k):  # the second checkpoint does not fit: 2 MB, then ENOSPC
        saves.append(f)
        if len(saves) < 2:
            return real_save(obj, f, *a, **k)
        full.append(True)
        f.write(b"\0" * 2_000_000)
        raise OSError(errno.ENOSPC, "No space left on device")

    def fsync(fd):
        if full and what_fits == "nothing":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(SystemExit) as e:  # was: chained tracebacks, the study abandoned
        main(base)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert "checkpoint.pt" in err and "the disk is full" in err, err
    assert not list(results.rglob("*.tmp"))  # the temporary checkpoint is gone
    after = _files(results)  # seed 0's results intact (study.json grew by seed 1's runs)
    assert {p: after.get(p) for p in before if p.name != "study.json"} == \
        {p: b for p, b in before.items() if p.name != "study.json"}
    study, runs = prepare(study_file)
    first, second = (run_dir(results, study, r) for r in runs if r.seed == 1)
    assert not second.exists()  # the study stopped: the next run would fail too
    assert torch.load(first / "checkpoint.pt", weights_only=False)["epoch"] == 1
    assert [x["epoch"] for x in store.read_jsonl(first / "metrics.jsonl")] == [1]
    assert not (first / "claim").exists() and not (first / "error.log").exists()
    if what_fits == "small files":  # recorded failed, saying why
        summary = json.loads((first / "summary.json").read_text())
        assert summary["status"] == "failed" and "the disk is full" in summary["error"]
    else:  # no summary could be written: left resumable
        assert store.run_status(first) == "pending"
