"""The one exception family for mistakes a user can make.

The CLI turns any ``FusionLabError`` into a single line on stderr and a non-zero exit;
everything else is a bug and keeps its traceback.
"""


class FusionLabError(Exception):
    """A user-facing error: the message says what went wrong and what to do."""


class ConfigError(FusionLabError):
    """A study file or override is invalid (may carry several problems at once)."""

    def __init__(self, problems: list[str] | str, source: str | None = None):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        head = f"{source}: " if source else ""
        if len(self.problems) == 1:
            msg = head + self.problems[0]
        else:
            msg = head + f"{len(self.problems)} problems:\n" + "\n".join(
                f"  - {p}" for p in self.problems
            )
        super().__init__(msg)


class UnknownComponentError(FusionLabError):
    """A component name that is not in its registry."""


class DatasetError(FusionLabError):
    """A dataset that cannot be found or read."""


class WeightsError(FusionLabError):
    """Pretrained weights that cannot be found or do not fit the model."""


class DivergedError(FusionLabError):
    """Training produced a non-finite loss."""


class FusionLabWarning(UserWarning):
    """Something a user should know that does not stop the command (CLI: one line)."""
