"""Study files: parsing, validation messages, expansion and run identity."""

import textwrap
from pathlib import Path

import pytest

from fusion_lab.errors import ConfigError, FusionLabError
from fusion_lab.plan.planning import prepare
from fusion_lab.plan.study import expand, load_study

TINY = Path(__file__).parent / "plugins" / "tiny_backbone.py"
BASE = f"""
name: demo
plugins: [{TINY}]
base:
  dataset: {{name: synthetic_fgvc, options: {{num_classes: 3}}}}
  model: {{backbone: tiny_cnn, width: 8, hidden: 8}}
  train: {{epochs: 1, batch_size: 4, image_size: 32, resize: 32, workers: 0}}
variants:
  - {{label: Baseline, model: {{preset: baseline}}}}
  - {{label: CN-CNN, model: {{preset: cn_cnn}}}}
seeds: [0, 1]
baseline: Baseline
reference: {{paper: {{Baseline: 84.1, CN-CNN: 88.9}}}}
"""


def write(tmp_path, text, name="study.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_expand_variants_x_seeds_with_distinct_full_length_ids(tmp_path):
    study, runs = prepare(write(tmp_path, BASE))
    assert [(r.label, r.seed) for r in runs] == [
        ("Baseline", 0), ("Baseline", 1), ("CN-CNN", 0), ("CN-CNN", 1)]
    assert len({r.run_id for r in runs}) == 4
    assert all(len(r.run_id) == 64 and len(r.group_id) == 64 for r in runs)
    # seeds of one variant share a group; variants don't
    assert runs[0].group_id == runs[1].group_id != runs[2].group_id
    # presets are resolved into the parts
    assert (runs[2].config.model.fusion, runs[2].config.model.attention) == ("convlstm", "sa+ca")
    assert runs[0].config.train.lr_new == pytest.approx(1e-3)  # the reference recipe


def test_ids_ignore_fields_that_cannot_change_the_result(tmp_path):
    _, runs = prepare(write(tmp_path, BASE))
    _, same = prepare(write(tmp_path, BASE), ["train.workers=3", "train.log_every=5"])
    _, other = prepare(write(tmp_path, BASE), ["train.epochs=2"])
    assert [r.run_id for r in runs] == [r.run_id for r in same]
    assert not {r.run_id for r in runs} & {r.run_id for r in other}


def test_explicit_preset_fields_give_the_same_run_as_the_preset(tmp_path):
    text = BASE.replace("{label: CN-CNN, model: {preset: cn_cnn}}",
                        "{label: CN-CNN, model: {fusion: convlstm, attention: sa+ca, "
                        "head: multi_level}}")
    _, a = prepare(write(tmp_path, BASE))
    _, b = prepare(write(tmp_path, text, "b.yaml"))
    assert a[2].run_id == b[2].run_id


def test_grid_is_crossed_with_variants(tmp_path):
    text = BASE + "grid: {model.width: [8, 16], train.batch_size: [2, 4]}\n"
    _, runs = prepare(write(tmp_path, text))
    assert len(runs) == 2 * 2 * 2 * 2
    assert {(r.grid["model.width"], r.config.model.width) for r in runs} == {(8, 8), (16, 16)}


def test_override_wins_over_variant_patch(tmp_path):
    text = BASE.replace("{label: CN-CNN, model: {preset: cn_cnn}}",
                        "{label: CN-CNN, model: {preset: cn_cnn, width: 4}}")
    _, runs = prepare(write(tmp_path, text), ["model.width=12", "seeds=[5]"])
    assert {r.config.model.width for r in runs} == {12}
    assert {r.seed for r in runs} == {5}


def test_override_wins_over_the_grid(tmp_path):
    # Before: a grid over datasets replaced --set dataset.root, which the missing-data error
    # recommends; --set is the user's last word, over the base, the variants and the grid.
    text = BASE.replace("seeds: [0, 1]", "seeds: [0]") + textwrap.dedent("""
        grid:
          dataset:
            - {name: synthetic_fgvc, root: data/a, options: {num_classes: 3}}
            - {name: synthetic_fgvc, root: data/b, options: {num_classes: 4}}
          model.width: [8, 16]
        """)
    _, runs = prepare(write(tmp_path, text), ["dataset.root=/data/mine", "model.hidden=12"])
    assert len(runs) == 2 * 2 * 2  # the grid still makes its rows
    assert {r.config.dataset.root for r in runs} == {"/data/mine"}
    assert {r.config.model.hidden for r in runs} == {12}
    assert {r.config.dataset.options["num_classes"] for r in runs} == {3, 4}  # the rest: grid
    with pytest.raises(ConfigError, match="--set model.width replaces the grid axis model.width"):
        prepare(write(tmp_path, text), ["model.width=12"])


def _expand(path, overrides=()):
    from fusion_lab.plan.planning import presets
    from fusion_lab.registries import load_plugins

    study = load_study(path, list(overrides))
    load_plugins(study.plugins)
    return expand(study, presets())


def test_relative_paths_in_a_study_file_are_found_beside_it(tmp_path):
    # One rule for every path a study file names (plugins: too): its own folder first,
    # then the working directory; a --set value is the working directory's.
    folder = tmp_path / "studies"
    (folder / "data" / "birds").mkdir(parents=True)
    (folder / "w.pth").write_bytes(b"weights")
    text = BASE.replace("{name: synthetic_fgvc, options: {num_classes: 3}}",
                        "{name: synthetic_fgvc, root: data/birds, options: {num_classes: 3}}")
    text = text.replace("width: 8,", "width: 8, pretrained: w.pth,")
    path = write(folder, text)
    cfg = _expand(path)[0].config
    assert cfg.dataset.root == str(folder / "data" / "birds")
    assert cfg.model.pretrained == str(folder / "w.pth")
    cfg = _expand(path, ["dataset.root=data/birds", "model.pretrained=w.pth"])[0].config
    assert (cfg.dataset.root, cfg.model.pretrained) == ("data/birds", "w.pth")
    absent = write(folder, text.replace("data/birds", "data/cub"), "other.yaml")
    assert _expand(absent)[0].config.dataset.root == "data/cub"  # the working directory's


def test_every_problem_is_reported_at_once_before_training(tmp_path):
    text = BASE.replace("width: 8", "widht: 8").replace(
        "{label: CN-CNN, model: {preset: cn_cnn}}",
        "{label: CN-CNN, model: {fusion: convlsmt, attention: sa+ca}}").replace(
        "epochs: 1", "epochs: one")
    with pytest.raises(ConfigError) as e:
        prepare(write(tmp_path, text))
    msg = str(e.value)
    assert "widht" in msg and "width" in msg  # unknown key with the close name
    assert "train.epochs must be" in msg  # wrong type
    assert len(e.value.problems) >= 2


def test_unknown_component_names_closest(tmp_path):
    text = BASE.replace("{label: CN-CNN, model: {preset: cn_cnn}}",
                        "{label: CN-CNN, model: {fusion: convlsmt, attention: sa+ca}}")
    with pytest.raises(ConfigError, match="did you mean 'convlstm'"):
        prepare(write(tmp_path, text))


def test_missing_dataset_root_is_reported_before_training(tmp_path):
    text = BASE.replace("{name: synthetic_fgvc, options: {num_classes: 3}}",
                        "{name: cub200, root: /nowhere/CUB_200_2011}")
    with pytest.raises(ConfigError, match="/nowhere/CUB_200_2011"):
        prepare(write(tmp_path, text))


@pytest.mark.parametrize("text, needle", [
    ("name: x\nbase: [1, 2\n", "invalid YAML at line"),
    ("name: x\nbase: {}\nvariants: [{model: {}}]\n", "has no `label`"),
    ("name: x\nbase: {}\nvariants: [{label: a}, {label: a}]\n", "labelled 'a'"),
    ("name: x\nbase: {}\nvariants: [{label: a}]\nbaseline: b\n", "baseline 'b'"),
    ("name: x\nbase: {}\nseeds: [0, 0]\n", "distinct integers"),
    ("name: x\nbase: {}\nvariantz: []\n", "did you mean 'variants'"),
    ("name: x\nbase: {}\nvariants: [{label: a}]\nreference: {paper: {b: 1}}\n", "no variant"),
])
def test_structural_mistakes_have_clear_messages(tmp_path, text, needle):
    with pytest.raises(FusionLabError, match=needle.replace("[", r"\[").replace("`", ".")):
        load_study(write(tmp_path, text))


def test_missing_study_file(tmp_path):
    with pytest.raises(FusionLabError, match="not found"):
        load_study(tmp_path / "nope.yaml")


def test_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_study(write(tmp_path, BASE), ["train.epochs"])


def test_identical_variants_are_refused(tmp_path):
    text = BASE.replace("{label: CN-CNN, model: {preset: cn_cnn}}",
                        "{label: Again, model: {preset: baseline}}").replace(
        "reference: {paper: {Baseline: 84.1, CN-CNN: 88.9}}", "")
    study = load_study(write(tmp_path, text))
    with pytest.raises(ConfigError, match="same config"):
        from fusion_lab.registries import PRESETS, load_plugins

        load_plugins(study.plugins, base_dir=tmp_path)
        expand(study, {n: PRESETS.get(n) for n in PRESETS.list()})


STUDIES = Path(__file__).parent.parent / "studies"


@pytest.mark.parametrize("name", ["pathways", "convlstm", "attention", "sota"])
def test_shipped_paper_studies_stop_with_the_missing_dataset_message(name):
    with pytest.raises(ConfigError) as e:
        prepare(STUDIES / f"{name}.yaml")
    msg = str(e.value)
    assert "root folder" in msg and "not found" in msg and "http" in msg
    assert all("dataset:" in p for p in e.value.problems)  # nothing else is wrong


def test_shipped_studies_expand_to_the_paper_rows():
    from fusion_lab.registries import PRESETS, load_builtin

    load_builtin()
    presets = {n: PRESETS.get(n) for n in PRESETS.list()}
    sota = expand(load_study(STUDIES / "sota.yaml"), presets)
    assert len(sota) == 2 * 3 * 3
    cells = {(r.label, r.grid["dataset"], r.config.dataset.name) for r in sota}
    assert ("CN-CNN", "stanford_cars", "stanford_cars") in cells
    assert all(r.config.dataset.val_fraction == 0.1 for r in sota)
    table3 = expand(load_study(STUDIES / "convlstm.yaml"), presets)
    assert {r.config.model.fusion for r in table3} == {"fpn_add", "convlstm"}
    assert {r.config.model.attention for r in table3} == {"sa+ca"}
    quick = expand(load_study(STUDIES / "quickstart.yaml"), presets)
    assert [r.config.model.fusion for r in quick if r.seed == 0] == ["none", "fpn_add",
                                                                    "fpn_add", "convlstm"]
