"""A content-addressed cache of LLM answers, so that a resumed or repeated run pays nothing for a call
already answered.

The key is the sha256 of the request body as sent (model, messages, tools, sampling, seed, ...) and of
where the request stands in its `CacheScope`: the scope's name (generation uses the dialogue: run seed,
domain, index) and how many identical bodies the scope has sent before. So identical unseeded requests of
two dialogues, or asked twice in one, are sampled apart as without a cache, while the replay of a dialogue
(whose calls are sequential, so numbered the same way) finds each answer it got before.

Entries are lines of append-only journals, `<dir>/journal-<pid>-<hex>.jsonl`, one per process that writes: a put
is one write of `{"key": ..., "result": ...}` and a newline, so a killed writer leaves at most a torn last line,
which is never read as an entry (and never cut: its writer may be alive). A file per entry cost 60-400 us of CPU
a call in file creation and renames (ext4, 10,000-40,000 entries), as much as the rest of the generation loop.
At open, every journal of the dir is indexed (key -> where its line is; a later line wins); a hit reads its line
back and checks it (it parses, names its key and has every field), and one that fails (a disk fault) is dropped
and asked again. Processes may share a dir: each sees what was written before it opened the cache, and its own.
The size bound keeps the most recently used entries: once the journals pass `max_bytes`, this process writes
those it used last, up to 0.9 of the bound, into a new journal (a temp file renamed into place) and removes the
others (a process still writing to one goes on; what it writes next is lost to the others: the bound wins).
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import time
from collections import Counter, OrderedDict
from pathlib import Path

import orjson
from toolturn.core.files import atomic_write

log = logging.getLogger("toolturn.llm")

STALE_TMP_S = 600  # a temp file this old belongs to a writer that died
EVICT_TO = 0.9  # eviction brings the total down to this share of the bound
JOURNALS = "journal-*.jsonl"
KEY_START = b'{"key":"'
KEY_END = len(KEY_START) + 64  # a sha256 in hex
HEX = frozenset(b"0123456789abcdef")
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
        self.hits = self.misses = self.writes = self.repaired = self.torn = self.evicted = 0
        self._index: OrderedDict[str, tuple[Path, int, int]] = OrderedDict()  # key -> (journal, offset, length),
        # least recently used first
        self._total = 0  # bytes of the journals indexed
        self._journal: Path | None = None  # this process's, opened at its first put
        self._fd: int | None = None
        self._end = 0
        self._load()

    @staticmethod
    def key(tag: bytes) -> str:
        return hashlib.sha256(tag).hexdigest()

    def _load(self) -> None:
        now = time.time()
        for tmp in self.root.glob(".journal-*"):  # a compaction's temp file; stale: its writer died
            try:
                if now - tmp.stat().st_mtime > STALE_TMP_S:
                    tmp.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
        journals = []
        for path in self.root.glob(JOURNALS):
            try:
                journals.append((path.stat().st_mtime, path))
            except FileNotFoundError:  # removed by another process's compaction meanwhile
                pass
        for _, path in sorted(journals):  # oldest first: a later line for a key wins
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            self._total += len(data)
            self._index_lines(path, data)

    def _index_lines(self, path: Path, data: bytes) -> None:
        offset = 0
        while offset < len(data):
            end = data.find(b"\n", offset)
            if end < 0:  # a torn last line: what a killed writer leaves
                self.torn += 1
                return
            key = _line_key(data, offset, end)
            if key is None:
                self.repaired += 1
            else:
                self._index[key] = (path, offset, end + 1 - offset)
                self._index.move_to_end(key)
            offset = end + 1

    def get(self, key: str) -> dict | None:
        where = self._index.get(key)
        if where is None:
            self.misses += 1
            return None
        path, offset, length = where
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read(length)
        except FileNotFoundError:  # another process's compaction removed it
            data = b""
        result = _decode(data, key)
        if result is None:
            if data:
                log.warning("LLM cache: the entry for %s in %s is not whole; the call is made again", key, path)
                self.repaired += 1
            del self._index[key]
            self.misses += 1
            return None
        self._index.move_to_end(key)
        self.hits += 1
        return result

    def put(self, key: str, result: dict) -> None:
        line = orjson.dumps({"key": key, "result": result}) + b"\n"
        if self._fd is None:
            self._open_journal(self.root / f"journal-{os.getpid()}-{secrets.token_hex(4)}.jsonl")
        _write_all(self._fd, line)
        self._index[key] = (self._journal, self._end, len(line))
        self._index.move_to_end(key)
        self._end += len(line)
        self._total += len(line)
        self.writes += 1
        if self._total > self.max_bytes:
            self._compact()

    def _open_journal(self, path: Path) -> None:
        self._journal = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._end = os.fstat(self._fd).st_size

    def _compact(self) -> None:
        """Keep the most recently used entries, up to EVICT_TO of the bound, in one new journal; remove the rest."""
        keep, size = [], 0
        for key in reversed(self._index):
            length = self._index[key][2]
            if size + length > EVICT_TO * self.max_bytes:
                break
            keep.append(key)
            size += length
        keep.reverse()  # least recently used first, as the index keeps them
        lines, files = [], {}
        try:
            for key in keep:
                path, offset, length = self._index[key]
                if path not in files:
                    try:
                        files[path] = open(path, "rb")
                    except FileNotFoundError:  # another process's compaction removed it: its entries are gone
                        files[path] = None
                if files[path] is not None:
                    files[path].seek(offset)
                    lines.append((key, files[path].read(length)))
        finally:
            for f in files.values():
                if f is not None:
                    f.close()
        new = self.root / f"journal-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
        atomic_write(new, b"".join(line for _, line in lines))  # its temp file: .journal-..., removed once stale
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for path in self.root.glob(JOURNALS):
            if path != new:
                path.unlink(missing_ok=True)
        self.evicted += len(self._index) - len(lines)
        self._index.clear()
        offset = 0
        for key, line in lines:
            self._index[key] = (new, offset, len(line))
            offset += len(line)
        self._total = offset
        self._open_journal(new)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def stats(self) -> dict:
        return {"dir": str(self.root), "hits": self.hits, "misses": self.misses, "writes": self.writes,
                "repaired": self.repaired, "torn": self.torn, "evicted": self.evicted}


def _line_key(data: bytes, start: int, end: int) -> str | None:
    """The key a journal line names (`{"key":"<64 hex>",...`, as orjson writes it), or None for a line that
    cannot be an entry."""
    if end - start < KEY_END + 2 or data[start:start + len(KEY_START)] != KEY_START or \
            data[start + KEY_END:start + KEY_END + 2] != b'",':
        return None
    key = data[start + len(KEY_START):start + KEY_END]
    return key.decode() if all(c in HEX for c in key) else None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _decode(data: bytes, key: str) -> dict | None:
    try:
        entry = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    result = entry.get("result") if isinstance(entry, dict) and entry.get("key") == key else None
    if not isinstance(result, dict) or any(not isinstance(result.get(k), t) for k, t in RESULT_FIELDS.items()):
        return None
    return result
