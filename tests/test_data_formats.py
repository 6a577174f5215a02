"""Each real dataset read from a miniature tree in its published format."""

from __future__ import annotations

import pytest
from dataset_trees import (
    load_datasets,
    make_aircraft,
    make_cars_annos,
    make_cars_devkit,
    make_cub,
    make_imagefolder,
)

from fusion_lab.data import open_source
from fusion_lab.errors import DatasetError

load_datasets()


def labels_of(pairs):
    return [y for _, y in pairs]


@pytest.mark.parametrize("point_at_parent", [False, True])
def test_cub200_official_split_and_labels(tmp_path, point_at_parent):
    d = make_cub(tmp_path, [(3, 2), (2, 1), (1, 2)])
    source, _ = open_source("cub200", str(tmp_path if point_at_parent else d), {})
    assert source.class_names == ["Bird_1", "Bird_2", "Bird_3"]
    assert labels_of(source.train) == [0, 0, 0, 1, 1, 2]
    assert labels_of(source.test) == [0, 0, 1, 2, 2]
    # The label follows the file, not its position: class folder k holds label k-1.
    for path, y in source.train + source.test:
        assert f"/{y + 1:03d}.Bird_{y + 1}/" in path
    assert source.load(source.train[0][0]).mode == "RGB"


def test_cub200_missing_file_named(tmp_path):
    d = make_cub(tmp_path, [(1, 1), (1, 1)])
    (d / "train_test_split.txt").unlink()
    with pytest.raises(DatasetError, match="train_test_split.txt"):
        open_source("cub200", str(d), {})


CARS = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi TT RS Coupe 2012"]


def test_stanford_cars_devkit_layout_matches_torchvision(tmp_path):
    from torchvision.datasets import StanfordCars as TV

    make_cars_devkit(tmp_path, CARS, train=[0, 2, 1, 2], test=[1, 0, 2])
    source, _ = open_source("stanford_cars", str(tmp_path), {})
    assert source.class_names == CARS
    assert labels_of(source.train) == [0, 2, 1, 2]
    assert labels_of(source.test) == [1, 0, 2]
    # The miniature is in the format torchvision's reader expects, and we agree with it.
    for split, ours in [("train", source.train), ("test", source.test)]:
        tv = TV(str(tmp_path), split=split, download=False)
        assert tv.classes == CARS
        assert [(str(p), y) for p, y in tv._samples] == ours


def test_stanford_cars_all_in_one_layout(tmp_path):
    make_cars_annos(tmp_path, CARS, labels=[0, 1, 2, 0, 1, 2, 2], is_test=[0, 0, 0, 1, 1, 1, 0])
    source, _ = open_source("stanford_cars", str(tmp_path), {})
    assert source.class_names == CARS
    assert labels_of(source.train) == [0, 1, 2, 2]
    assert labels_of(source.test) == [0, 1, 2]
    assert all(p.endswith(".jpg") and "/car_ims/" in p for p, _ in source.train)
    assert source.load(source.test[0][0]).size == (40, 30)


VARIANTS = {
    "707-320": ("Boeing 707", "Boeing"),
    "727-200": ("Boeing 727", "Boeing"),
    "A300B4": ("A300", "Airbus"),
}


@pytest.mark.parametrize(
    "level,names,train_labels",
    [
        ("variant", ["707-320", "727-200", "A300B4"], [0, 1, 2, 2]),
        ("family", ["A300", "Boeing 707", "Boeing 727"], [1, 2, 0, 0]),
        ("manufacturer", ["Airbus", "Boeing"], [1, 1, 0, 0]),
    ],
)
def test_fgvc_aircraft_levels(tmp_path, level, names, train_labels):
    make_aircraft(tmp_path, VARIANTS, ["707-320", "727-200", "A300B4", "A300B4"],
                  ["727-200", "707-320"])
    source, _ = open_source("fgvc_aircraft", str(tmp_path), {"level": level})
    assert source.class_names == names
    assert labels_of(source.train) == train_labels
    assert len(source.test) == 2


def test_fgvc_aircraft_banner_removed(tmp_path):
    d = make_aircraft(tmp_path, VARIANTS, ["707-320", "A300B4"], ["727-200"], size=(60, 50))
    kept, _ = open_source("fgvc_aircraft", str(d), {})
    cut, _ = open_source("fgvc_aircraft", str(d), {"remove_banner": True})
    assert kept.load(kept.test[0][0]).size == (60, 50)
    assert cut.load(cut.test[0][0]).size == (60, 30)


def test_fgvc_aircraft_unknown_level(tmp_path):
    with pytest.raises(DatasetError, match="family"):
        open_source("fgvc_aircraft", str(tmp_path), {"level": "model"})


def test_imagefolder(tmp_path):
    make_imagefolder(tmp_path, {"cat": (2, 1), "ant": (3, 2)})
    source, _ = open_source("imagefolder", str(tmp_path), {})
    assert source.class_names == ["ant", "cat"]
    assert labels_of(source.train) == [0, 0, 0, 1, 1]
    assert labels_of(source.test) == [0, 0, 1]


@pytest.mark.parametrize(
    "name,expected_file",
    [
        ("cub200", "images.txt"),
        ("stanford_cars", "cars_meta.mat"),
        ("fgvc_aircraft", "images_variant_trainval.txt"),
        ("imagefolder", "train/"),
    ],
)
def test_missing_root_is_one_helpful_error(tmp_path, name, expected_file):
    where = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as info:
        open_source(name, str(where), {})
    msg = str(info.value)
    assert name in msg and str(where) in msg and expected_file in msg
    if name != "imagefolder":
        assert "https://" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("name", ["cub200", "stanford_cars", "fgvc_aircraft", "imagefolder"])
def test_root_not_given(name):
    with pytest.raises(DatasetError, match=name):
        open_source(name, None, {})


def test_unknown_option_lists_valid_ones(tmp_path):
    make_imagefolder(tmp_path, {"a": (1, 1)})
    with pytest.raises(DatasetError, match="max_unreadable"):
        open_source("fgvc_aircraft", str(tmp_path), {"levle": "family"})
