"""`processes=P`: one command runs P of a run's workers on this machine, one process each.

A generation process drives its dialogues from one asyncio thread, so it uses one core: at 1,024 dialogues in
flight against a server that answers in 200 ms, that core is the limit (benchmarks/orchestration.py). With
`workers=W processes=P worker_index=I` this command starts workers I .. I+P-1 as child processes
(`toolturn-generate` with the same overrides, `worker_index=I+k processes=1 progress=false`), shows their
progress together and exits with the first failing child's code. Each child is a worker like any other (its own
shards and lock; the last to finish exports the run), so a run started with processes=2 may be resumed by two
separate commands, and the other way round. The children have a session of their own, so a signal reaches them
through this process only (it passes SIGINT, SIGTERM and SIGHUP on, once each), and they die with it (PDEATHSIG):
a parent killed outright leaves no generation running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig
from toolturn.core.rundir import RunDir
from toolturn.core.servers import child_setup
from tqdm import tqdm

PASSED_ON = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SET_PER_CHILD = ("worker_index", "processes", "progress")


def override_key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def child_command(overrides: list[str], worker_index: int) -> list[str]:
    kept = [o for o in overrides if override_key(o) not in SET_PER_CHILD]
    return [sys.executable, "-m", "toolturn.generate.run", *kept, f"worker_index={worker_index}", "processes=1",
            "progress=false"]


def run_processes(cfg: DictConfig, overrides: list[str]) -> int:
    """Run the children to their end; the exit code for this command."""
    run = RunDir(Path(cfg.out_dir).expanduser().resolve())
    first, n = int(cfg.worker_index), int(cfg.processes)
    children: dict[int, subprocess.Popen] = {}
    received: list[int] = []

    def pass_on(signum, _frame) -> None:
        if signum in received:
            return
        received.append(signum)
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    previous = {s: signal.signal(s, pass_on) for s in PASSED_ON}
    try:
        setup = child_setup(os.getpid())

        def preexec() -> None:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, PASSED_ON)
            setup()

        for k in range(first, first + n):
            # a signal that arrives while a child starts waits until the child is in `children`, then reaches it
            signal.pthread_sigmask(signal.SIG_BLOCK, PASSED_ON)
            try:
                if not received:
                    children[k] = subprocess.Popen(child_command(overrides, k), start_new_session=True,
                                                   preexec_fn=preexec)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, PASSED_ON)
        with tqdm(total=int(cfg.num_dialogues), initial=run.count_records(), unit="dlg", dynamic_ncols=True,
                  disable=not cfg.progress, desc=f"{n} processes") as bar:
            for child in children.values():
                while True:
                    try:
                        child.wait(timeout=1.0)
                        break
                    except subprocess.TimeoutExpired:
                        if not bar.disable:
                            bar.n = run.count_records()
                            bar.refresh()
            bar.n = run.count_records()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return _exit_code(children, received)


def _exit_code(children: dict[int, subprocess.Popen], received: list[int]) -> int:
    for k, child in children.items():
        rc = child.returncode
        if rc < 0:
            print(f"error: worker {k} was killed by {signal.Signals(-rc).name}; re-run the same command to resume",
                  file=sys.stderr)
            return 128 - rc
        if rc != 0:
            return rc  # the child printed its own one-line error
    return 128 + received[0] if received else 0
