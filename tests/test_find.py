"""One rule turns a command-line argument into a study or a run (``fusion_lab.plan.find``).

``viz`` and ``export`` differ only in which run of a study they mean; a run folder, a run
id (prefix) and an unknown argument read the same for both.
"""

from __future__ import annotations

import json

import pytest

from fusion_lab import store
from fusion_lab.analysis import export
from fusion_lab.errors import FusionLabError
from fusion_lab.maps import viz
from fusion_lab.plan import find, planning
from fusion_lab.registries import load_builtin

load_builtin()


def _results(tmp_path):
    """results/one/ : one row, one finished run (CN-CNN, with SA masks), no checkpoint."""
    results = tmp_path / "results"
    d = results / "one" / "abcdef0123456789"
    d.mkdir(parents=True)
    cfg = {"dataset": {"name": "synthetic_fgvc"}, "model": {"preset": "cn_cnn"}}
    (d / store.CONFIG_JSON).write_text(json.dumps({"run_id": d.name, "config": cfg}))
    (d / store.SUMMARY_JSON).write_text(json.dumps({"status": "done"}))
    (d.parent / store.STUDY_JSON).write_text(json.dumps(
        {"name": "one", "rows": [{"label": "CN", "run_ids": [d.name]}]}))
    return results, d


def test_viz_and_export_read_an_argument_alike(tmp_path):
    results, d = _results(tmp_path)
    for arg in ("one", str(d.parent), "abcdef01", str(d)):
        assert find.find_run(arg, results, viz.study_run)[0] == d, arg
        assert find.find_run(arg, results, export.finished_run)[0] == d, arg
    assert "picked run abcdef012345 (CN;" in find.find_run("one", results, viz.study_run)[1]
    for rule in (viz.study_run, export.finished_run):
        with pytest.raises(FusionLabError, match="'zz' is no run folder, run id, study name"):
            find.find_run("zz", results, rule)


def test_the_rules_are_defined_once():
    assert not hasattr(viz, "find_run") and not hasattr(export, "find_export_run")
    assert not hasattr(planning, "find_study") and not hasattr(planning, "StudyRef")
    assert find.find_study("one", "results").results == store.study_dir("results", "one")
