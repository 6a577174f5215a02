"""Run ids are the results' memory: the shipped studies' ids are pinned here.

A change that moves one of these ids orphans every result already trained for that run.
The ids were computed before any refactoring of the code that computes them (issue 11);
a change that alters them on purpose updates them here and says so in the README.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fusion_lab import config
from fusion_lab.registries import PRESETS, load_builtin
from fusion_lab.store import digest, run_ids
from fusion_lab.study import expand, load_study

STUDIES = Path(__file__).resolve().parent.parent / "studies"

# study -> (number of runs, SHA-256 of [[run_id, group_id], ...] in expansion order)
ALL_IDS = {
    "attention": (24, "a54ac065ee8741df9c3fe3c49a8dfab656efd84f70d0f4b9a6eeb3940cbb79ad"),
    "convlstm": (6, "e1b53ff6bcce9dd38c64241d43207ebcf740b417bcaaaf9fb2002cca04841ec9"),
    "pathways": (9, "23d39a81c07d077a794eb7400e78a7a0d7916067ed70e7afb7469f3c0fef4fdf"),
    "pretrain_synthetic": (1, "8364ab4261b023c8e252222ed42819663f5ac616b7006634246749f8d03b0d42"),
    # issue 9: pretrained `synthetic` weights (by their content's SHA-256), SGD, 3 seeds
    "quickstart": (12, "c724b589bdb2e1dd6c6c28470e9db0ef9d00f3f624e717539a448fbe829c3beb"),
    # the quickstart before issue 9, kept as an example: the same configs, the same ids
    "scratch": (8, "27bf514d6f4dc545e676244636a765405a7f87f629e55aa7258bc923c8e1deea"),
    "sota": (18, "14c9be429595ea3d543c96ce265df474708565c71a012c26617d4485d9243afe"),
}

# (study, label, grid shown, seed, run_id, group_id): first, middle and last run of each
PINNED = [
    ("attention", "none", {"model.fusion": "fpn_add"}, 0,
     "b97ce50b0a3d340f9c2b0c60d60e2c7c3e6ce646a4e84ee634f492d6986b355c",
     "bbb566ca51b081e2b1df8f27f726b65e691643950d1b292261338049cd94a51a"),
    ("attention", "CA", {"model.fusion": "fpn_add"}, 0,
     "5f791f1d6422a5788beefe64464b4aca84868dd5818f3e366be98ea02712a89a",
     "97cce1828721268108f8e792640ee912d60a8778a793d72f6434d299aeb724ac"),
    ("attention", "SA+CA", {"model.fusion": "convlstm"}, 2,
     "2424da8c450eb37615bff1b676ad39745c9e1b56362b3b69f81284f8ba3f5a9b",
     "22351ef8f029a0f3781b3d99895da207bc5d78eeadd1f7e989e10aa28fea6fb6"),
    ("convlstm", "w/o ConvLSTM", {}, 0,
     "35b015f2ce37eeaf80b407bceded011052b3729f1af7ad936403cc0b1f713205",
     "fd9e3cde037b223da8158621e6215b08ef134acadd9908a9dbe60cfd43e9653b"),
    ("convlstm", "w/ ConvLSTM", {}, 0,
     "c20c3c268e80e4f7b7d1f268cebded4aab2fb97e804996f2be99a3f51ed52819",
     "22351ef8f029a0f3781b3d99895da207bc5d78eeadd1f7e989e10aa28fea6fb6"),
    ("convlstm", "w/ ConvLSTM", {}, 2,
     "2424da8c450eb37615bff1b676ad39745c9e1b56362b3b69f81284f8ba3f5a9b",
     "22351ef8f029a0f3781b3d99895da207bc5d78eeadd1f7e989e10aa28fea6fb6"),
    ("pathways", "Baseline", {}, 0,
     "6a0173062eb294190c82eb51a42430319e8bb68e17c9019ad784acdbb3e73688",
     "d3abb3df51d7b8b7b9fb00bf0ff151102d8d833656140d49598e83bf9ea22995"),
    ("pathways", "HL", {}, 1,
     "e05566c58d1e0378b9e688a33a0e01a9181fa82e7951836a546b74f801010d62",
     "bbb566ca51b081e2b1df8f27f726b65e691643950d1b292261338049cd94a51a"),
    ("pathways", "HL+LH", {}, 2,
     "2ea58bfee1098214902dec4edc1cd02e8c10554cdb68405906ce7f579f6989f6",
     "fd9e3cde037b223da8158621e6215b08ef134acadd9908a9dbe60cfd43e9653b"),
    ("quickstart", "Baseline", {}, 0,
     "e2195b8260788d4b0913f6f0f089cbef9ba146ffc71a62285523280ef60f1bcc",
     "e72e6676b1884ee8916526d7409d0432e2416948ff231dfdbc4ecfc06883fbf8"),
    ("quickstart", "HL+LH", {}, 1,
     "849dba68b15517a52834e1a98dea5b4a9eeb45f9db61a83f4b68c8b89895d53e",
     "374c6fd72ac099e27782ed6b1bc379fb8538726bdb48bbf078f06bc44c9d7bd5"),
    ("quickstart", "CN-CNN", {}, 2,
     "48d20b9e07eb7d332d92d7161847f12530ccf29c88c998439301c9eebdf8cd39",
     "16c4d1bb50a9a1706e975c13232b1bac1135834a5e19d30b0ff8053d2a14be5f"),
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
     "6a0173062eb294190c82eb51a42430319e8bb68e17c9019ad784acdbb3e73688",
     "d3abb3df51d7b8b7b9fb00bf0ff151102d8d833656140d49598e83bf9ea22995"),
    ("sota", "CN-CNN", {"dataset": "cub200"}, 0,
     "c20c3c268e80e4f7b7d1f268cebded4aab2fb97e804996f2be99a3f51ed52819",
     "22351ef8f029a0f3781b3d99895da207bc5d78eeadd1f7e989e10aa28fea6fb6"),
    ("sota", "CN-CNN", {"dataset": "fgvc_aircraft"}, 2,
     "e87a9ef23c43612b1e3bc1a2408529086ad80a4338586189b1ffbc347b11325f",
     "68bef4c133935b1227e8485ec64eef20214e96d9689d358409ed5a123f16d1d2"),
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
