"""The run's shard files: records in `part-<worker>-<n>.jsonl`, one log line per finished index in
`log-<worker>.jsonl` (valid or dropped, with the reason). Both are append-only; on resume the done
indices are read back so nothing is generated twice and nothing is lost."""

from __future__ import annotations

import logging

from toolturn.core.files import Appender, repair_tail
from toolturn.core.rundir import RunDir
from toolturn.generate.dialogue import Outcome

log = logging.getLogger(__name__)


class ShardWriter:
    def __init__(self, run: RunDir, worker: int, shard_size: int):
        self.run, self.worker, self.shard_size = run, worker, shard_size
        run.shards.mkdir(parents=True, exist_ok=True)
        self.ids: set[str] = set()
        self.done: set[int] = set()
        parts = run.part_files(worker)
        self.part_lines = 0
        for path in parts:
            repair_tail(path)
            self.part_lines = 0
            for row in run.read_part(path):
                self.ids.add(row["id"])
                self.done.add(row["meta"]["index"])
                self.part_lines += 1
        self.valid = len(self.ids)
        self.part_n = len(parts) - 1 if parts else 0
        log_path = run.log_file(worker)
        if log_path.exists():
            repair_tail(log_path)
            self.done.update(row["index"] for row in run.read_log(log_path))
        self._log = Appender(log_path)
        self._part: Appender | None = None

    def _part_appender(self) -> Appender:
        if self._part is None or self.part_lines >= self.shard_size:
            if self._part is not None:
                self._part.close()
                self.part_n += 1
                self.part_lines = 0
            self._part = Appender(self.run.part_file(self.worker, self.part_n))
        return self._part

    def commit(self, out: Outcome) -> bool:
        """Write one finished index; returns True when it added a valid record."""
        added = False
        if out.record is not None and out.record["id"] not in self.ids:
            self._part_appender().write(out.record)
            self.part_lines += 1
            self.ids.add(out.record["id"])
            self.valid += 1
            added = True
        elif out.record is not None:
            log.warning("index %d duplicates record %s; not written again", out.index, out.record["id"])
        self._log.write({"index": out.index, "id": out.record["id"] if out.record else None,
                         "drop_reason": None if added else (out.drop_reason or "duplicate_id"),
                         "detail": out.detail, "task_rejections": out.task_rejections,
                         **({"attempt": out.attempt} if out.attempt and not added else {})})
        self.done.add(out.index)
        return added

    def close(self) -> None:
        self._log.close()
        if self._part is not None:
            self._part.close()
