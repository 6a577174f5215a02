"""The catalogue across papers (issue 19): necks from detection, CBAM's halves, timm's blocks.

Parameter counts come from formulas written here from each paper's description (the
modules' docstrings repeat them), never from the code's output. The registry-wide tests
(test_components.py: odd sizes, every parameter gets a gradient) cover every entry too.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch
from cli_run import run_cli

from fusion_lab.config import ModelConfig
from fusion_lab.errors import ConfigError
from fusion_lab.maps.attention_table import has_spatial_masks
from fusion_lab.models.assemble import build_model, check_model_config
from fusion_lab.registries import ATTENTIONS, FUSIONS, load_builtin

load_builtin()
NECKS = ["concat", "panet", "bifpn", "asff"]


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- parameter counts at each paper's setting --------------------------------------------

def test_concat_parameters_hypercolumn():
    c, d = [256, 512, 1024, 2048], 256  # ResNet50's four stages
    assert n_params(FUSIONS.get("concat")(c, d)) == sum(c) * d + d  # one 1x1 conv, bias


def test_panet_parameters_pafpn():
    # Paper: 4 levels (C2-C5 of ResNet), 256 channels; laterals 1x1 + FPN 3x3 on each merged
    # map + (L-1) stride-2 3x3 + (L-1) 3x3 after each bottom-up sum, all with bias.
    c, d, L = [256, 512, 1024, 2048], 256, 4
    conv3 = 9 * d * d + d
    expected = sum(ci * d + d for ci in c) + L * conv3 + 2 * (L - 1) * conv3
    assert n_params(FUSIONS.get("panet")(c, d)) == expected


@pytest.mark.parametrize("levels,width,repeats", [(5, 64, 3), (3, 256, 1)],
                         ids=["D0: P3-P7, W64, 3 layers", "ResNet S3-S5, 256"])
def test_bifpn_parameters(levels, width, repeats):
    # EfficientDet-D0: 5 levels of 64 channels, 3 BiFPN layers. Per layer: L-2 top-down
    # nodes (2 inputs), the lowest output (2), L-2 bottom-up nodes (3), the highest (2);
    # each node a depthwise 3x3 (no bias) + pointwise 1x1 (bias) + BN.
    d, L = width, levels
    in_channels = [d] * L if levels == 5 else [512, 1024, 2048]
    node = 9 * d + (d * d + d) + 2 * d
    weights = 2 * (L - 2) + 2 + 3 * (L - 2) + 2
    per_layer = (2 * L - 2) * node + weights
    projections = sum(c * d + 2 * d for c in in_channels if c != d)  # 1x1 (no bias) + BN
    module = FUSIONS.get("bifpn")(in_channels, d, repeats=repeats)
    assert n_params(module) == projections + repeats * per_layer


def test_asff_parameters():
    # The paper's 3 levels (YOLOv3 widths 256/512/1024 -> 256 here). Per target level: a
    # 1x1 conv from each coarser level, a stride-2 3x3 from each finer one, a 1x1 conv to
    # one weight map from every level; laterals 1x1 to the common width.
    c, d, L = [256, 512, 1024], 256, 3
    pairs = L * (L - 1) // 2
    expected = (sum(ci * d + d for ci in c) + pairs * (d * d + d) + pairs * (9 * d * d + d)
                + L * L * (d + 1))
    assert n_params(FUSIONS.get("asff")(c, d)) == expected


def test_cbam_halves_parameters():
    channels, r = [64, 128], 16
    assert n_params(ATTENTIONS.get("cbam_channel")(channels, reduction=r)) == sum(
        2 * c * (c // r) for c in channels)  # W0 and W1, no biases (Eq. 2)
    assert n_params(ATTENTIONS.get("cbam_spatial")(channels)) == len(channels) * (2 * 49 + 1)


# --- each neck's own behaviour ------------------------------------------------------------

@pytest.mark.parametrize("levels", [2, 3, 4, 5])
@pytest.mark.parametrize("fusion", NECKS)
def test_necks_take_any_number_of_levels_at_odd_sizes(fusion, levels):
    widths = [8, 12, 20, 24, 40][:levels]
    sizes = [(25, 19), (13, 10), (7, 5), (4, 3), (2, 2)][:levels]
    module = FUSIONS.get(fusion)(widths, 16)
    out = module([torch.randn(2, c, *s) for c, s in zip(widths, sizes)])
    expected = sizes[:1] if fusion == "concat" else sizes
    assert [tuple(m.shape[-2:]) for m in out] == expected
    assert [m.shape[1] for m in out] == module.out_channels


def test_bifpn_weights_stay_non_negative_and_sum_to_one():
    module = FUSIONS.get("bifpn")([16, 16, 16], 16)
    nodes = module.layers[0].nodes()
    with torch.no_grad():
        nodes[0].weight.copy_(torch.tensor([-1.0, 3.0]))  # pushed negative by training
        nodes[-1].weight.copy_(torch.tensor([0.5, 1.5]))
    w0 = nodes[0].normalised_weights()
    assert (w0 >= 0).all() and w0[0] == 0
    torch.testing.assert_close(w0.sum(), torch.tensor(1.0), atol=1e-4, rtol=0)
    torch.testing.assert_close(nodes[-1].normalised_weights(),
                               torch.tensor([0.5, 1.5]) / (2.0 + 1e-4))
    # a few steps of training with a large learning rate keep them so
    feats = [torch.randn(2, 16, s, s) for s in (8, 4, 2)]
    opt = torch.optim.SGD(module.parameters(), lr=5.0)
    for _ in range(3):
        opt.zero_grad()
        sum(m.mean() for m in module(feats)).backward()
        opt.step()
    for node in module.layers[0].nodes():
        w = node.normalised_weights()
        assert (w >= 0).all()
        if (node.weight > 0).any():
            torch.testing.assert_close(w.sum(), torch.tensor(1.0), atol=1e-3, rtol=0)


def test_asff_weights_sum_to_one_per_pixel_and_make_the_output():
    module = FUSIONS.get("asff")([8, 12, 20], 16).eval()
    feats = [torch.randn(2, c, s, s + 1) for c, s in zip([8, 12, 20], (9, 5, 3))]
    with torch.no_grad():
        weights = module.level_weights(feats)
        out = module(feats)
        lat = [conv(f) for conv, f in zip(module.laterals, feats)]
    for tgt, (w, y) in enumerate(zip(weights, out)):
        assert w.shape == (2, 3, *feats[tgt].shape[-2:]) and (w >= 0).all()
        torch.testing.assert_close(w.sum(dim=1), torch.ones(2, *w.shape[-2:]))
        xs = [r(x, lat[tgt].shape[-2:]) for r, x in zip(module.resample[tgt], lat)]
        torch.testing.assert_close(y, sum(w[:, n : n + 1] * x for n, x in enumerate(xs)))


# --- attentions: masks, CBAM halves, timm's blocks ----------------------------------------

def test_cbam_spatial_mask_is_applied_and_drawn():
    module = ATTENTIONS.get("cbam_spatial")([8, 8])
    maps = [torch.randn(2, 8, 7, 5), torch.randn(2, 8, 3, 3)]
    out, masks = module(maps)
    for x, y, m, gate in zip(maps, out, masks["sa"], module.gates):
        pooled = torch.cat([x.mean(1, keepdim=True), x.max(1, keepdim=True).values], 1)
        expected = torch.sigmoid(torch.nn.functional.conv2d(pooled, gate.conv.weight,
                                                            gate.conv.bias, padding=3))
        torch.testing.assert_close(m, expected)
        torch.testing.assert_close(y, expected * x)
    assert has_spatial_masks("cbam_spatial") and not has_spatial_masks("cbam_channel")


def test_timm_cbam_exposes_its_spatial_gate_as_sa():
    module = ATTENTIONS.get("timm:cbam")([16, 16])
    maps = [torch.randn(2, 16, 7, 9), torch.randn(2, 16, 4, 5)]
    out, masks = module(maps)
    for block, x, y, m in zip(module.blocks, maps, out, masks["sa"]):
        assert m.shape == (2, 1, *x.shape[-2:]) and ((m >= 0) & (m <= 1)).all()
        torch.testing.assert_close(y, block.channel(x) * m)  # CBAM: Ms * (Mc * F)
    assert has_spatial_masks("timm:cbam") and has_spatial_masks("timm:gc")
    assert not has_spatial_masks("timm:se")


def _timm_names_by_regex() -> set[str]:
    """Independently of the adapter: the `attn_type == '...'` branches of timm's source."""
    # the module, not the function timm.layers re-exports under the same name
    create_attn = importlib.import_module("timm.layers.create_attn")
    return set(re.findall(r"attn_type == '(\w+)'", Path(create_attn.__file__).read_text()))


