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
        # interrupted: SIGTERM to the worker, then the lines it prints before it exits (what it had in flight)
        lines = await run.stop(timeout_s=10)
    run.returncode                  # the exit code (negative: killed by that signal)

`Session` keeps one worker for several jobs (`script serve`), for packages whose imports are slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from toolturn.core.errors import ToolturnError
from toolturn.core.servers import child_setup

def file_label(name: str, limit: int = 80) -> str:
    """A checkpoint name (a path, say) as a piece of a job or log file name: its last `limit` safe characters."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[-limit:] or "checkpoint"


LINE_LIMIT = 1 << 28  # one line carries a whole trajectory; asyncio's default of 64 KiB is far too small


class Run:
    """The lines of one worker job (`async for line in run`), then its `returncode`; `stop` ends a job early."""

    def __init__(self):
        self.returncode: int | None = None
        self._lines: Callable[[], AsyncIterator[dict]] | None = None
        self._signal: Callable[[], None] | None = None  # SIGTERM to the worker
        self._readline: Callable[[], Awaitable[bytes]] | None = None  # the next raw line ("" at its end)

    def __aiter__(self) -> AsyncIterator[dict]:
        return self._lines()

    async def stop(self, timeout_s: float) -> list[dict]:
        """SIGTERM to the worker, then every line it prints until it exits, or for `timeout_s` at most: lines it
        had printed before (finished work nobody read yet), then what it reports of its work in flight."""
        with contextlib.suppress(ProcessLookupError):
            self._signal()
        out: list[dict] = []

        async def read() -> None:
            while raw := await self._readline():
                if (line := _parse(raw)) is not None and line != END:
                    out.append(line)

        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(read(), timeout_s)
        return out


def _parse(raw: bytes) -> dict | None:
    try:
        line = json.loads(raw)
    except ValueError:
        return None  # the unterminated last line of a killed worker
    return line if isinstance(line, dict) else None


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
        run = Run()

        async def lines() -> AsyncIterator[dict]:
            while raw := await proc.stdout.readline():
                if (line := _parse(raw)) is not None:
                    yield line
            run.returncode = await proc.wait()

        run._lines = lines
        run._signal = lambda: proc.send_signal(signal.SIGTERM)
        run._readline = proc.stdout.readline
        try:
            yield run
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
            run.returncode = proc.returncode


END = {"end": True}  # a serving worker's line after each job's answer


class Session:
    """One long-lived worker (`script serve`) that answers jobs in turn, `{"mode", "job"}` lines on its stdin,
    each answered by its JSON lines and then END. For a benchmark whose imports are slow (BFCL's model
    registry takes ~5 s), an evaluation pays the start-up once instead of once per job. It works across
    event loops (a suite lists its items before the app's loop starts and aggregates after it ends): the
    pipe is a plain one, read in a thread when a loop is running. A worker that dies is started again by
    the next job; one whose job was abandoned half-way is killed, never reused."""

    def __init__(self, worker: Worker, log: Path):
        self.worker, self.log = worker, log
        self.proc: subprocess.Popen | None = None

    def _send(self, mode: str, job: Path) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log, "ab") as err:
                self.proc = subprocess.Popen(self.worker._cmd(["serve"]), stdout=subprocess.PIPE, stderr=err,
                                             **{**self.worker._popen_args(), "stdin": subprocess.PIPE})
        try:
            self.proc.stdin.write(json.dumps({"mode": mode, "job": str(job)}).encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # it died meanwhile: its stdout ends at once, and the caller sees the exit code
        return self.proc

    def call(self, mode: str, job: Path, what: str) -> dict:
        """A job with one answer (its last line), or one ToolturnError line if the worker died first."""
        proc, answer, code = self._send(mode, job), None, None
        while True:
            raw = proc.stdout.readline()
            if not raw:
                code = proc.wait()
                break
            line = _parse(raw)
            if line == END:
                break
            answer = line if line is not None else answer
        if code is None and answer is not None:
            return answer
        self.kill()
        tail = self.log.read_text(errors="replace").strip().splitlines()[-1:] or ["(empty log)"]
        raise ToolturnError(f"the {self.worker.script.stem} failed {what} (exit {code}): {tail[0][:300]}; "
                            f"see {self.log}")

    @contextlib.asynccontextmanager
    async def stream(self, mode: str, job: Path) -> AsyncIterator[Run]:
        """A job's lines as they come; `run.returncode` is None if the job ended normally, else the exit code
        of the worker that died during it."""
        proc = self._send(mode, job)
        loop = asyncio.get_running_loop()
        run = Run()
        ended = False
        reading: asyncio.Future | None = None  # a readline in a thread: kept when its waiter is cancelled

        async def readline() -> bytes:
            nonlocal reading
            if reading is None:
                reading = loop.run_in_executor(None, proc.stdout.readline)
            raw = await asyncio.shield(reading)  # a cancelled wait leaves the line to the next reader, never lost
            reading = None
            return raw

        async def lines() -> AsyncIterator[dict]:
            nonlocal ended
            while raw := await readline():
                line = _parse(raw)
                if line == END:
                    ended = True
                    return
                if line is not None:
                    yield line
            run.returncode = await loop.run_in_executor(None, proc.wait)

        run._lines = lines
        run._signal = lambda: proc.send_signal(signal.SIGTERM)
        run._readline = readline
        try:
            yield run
        finally:
            if not ended:  # abandoned half-way or died: never reused
                self.kill()
                run.returncode = proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def close(self) -> None:
        """Ask the worker to finish (EOF on its stdin), then make sure it has."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
