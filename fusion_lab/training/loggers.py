"""Optional tracking sinks beside metrics.jsonl: TensorBoard and MLflow (``train.loggers``).

``metrics.jsonl`` stays the source of truth (``fusionlab table`` and ``plot`` read it
without torch); a sink gets a copy of every epoch's record as it is appended. Sinks cannot
change a result, so ``train.loggers`` is left out of the run id.

- ``tensorboard`` (extra ``fusion_lab[tensorboard]``): event files in
  ``<run folder>/tensorboard/``; ``tensorboard --logdir results/<study>`` shows every run.
- ``mlflow`` (extra ``fusion_lab[mlflow]``): one MLflow run per fusion_lab run, in the
  experiment named after the study, with the resolved config as params and the run id,
  group id, label and seed as tags. The store is ``$MLFLOW_TRACKING_URI`` when set, else a
  local SQLite file ``<results>/mlflow.db``. A resumed run continues its MLflow run.

Importing this module imports neither package; ``fusion_lab.config.logger_problems``
checks names and installs before anything trains.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fusion_lab.config import flatten
from fusion_lab.store import CONFIG_JSON, read_json, write_json

MLFLOW_RUN_JSON = "mlflow_run.json"  # in the run folder: the MLflow run to resume
def _numbers(record: dict[str, Any]) -> dict[str, float]:
    """The numeric scalars of an epoch record, nested dicts as "key/sub"."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if key == "epoch":
            continue
        if isinstance(value, dict):
            out.update({f"{key}/{k}": float(v) for k, v in value.items()
                        if isinstance(v, (int, float))})
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


class TensorBoardSink:
    """Scalars per epoch into ``<run folder>/tensorboard/`` (torch's SummaryWriter)."""

    def __init__(self, run_dir: Path, identity: dict):
        # here, not at the top: an optional package, imported only when this sink is used
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        self.writer.add_text("run", f"{identity.get('label')} seed {identity.get('seed')} "
                             f"({identity.get('run_id')})", 0)

    def log_epoch(self, record: dict[str, Any]) -> None:
        for key, value in _numbers(record).items():
            self.writer.add_scalar(key, value, record["epoch"])
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()


class MLflowSink:
    """One MLflow run per fusion_lab run (MlflowClient: no global active run)."""

    def __init__(self, run_dir: Path, identity: dict):
        # here, not at the top: an optional package, imported only when this sink is used
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or (
            f"sqlite:///{(run_dir.parent.parent / 'mlflow.db').resolve()}")
        self.client = MlflowClient(tracking_uri=uri)
        saved = read_json(run_dir / MLFLOW_RUN_JSON) or {}
        if saved.get("tracking_uri") == uri and saved.get("run_id"):
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        study = str(identity.get("study") or run_dir.parent.name)
        exp = self.client.get_experiment_by_name(study)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(study)
        tags = {k: str(identity.get(k)) for k in ("run_id", "group_id", "label", "seed")}
        run = self.client.create_run(exp_id, run_name=f"{identity.get('label')} "
                                     f"seed {identity.get('seed')}",
                                     tags={f"fusion_lab.{k}": v for k, v in tags.items()})
        self.run_id = run.info.run_id

        params = [Param(k, str(v)[:500]) for k, v in
                  flatten(identity.get("config") or {}).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params a call
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        write_json(run_dir / MLFLOW_RUN_JSON, {"tracking_uri": uri, "run_id": self.run_id})

    def log_epoch(self, record: dict[str, Any]) -> None:
        # here, not at the top: an optional package, imported only when this sink is used
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, record["epoch"]) for k, v in _numbers(record).items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)


SINKS: dict[str, Callable[[Path, dict], Any]] = {"tensorboard": TensorBoardSink,
                                                 "mlflow": MLflowSink}


class Sinks:
    """The run's open sinks; every call is passed to each."""

    def __init__(self, names: list[str], run_dir: str | Path):
        run_dir = Path(run_dir)
        identity = read_json(run_dir / CONFIG_JSON) or {}
        self.sinks = [SINKS[n](run_dir, identity) for n in names]

    def log_epoch(self, record: dict[str, Any]) -> None:
        for s in self.sinks:
            s.log_epoch(record)

    def close(self, ok: bool) -> None:
        for s in self.sinks:
            s.close("FINISHED" if ok else "FAILED")

