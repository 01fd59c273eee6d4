"""Ctrl-C (SIGINT) and SIGTERM during `toolturn-eval`: an orderly stop that loses no finished sample.

    with StopSignals() as stops:          # from the start of the evaluation
        ...
        async def run():
            stops.attach(asyncio.get_running_loop(), asyncio.current_task())
            ...                           # a signal now cancels this task: its `finally` blocks run
    # a signal outside the event loop raises Interrupted where the program is

Inside the event loop the first signal cancels the attached task, so every `finally` runs: a batch suite asks
its worker for the samples in flight (their partial work becomes rows, evaluate/worker_process.Run.stop), servers
stop, the samples file is closed. Every finished sample is already a row of samples.jsonl (written as each one
ends). Outside the loop (listing tasks, starting, writing the report) the signal raises `Interrupted` at once. A
second signal while stopping raises `Interrupted` at once too. The app then prints one line (`summary`) and exits
128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as a shell reports a process the signal killed.

`toolturn-run` stops a stage with SIGTERM and re-runs the same command to resume, so SIGTERM must end the
evaluation within its 30 s grace: the worker's report is bounded (STOP_TIMEOUT_S of the suite).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path

from toolturn.evaluate.runner import latest_rows

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The evaluation was stopped by `signum` (a BaseException, like KeyboardInterrupt: no `except Exception`
    swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """While entered (in the main thread), SIGINT and SIGTERM stop the evaluation in order (module docstring)."""

    def __init__(self):
        self.signum: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def attach(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task) -> None:
        """From now on a signal cancels `task` (the evaluation's main task on `loop`), once."""
        self._loop, self._task = loop, task

    def detach(self) -> None:
        self._loop = self._task = None

    def _handle(self, signum: int, frame) -> None:
        first = self.signum is None
        self.signum = self.signum or signum
        if first and self._task is not None and not self._task.done():
            self._loop.call_soon_threadsafe(self._task.cancel)
            return
        raise Interrupted(self.signum)


def summary(out_dir: Path, exc: Interrupted) -> str:
    """The one line an interrupted evaluation ends with: what is saved, and how to resume."""
    rows = latest_rows(out_dir / "samples.jsonl")
    done = sum(r.get("infra_error") is None for r in rows.values())
    partial = sum(r.get("infra_error") == "interrupted" for r in rows.values())
    kept = f", and {partial} interrupted half-way with their partial work (run again on resume)" if partial else ""
    return (f"interrupted ({signal.Signals(exc.signum).name}): {done} finished samples are saved in "
            f"{out_dir / 'samples.jsonl'}{kept}; metrics.json and report.md are written only by a run that "
            f"finishes: run the same command again to resume")
