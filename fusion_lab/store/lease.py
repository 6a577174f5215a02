"""Holding a run's claim while it trains: the heartbeat thread and interrupt signals (no torch).

``Lease`` refreshes the claim's heartbeat from a thread every ``HEARTBEAT_S`` seconds (so a
long epoch never looks dead to other nodes) and ``check()`` raises ``ClaimLost`` before a
write if another process has taken the claim over (e.g. this one was paused past its lease).

``interrupts()`` turns SIGTERM and SIGINT into ``RunInterrupted`` while a run trains, so the
runner can record the run as ``interrupted``, release its claim and exit non-zero.
Inside ``deferred()`` (a checkpoint and its metrics line being written) a signal waits until
the block ends, so an epoch is never half recorded. A handler already installed for the
scheduler's warning signal (submitit's SIGUSR2: checkpoint and requeue) is deferred the
same way and otherwise left to act.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from fusion_lab import store


class Lease:
    """The heartbeat of one claimed run folder.

    Args:
        run_dir: the run folder.
        token: the token ``store.try_claim`` returned.
        interval_s: seconds between heartbeats.
    """

    def __init__(self, run_dir: str | Path, token: str, interval_s: float = store.HEARTBEAT_S):
        self.run_dir, self.token, self.interval_s = Path(run_dir), token, interval_s
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        """Refresh the heartbeat, unless the claim is no longer ours."""
        if not store.owns_claim(self.run_dir, self.token):
            self.lost = True
            return
        store.write_json(store.beat_path(self.run_dir, self.token), {"ts": time.time(), "time": store.now()})

    def check(self) -> None:
        """Raise ``ClaimLost`` if another process holds the claim now (call before a write)."""
        if self.lost or not store.owns_claim(self.run_dir, self.token):
            self.lost = True
            claim = store.read_json(self.run_dir / "claim") or {}
            raise store.ClaimLost(f"run {self.run_dir.name[:12]}: claim taken over by "
                              f"{claim.get('host')} pid {claim.get('pid')}; stopping")

    def _loop(self) -> None:
        with contextlib.suppress(AttributeError, ValueError):  # signals stay the main thread's
            signal.pthread_sigmask(signal.SIG_BLOCK, _signals())
        while not self._stop.wait(self.interval_s) and not self.lost:
            try:
                self.beat()
            except OSError:
                pass  # a shared filesystem hiccup: the next beat tries again

    def __enter__(self) -> Lease:
        self.beat()
        self._thread = threading.Thread(target=self._loop, name="fusionlab-heartbeat",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class RunInterrupted(BaseException):
    """SIGTERM or SIGINT arrived while a run trained (a BaseException: nothing swallows it)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


_depth = 0  # nesting of deferred() blocks
_pending: list = []  # (handler, signum) that arrived inside a deferred block


def _signals() -> set[int]:
    sigs = {signal.SIGTERM, signal.SIGINT}
    if hasattr(signal, "SIGUSR2"):
        sigs.add(signal.SIGUSR2)
    return sigs


def _raise(signum: int, frame) -> None:
    raise RunInterrupted(signum)


def _deferring(handler):
    def run(signum: int, frame) -> None:
        if _depth:
            _pending.append((handler, signum))
            return
        handler(signum, frame)

    return run


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A block that SIGTERM/SIGINT (and the scheduler's signal) do not cut in two."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if not _depth and _pending:
            handler, signum = _pending.pop(0)
            _pending.clear()
            handler(signum, None)


@contextlib.contextmanager
def interrupts() -> Iterator[None]:
    """SIGTERM/SIGINT raise ``RunInterrupted`` inside the block (main thread only).

    Ours win over handlers installed before (submitit's SIGTERM handler only logs). A
    Python handler already on SIGUSR2 (submitit's checkpoint-and-requeue) stays in charge
    of that signal, deferred while a checkpoint is written.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in _signals()}
    signal.signal(signal.SIGTERM, _deferring(_raise))
    signal.signal(signal.SIGINT, _deferring(_raise))
    usr2 = getattr(signal, "SIGUSR2", None)
    if usr2 is not None and callable(old[usr2]):
        signal.signal(usr2, _deferring(old[usr2]))
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


@contextlib.contextmanager
def ignored() -> Iterator[None]:
    """SIGTERM/SIGINT ignored inside the block (main thread only).

    DDP processes other than 0 train under this: process 0 alone decides, records the run
    as interrupted and exits; the others then stop when their next collective fails,
    instead of dying first and turning process 0's interruption into a failure.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    for s in old:
        signal.signal(s, signal.SIG_IGN)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)

