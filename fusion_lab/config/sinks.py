"""The tracking sinks a run may name (``train.loggers``) and the packages each needs.

Checked when a study is planned (``logger_problems``), so that a missing package is one
line before anything trains; the sinks themselves are in ``fusion_lab.training.loggers``.
"""

from __future__ import annotations

import importlib.util

# name -> (modules it needs, the extra that installs them)
LOGGER_NEEDS = {"tensorboard": (("tensorboard",), "tensorboard"),
                "mlflow": (("mlflow", "sqlalchemy", "alembic"), "mlflow")}


def logger_problems(names: list[str]) -> list[str]:
    """Unknown logger names (with the valid ones) and loggers whose package is missing."""
    problems = []
    for name in names:
        if name not in LOGGER_NEEDS:
            problems.append(f"train.loggers: unknown logger {name!r}; valid: "
                            f"{', '.join(LOGGER_NEEDS)}")
            continue
        modules, extra = LOGGER_NEEDS[name]
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            problems.append(f"train.loggers: {name} needs {', '.join(missing)}: "
                            f"pip install 'fusion_lab[{extra}]'")
    return problems
