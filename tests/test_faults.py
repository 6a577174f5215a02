"""Faults that used to lose or falsify results: damaged files, copies, clocks, races."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import shutil
import socket
import stat
import struct
import textwrap
import time
import warnings
from pathlib import Path

import pytest
from PIL import Image
from test_runner import STUDY
from test_table import StudyWriter

from fusion_lab import store
from fusion_lab.analysis.aggregate import aggregate, load_runs
from fusion_lab.data.source import IMAGE_ERRORS, ImageSource
from fusion_lab.errors import FusionLabWarning
from fusion_lab.plan.planning import prepare
from fusion_lab.training.train import train_run


@pytest.fixture
def study_file(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(textwrap.dedent(STUDY))
    return p


def fusion_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, FusionLabWarning)]


# --- metrics.jsonl ---------------------------------------------------------------------

def test_a_garbage_line_in_metrics_is_skipped_with_one_warning_and_no_line_is_lost(tmp_path):
    path = tmp_path / store.METRICS_JSONL
    path.write_text('{"epoch": 1}\n\x00\x00garbage\n{"epoch": 2}\n[1, 2]\n{"epoch": 3}\n{"epo')
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        rows = store.read_jsonl(path)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    said = fusion_warnings(record)
    assert len(said) == 1 and str(path) in said[0] and "2 " in said[0], said


def test_resume_keeps_every_epoch_after_a_garbage_line(study_file, tmp_path):
    study, runs = prepare(study_file, ["train.epochs=4"])
    r, d = runs[0], tmp_path / "run"
    d.mkdir()
    train_run(d, r.config, r.run_id, device="cpu", stop_after_epochs=3)
    lines = (d / store.METRICS_JSONL).read_text().splitlines()
    (d / store.METRICS_JSONL).write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    with pytest.warns(FusionLabWarning, match="unreadable line"):
        out = train_run(d, r.config, r.run_id, device="cpu")
    assert [x["epoch"] for x in store.read_jsonl(d / store.METRICS_JSONL)] == [1, 2, 3, 4]
    assert out["epochs"] == 4


# --- checkpoint.pt ---------------------------------------------------------------------

def test_a_saved_checkpoint_leaves_no_previous_copy_or_temp_file(study_file, tmp_path):
    study, runs = prepare(study_file)
    r, d = runs[0], tmp_path / "run"
    d.mkdir()
    train_run(d, r.config, r.run_id, device="cpu", stop_after_epochs=2)
    names = sorted(p.name for p in d.iterdir())
    assert store.CHECKPOINT in names and store.CHECKPOINT_PREV not in names
    assert not [n for n in names if n.endswith(".tmp")], names


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_an_unreadable_checkpoint_restarts_the_run_with_one_warning(study_file, tmp_path,
                                                                   damage):
    study, runs = prepare(study_file)
    r, whole, d = runs[0], tmp_path / "whole", tmp_path / "run"
    whole.mkdir()
    d.mkdir()
    a = train_run(whole, r.config, r.run_id, device="cpu")
    train_run(d, r.config, r.run_id, device="cpu", stop_after_epochs=1)
    ckpt = d / store.CHECKPOINT
    ckpt.write_bytes(b"" if damage == "empty" else ckpt.read_bytes()[:1000])
    for _ in range(2):  # a rerun after the failure recovers too (it used to fail forever)
        with pytest.warns(FusionLabWarning, match="from epoch 0") as record:
            b = train_run(d, r.config, r.run_id, device="cpu")
        assert len(fusion_warnings(record)) == 1
        assert a["final"] == b["final"] and b["epochs"] == 2
        ckpt.write_bytes(b"")


@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_an_unreadable_checkpoint_falls_back_to_the_previous_one(study_file, tmp_path, damage):
    """Killed while replacing the checkpoint: the previous one resumes the run, unchanged."""
    study, runs = prepare(study_file)
    r, whole, d = runs[1], tmp_path / "whole", tmp_path / "run"
    whole.mkdir()
    d.mkdir()
    a = train_run(whole, r.config, r.run_id, device="cpu")
    train_run(d, r.config, r.run_id, device="cpu", stop_after_epochs=1)
    shutil.copy(d / store.CHECKPOINT, d / store.CHECKPOINT_PREV)
    if damage == "missing":  # killed between setting the old one aside and the new rename
        (d / store.CHECKPOINT).unlink()
    else:
        (d / store.CHECKPOINT).write_bytes(b"\x80\x02garbage")
    with pytest.warns(FusionLabWarning, match=store.CHECKPOINT_PREV) as record:
        b = train_run(d, r.config, r.run_id, device="cpu")
    assert len(fusion_warnings(record)) == 1
    assert a["final"] == b["final"]
    la, lb = (store.read_jsonl(x / store.METRICS_JSONL) for x in (whole, d))
    assert [x["train_loss"] for x in la] == [x["train_loss"] for x in lb]
    assert not (d / store.CHECKPOINT_PREV).exists()


# --- run folders -----------------------------------------------------------------------

def test_a_backup_copy_of_a_run_folder_is_not_counted_as_a_seed(tmp_path):
    w = StudyWriter(tmp_path / "results", "ablation", seeds=[0, 1])
    w.row("Baseline", [("done", 80.0), ("done", 82.0)])
    w.save()
    run0 = w.dir / w.study["rows"][0]["run_ids"][0]
    shutil.copytree(run0, w.dir / (run0.name + ".bak"))
    with pytest.warns(FusionLabWarning, match=r"\.bak") as record:
        study, runs = load_runs(w.dir)
    assert len(fusion_warnings(record)) == 1
    rows = aggregate(study, runs)
    assert rows.iloc[0]["n"] == 2 and rows.iloc[0]["mean"] == 81.0


# --- file modes ------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_result_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        store.write_json(tmp_path / store.SUMMARY_JSON, {"status": "done"})
        store.write_text(tmp_path / store.STUDY_JSON, "{}")
        store.append_jsonl(tmp_path / store.METRICS_JSONL, {"epoch": 1})
    finally:
        os.umask(old)
    for name in (store.SUMMARY_JSON, store.STUDY_JSON, store.METRICS_JSONL):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


# --- claims ----------------------------------------------------------------------------

def _foreign_claim(d: Path, ts: float, beat_ts: float | None = None) -> None:
    d.mkdir(parents=True, exist_ok=True)
    token = "b" * 32
    (d / store.CLAIM).write_text(json.dumps({"pid": 1, "host": "node-b-" + socket.gethostname(),
                                             "ts": ts, "token": token, "lease_s": 300.0}))
    if beat_ts is not None:
        store.write_json(store.beat_path(d, token), {"ts": beat_ts})


def test_a_future_heartbeat_is_judged_by_the_files_modification_time(tmp_path):
    d, future = tmp_path / "run", time.time() + 3 * 3600  # a dead node whose clock ran ahead
    _foreign_claim(d, ts=future, beat_ts=future)
    old = time.time() - 1000  # longer ago than the lease plus the skew allowance
    os.utime(d / store.CLAIM, (old, old))
    os.utime(store.beat_path(d, "b" * 32), (old, old))
    assert store.run_status(d) == store.PENDING
    assert store.try_claim(d)
    # a fast clock on a live node: its heartbeat file was just written, so it still holds
    e = tmp_path / "live"
    _foreign_claim(e, ts=future, beat_ts=future)
    assert store.run_status(e) == store.RUNNING and store.try_claim(e) is None
    # within the skew allowance, the heartbeat's own time is still believed
    f = tmp_path / "skewed"
    _foreign_claim(f, ts=time.time() + 30, beat_ts=time.time() + 30)
    os.utime(store.beat_path(f, "b" * 32), (old, old))
    os.utime(f / store.CLAIM, (old, old))
    assert store.run_status(f) == store.RUNNING


@pytest.mark.parametrize("body", ["[1, 2]", '"x"', "3", "null"])
def test_a_claim_that_is_not_a_json_object_is_a_stale_claim(tmp_path, body):
    d = tmp_path / "run"
    d.mkdir()
    (d / store.CLAIM).write_text(body)
    old = time.time() - 60  # not a claim being written this very moment
    os.utime(d / store.CLAIM, (old, old))
    with pytest.warns(FusionLabWarning, match="claim"):
        assert store.run_status(d) == store.PENDING
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        token = store.try_claim(d)
    assert token and store.owns_claim(d, token)


ROUNDS, WORKERS = 300, 6


def _race(folder: str, barrier, results) -> None:
    won = []
    for i in range(ROUNDS):
        barrier.wait()
        if store.try_claim(Path(folder) / str(i)):
            won.append(i)
    results.put(won)


def test_exactly_one_process_takes_over_a_stale_claim(tmp_path):
    for i in range(ROUNDS):  # a claim from another node, heartbeat long past its lease
        _foreign_claim(tmp_path / str(i), ts=time.time() - 7200, beat_ts=time.time() - 7200)
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(WORKERS), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), barrier, results))
             for _ in range(WORKERS)]
    for p in procs:
        p.start()
    wins = [0] * ROUNDS
    for _ in procs:
        for i in results.get(timeout=60):
            wins[i] += 1
    for p in procs:
        p.join(timeout=10)
    doubles = [i for i, n in enumerate(wins) if n > 1]
    assert not doubles and wins == [1] * ROUNDS, f"{len(doubles)} rounds with two winners"


# --- images ----------------------------------------------------------------------------

def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small valid JPEG whose frame header (SOF0) says ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.new("L", (16, 16), 128).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_a_huge_jpeg_is_refused_from_its_header_without_decoding(tmp_path, monkeypatch):
    import torchvision.io

    def no_decoding(*args, **kwargs):
        raise AssertionError("the decoder ran on an image over the pixel limit")

    monkeypatch.setattr(torchvision.io, "decode_jpeg", no_decoding)
    path = tmp_path / "huge.jpg"
    path.write_bytes(_jpeg_claiming(20000, 20000))
    with pytest.raises(Image.DecompressionBombError):  # PIL refuses it from its header
        Image.open(path)
    with pytest.raises(IMAGE_ERRORS):
        ImageSource().load_tensor(path)
    # an ordinary image still takes the fast path
    small = tmp_path / "small.jpg"
    small.write_bytes(_jpeg_claiming(16, 16))
    with pytest.raises(AssertionError, match="decoder ran"):
        ImageSource().load_tensor(small)
