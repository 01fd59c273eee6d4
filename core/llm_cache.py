"""A content-addressed cache of LLM answers, so that a resumed or repeated run pays nothing for a call
already answered.

The key is the sha256 of the request body as sent (model, messages, tools, sampling, seed, ...) and of
where the request stands in its `CacheScope`: the scope's name (generation uses the dialogue: run seed,
domain, index) and how many identical bodies the scope has sent before. So identical unseeded requests of
two dialogues, or asked twice in one, are sampled apart as without a cache, while the replay of a dialogue
(whose calls are sequential, so numbered the same way) finds each answer it got before.

Entries are files `<dir>/<key[:2]>/<key>.json`, each written to a temp file and renamed: a killed writer
leaves at most a temp file (removed once stale), never half an entry; an entry that does not parse or does
not name its key (a disk fault) is deleted and asked again. Processes may share a dir. The size bound
evicts the least recently used entries (a hit refreshes the mtime) once the total passes `max_bytes`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import Counter
from pathlib import Path

import orjson
from toolturn.core.files import atomic_write

log = logging.getLogger("toolturn.llm")

STALE_TMP_S = 600  # a temp file this old belongs to a writer that died
EVICT_TO = 0.9  # eviction brings the total down to this share of the bound
RESULT_FIELDS = {"content": str, "tool_calls": list, "finish_reason": (str, type(None)), "prompt_tokens": int,
                 "completion_tokens": int, "reasoning_content": (str, type(None))}


class CacheScope:
    """Numbers the identical requests of one sequence of calls (a dialogue)."""

    def __init__(self, name: str):
        self.name = name
        self._seen: Counter = Counter()

    def tag(self, body: bytes) -> bytes:
        digest = hashlib.sha256(body).digest()
        n = self._seen[digest]
        self._seen[digest] += 1
        return digest + f"\0{self.name}\0{n}".encode()


class ResponseCache:
    def __init__(self, root: Path, max_bytes: int):
        self.root, self.max_bytes = Path(root), max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = self.misses = self.writes = self.repaired = self.evicted = 0
        self._total = self._scan(remove_stale=True)

    @staticmethod
    def key(tag: bytes) -> str:
        return hashlib.sha256(tag).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self.misses += 1
            return None
        result = _decode(data, key)
        if result is None:
            log.warning("LLM cache: %s is not a whole entry; removed, the call is made again", path)
            path.unlink(missing_ok=True)
            self.repaired += 1
            self.misses += 1
            return None
        try:
            os.utime(path)
        except OSError:  # another process evicted it meanwhile: the answer is still good
            pass
        self.hits += 1
        return result

    def put(self, key: str, result: dict) -> None:
        path = self._path(key)
        data = orjson.dumps({"key": key, "result": result})
        try:
            atomic_write(path, data)
        except FileNotFoundError:  # the first entry of its subdir (a mkdir on every put cost a syscall each)
            path.parent.mkdir(exist_ok=True)
            atomic_write(path, data)
        self.writes += 1
        self._total += len(data)
        if self._total > self.max_bytes:
            self._evict()

    def _entries(self) -> list[tuple[float, int, Path]]:
        out = []
        for sub in self.root.iterdir():
            if not sub.is_dir():
                continue
            for entry in os.scandir(sub):
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                out.append((st.st_mtime, st.st_size, Path(entry.path)))
        return out

    def _scan(self, remove_stale: bool) -> int:
        total, now = 0, time.time()
        for mtime, size, path in self._entries():
            if path.name.startswith("."):
                if remove_stale and now - mtime > STALE_TMP_S:
                    path.unlink(missing_ok=True)
                continue
            total += size
        return total

    def _evict(self) -> None:
        entries = sorted(e for e in self._entries() if not e[2].name.startswith("."))
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= EVICT_TO * self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
            self.evicted += 1
        self._total = total

    def stats(self) -> dict:
        return {"dir": str(self.root), "hits": self.hits, "misses": self.misses, "writes": self.writes,
                "repaired": self.repaired, "evicted": self.evicted}


def _decode(data: bytes, key: str) -> dict | None:
    try:
        entry = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    result = entry.get("result") if isinstance(entry, dict) and entry.get("key") == key else None
    if not isinstance(result, dict) or any(not isinstance(result.get(k), t) for k, t in RESULT_FIELDS.items()):
        return None
    return result
