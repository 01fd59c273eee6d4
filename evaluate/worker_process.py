"""The parent side of a benchmark worker (`evaluate/workers/`): a script run by an isolated venv's python
with `-I` (nothing of ours on its path), a JSON job file in, JSON lines out on stdout, its stderr in a log.

The worker runs in its own process group, gets SIGKILL when this process dies however it dies
(PR_SET_PDEATHSIG, `core/servers.child_setup`), and its whole group is killed as soon as the parent
stops reading it (an exception, a cancelled run), so an interrupted evaluation leaves no orphan.

    worker = Worker(ensure_env("tau2"), WORKER, env={...}, cwd=empty_dir)
    answer = worker.call([job_file], log, timeout_s=300, what="listing the tasks")
    async with worker.stream([job_file], log) as run:
        async for line in run:      # one dict per JSON line, as the worker prints it
            ...
    run.returncode                  # the exit code (negative: killed by that signal)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

from toolturn.core.errors import ToolturnError
from toolturn.core.servers import child_setup

LINE_LIMIT = 1 << 28  # one line carries a whole trajectory; asyncio's default of 64 KiB is far too small


class Run:
    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.returncode: int | None = None

    async def __aiter__(self) -> AsyncIterator[dict]:
        while raw := await self.proc.stdout.readline():
            try:
                line = json.loads(raw)
            except ValueError:
                continue  # the unterminated last line of a killed worker
            if isinstance(line, dict):
                yield line
        self.returncode = await self.proc.wait()


class Worker:
    def __init__(self, python: Path, script: Path, env: dict[str, str] | None = None, cwd: Path | None = None):
        self.python, self.script, self.cwd = python, script, cwd
        self.env = {**os.environ, **(env or {})}

    def _cmd(self, args: list) -> list[str]:
        return [str(self.python), "-I", str(self.script), *map(str, args)]

    def _popen_args(self, env: dict[str, str] | None = None) -> dict:
        return dict(cwd=self.cwd, env={**self.env, **(env or {})}, stdin=subprocess.DEVNULL, start_new_session=True,
                    preexec_fn=child_setup(os.getpid()))

    def call(self, args: list, log: Path, timeout_s: float, what: str) -> dict:
        """A short worker run that prints one answer: its last JSON line, or one ToolturnError line."""
        log.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(log, "ab") as err:
                done = subprocess.run(self._cmd(args), stdout=subprocess.PIPE, stderr=err, timeout=timeout_s,
                                      **self._popen_args())
        except subprocess.TimeoutExpired:
            raise ToolturnError(f"the {self.script.stem} did not finish {what} within {timeout_s:g}s; "
                                f"see {log}") from None
        lines = done.stdout.decode(errors="replace").strip().splitlines()
        if done.returncode != 0 or not lines:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(empty log)"]
            raise ToolturnError(f"the {self.script.stem} failed {what} (exit {done.returncode}): "
                                f"{tail[0][:300]}; see {log}")
        try:
            return json.loads(lines[-1])
        except ValueError:
            raise ToolturnError(f"the {self.script.stem} answered {what} with a line that is not JSON; "
                                f"see {log}") from None

    @contextlib.asynccontextmanager
    async def stream(self, args: list, log: Path, env: dict[str, str] | None = None) -> AsyncIterator[Run]:
        """`env`: variables for this run only (API keys, which never go into a job file)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as err:
            proc = await asyncio.create_subprocess_exec(*self._cmd(args), stdout=asyncio.subprocess.PIPE,
                                                        stderr=err, limit=LINE_LIMIT, **self._popen_args(env))
        run = Run(proc)
        try:
            yield run
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
            run.returncode = proc.returncode
