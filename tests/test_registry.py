"""Registries, plugins (files, modules, entry points), `fusionlab list`, and the example.

Throwaway components go on a fresh ``Registry`` where possible; anything registered in
the global registries goes through the ``isolated_registries`` fixture (conftest.py).
"""

from __future__ import annotations

import importlib.metadata
import textwrap
from pathlib import Path

import pytest
import timm
import torch

from fusion_lab.cli import main
from fusion_lab.config import ModelConfig
from fusion_lab.errors import ConfigError, FusionLabError, UnknownComponentError
from fusion_lab.models.assemble import build_model, model_loss
from fusion_lab.registries import ENTRY_POINT_GROUP, FUSIONS, Registry, load_builtin

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "my_fusion.py"


# --- the Registry object ------------------------------------------------------------------

def test_decorator_registers_with_first_docstring_line():
    reg = Registry("widget")

    @reg.register("knob")
    class Knob:
        """
        Turns things.

        More detail that `fusionlab list` does not show.
        """

    assert reg.get("knob") is Knob  # the decorator hands the class back unchanged
    assert "knob" in reg and len(reg) == 1
    assert reg.describe("knob") == "Turns things."


def test_explicit_description_and_plain_objects():
    reg = Registry("preset")
    reg.add("fast", {"fusion": "none"}, "A short one.")
    reg.add("bare", {"fusion": "none"})
    assert reg.get("fast") == {"fusion": "none"}
    assert reg.describe("fast") == "A short one."
    assert reg.describe("bare") == ""  # a dict's docstring is not a description


def test_duplicate_name_is_an_error():
    reg = Registry("widget")

    @reg.register("knob")
    class Knob:
        """First."""

    with pytest.raises(FusionLabError, match="'knob' is already registered"):
        @reg.register("knob")
        class OtherKnob:
            """Second."""

    assert reg.get("knob") is Knob  # the first one is kept
    reg.add("knob", Knob)  # the very same object again (a module imported twice) is fine


def test_empty_name_is_an_error():
    with pytest.raises(FusionLabError):
        Registry("widget").add("", object())


def test_unknown_name_names_close_matches_and_valid_names():
    reg = Registry("fusion")
    for name in ("convlstm", "convgru", "fpn_add", "none"):
        reg.add(name, object())
    with pytest.raises(UnknownComponentError) as err:
        reg.get("convlsmt")
    msg = str(err.value)
    assert isinstance(err.value, FusionLabError)
    assert "unknown fusion 'convlsmt'" in msg
    assert "did you mean 'convlstm'" in msg
    assert "valid names: convgru, convlstm, fpn_add, none" in msg


def test_unknown_name_without_close_match_still_lists_valid_names():
    reg = Registry("head")
    reg.add("linear", object())
    with pytest.raises(UnknownComponentError) as err:
        reg.get("zzzzzz")
    assert "did you mean" not in str(err.value)
    assert "valid names: linear" in str(err.value)


def test_wildcard_listing():
    reg = Registry("fusion")
    for name in ("fpn_add", "convlstm", "convgru", "none"):
        reg.add(name, object())
    assert reg.list() == ["convgru", "convlstm", "fpn_add", "none"]
    assert reg.list("conv*") == ["convgru", "convlstm"]
    assert reg.list("*_add") == ["fpn_add"]
    assert reg.list("nothing*") == []


def test_builtin_registries_hold_the_paper_components():
    load_builtin()
    assert FUSIONS.list("conv*") == ["convlstm"]
    assert {"none", "fpn_add", "convlstm"} <= set(FUSIONS.list())
    with pytest.raises(UnknownComponentError, match="did you mean 'convlstm'"):
        FUSIONS.get("convlstn")


# --- plugins from files and modules -------------------------------------------------------

def _write_plugin(path: Path, name: str, doc: str = "A plugin fusion.") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(f'''
        from torch import nn
        from fusion_lab.registries import FUSIONS

        @FUSIONS.register("{name}")
        class PluginFusion(nn.Module):
            """{doc}"""
            def __init__(self, in_channels, out_channels=256):
                super().__init__()
                self.out_channels = [in_channels[-1]]
            def forward(self, feats):
                return [feats[-1]]
    '''))
    return path