def test_list_shows_every_name_timm_get_attn_accepts(capsys):
    names = _timm_names_by_regex()
    assert {"se", "eca", "cbam", "gc", "coord", "nl"} <= names
    code, out, _ = run_cli(["list", "attentions"], capsys)
    assert code == 0
    listed = {line.split()[0] for line in out.splitlines()[1:] if line.strip()}
    assert {f"timm:{n}" for n in names} <= listed
    for n in names:  # usable ones build; the others are refused in one line with a reason
        if f"timm:{n}" in ATTENTIONS:
            block = ATTENTIONS.get(f"timm:{n}")([16]).blocks[0]
            import timm.layers

            assert isinstance(block, torch.nn.Module)
            assert type(block).__name__ in repr(timm.layers.get_attn(n))
        else:
            assert "cannot be used" in ATTENTIONS.unknown_message(f"timm:{n}")


def test_a_block_a_later_timm_adds_is_listed_and_built(capsys, monkeypatch, tmp_path):
    """A copy of timm's get_attn module with one more branch stands in for a newer timm."""
    import timm.layers

    create_attn = importlib.import_module("timm.layers.create_attn")
    source = Path(create_attn.__file__).read_text().replace("from .", "from timm.layers.")
    source = source.replace("if attn_type == 'se':",
                            "if attn_type == 'fl_new_block':\n"
                            "                module_cls = SEModule\n"
                            "            elif attn_type == 'se':")
    path = tmp_path / "fl_test_newer_timm_attn.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("fl_test_newer_timm_attn", path)
    newer = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "fl_test_newer_timm_attn", newer)
    spec.loader.exec_module(newer)
    monkeypatch.setattr(timm.layers, "get_attn", newer.get_attn)

    code, out, _ = run_cli(["list", "attentions", "timm:fl_*"], capsys)
    assert code == 0 and "timm:fl_new_block" in out and "SEModule" in out
    model = build_model(ModelConfig(backbone="small_cnn", attention="timm:fl_new_block"), 5)
    assert type(model.attention.blocks[0]).__name__ == "SEModule"


