"""Faults that used to lose or falsify results: damaged files, copies, clocks, races."""

from __future__ import annotations

import os
import stat
import textwrap

import pytest
from test_runner import STUDY

from fusion_lab import store
from fusion_lab.errors import FusionLabWarning


@pytest.fixture
def study_file(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(textwrap.dedent(STUDY))
    return p


def fusion_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, FusionLabWarning)]


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
