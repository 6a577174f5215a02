"""A study's ``tune:`` block: its search space, budget and sampler, parsed and checked
(no torch; Optuna is imported only by ``points``, when a tuned study is planned).

    tune:
      space:
        train.lr_new: {log_uniform: [0.003, 0.3]}
        train.weight_decay: {choice: [0.0, 0.0005]}
      trials: 8          # per variant and grid cell; every row gets the same points
      seed: 100          # the sampler's seed, and the seed every trial trains with
      sampler: qmc       # quasi-random (Optuna's QMCSampler): every point known in advance
                         # tpe: Optuna's TPESampler, each point asked from the results before
      # tpe_startup: 4   # tpe only: its first random points (default: trials/3, 2..10)
      pruner: none       # asha: successive halving on each epoch's validation accuracy
      # min_epochs: 1    # asha only: the first rung (epochs before a trial can be stopped)
      # reduction: 3     # asha only: eta, about 1/eta of the trials go on at each rung
      shared: true       # also train the shared recipe (the study as written), for the table

The metric is the last epoch's validation accuracy (the study must hold out a validation
split, ``dataset.val_fraction > 0``); test accuracy is read only from the final runs.
TPE's points are asked one step at a time (``plan.tune_tpe``), pruning decisions are
made by ``plan.tune_prune``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

from fusion_lab.config import SECTIONS
from fusion_lab.plan.dotted import deep_merge, get_dotted

TUNE_KEYS = ("space", "trials", "seed", "sampler", "tpe_startup", "pruner", "min_epochs",
             "reduction", "metric", "shared")
KINDS = ("uniform", "log_uniform", "int", "choice")
SAMPLERS = ("qmc", "tpe")
PRUNERS = ("none", "asha")
METRICS = ("val_acc",)
PRUNER_KEY = "train.pruner"  # the trials' config field that names the pruner
# The tie rule: trials within one validation image of the best count as tied; the
# earliest (lowest trial number, an order fixed before anything trained) is chosen.
TIE_RULE = ("best last-epoch validation accuracy; trials within one validation image of "
            "the best are tied and the lowest trial number wins")


@dataclass(frozen=True)
class Dim:
    """One searched config key: ``kind`` over [low, high], or one of ``choices``."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple = ()

    def as_dict(self) -> dict[str, Any]:
        return {self.kind: list(self.choices) if self.kind == "choice" else [self.low, self.high]}