# --- one line before training --------------------------------------------------------------

def _problems(**model) -> list[str]:
    return check_model_config(ModelConfig(backbone="small_cnn", **model))


def test_unknown_timm_name_names_the_valid_ones():
    (problem,) = _problems(attention="timm:sse")
    assert "'timm:sse'" in problem and "did you mean 'timm:se'" in problem
    assert "timm:cbam" in problem and "timm:eca" in problem and "\n" not in problem


def test_a_timm_block_that_cannot_run_per_level_is_refused_with_its_reason():
    (problem,) = _problems(attention="timm:bottleneck")
    assert "cannot be used" in problem and "feature size" in problem


def test_bad_timm_argument_names_those_it_takes():
    (problem,) = _problems(attention="timm:se", attention_args={"rd_ratoi": 0.5})
    assert "'rd_ratoi'" in problem and "rd_ratio" in problem


@pytest.mark.parametrize("fusion", NECKS)
def test_a_neck_given_one_level(fusion):
    (problem,) = _problems(fusion=fusion, out_indices=[-1])
    assert f"fusion {fusion!r} fuses two or more levels, got 1" in problem
    assert "out_indices" in problem and "\n" not in problem


def test_bifpn_repeats_zero():
    (problem,) = _problems(fusion="bifpn", fusion_args={"repeats": 0})
    assert "repeats must be a positive integer" in problem and "got 0" in problem
    with pytest.raises(ConfigError):
        FUSIONS.get("bifpn")([8, 8], 8, repeats=0)


def test_dry_run_says_it_in_one_line(tmp_path, capsys):
    study = tmp_path / "bad.yaml"
    study.write_text("name: bad\nbase:\n  dataset: {name: synthetic_fgvc}\n"
                     "  model: {backbone: small_cnn, fusion: bifpn, fusion_args: {repeats: 0}}\n"
                     "variants:\n  - {label: a}\nseeds: [0]\n")
    code, _, err = run_cli(["run", str(study), "--dry-run", "--results", str(tmp_path)], capsys)
    assert code != 0 and "Traceback" not in err
    assert "repeats must be a positive integer" in err


# --- the listing and describe ----------------------------------------------------------------

def test_list_shows_each_new_entry_with_its_paper(capsys):
    code, out, _ = run_cli(["list"], capsys)
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    for name, paper in [("concat", "Hariharan et al., CVPR 2015"),
                        ("panet", "Liu et al., CVPR 2018"), ("bifpn", "Tan et al., CVPR 2020"),
                        ("asff", "Liu et al., arXiv 1911.09516, 2019"),
                        ("cbam_spatial", "Woo et al., ECCV 2018"),
                        ("timm:se", "Hu et al., CVPR 2018"), ("convlstm", "Guo et al.")]:
        assert f"[{paper}" in lines[name], lines[name]
    assert "[" not in lines["none"]


def test_describe_gives_each_components_own_cost(capsys):
    code, out, _ = run_cli(["describe", "--backbone", "small_cnn", "--classes", "5",
                            "--image-size", "56", "--width", "16", "--fusion", "concat",
                            "--attention", "cbam_spatial"], capsys)
    assert code == 0, out
    rows = {line.split()[1]: line.split() for line in out.splitlines()[1:3]}
    # small_cnn's levels: 48, 96, 160 channels (registry/backbone_small.py's widths)
    assert int(rows["concat"][2].replace(",", "")) == (48 + 96 + 160) * 16 + 16
    assert int(rows["cbam_spatial"][2].replace(",", "")) == 3 * (2 * 49 + 1)  # 3 levels