def test_plugin_file_relative_to_study_folder(tmp_path, monkeypatch, isolated_registries):
    _write_plugin(tmp_path / "plugins" / "extra.py", "fl_test_extra", "Extra fusion.")
    study_dir = tmp_path / "studies"
    study_dir.mkdir()
    monkeypatch.chdir(REPO)  # not where the plugin is: only the base dir can find it
    isolated_registries.load_plugins(["../plugins/extra.py"], base_dir=study_dir)
    assert "fl_test_extra" in FUSIONS
    assert FUSIONS.describe("fl_test_extra") == "Extra fusion."
    # Naming it again (a second study in the same process) is harmless.
    isolated_registries.load_plugins(["../plugins/extra.py"], base_dir=study_dir)


def test_same_relative_plugin_path_in_two_study_folders(tmp_path, isolated_registries):
    """Two studies, each with its own `plugins: [fusions.py]`, both get theirs loaded."""
    _write_plugin(tmp_path / "a" / "fusions.py", "fl_test_from_a")
    _write_plugin(tmp_path / "b" / "fusions.py", "fl_test_from_b")
    isolated_registries.load_plugins(["fusions.py"], base_dir=tmp_path / "a")
    isolated_registries.load_plugins(["fusions.py"], base_dir=tmp_path / "b")
    assert "fl_test_from_a" in FUSIONS and "fl_test_from_b" in FUSIONS
    # Both modules stay importable under their own names (pickling, tracebacks).
    classes = [FUSIONS.get("fl_test_from_a"), FUSIONS.get("fl_test_from_b")]
    assert classes[0].__module__ != classes[1].__module__


def test_one_plugin_file_named_by_two_paths(monkeypatch, isolated_registries):
    """A study's `../examples/my_fusion.py` and a CLI's `examples/my_fusion.py` are one file."""
    monkeypatch.chdir(REPO)
    isolated_registries.load_plugins(["../examples/my_fusion.py"], base_dir=REPO / "studies")
    isolated_registries.load_plugins(["examples/my_fusion.py"])  # no "already registered"
    isolated_registries.load_plugins([str(EXAMPLE)])
    assert "max_fuse" in FUSIONS


def test_plugin_file_relative_to_current_directory(tmp_path, monkeypatch, isolated_registries):
    _write_plugin(tmp_path / "mine.py", "fl_test_cwd")
    monkeypatch.chdir(tmp_path)
    isolated_registries.load_plugins(["mine.py"], base_dir=tmp_path / "elsewhere")
    assert "fl_test_cwd" in FUSIONS


def test_missing_plugin_file_is_a_clear_error(tmp_path, isolated_registries):
    with pytest.raises(FusionLabError) as err:
        isolated_registries.load_plugins(["../examples/nope.py"], base_dir=tmp_path / "studies")
    msg = str(err.value)
    assert "nope.py" in msg and "not found" in msg
    assert str(tmp_path / "studies") in msg  # says where it looked


def test_plugin_file_that_fails_to_import(tmp_path, isolated_registries):
    bad = tmp_path / "broken.py"
    bad.write_text("import no_such_module_for_fusion_lab_tests\n")
    with pytest.raises(FusionLabError, match="broken.py"):
        isolated_registries.load_plugins([str(bad)])


def test_plugin_registering_a_taken_name(tmp_path, isolated_registries):
    _write_plugin(tmp_path / "clash.py", "convlstm")
    with pytest.raises(FusionLabError, match="'convlstm' is already registered"):
        isolated_registries.load_plugins([str(tmp_path / "clash.py")])


def test_plugin_by_module_name(tmp_path, monkeypatch, isolated_registries):
    _write_plugin(tmp_path / "fl_test_mod.py", "fl_test_module_fusion")
    monkeypatch.syspath_prepend(str(tmp_path))
    isolated_registries.load_plugins(["fl_test_mod"])
    assert "fl_test_module_fusion" in FUSIONS
    with pytest.raises(FusionLabError, match="fl_test_missing_mod"):
        isolated_registries.load_plugins(["fl_test_missing_mod"])


# --- plugins from the fusion_lab.components entry point ----------------------------------

