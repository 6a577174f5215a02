"""Run ids are the results' memory: the shipped studies' ids are pinned here.

A change that moves one of these ids orphans every result already trained for that run.
The ids were computed before any refactoring of the code that computes them (issue 11);
a change that alters them on purpose updates them here and says so in CHANGELOG.md.

Changed on purpose (issue 10, per-dataset reference recipes): every CUB run (attention,
convlstm, pathways, sota's CUB cells) now trains ResNet50's layer4 at lr_new, as the
released CUB script does; sota's Cars and Aircraft cells take their own batch, resize and
learning rates. The quickstart's ids did not change.

Changed on purpose (issue 22, the CPU job pool): quickstart and quickstart_tuned set
train.threads: 1 (one thread per run, two runs at once), so every one of their runs has a
new id; without that line they have their old ids (tested below).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fusion_lab import config
from fusion_lab.plan.study import expand, load_study
from fusion_lab.registries import PRESETS, load_builtin
from fusion_lab.store import digest, run_ids

STUDIES = Path(__file__).resolve().parent.parent / "studies"

# study -> (number of runs, SHA-256 of [[run_id, group_id], ...] in expansion order)
ALL_IDS = {
    "attention": (24, "37b668eee3103cebf2a2efed33019253c8167d67152e2284d6d474b555c9d403"),
    # issue 19: pinned when the catalogue studies were added (no earlier results exist)
    "catalogue": (45, "0ece13c10effce791b4c3a0af6722ef7db9f97d89f927720ff17a984d50796e5"),
    "catalogue_cub": (180, "94504fabfb16806a226701bc6a3617f836901c066098ce37b6d12eb39c41377b"),
    "convlstm": (12, "e6ff0a11f96e8ac64d24861efba9820c682a545a793fdaa98e18545b4039e030"),
    "pathways": (9, "762152edbc9a79b155b5d6d612757aebde58fe1470597be9b842818fb4818ee5"),
    "pretrain_synthetic": (1, "8364ab4261b023c8e252222ed42819663f5ac616b7006634246749f8d03b0d42"),
    # issue 9: pretrained `synthetic` weights (by their content's SHA-256), SGD, 3 seeds
    "quickstart": (12, "6596d45d124af9e7fd11828f91cad00393bff8f29a532e6df05fe4f1c8279594"),
    # issue 22: the tuned quickstart's planned runs, pinned when it was added
    "quickstart_tuned": (12, "71aa4c22ef47cb3759e8992cc09e70a8e1a83db5f740ad87ea88e5c5a3cea7bb"),
    # the quickstart before issue 9, kept as an example: the same configs, the same ids
    "scratch": (8, "27bf514d6f4dc545e676244636a765405a7f87f629e55aa7258bc923c8e1deea"),
    "sota": (18, "6cf01b883f76ec5a6a698088b72f35dc23ca835768a6a3c05cf0e8642dc9c9a4"),
}

# (study, label, grid shown, seed, run_id, group_id): first, middle and last run of each
PINNED = [
    ("attention", "none", {"model.fusion": "fpn_add"}, 0,
     "70832895e8b76ff6635f2204686aae148b63dddf6cdb1eddd245ec927fa96913",
     "d713e197e4cf7bd3dc5f433e042599f5472d2a6c6fb5c3b545e6032addee6219"),
    ("attention", "CA", {"model.fusion": "fpn_add"}, 0,
     "677cbe5c23ef99837c0999532d734a7c8e96d241ba10911d66bbb3262c91377b",
     "ecca2cf7ae9ba4cb0610868a3c52c031984a0214cb2acf5d734eeb6d8a2a90b6"),
    ("attention", "SA+CA", {"model.fusion": "convlstm"}, 2,
     "64927e1d59cad3e9f053653d454529e5a84d75ef52783ab84453623b1b098d19",
     "25e832f236844c9347c095a9d2e98bac4222c15974e5985306a4da1f10ac3db0"),
    ("convlstm", "w/o ConvLSTM", {}, 0,
     "fa9fc9ad7449c552ff8723931ca706453b5c35211137d3b298b9a14c1aafaa59",
     "f6b5e565d38f03977260f781c48c7212beaf9db70a86d155af0a14bbbaf97acc"),
    ("convlstm", "w/ ConvLSTM", {}, 0,
     "4cdafa0972ac5d40f60c0c4d98e0ac9820edb48851d1ba9dbd7de458c4c2fd23",
     "25e832f236844c9347c095a9d2e98bac4222c15974e5985306a4da1f10ac3db0"),
    ("convlstm", "w/ ConvLSTM", {}, 2,
     "64927e1d59cad3e9f053653d454529e5a84d75ef52783ab84453623b1b098d19",
     "25e832f236844c9347c095a9d2e98bac4222c15974e5985306a4da1f10ac3db0"),
    ("pathways", "Baseline", {}, 0,
     "c7288fccefecda332324a32c180bed237ce700c598cd5cd09c12f6bd5f2b74eb",
     "671017bcabd048744531db1f288bd06b6ecda71455a2fc185ce8175ec5aca8f1"),
    ("pathways", "HL", {}, 1,
     "69f0a58753cb1b9eefdfb1e7a1c0011e40e1abda53751b1ad96cfd51b9f1cee3",
     "d713e197e4cf7bd3dc5f433e042599f5472d2a6c6fb5c3b545e6032addee6219"),
    ("pathways", "HL+LH", {}, 2,
     "a72ae26ce9e3ead972e459ecae7b4947d9f143d171c410018605319e11235df4",
     "f6b5e565d38f03977260f781c48c7212beaf9db70a86d155af0a14bbbaf97acc"),
    ("quickstart", "Baseline", {}, 0,
     "68cce8e5b257913f36c0ad7d0b24fd8d902f761302aa25ed227d4e13ac471860",
     "cdf4d21cafd14ea21dad4da23727796c6f67e5b5db62b0f1b30bdfc5ad4edc7f"),
    ("quickstart", "HL+LH", {}, 1,
     "d12e95f0df25e7a53416241cb135a47c972213e7c6d170e900af1120fbbd491d",
     "9fea5a2191a1613b0452e8343673423c6df88a523d2a1e04bd841e68c7e7473f"),
    ("quickstart", "CN-CNN", {}, 2,
     "b42c15d235201489070142702986b6caed227761803e8cdd8d255e26f77ccef4",
     "326d02c682610c865f7fe3acea58750d1c857097d420b5d29c5ac794e4a8f33e"),
    ("scratch", "Baseline", {}, 0,
     "e3e32bdd5fc7c8cdd6f5631c4c54454c5bf9ab80817941c77b2c018af2845722",
     "0b1595d4b4f0197ae890a573a46898c707563e9343dadf357dca01977c098c82"),
    ("scratch", "CN-CNN", {}, 1,
     "8c2ca66af27a1f397bfae0f8617641ed4b5cd5c38aabf17f4340aa70509c8c91",
     "8c1c0f25e0993ebe7a113052a87daf4d6912414db6bd04ae47e7e672353c181f"),
    # pretrained: false, so no weights file in its id
    ("pretrain_synthetic", "small_cnn", {}, 0,
     "36aadebe0158aa95768ea8d9a02f94968539cec5f3d2719c82cde50ce71c376b",
     "f1001ec86c5c1cb0aa756a312b053fb01ad917d03caba0eb375cec2adf0dd6e1"),
    ("sota", "Baseline", {"dataset": "cub200"}, 0,
     "c7288fccefecda332324a32c180bed237ce700c598cd5cd09c12f6bd5f2b74eb",
     "671017bcabd048744531db1f288bd06b6ecda71455a2fc185ce8175ec5aca8f1"),
    ("sota", "CN-CNN", {"dataset": "cub200"}, 0,
     "4cdafa0972ac5d40f60c0c4d98e0ac9820edb48851d1ba9dbd7de458c4c2fd23",
     "25e832f236844c9347c095a9d2e98bac4222c15974e5985306a4da1f10ac3db0"),
    ("sota", "CN-CNN", {"dataset": "fgvc_aircraft"}, 2,
     "a1682e75227118a2396cd330a5952a3dd94c80308aba31d9877e41ccf1c08ce8",
     "a98e11a2beefab582a5b16450e822b400345f16cea7b4360ef5800df68ad851a"),
]


def _runs(study: str):
    load_builtin()
    presets = {name: PRESETS.get(name) for name in PRESETS.list()}
    return expand(load_study(STUDIES / f"{study}.yaml"), presets)


def test_every_shipped_study_is_pinned():
    assert sorted(p.stem for p in STUDIES.glob("*.yaml")) == sorted(ALL_IDS)


@pytest.mark.parametrize("study", sorted(ALL_IDS))
def test_all_ids_of_a_shipped_study_are_unchanged(study):
    runs = _runs(study)
    count, combined = ALL_IDS[study]
    assert len(runs) == count
    assert digest([[r.run_id, r.group_id] for r in runs]) == combined


@pytest.mark.parametrize("study,label,grid,seed,run_id,group_id", PINNED)
def test_pinned_run_ids(study, label, grid, seed, run_id, group_id):
    found = [r for r in _runs(study) if (r.label, r.grid, r.seed) == (label, grid, seed)]
    assert len(found) == 1
    assert (found[0].run_id, found[0].group_id) == (run_id, group_id)


def test_a_field_at_its_id_neutral_value_is_left_out_of_the_id(monkeypatch):
    cfg = config.resolve(config.RunConfig())
    plain = config.result_dict(cfg)
    assert plain["train"]["label_smoothing"] == 0.0
    monkeypatch.setitem(config.ID_NEUTRAL, "train.label_smoothing", 0.0)
    neutral = config.result_dict(cfg)
    assert "label_smoothing" not in neutral["train"]
    assert run_ids(neutral) != run_ids(plain)

    cfg.train.label_smoothing = 0.1
    other = config.result_dict(cfg)
    assert other["train"]["label_smoothing"] == 0.1
    assert run_ids(other) != run_ids(neutral)


def test_gpu_decoding_is_in_the_run_id_and_cpu_decoding_is_not():
    # nvJPEG's pixels differ from libjpeg-turbo's, so dataset.decode: gpu is another run;
    # cpu (the default) decodes as every existing run did, and keeps their ids.
    cfg = config.resolve(config.RunConfig())
    cpu = config.result_dict(cfg)
    assert "decode" not in cpu["dataset"]
    cfg.dataset.decode = "gpu"
    gpu = config.result_dict(cfg)
    assert gpu["dataset"]["decode"] == "gpu" and run_ids(gpu) != run_ids(cpu)


def test_the_quickstart_without_its_thread_count_has_its_old_ids(tmp_path):
    """train.threads: null (torch's default) is left out of the id: the quickstart as it
    was before issue 22 set one thread per run keeps the ids its results were stored under."""
    text = (STUDIES / "quickstart.yaml").read_text()
    assert "    threads: 1 " in text
    old = tmp_path / "quickstart.yaml"
    old.write_text(text.replace("    threads: 1 ", "    # threads "))
    load_builtin()
    presets = {name: PRESETS.get(name) for name in PRESETS.list()}
    runs = expand(load_study(old), presets)
    assert digest([[r.run_id, r.group_id] for r in runs]) == (
        "c724b589bdb2e1dd6c6c28470e9db0ef9d00f3f624e717539a448fbe829c3beb")
