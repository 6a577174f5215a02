"""synthetic_fgvc: deterministic, classes differ in local details, colour says nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from dataset_trees import load_datasets

from fusion_lab.data import open_source
from fusion_lab.data.synthetic import MAX_CLASSES, render
from fusion_lab.errors import DatasetError

load_datasets()


def synth(**options):
    source, _ = open_source("synthetic_fgvc", None, options)
    return source


def arrays(source, split):
    pairs = getattr(source, split)
    x = np.stack([np.asarray(source.load(i)) for i, _ in pairs])
    return x, np.array([y for _, y in pairs])


def test_sizes_and_names():
    s = synth(num_classes=4, train_per_class=3, test_per_class=2, image_size=32)
    assert len(s.train) == 12 and len(s.test) == 8 and len(set(s.class_names)) == 4
    assert sorted({y for _, y in s.train}) == [0, 1, 2, 3]
    assert np.asarray(s.load(s.train[0][0])).shape == (32, 32, 3)


def test_same_seed_same_images_other_seed_other_images():
    opts = {"num_classes": 3, "train_per_class": 2, "test_per_class": 1, "image_size": 32}
    a, _ = arrays(synth(**opts), "train")
    b, _ = arrays(synth(**opts), "train")
    c, _ = arrays(synth(**opts, seed=1), "train")
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    t, _ = arrays(synth(**opts), "test")
    assert not any(np.array_equal(t[0], img) for img in a)  # test never repeats train


def test_classes_differ_only_in_small_local_details():
    # Same per-image randomness (pose, colours, background), different class: the images
    # may differ only on the wing and the three small marker parts.
    for seed in range(5):
        base = render(np.random.default_rng(seed), 0, size=64)
        for label in (1, 5, MAX_CLASSES - 1):
            other = render(np.random.default_rng(seed), label, size=64)
            changed = np.abs(base.astype(int) - other.astype(int)).max(axis=2) > 30
            assert 0 < changed.mean() < 0.12


def test_bad_options():
    with pytest.raises(DatasetError, match="num_classes"):
        synth(num_classes=MAX_CLASSES + 1)


def _standardise(tr, te):
    mu, sd = tr.mean(0), tr.std(0) + 1e-6
    return (tr - mu) / sd, (te - mu) / sd


def _logistic_accuracy(tr, ytr, te, yte, classes):
    tr, te = (torch.tensor(a, dtype=torch.float32) for a in _standardise(tr, te))
    model = torch.nn.Linear(tr.shape[1], classes)
    opt = torch.optim.LBFGS(model.parameters(), max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(tr), torch.tensor(ytr))
        loss = loss + 1e-3 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return (model(te).argmax(1).numpy() == yte).mean()


def _centroid_accuracy(tr, ytr, te, yte, classes):
    tr, te = _standardise(tr, te)
    centroids = np.stack([tr[ytr == c].mean(0) for c in range(classes)])
    pred = ((te[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    return (pred == yte).mean()


def _histogram(x, bins=4):
    q = (x // (256 // bins)).reshape(len(x), -1, 3)
    codes = q[..., 0] * bins * bins + q[..., 1] * bins + q[..., 2]
    return np.stack([np.bincount(c, minlength=bins**3) for c in codes]) / codes.shape[1]


@pytest.fixture(scope="module")
def default_split():
    s = synth(test_per_class=40)  # the default dataset, with a larger test set
    return arrays(s, "train"), arrays(s, "test"), s.num_classes


@pytest.mark.parametrize("features", ["mean colour", "colour histogram"])
@pytest.mark.parametrize("classifier", [_logistic_accuracy, _centroid_accuracy])
def test_colour_statistics_do_not_reveal_the_class(default_split, features, classifier):
    (xtr, ytr), (xte, yte), k = default_split
    f = (lambda x: x.reshape(len(x), -1, 3).mean(1)) if features == "mean colour" else _histogram
    acc = classifier(f(xtr).astype(np.float64), ytr, f(xte).astype(np.float64), yte, k)
    chance = 1 / k
    bound = chance + 3 * math.sqrt(chance * (1 - chance) / len(yte))  # 3 binomial SEs
    assert acc < bound, f"{features} classifier reaches {acc:.3f} (chance {chance:.3f})"


def _tiny_cnn(classes: int) -> torch.nn.Module:
    nn = torch.nn

    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o),
                             nn.ReLU(), nn.MaxPool2d(2))

    return nn.Sequential(
        nn.Conv2d(3, 24, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
        block(24, 48), block(48, 96), block(96, 128),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, classes),
    )


@pytest.mark.slow
def test_small_cnn_learns_it_well_above_chance():
    from fusion_lab.config import DatasetConfig
    from fusion_lab.data import build_data

    # The quickstart's budget: default dataset, 56-pixel crops, about a minute of CPU.
    data = build_data(DatasetConfig(), image_size=56, resize=64, batch_size=32, workers=0, seed=0)
    torch.manual_seed(0)
    model = _tiny_cnn(data.num_classes)
    opt = torch.optim.AdamW(model.parameters(), 3e-3, weight_decay=1e-4)
    for epoch in range(12):
        data.set_epoch(epoch)
        for x, y in data.train:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        correct = sum((model(x).argmax(1) == y).sum().item() for x, y in data.test)
    accuracy = correct / data.test_size
    assert accuracy > 2 / data.num_classes, f"accuracy {accuracy:.3f}"
