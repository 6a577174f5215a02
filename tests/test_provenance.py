"""What ran: each run records code, plugins and versions; the table warns on changed plugins."""

import json
import textwrap

import torch
import torchvision
from test_runner import STUDY, TINY

from fusion_lab.analysis.table import tables
from fusion_lab.orchestrate.runner import run_dir, train_study
from fusion_lab.plan.planning import prepare
from fusion_lab.training.provenance import file_sha256, git_state


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
