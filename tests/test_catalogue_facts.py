"""Facts about a component live on its class, so a plugin gets the treatment a built-in gets.

A dataset says whether it needs a root folder, how many classes it has and which options
it takes; an attention says which masks it returns (issue 11, part 5).
"""

from __future__ import annotations

from torch import nn

from fusion_lab.analysis.bench import num_classes
from fusion_lab.config import DatasetConfig, ModelConfig, RunConfig
from fusion_lab.data.source import ImageSource
from fusion_lab.maps.viz import has_sa
from fusion_lab.plan.planning import dataset_problems


def _register_dataset(registries, name, **attrs):
    cls = type(name, (ImageSource,), {"name": name, "__init__": lambda self, root, size=1: None,
                                      **attrs})
    registries.DATASETS.register(name)(cls)
    return cls


def test_a_plugin_dataset_made_in_memory_needs_no_root(isolated_registries):
    _register_dataset(isolated_registries, "mem_plugin", needs_root=False)
    _register_dataset(isolated_registries, "disk_plugin")
    assert dataset_problems(DatasetConfig(name="mem_plugin")) == []
    assert "root folder None not found" in dataset_problems(DatasetConfig(name="disk_plugin"))[0]


def test_a_plugin_datasets_options_are_checked_by_its_own_hook(isolated_registries):
    def check_options(cls, options):
        return [] if options.get("size", 1) > 0 else ["size must be positive"]

    _register_dataset(isolated_registries, "hooked", needs_root=False,
                      check_options=classmethod(check_options))
    assert dataset_problems(DatasetConfig(name="hooked", options={"size": 0})) == [
        "size must be positive"]
    assert dataset_problems(DatasetConfig(name="hooked", options={"size": 3})) == []


def test_the_default_hook_rejects_options_the_class_does_not_take(isolated_registries):
    _register_dataset(isolated_registries, "plain_plugin", needs_root=False)
    (problem,) = dataset_problems(DatasetConfig(name="plain_plugin", options={"sise": 2}))
    assert "does not take options ['sise']; valid options: size, max_unreadable" in problem


def test_bench_counts_classes_from_the_dataset_class_without_data(isolated_registries):
    _register_dataset(isolated_registries, "fixed_plugin", classes=17)
    assert num_classes(RunConfig(dataset=DatasetConfig(name="fixed_plugin"))) == 17
    for name, options, n in [("cub200", {}, 200), ("stanford_cars", {}, 196),
                             ("fgvc_aircraft", {}, 100),
                             ("fgvc_aircraft", {"level": "family"}, 70),
                             ("synthetic_fgvc", {"num_classes": 7}, 7)]:
        cfg = RunConfig(dataset=DatasetConfig(name=name, root="/nonexistent", options=options))
        assert num_classes(cfg) == n


def test_viz_finds_spatial_masks_from_the_attention_class(isolated_registries):
    class Base(nn.Module):
        def __init__(self, channels):
            super().__init__()

        def forward(self, maps):
            return maps, {}

    isolated_registries.ATTENTIONS.register("masked_plugin")(
        type("Masked", (Base,), {"masks": ("sa",)}))
    isolated_registries.ATTENTIONS.register("unmasked_plugin")(type("Unmasked", (Base,), {}))

    def cfg(attention):
        return RunConfig(model=ModelConfig(preset="cn_cnn", attention=attention))

    assert has_sa(cfg("masked_plugin")) and has_sa(cfg("sa+ca")) and has_sa(cfg("sa"))
    assert not has_sa(cfg("unmasked_plugin")) and not has_sa(cfg("ca"))


def test_describe_lists_a_plugin_preset_after_the_built_ins(isolated_registries):
    from click.testing import CliRunner

    from fusion_lab.cli import cli

    isolated_registries.PRESETS.add("fl_test_hl_plugin", {
        "fusion": "fpn_add", "attention": "ca", "head": "multi_level"}, "A plugin's preset.")
    res = CliRunner().invoke(cli, ["describe", "--backbone", "small_cnn", "--classes", "5",
                                    "--image-size", "64", "--no-flops"])
    assert res.exit_code == 0, res.output
    names = [line.split()[0] for line in res.output.splitlines()[1:7]]
    assert names == ["baseline", "hl", "hl+lh", "cn_cnn", "cn_cnn_released", "fl_test_hl_plugin"]
    assert res.output.splitlines()[6].split()[1:4] == ["fpn_add", "ca", "multi_level"]


def test_the_attention_table_and_viz_agree_on_a_plugin_attentions_masks(isolated_registries,
                                                                        tmp_path):
    """A plugin attention's ``masks`` decide, not its name: "focus" draws SA masks, "my_sa"
    none; ``fusionlab table --attention`` and ``fusionlab viz`` both say so."""
    import json

    from test_table import StudyWriter

    from fusion_lab.analysis.table import tables
    from fusion_lab.config import flatten, from_dict

    class Base(nn.Module):
        def __init__(self, channels):
            super().__init__()

        def forward(self, maps):
            return maps, {}

    isolated_registries.ATTENTIONS.register("focus")(type("Focus", (Base,), {"masks": ("sa",)}))
    isolated_registries.ATTENTIONS.register("my_sa")(type("MySA", (Base,), {"masks": ()}))
    w = StudyWriter(tmp_path, "plug", seeds=[0])
    w.row("Focus", [("done", 80.0)], fusion="fpn_add")
    w.row("MySA", [("done", 81.0)], fusion="convlstm")
    w.save()
    study = json.loads((w.dir / "study.json").read_text())
    seen = {}
    for row, attention in zip(study["rows"], ["focus", "my_sa"]):
        path = w.dir / row["run_ids"][0] / "config.json"
        record = json.loads(path.read_text())
        record["config"]["model"]["attention"] = attention
        path.write_text(json.dumps(record))
        cfg = from_dict(record["config"])
        seen[attention] = (has_sa(cfg), flatten(record["config"])["model.attention"])
    assert seen == {"focus": (True, "focus"), "my_sa": (False, "my_sa")}
    text = tables(["plug"], results=tmp_path, attention=True).text
    assert "1 finished run(s) with SA masks have no attention scores" in text  # focus only
