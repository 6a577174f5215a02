"""A verification scan: decode every image of a dataset and list the unreadable ones.

Used by ``fusionlab data check`` before a long run; training itself does not need it
(unreadable images met during training are skipped and counted, see ``loading``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fusion_lab.data.source import IMAGE_ERRORS, ImageSource


@dataclass
class CheckReport:
    """What ``data check`` prints."""

    name: str
    num_classes: int
    train_size: int
    test_size: int
    unreadable: dict[str, list[str]] = field(default_factory=dict)  # split -> failed files
    scanned: int = 0

    def too_many(self, max_unreadable: float) -> list[str]:
        """The splits whose unreadable fraction exceeds ``max_unreadable`` (a run stops)."""
        sizes = {"train": self.train_size, "test": self.test_size}
        return [s for s, bad in self.unreadable.items() if len(bad) > max_unreadable * sizes[s]]


def _readable(source: ImageSource, item: Any) -> bool:
    try:
        source.load(item).load()  # load() forces a full decode of lazy formats
    except IMAGE_ERRORS:
        return False
    return True


def scan(source: ImageSource, items: Sequence[Any], threads: int = 4,
         progress: Callable[[int], None] | None = None) -> list[str]:
    """Names of the items of ``items`` that cannot be decoded (PIL releases the GIL)."""
    bad: list[str] = []
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for n, (item, ok) in enumerate(
            zip(items, pool.map(lambda it: _readable(source, it), items)), 1
        ):
            if not ok:
                bad.append(source.describe_item(item))
            if progress is not None and n % 500 == 0:
                progress(n)
    return bad


def check(name: str, source: ImageSource, threads: int = 4, decode: bool = True,
          progress: Callable[[int], None] | None = None) -> CheckReport:
    """Sizes of a dataset and, when ``decode``, its unreadable images."""
    report = CheckReport(name, source.num_classes, len(source.train), len(source.test))
    if decode:
        for split in ("train", "test"):
            items = [item for item, _ in getattr(source, split)]
            report.unreadable[split] = scan(source, items, threads, progress)
            report.scanned += len(items)
    return report
