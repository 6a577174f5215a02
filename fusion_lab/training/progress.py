"""Progress on stderr: a bar for the study and one for the current epoch (tqdm).

With ``mode="plain"`` (or when stderr is not a terminal) it prints one line per epoch and
per run instead, which suits log files and parallel GPU workers.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click
from tqdm import tqdm


class Progress:
    def __init__(self, mode: str = "auto"):
        self.bars = mode == "bars" or (mode == "auto" and sys.stderr.isatty())
        self.study_bar = self.epoch_bar = None
        self.t_run = 0.0
        self.epochs = 0

    def _line(self, text: str) -> None:
        if self.bars:
            tqdm.write(text, file=sys.stderr)
        else:
            click.echo(text, err=True)

    def start_study(self, name: str, total: int, todo: int) -> None:
        self._line(f"study {name}: {total} runs, {total - todo} done or failed, {todo} to train")
        if self.bars and todo:
            self.study_bar = tqdm(total=todo, desc=f"{name}", unit="run", position=0,
                                  file=sys.stderr, dynamic_ncols=True)

    def start_run(self, run: Any) -> None:
        self.t_run = time.perf_counter()
        self._line(f"run {run.run_id[:12]}  {run.display}  seed {run.seed}")

    def start_epoch(self, epoch: int, epochs: int, batches: int) -> None:
        self.epochs = epochs
        if self.bars:
            if self.epoch_bar is not None:
                self.epoch_bar.close()
            self.epoch_bar = tqdm(total=batches, desc=f"  epoch {epoch + 1}/{epochs}",
                                  unit="batch", position=1, leave=False, file=sys.stderr,
                                  dynamic_ncols=True)

    def batch(self, loss: float, acc: float, images_per_s: float) -> None:
        if self.epoch_bar is not None:
            self.epoch_bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.1f}",
                                       img_s=f"{images_per_s:.0f}", refresh=False)
            self.epoch_bar.update(1)

    def end_epoch(self, rec: dict) -> None:
        val = f"  val {rec['val_acc']:.2f}" if rec.get("val_acc") is not None else ""
        text = (f"  epoch {rec['epoch']}/{self.epochs}  loss {rec['train_loss']:.3f}  "
                f"train {rec['train_acc']:.2f}{val}  test {rec['test_acc']:.2f}  "
                f"{rec['images_per_s']:.0f} img/s  {rec['epoch_s']:.1f}s")
        if self.epoch_bar is not None:
            self.epoch_bar.close()
            self.epoch_bar = None
        self._line(text)

    def end_run(self, run: Any, result: dict | None, error: str | None) -> None:
        took = time.perf_counter() - self.t_run
        if error:
            self._line(f"  FAILED after {took:.0f}s: {error}")
        else:
            self._line(f"  done in {took:.0f}s: test accuracy {result['final']['acc']:.2f}")
        if self.study_bar is not None:
            self.study_bar.update(1)

    def close(self) -> None:
        for bar in (self.epoch_bar, self.study_bar):
            if bar is not None:
                bar.close()