def _fake_distribution(site: Path, entry_points_txt: str) -> None:
    dist = site / "fl_test_dist-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fl-test-dist\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(entry_points_txt)


def test_entry_point_plugins_load(tmp_path, monkeypatch, isolated_registries):
    site = tmp_path / "site"
    _write_plugin(site / "fl_test_ep_pkg.py", "fl_test_ep_fusion", "From an entry point.")
    _fake_distribution(site, f"[{ENTRY_POINT_GROUP}]\nmine = fl_test_ep_pkg\n")
    monkeypatch.syspath_prepend(str(site))
    assert "fl_test_ep_fusion" not in FUSIONS
    monkeypatch.setattr(isolated_registries, "_loaded_entry_points", False)
    isolated_registries.load_builtin()
    assert FUSIONS.describe("fl_test_ep_fusion") == "From an entry point."
    # Usable by name like any built-in.
    cfg = ModelConfig(backbone="resnet10t", preset="baseline", fusion="fl_test_ep_fusion")
    assert build_model(cfg, 3)(torch.randn(2, 3, 32, 32))["combined"].shape == (2, 3)


def test_broken_entry_point_names_itself(monkeypatch, isolated_registries):
    def fake_entry_points(**kw):
        assert kw.get("group") == ENTRY_POINT_GROUP
        return [importlib.metadata.EntryPoint(
            name="shiny", value="fl_test_no_such_pkg.fusions", group=ENTRY_POINT_GROUP)]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    monkeypatch.setattr(isolated_registries, "_loaded_entry_points", False)
    with pytest.raises(FusionLabError) as err:
        isolated_registries.load_builtin()
    assert "'shiny'" in str(err.value) and "fl_test_no_such_pkg.fusions" in str(err.value)


# --- `fusionlab list` ---------------------------------------------------------------------

def _run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def _line_of(out: str, name: str) -> str:
    lines = [ln for ln in out.splitlines() if ln.split()[:1] == [name]]
    assert len(lines) == 1, f"{name!r} not listed once in:\n{out}"
    return lines[0]


def test_cli_list_everything_with_descriptions(capsys):
    from fusion_lab.registry.attentions import SpatialChannelAttention
    from fusion_lab.registry.fusion_convlstm import ConvLSTMFusion

    code, out, _ = _run_cli(capsys, "list")
    assert code == 0
    for kind in ("backbones:", "fusions:", "attentions:", "heads:", "presets:", "datasets:"):
        assert kind in out.splitlines()
    assert ConvLSTMFusion.__doc__.splitlines()[0] in _line_of(out, "convlstm")
    assert SpatialChannelAttention.__doc__.splitlines()[0] in _line_of(out, "sa+ca")
    assert "multi_level" in out and "cn_cnn" in out


def test_cli_list_backbones_with_pattern_prints_timm_names(capsys):
    code, out, _ = _run_cli(capsys, "list", "backbones", "convnext_t*")
    assert code == 0
    names = [ln.split()[0] for ln in out.splitlines()[1:] if ln.strip()]
    assert "convnext_tiny" in names
    assert all(n.startswith("convnext_t") for n in names)
    assert set(names) <= set(timm.list_models())


def test_cli_list_singular_kind_and_pattern(capsys):
    code, out, _ = _run_cli(capsys, "list", "fusion", "fpn*")
    assert code == 0
    assert "fpn_add" in out and "convlstm" not in out


def test_cli_unknown_kind_is_one_line(capsys):
    code, out, err = _run_cli(capsys, "list", "widgets")
    assert code != 0
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert "unknown kind 'widgets'" in err and "fusions" in err


def test_cli_missing_plugin_is_one_line(capsys, isolated_registries):
    code, _, err = _run_cli(capsys, "list", "fusions", "--plugin", "no/such/plugin.py")
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and "plugin.py" in err


# --- the example plugin -------------------------------------------------------------------

def test_cli_lists_the_example_plugin(capsys, monkeypatch, isolated_registries):
    monkeypatch.chdir(REPO)
    code, out, _ = _run_cli(capsys, "list", "fusions", "--plugin", "examples/my_fusion.py")
    assert code == 0
    assert "(example plugin)" in _line_of(out, "max_fuse")
    assert "convlstm" in out  # the built-ins are still there


