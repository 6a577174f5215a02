"""Faults that used to lose or falsify results: damaged files, copies, clocks, races."""

from __future__ import annotations

import os
import stat
import textwrap
import warnings

import pytest
from test_runner import STUDY

from fusion_lab import store
from fusion_lab.errors import FusionLabWarning
from fusion_lab.plan.planning import prepare
from fusion_lab.training.train import train_run


@pytest.fixture
def study_file(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(textwrap.dedent(STUDY))
    return p


def fusion_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, FusionLabWarning)]


# --- metrics.jsonl ---------------------------------------------------------------------

def test_a_garbage_line_in_metrics_is_skipped_with_one_warning_and_no_line_is_lost(tmp_path):
    path = tmp_path / store.METRICS_JSONL
    path.write_text('{"epoch": 1}\n\x00\x00garbage\n{"epoch": 2}\n[1, 2]\n{"epoch": 3}\n{"epo')
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        rows = store.read_jsonl(path)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    said = fusion_warnings(record)
    assert len(said) == 1 and str(path) in said[0] and "2 " in said[0], said


def test_resume_keeps_every_epoch_after_a_garbage_line(study_file, tmp_path):
    study, runs = prepare(study_file, ["train.epochs=4"])
    r, d = runs[0], tmp_path / "run"
    d.mkdir()
    train_run(d, r.config, r.run_id, device="cpu", stop_after_epochs=3)
    lines = (d / store.METRICS_JSONL).read_text().splitlines()
    (d / store.METRICS_JSONL).write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    with pytest.warns(FusionLabWarning, match="unreadable line"):
        out = train_run(d, r.config, r.run_id, device="cpu")
    assert [x["epoch"] for x in store.read_jsonl(d / store.METRICS_JSONL)] == [1, 2, 3, 4]
    assert out["epochs"] == 4


# --- file modes ------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_result_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        store.write_json(tmp_path / store.SUMMARY_JSON, {"status": "done"})
        store.write_text(tmp_path / store.STUDY_JSON, "{}")
        store.append_jsonl(tmp_path / store.METRICS_JSONL, {"epoch": 1})
    finally:
        os.umask(old)
    for name in (store.SUMMARY_JSON, store.STUDY_JSON, store.METRICS_JSONL):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name