@dataclass
class TuneSpec:
    space: list[Dim] = field(default_factory=list)
    trials: int = 8
    seed: int = 100
    sampler: str = "qmc"
    pruner: str = "none"
    metric: str = "val_acc"
    shared: bool = True
    tpe_startup: int | None = None  # None: startup()'s default
    min_epochs: int = 1
    reduction: int = 3

    def startup(self) -> int:
        """TPE's random first points: tpe_startup, else a third of the trials (2 to 10)."""
        return self.tpe_startup or min(10, max(2, self.trials // 3))

    def pruner_tag(self) -> str:
        """The trials' ``train.pruner``: "none", or the pruner with its settings (in the
        trials' run ids: a trial that may be stopped early is its own run)."""
        if self.pruner == "none":
            return "none"
        return f"{self.pruner}:min_epochs={self.min_epochs},reduction={self.reduction}"

    def as_dict(self) -> dict[str, Any]:
        out = {"space": {d.key: d.as_dict() for d in self.space}, "trials": self.trials,
               "seed": self.seed, "sampler": self.sampler, "pruner": self.pruner,
               "metric": self.metric, "shared": self.shared, "tie_rule": TIE_RULE}
        if self.sampler == "tpe":
            out["tpe_startup"] = self.startup()
        if self.pruner != "none":
            out.update(min_epochs=self.min_epochs, reduction=self.reduction)
        return out


def parse_tune(raw: Any, problems: list[str]) -> TuneSpec | None:
    """The ``tune:`` block, or None; each problem one line (prefixed ``tune``)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append("tune must be a mapping with space, trials and seed")
        return None
    n0 = len(problems)
    for key in raw:
        if key not in TUNE_KEYS:
            problems.append(f"unknown key tune.{key}; valid: {', '.join(TUNE_KEYS)}")
    spec = TuneSpec()
    trials = raw.get("trials", spec.trials)
    if not _is_int(trials) or trials < 1:
        problems.append(f"tune.trials must be an integer >= 1, got {trials!r}")
    seed = raw.get("seed", spec.seed)
    if not _is_int(seed):
        problems.append(f"tune.seed must be an integer, got {seed!r}")
    for key, valid in (("sampler", SAMPLERS), ("pruner", PRUNERS), ("metric", METRICS)):
        value = raw.get(key, getattr(spec, key))
        if value not in valid:
            problems.append(f"unknown tune.{key} {value!r}; valid: {', '.join(valid)}")
    shared = raw.get("shared", True)
    if not isinstance(shared, bool):
        problems.append(f"tune.shared must be true or false, got {shared!r}")
    _search_options(raw, problems)
    space = _space(raw.get("space"), problems)
    if len(problems) > n0:
        return None
    return TuneSpec(space=space, trials=trials, seed=seed, sampler=raw.get("sampler", "qmc"),
                    pruner=raw.get("pruner", "none"), metric=raw.get("metric", "val_acc"),
                    shared=shared, tpe_startup=raw.get("tpe_startup"),
                    min_epochs=raw.get("min_epochs", 1), reduction=raw.get("reduction", 3))


def _search_options(raw: dict, problems: list[str]) -> None:
    """tpe_startup (sampler tpe), min_epochs and reduction (pruner asha): each an integer
    in range, and given only with the sampler or pruner it belongs to."""
    for key, minimum, owner, value in (("tpe_startup", 1, "sampler", "tpe"),
                                       ("min_epochs", 1, "pruner", "asha"),
                                       ("reduction", 2, "pruner", "asha")):
        if key not in raw:
            continue
        if raw.get(owner) != value:
            problems.append(f"tune.{key} applies to {owner}: {value} only")
        elif not _is_int(raw[key]) or raw[key] < minimum:
            problems.append(f"tune.{key} must be an integer >= {minimum}, got {raw[key]!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _space(raw: Any, problems: list[str]) -> list[Dim]:
    if not isinstance(raw, dict) or not raw:
        problems.append("tune.space must map config keys to a range, e.g. "
                        "{train.lr_new: {log_uniform: [0.003, 0.3]}}")
        return []
    dims = []
    for key, rule in raw.items():
        problem = _key_problem(str(key))
        if problem is None:
            dim, problem = _dim(str(key), rule)
        if problem:
            problems.append(f"tune.space.{key}: {problem}")
        else:
            dims.append(dim)
    return dims


def _key_problem(key: str) -> str | None:
    """None if ``key`` is a config field (section.field) other than the seed."""
    section, _, name = key.partition(".")
    cls = SECTIONS.get(section)
    if cls is None or name not in {f.name for f in dataclasses.fields(cls)}:
        return ("not a config field (dataset.X, model.X or train.X; "
                "`fusionlab describe` lists them)")
    if key == PRUNER_KEY:
        return "set by tune.pruner, not searched"
    return None


def _dim(key: str, rule: Any) -> tuple[Dim | None, str | None]:
    if not isinstance(rule, dict) or len(rule) != 1 or next(iter(rule)) not in KINDS:
        return None, f"give one of {', '.join(KINDS)}, e.g. {{log_uniform: [0.003, 0.3]}}"
    kind, values = next(iter(rule.items()))
    if kind == "choice":
        if not isinstance(values, list) or not values:
            return None, "choice needs a non-empty list of values"
        return Dim(key, kind, choices=tuple(values)), None
    if (not isinstance(values, list) or len(values) != 2 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)):
        return None, f"{kind} needs [low, high], got {values!r}"
    low, high = values
    if kind == "int" and not all(_is_int(v) for v in values):
        return None, f"int needs integer bounds, got {values!r}"
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        return None, f"bounds must be finite with low < high, got [{low}, {high}]"
    if kind == "log_uniform" and low <= 0:
        return None, f"a log range must be above 0, got [{low}, {high}]"
    return Dim(key, kind, low, high), None


def study_problems(spec: TuneSpec, base: dict, variants: list[dict], grid: dict,
                   seeds: list[int]) -> list[str]:
    """What the rest of the study must satisfy for tuning: a validation split in every
    variant, no space key set by a variant or a grid axis, a trial seed apart from the
    study's seeds (else a final run would be the very trial that chose it)."""
    problems, no_val = [], []
    for v in variants:
        label = v.get("label")
        patch = {k: x for k, x in v.items() if k != "label"}
        frac = get_dotted(deep_merge(base, patch), "dataset.val_fraction")
        if not isinstance(frac, (int, float)) or frac <= 0:
            no_val.append(label)
        if get_dotted(deep_merge(base, patch), PRUNER_KEY) is not None:
            problems.append(f"variant {label!r} sets {PRUNER_KEY}: a tuned study sets it "
                            "from tune.pruner; remove it")
        for d in spec.space:
            if get_dotted(patch, d.key) is not None:
                problems.append(f"variant {label!r} sets {d.key}, which tune.space searches: "
                                "remove one of them")
    if no_val:
        who = "" if len(no_val) == len(variants) else f" (variants {', '.join(map(str, no_val))})"
        problems.insert(0, f"tune needs a validation split to choose on{who}: set "
                           "dataset.val_fraction > 0 (e.g. 0.2) in the base")
    for d in spec.space:
        if d.key in grid:
            problems.append(f"grid axis {d.key} is also in tune.space: remove one of them")
    if spec.seed in seeds:
        problems.append(f"tune.seed {spec.seed} is one of the study's seeds: trials train "
                        "with tune.seed, so pick one apart (a final run would be its trial)")
    return problems


def points(spec: TuneSpec) -> list[dict[str, Any]]:
    """The ``spec.trials`` points, in trial order, from Optuna's QMC sampler (scrambled
    Sobol, seeded by ``spec.seed``) in ask mode: the same every time, known before
    anything trains. Values are rounded to 6 significant digits (they name run ids)."""
    # here, not at the top: optuna (a slow import) only for a study with a tune: block
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=spec.seed,
                                             warn_independent_sampling=False,
                                             warn_asynchronous_seeding=False)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    dists = {d.key: _distribution(d) for d in spec.space}
    # The sampler infers its space from a finished trial: the first (an independent
    # draw) is told done, so trials 1.. are the Sobol sequence.
    first = study.ask(dists)
    study.tell(first, 0.0)
    out = [first.params]
    for _ in range(spec.trials - 1):
        trial = study.ask(dists)
        study.tell(trial, 0.0)  # the value is not used by QMC; telling keeps the order
        out.append(trial.params)
    return [{k: _round(v) for k, v in p.items()} for p in out]


def _distribution(d: Dim) -> Any:
    # here, not at the top: optuna only for a study with a tune: block
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if d.kind == "choice":
        return CategoricalDistribution(list(d.choices))
    if d.kind == "int":
        return IntDistribution(int(d.low), int(d.high))
    return FloatDistribution(d.low, d.high, log=d.kind == "log_uniform")


def _round(v: Any) -> Any:
    return float(f"{v:.6g}") if isinstance(v, float) else v
