"""Attention scores: where the bird and its parts are, pointing game and energy share.

Known answers: a mask forced onto the bird scores 100% pointing and energy share 1; a
uniform mask scores exactly the box's area share; boxes and points move through the test
transform as computed by hand; the synthetic images stay bit-identical.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from dataset_trees import load_datasets, make_cub
from test_table import StudyWriter, line

from fusion_lab.analysis.table import tables
from fusion_lab.data.synthetic import generate, render, render_with_masks
from fusion_lab.errors import DatasetError
from fusion_lab.maps.regions import Regions, box_pixels, part_pixels, through_test_transform
from fusion_lab.maps.scoring import score_file, score_mask, summarise

load_datasets()
from fusion_lab.registry.datasets.cub200 import CUB200  # noqa: E402
from fusion_lab.registry.datasets.synthetic_fgvc import SyntheticFGVC  # noqa: E402

# sha256 of generate(10, 3, size, seed=5, stream=1) for size 32 then 64, computed with the
# renderer before masks were added (commit 3590fbf): the images must not change.
IMAGES_BEFORE_MASKS = "2c6aded878727fad52f1b1f23d383457537e528b87f06ef0cd53c5df339c7430"


def test_synthetic_images_are_bit_identical_and_masks_come_from_the_same_draws():
    h = hashlib.sha256()
    for size in (32, 64):
        x, _ = generate(10, 3, size, seed=5, stream=1, max_rotation=25.0, clutter=5, noise=5.0)
        h.update(x.tobytes())
    assert h.hexdigest() == IMAGES_BEFORE_MASKS
    img, masks = render_with_masks(np.random.default_rng([1, 2, 3]), 4, 48)
    assert np.array_equal(img, render(np.random.default_rng([1, 2, 3]), 4, 48))
    assert set(masks) == {"bird", "beak", "crown", "throat", "wing"}
    for name in ("beak", "crown", "throat", "wing"):
        assert masks[name].sum() > 0 and (masks[name] <= masks["bird"] + 1e-6).all()
    # beak, crown and throat have equal area (0.03 local units²) up to rendering
    areas = [masks[p].sum() for p in ("beak", "crown", "throat")]
    assert max(areas) / min(areas) < 1.4


def test_synthetic_part_masks_sit_on_the_marker_colours():
    """Beak, crown and throat are painted in saturated marker colours: the masks find them."""
    ds = SyntheticFGVC(num_classes=3, train_per_class=1, test_per_class=4, image_size=64,
                       noise=0.0)
    for item, _ in ds.test:
        hsv = np.asarray(ds.load(item).convert("HSV"), dtype=np.float32) / 255
        reg = ds.regions(item)
        for name in ("beak", "crown", "throat"):
            inside = reg.part_masks[name] == 1.0
            assert inside.sum() >= 4
            assert np.median(hsv[..., 1][inside]) > 0.6  # saturated marker ink
        x0, y0, x1, y1 = reg.box
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64


def test_box_and_points_follow_resize_and_centre_crop():
    # 100 x 50 image, resized to 80 x 80 (x * 0.8, y * 1.6), centre crop 64 (offset 8)
    reg = Regions((100, 50), (10.0, 5.0, 60.0, 30.0),
                  part_points={"beak": (50.0, 10.0), "tail": (2.0, 2.0)})
    out = through_test_transform(reg, 80, 64)
    assert out.size == (64, 64)
    assert out.box == pytest.approx((0.0, 0.0, 40.0, 40.0))  # (0, 0) clipped from (-, -)
    assert out.part_points == {"beak": pytest.approx((32.0, 8.0))}  # tail cropped away


def test_masks_follow_the_image_through_the_test_transform():
    from PIL import Image

    from fusion_lab.data.decode import pil_to_uint8
    from fusion_lab.data.transforms import FGVCTransform

    mask = np.zeros((40, 60), np.float32)
    mask[10:30, 35:55] = 1.0
    image = Image.fromarray((np.repeat(mask[..., None], 3, 2) * 255).astype(np.uint8))
    x = FGVCTransform(48, 56, train=False)(pil_to_uint8(image))  # uint8, as loaders give
    seen = x.numpy()[0] / 255.0  # back to [0, 1]
    moved = through_test_transform(Regions((60, 40), (0, 0, 60, 40), {"m": mask}), 56, 48)
    assert moved.part_masks["m"].shape == (48, 48)
    assert np.abs(moved.part_masks["m"] - seen).max() < 0.02  # same pixels, same blur


def test_part_pixels_radius_by_hand():
    reg = Regions((21, 21), (0, 0, 21, 21), part_points={"eye": (10.5, 10.5)})
    # pixel centres within 2 px of a pixel centre: offsets (0,0), 4 at 1, 4 at 1.41, 4 at 2
    assert part_pixels(reg, 2.0).sum() == 13
    assert box_pixels(Regions((10, 10), (2.0, 3.0, 6.0, 8.0))).sum() == 4 * 5


def regions_of(size=32) -> Regions:
    ds = SyntheticFGVC(num_classes=3, train_per_class=1, test_per_class=2, image_size=size)
    return through_test_transform(ds.regions(ds.test[0][0]), 36, size)


def test_mask_on_the_bird_scores_full_marks():
    reg = regions_of()
    on_bird = box_pixels(reg).astype(np.float32)
    s = score_mask(on_bird, reg, radius=2.0)
    assert s["point_box"] == 1.0 and s["energy_box"] == pytest.approx(1.0)
    on_part = (reg.part_masks["beak"] >= 0.5).astype(np.float32)
    assert score_mask(on_part, reg, radius=2.0)["point_part"] == 1.0
    total = summarise([s, s, score_mask(on_bird * 0.5, reg, 2.0)])
    assert total["point_box"] == 100.0 and total["energy_box"] == pytest.approx(1.0)


def test_uniform_mask_scores_exactly_the_area_share():
    reg = regions_of()
    s = score_mask(np.full((32, 32), 0.3), reg, radius=2.0)
    area = box_pixels(reg).mean()
    assert 0 < area < 1
    assert s["area_box"] == area and s["energy_box"] == pytest.approx(area, abs=1e-12)
    assert s["energy_part"] == pytest.approx(s["area_part"], abs=1e-12)
    square = Regions((32, 32), (10.0, 10.0, 20.0, 20.0))
    peak_outside = np.full((32, 32), 0.1)
    peak_outside[2, 2] = 1.0
    s = score_mask(peak_outside, square, 2.0)
    assert s["point_box"] == 0.0 and s["area_box"] == 100 / 1024
    assert s["energy_box"] == pytest.approx(10.0 / (0.1 * 1023 + 1.0))
    assert s["point_part"] is None  # no parts: no part score


def write_cub_regions(d: Path, n: int) -> None:
    (d / "parts").mkdir()
    (d / "parts/parts.txt").write_text("1 beak\n2 left eye\n")
    (d / "bounding_boxes.txt").write_text(
        "".join(f"{i} 4.0 3.0 20.0 10.0\n" for i in range(1, n + 1)))
    (d / "parts/part_locs.txt").write_text(
        "".join(f"{i} 1 10.0 5.0 1\n{i} 2 0.0 0.0 0\n" for i in range(1, n + 1)))


def test_cub_boxes_and_visible_parts(tmp_path):
    d = make_cub(tmp_path, [(1, 1), (1, 1)])
    ds = CUB200(str(tmp_path))
    with pytest.raises(DatasetError, match="bounding_boxes.txt"):
        ds.regions(ds.test[0][0])
    write_cub_regions(d, 4)
    reg = CUB200(str(tmp_path)).regions(ds.test[0][0])
    assert reg.size == (40, 30)  # dataset_trees' images
    assert reg.box == (4.0, 3.0, 24.0, 13.0)  # x, y, width, height -> corners
    assert reg.part_points == {"beak": (10.0, 5.0)}  # the invisible eye is left out


# --- fusionlab table --attention ------------------------------------------------------

def scores(levels: dict[str, tuple[float, float]], area=0.25, images=20) -> dict:
    return {"weights": "last", "epoch": 2, "images": images, "levels": {
        lv: {"images": images, "point_box": p, "energy_box": e, "area_box": area,
             "point_part": None, "energy_part": None, "area_part": None}
        for lv, (p, e) in levels.items()}}


def test_table_attention_columns_are_seed_means(tmp_path):
    w = StudyWriter(tmp_path, "att", seeds=[0, 1])
    w.row("Baseline", [("done", 80.0), ("done", 81.0)])
    w.row("CN", [("done", 82.0), ("done", 83.0)], fusion="cn")
    w.save()
    study = json.loads((w.dir / "study.json").read_text())
    cn = study["rows"][1]["run_ids"]
    (w.dir / cn[0] / score_file("last")).write_text(json.dumps(
        scores({"s5": (60.0, 0.5), "s4": (80.0, 0.7)})))
    (w.dir / cn[1] / score_file("last")).write_text(json.dumps(
        scores({"s5": (70.0, 0.6), "s4": (90.0, 0.9)})))
    text = tables(["att"], results=tmp_path, attention=True).text
    header = text.splitlines()[1]
    assert header.index("point s5 %") < header.index("point s4 %") < header.index("box area")
    row = line(text, "CN")
    assert "65.0" in row and "85.0" in row and "0.550" in row and "0.800" in row
    assert "0.250" in row
    assert "2 finished run(s) with SA masks have no attention scores" in text  # Baseline
    rec = json.loads(tables(["att"], results=tmp_path, attention=True, fmt="json").text)[1]
    assert rec["attention.s4.point_box"] == pytest.approx(85.0)
    assert rec["attention.s5.energy_box"] == pytest.approx(0.55)
    best = tables(["att"], results=tmp_path, attention=True, metric="best_val").text
    assert "best weights" in best and "--weights best" in best


def test_table_attention_says_n_for_fewer_seeds_and_shows_part_scores(tmp_path):
    w = StudyWriter(tmp_path, "att", seeds=[0, 1])
    w.row("Baseline", [("done", 80.0), ("done", 81.0)])
    w.row("CN", [("done", 82.0), ("done", 83.0)], fusion="cn")
    w.save()
    cn = json.loads((w.dir / "study.json").read_text())["rows"][1]["run_ids"]
    one = scores({"s5": (60.0, 0.5)})  # only seed 0 scored, with part scores
    one["levels"]["s5"].update(point_part=30.0, energy_part=0.12, area_part=0.05)
    (w.dir / cn[0] / score_file("last")).write_text(json.dumps(one))
    text = tables(["att"], results=tmp_path, attention=True).text
    header, row = text.splitlines()[1], line(text, "CN")
    # trained on 2 seeds, scored on 1: every score says so (docs/attention.md)
    assert "60.0 (n=1)" in row and "0.500 (n=1)" in row and "0.250 (n=1)" in row
    assert header.index("box area") < header.index("part point s5 %") < header.index(
        "part energy s5") < header.index("part area")
    assert "30.0 (n=1)" in row and "0.120 (n=1)" in row and "0.050 (n=1)" in row
    rec = json.loads(tables(["att"], results=tmp_path, attention=True, fmt="json").text)[1]
    assert rec["attention.s5.point_part"] == pytest.approx(30.0)
    assert rec["attention.s5.area_part"] == pytest.approx(0.05)
    # both seeds scored: no (n=...); no part scores anywhere: no part columns
    (w.dir / cn[1] / score_file("last")).write_text(json.dumps(scores({"s5": (70.0, 0.6)})))
    (w.dir / cn[0] / score_file("last")).write_text(json.dumps(scores({"s5": (60.0, 0.5)})))
    text = tables(["att"], results=tmp_path, attention=True).text
    assert "(n=" not in line(text, "CN") and "part" not in text.splitlines()[1]


def test_table_attention_does_not_import_torch(tmp_path):
    import subprocess
    import sys

    w = StudyWriter(tmp_path, "att", seeds=[0])
    run_id = w.row("CN", [("done", 82.0)], fusion="cn")
    w.save()
    run_dir = next(p for p in w.dir.iterdir() if p.is_dir())
    (run_dir / score_file("last")).write_text(json.dumps(scores({"s5": (60.0, 0.5)})))
    code = ("import sys, fusion_lab.analysis.table;"
            f"t = fusion_lab.analysis.table.tables(['att'], results={str(tmp_path)!r}, attention=True);"
            "assert 'point s5 %' in t.text, t.text;"
            "bad = [m for m in ('torch', 'timm', 'torchvision') if m in sys.modules];"
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run_id and proc.returncode == 0, proc.stderr
