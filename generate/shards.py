"""The run's shard files: records in `part-<worker>-<n>.jsonl`, one log line per finished index in
`log-<worker>.jsonl` (valid or dropped, with the reason). Both are append-only; on resume the done
indices are read back so nothing is generated twice and nothing is lost.

A record is written before its log line, so a kill between the two leaves a record the log does not
name yet; a crash that loses the end of a part file (a torn last record) leaves a log line naming a
record that no part holds. On resume the writer makes the log agree with the parts again before it
writes: a missing line is added, a line whose record is gone is removed and its index generated
again. The run's records stay exactly the first valid indices; `generate/audit.py` checks the
agreement of a finished run."""

from __future__ import annotations

import logging

from toolturn.core.files import Appender, repair_tail, replace_locked
from toolturn.core.rundir import RunDir
from toolturn.generate.dialogue import Outcome

log = logging.getLogger(__name__)


def _log_line(index: int, rid: str | None, drop_reason: str | None, detail: str = "",
              task_rejections: dict | None = None) -> dict:
    return {"index": index, "id": rid, "drop_reason": drop_reason, "detail": detail,
            "task_rejections": task_rejections or {}}


class ShardWriter:
    def __init__(self, run: RunDir, worker: int, shard_size: int):
        self.run, self.worker, self.shard_size = run, worker, shard_size
        run.shards.mkdir(parents=True, exist_ok=True)
        log_path = run.log_file(worker)
        # locked before anything is read or repaired: a second writer of this worker stops here
        self._log = Appender(log_path)
        self._log.lock(f"worker {worker} of {run.root}")
        try:
            kept = self._read_parts()
            self.valid = len(self.ids)
            self.done = set(kept) | self._reconcile_log(kept)
        except BaseException:
            self._log.close()
            raise
        self._part: Appender | None = None

    def _read_parts(self) -> dict[int, str]:
        """index -> record id of every record in this worker's part files (torn last lines cut)."""
        parts = self.run.part_files(self.worker)
        kept: dict[int, str] = {}
        self.ids: set[str] = set()
        self.part_lines = 0
        for path in parts:
            repair_tail(path)
            self.part_lines = 0
            for row in self.run.read_part(path):
                kept[row["meta"]["index"]] = row["id"]
                self.ids.add(row["id"])
                self.part_lines += 1
        self.part_n = len(parts) - 1 if parts else 0
        return kept

    def _reconcile_log(self, kept: dict[int, str]) -> set[int]:
        """Make the log name exactly the kept records (plus the drops); returns the dropped indices."""
        path = self.run.log_file(self.worker)
        repair_tail(path)
        rows, dropped, fixed = [], set(), False
        for row in self.run.read_log(path):
            index = row["index"]
            if row["drop_reason"] is None and kept.get(index) != row.get("id"):
                log.warning("%s: index %d is logged as kept (record %s) but no shard holds that record; it is "
                            "generated again", path, index, row.get("id"))
                fixed = True
                continue
            if row["drop_reason"] is not None:
                if index in kept:  # a record beats an earlier drop line of its index
                    fixed = True
                    continue
                dropped.add(index)
            rows.append(row)
        logged = {row["index"] for row in rows if row["drop_reason"] is None}
        for index in sorted(set(kept) - logged):
            rows.append(_log_line(index, kept[index], None))
            fixed = True
        if fixed:  # rewritten whole and locked before it replaces the old one: no reader sees half a log
            old, self._log = self._log, replace_locked(path, "".join(Appender.line(row) for row in rows),
                                                       f"worker {self.worker} of {self.run.root}")
            old.close()
        return dropped

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
        line = _log_line(out.index, out.record["id"] if out.record else None,
                         None if added else (out.drop_reason or "duplicate_id"), out.detail, out.task_rejections)
        if out.attempt and not added:
            line["attempt"] = out.attempt
        self._log.write(line)
        self.done.add(out.index)
        return added

    def close(self) -> None:
        self._log.close()
        if self._part is not None:
            self._part.close()
