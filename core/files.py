"""Files that survive SIGKILL: append-only JSONL (one write + flush per record, torn tails repaired),
atomic whole-file writes (temp file + rename) and exclusive locks (flock, released by the kernel)."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

from toolturn.core.errors import ToolturnError

log = logging.getLogger(__name__)


def repair_tail(path: Path) -> int:
    """Cut a half-written last line (no trailing newline, or not valid JSON). Returns bytes removed."""
    with open(path, "rb+") as f:
        data = f.read()
        cut = len(data)
        if data and not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
        else:
            last_start = data.rfind(b"\n", 0, max(0, len(data) - 1)) + 1
            if data[last_start:].strip():
                try:
                    json.loads(data[last_start:])
                except json.JSONDecodeError:
                    cut = last_start
        if cut < len(data):
            f.truncate(cut)
            log.warning("repaired %s: removed a torn last line (%d bytes)", path, len(data) - cut)
        return len(data) - cut


def read_jsonl(path: Path, keys: tuple[str, ...] = (), what: str = "row") -> Iterator[dict]:
    """The rows of a JSONL file, each an object holding `keys`. A line that is not is a ToolturnError
    naming the file and line. An unterminated last line is a write cut short (repaired by the writer
    on resume) and is skipped."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            if not raw.endswith(b"\n"):
                log.warning("%s line %d: skipped an unfinished last line", path, n)
                return
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
                raise ToolturnError(f"{path} line {n}: corrupt JSON ({getattr(exc, 'msg', None) or exc}); "
                                    f"fix or remove that line") from None
            missing = [k for k in keys if k not in row] if isinstance(row, dict) else ["an object"]
            if missing:
                raise ToolturnError(f"{path} line {n}: not a {what} (no {', '.join(missing)}); "
                                    f"fix or remove that line")
            yield row


class Appender:
    def __init__(self, path: Path):
        self.path = path
        self._f = open(path, "a", encoding="utf-8")

    def lock(self, what: str) -> None:
        """Hold an exclusive lock on this very file while it is open (a ToolturnError naming `what` if another
        process holds one): a lock on the data itself, which no removed or replaced lock file can defeat."""
        try:
            fcntl.flock(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._f.close()
            raise ToolturnError(f"{what} is being written by another process; wait for it to end or stop it") from None

    @staticmethod
    def line(row: dict) -> str:
        return json.dumps(row, ensure_ascii=False) + "\n"

    def write(self, row: dict) -> None:
        self._f.write(self.line(row))
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def replace_locked(path: Path, text: str, what: str) -> Appender:
    """Replace `path` with `text` atomically and return an Appender on it that holds its lock, taken before the
    new file is in place: no other process can lock (or write) the new file before we do."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        tmp.write_text(text, encoding="utf-8")
        appender = Appender(tmp)
        appender.lock(what)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    appender.path = path
    return appender


def _same_file(f: IO, path: Path) -> bool:
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(f.fileno())
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _lock(path: Path, blocking: bool) -> tuple[IO, bool]:
    """An open handle of `path` and whether it holds the exclusive lock (flock, released by the kernel when the
    process ends however it ends). Verified after locking: a file removed or replaced between our open and our
    lock guards nothing, so the lock is taken again on what `path` names now."""
    while True:
        f = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            return f, False
        except BaseException:
            f.close()
            raise
        if _same_file(f, path):
            return f, True
        f.close()


@contextmanager
def exclusive_lock(path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` with our pid in the file; if another process holds it, a ToolturnError
    naming that process, at once."""
    f, held = _lock(path, blocking=False)
    try:
        if not held:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise ToolturnError(f"{what} is in use by another process (pid {holder}); wait for it to end or "
                                f"stop it")
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield
    finally:
        f.close()


class WaitedLock:
    """The exclusive lock on `path`, waited for while another process holds it (a signal handler that raises
    ends the wait); released by `release()`, at the end of its `with` block, or when the process ends."""

    def __init__(self, path: Path):
        self._f: IO | None = _lock(path, blocking=True)[0]

    def release(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> "WaitedLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def atomic_write(path: Path, text: str | bytes) -> None:
    """Replace `path` with `text` in one rename: a reader or a killed writer never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")  # this writer's alone
    try:
        if isinstance(text, bytes):
            tmp.write_bytes(text)
        else:
            tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:  # renamed, it is gone already: no unlink (a syscall) on the way that succeeded
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, value) -> None:
    atomic_write(path, json.dumps(value, indent=1, ensure_ascii=False))


def cache_root(cache_dir: Path | None = None) -> Path:
    """Where converted models and isolated environments are cached: `cache_dir`, else $TOOLTURN_CACHE,
    else ~/.cache/toolturn."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("TOOLTURN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "toolturn"
