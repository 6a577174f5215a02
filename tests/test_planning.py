"""Turning a user's argument into a study: one set of rules for table, viz and bench."""

from __future__ import annotations

from pathlib import Path

import pytest

from fusion_lab import store
from fusion_lab.errors import FusionLabError
from fusion_lab.plan.find import find_study


def _results_of(tmp_path, name):
    d = store.study_dir(tmp_path / "results", name)
    d.mkdir(parents=True)
    store.write_json(d / store.STUDY_JSON, {"name": name, "rows": []})
    return d


def test_a_study_file_names_its_results_by_the_name_inside(tmp_path):
    f = tmp_path / "file_stem.yaml"
    f.write_text("name: inner\nbase: {}\n")
    ref = find_study(str(f), tmp_path / "results")
    assert (ref.name, ref.kind, ref.file) == ("inner", "file", f)
    assert ref.results == tmp_path / "results" / "inner"
    assert not ref.has_results


def test_a_study_file_without_a_name_is_named_by_its_stem(tmp_path):
    f = tmp_path / "stem.yml"
    f.write_text("base: {}\n")
    assert find_study(str(f), tmp_path).name == "stem"


def test_a_missing_study_file_is_one_error_naming_the_studies_there(tmp_path):
    (tmp_path / "real.yaml").write_text("name: real\n")
    with pytest.raises(FusionLabError, match="not found; studies there: real.yaml"):
        find_study(str(tmp_path / "nope.yaml"), tmp_path)


def test_a_results_folder_alone_is_a_study(tmp_path):
    d = _results_of(tmp_path, "alone")
    ref = find_study(str(d), "elsewhere")
    assert (ref.name, ref.kind, ref.file, ref.results) == ("alone", "folder", None, d)
    assert ref.require_results() == d
    with pytest.raises(FusionLabError, match="no study file for 'alone'"):
        ref.require_file()


def test_a_name_finds_its_results_and_its_file_in_studies(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = _results_of(tmp_path, "named")
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "named.yaml").write_text("name: named\n")
    ref = find_study("named", tmp_path / "results")
    assert (ref.kind, ref.results, ref.require_file()) == (
        "name", d, Path("studies/named.yaml"))


def test_a_name_without_results_lists_the_studies_that_have_some(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _results_of(tmp_path, "other")
    ref = find_study("nope", tmp_path / "results")
    assert ref.file is None
    with pytest.raises(FusionLabError, match=r"no results for study 'nope'.*other"):
        ref.require_results()