@pytest.mark.parametrize("size", [(64, 64), (97, 131)], ids=["64x64", "97x131"])
@pytest.mark.parametrize("own_size", [True, False])
def test_example_plugin_builds_by_name_and_trains(size, own_size, isolated_registries):
    assert "max_fuse" not in FUSIONS
    # The path a study in studies/ writes, resolved against the study's folder.
    isolated_registries.load_plugins(["../examples/my_fusion.py"], base_dir=REPO / "studies")
    assert "max_fuse" in FUSIONS
    cfg = ModelConfig(preset="cn_cnn", backbone="resnet10t", width=16, fusion="max_fuse",
                      fusion_args={"own_size": own_size})
    model = build_model(cfg, 4)
    x, y = torch.randn(2, 3, *size), torch.tensor([0, 3])
    out = model(x, return_maps=True)
    feats, fused = out["features"], out["fused"]
    assert [f.shape[1] for f in fused] == [16, 16, 16]
    for f, level in zip(fused, feats):
        assert f.shape[-2:] == (level.shape[-2:] if own_size else feats[0].shape[-2:])
    assert out["combined"].shape == (2, 4)
    loss = model_loss(out, y)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.fusion.proj[0][0].weight.grad.abs().sum() > 0


def test_example_plugin_bad_argument_is_a_config_error(isolated_registries):
    isolated_registries.load_plugins([str(EXAMPLE)])
    cfg = ModelConfig(preset="cn_cnn", backbone="resnet10t", fusion="max_fuse",
                      fusion_args={"ownsize": True})
    with pytest.raises(ConfigError, match="own_size"):
        build_model(cfg, 4)


def test_list_without_a_kind_shows_the_shipped_weights_too(capsys):
    code, out, _ = _run_cli(capsys, "list")
    assert code == 0
    assert "weights:" in out and "for small_cnn" in _line_of(out, "synthetic")


def test_list_backbones_matches_the_pretrained_tags_studies_name(capsys):
    # studies name timm backbones with their pretrained tag (sota.yaml: resnet50.tv_in1k)
    code, out, _ = _run_cli(capsys, "list", "backbones", "resnet50.tv*")
    assert code == 0
    assert "resnet50.tv_in1k" in out and "resnet50.tv2_in1k" in out


def test_describe_without_flops_prints_no_nan(capsys):
    code, out, _ = _run_cli(capsys, "describe", "baseline", "--no-flops",
                            "--backbone", "small_cnn", "--image-size", "32")
    assert code == 0
    assert "nan" not in out and "FLOPs not counted" in out
    assert _line_of(out, "baseline").split()[-2] == "-"  # the GFLOPs column


def test_the_plugin_example_study_starts_from_the_quickstarts_base(isolated_registries):
    # it once trained ResNet50 from scratch at 448 for 100 epochs (the defaults), unasked
    from fusion_lab.plan.planning import prepare

    _, runs = prepare(REPO / "examples" / "max_fuse.yaml")
    _, quick = prepare(REPO / "studies" / "quickstart.yaml")
    base = quick[0].config
    assert {r.config.model.fusion for r in runs} == {"convlstm", "max_fuse"}
    for r in runs:
        c = r.config
        assert (c.model.backbone, c.model.pretrained) == ("small_cnn", "synthetic")
        assert c.dataset == base.dataset
        assert (c.train.epochs, c.train.image_size, c.train.batch_size) == (
            base.train.epochs, base.train.image_size, base.train.batch_size)


def test_describe_takes_a_study_and_shows_each_rows_model(capsys, tmp_path):
    code, out, _ = _run_cli(capsys, "describe", str(REPO / "studies" / "quickstart.yaml"))
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert list(rows) == ["Baseline", "HL", "HL+LH", "CN-CNN"]
    assert rows["CN-CNN"].split()[1:4] == ["convlstm", "sa+ca", "multi_level"]
    assert "small_cnn, 56x56" in rows["Baseline"]  # the study's backbone and crop, not 448
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nbase: {model: {fusion: nope}}\n")
    code, out, err = _run_cli(capsys, "describe", str(bad))
    assert code == 2 and "unknown fusion 'nope'" in err and "Traceback" not in err
