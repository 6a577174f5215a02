"""What ran: each run records code, plugins and versions; the table warns on changed plugins."""

import json
import os
import textwrap

import torch
import torchvision
from test_runner import STUDY, TINY

from fusion_lab.analysis.table import tables
from fusion_lab.config.weights import file_sha256
from fusion_lab.orchestrate.runner import run_dir, train_study
from fusion_lab.plan.planning import prepare
from fusion_lab.training.provenance import git_state, plugin_changes, plugin_digest


def test_a_run_records_what_ran_and_the_table_warns_when_a_plugin_changes(
        tmp_path, isolated_registries):
    plugin = tmp_path / "my_backbone.py"
    # a copy under its own name: other tests may have registered tiny_cnn already
    plugin.write_text(TINY.read_text().replace('"tiny_cnn"', '"tiny_cnn_prov"'))
    study_file = tmp_path / "tiny.yaml"
    study_file.write_text(textwrap.dedent(STUDY).replace(str(TINY), "my_backbone.py")
                          .replace("epochs: 2", "epochs: 1")
                          .replace("backbone: tiny_cnn", "backbone: tiny_cnn_prov"))
    results = tmp_path / "results"
    study, runs = prepare(study_file, ["seeds=[0]"])
    train_study(study, runs[:1], results, device="cpu")
    summary = json.loads((run_dir(results, study, runs[0]) / "summary.json").read_text())
    assert summary["plugins"] == {str(plugin.resolve()): file_sha256(plugin)}
    assert summary["versions"]["torch"] == torch.__version__
    assert summary["versions"]["torchvision"] == torchvision.__version__
    commit, dirty = git_state()
    assert summary["git_commit"] == commit and summary["git_dirty"] is dirty
    assert commit is None or (len(commit) == 40 and isinstance(dirty, bool))
    assert summary["cuda"] is None or summary["cuda"]["gpu"]
    assert not [w for w in tables(["tiny"], results=str(results)).warnings if "plugin" in w]
    plugin.write_text(plugin.read_text() + "\n# changed after training\n")
    warnings = tables(["tiny"], results=str(results)).warnings
    assert any(f"plugin file {plugin.resolve()} has changed since 1 finished run" in w
               for w in warnings), warnings


def test_a_plugin_edited_in_place_is_seen_even_with_its_size_and_mtime_restored(tmp_path):
    # file_sha256 caches digests per (path, size, mtime) for weights files; the plugin
    # check reads the file again, as it did before both shared one implementation.
    plugin = tmp_path / "plugin.py"
    plugin.write_text("X = 1\n")
    summary = {"plugins": {str(plugin): file_sha256(plugin)}}  # fills the cache
    st = plugin.stat()
    plugin.write_text("X = 2\n")
    os.utime(plugin, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert plugin_changes(summary) == [str(plugin)]
    assert plugin_digest(tmp_path / "gone.py") is None  # unreadable: None, not an error
