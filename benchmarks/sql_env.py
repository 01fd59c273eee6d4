"""Benchmark of the SQL environment and the rule-based generation pipeline.

    python benchmarks/sql_env.py [--quick]

Three measurements, all in this one process:

a) Tool-call latency. The built-in retail domain is prepared into a temporary directory and one
   sandbox is opened; then N `sandbox.call(name, args)` calls are timed over a realistic mix of tool
   kinds (get_*, search_* with a text filter, list_*_for_*, summarize_*, update_*). Arguments come
   from real rows of the pristine database, so lookups hit and searches match. This is the cost an
   agent (or the oracle) pays per tool step: argument checking, the authorizer, the per-call savepoint
   and JSON serialization included.

b) Per-dialogue isolation cost. Every dialogue gets a private in-memory copy of the domain database
   (SQLite backup API). On a ~10 MB database (the retail graph cloned until the file is that big)
   we time `open_sandbox()` + `close()` and measure the resident memory of an open sandbox (RSS delta
   with several held open), and count minor page faults per open: by default glibc hands each closed
   copy back to the OS, so the next one faults its pages in afresh; a second timing with malloc told
   to keep its freed heap (mallopt) shows how much of the cost that is. For comparison we time the
   alternative design: one shared connection, `SAVEPOINT` / one write / `ROLLBACK TO` per dialogue.
   Whichever is faster is reported as such; the note under the table says what each design can and
   cannot isolate.

c) Throughput. Dialogues/s of the full rule-based user-oriented pipeline (`DialogueFactory.make`,
   driven by `toolturn.generate.run._produce` exactly as `toolturn-generate` does, records written
   to a throwaway shard directory) at concurrency 1, 8 and 64. Every level builds the same indices
   0, 1, ... from scratch (nothing is cached between dialogues), and the levels run interleaved in
   rounds, so they do the same work under the same background load. The rate counts every finished
   dialogue (dropped ones, and the few `_produce` finishes past its target at the end, included).

Tables go to stdout; the last line holds the headline figures as space-separated key=value pairs.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import math
import os
import random
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from hydra import compose, initialize_config_module
from toolturn.core.domains import Domain, prepare_domain
from toolturn.core.rundir import RunDir
from toolturn.core.sqlenv import SqlDomain, SqlTool
from toolturn.core.sqlschema import Schema, Table, introspect, quote_ident
from toolturn.core.tools.schema_tools import derive_tools
from toolturn.generate.dialogue import DialogueFactory
from toolturn.generate.run import _produce
from toolturn.generate.shards import ShardWriter
from tqdm import tqdm

SEED = 0
TOOL_MIX = {"get": 0.30, "search": 0.20, "list": 0.20, "summarize": 0.10, "update": 0.20}
BIG_DB_BYTES = 10 * 1000 * 1000
DECIMALS = {"isolate_10mb_ms": 2, "isolate_10mb_mib": 2, "savepoint_10mb_ms": 3}  # headline; default 1


# ---- small helpers ------------------------------------------------------------------------------

def compose_cfg(overrides: list[str]):
    with initialize_config_module("toolturn.conf", version_base="1.3"):
        return compose("generate", overrides=overrides)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 1])."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def print_table(title: str, headers: list[str], rows: list[list], notes: list[str] = ()) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:  # first column left-aligned, figures right-aligned
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))

    print(f"\n{title}")
    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))
    for note in notes:
        print(f"  {note}")
    sys.stdout.flush()


# ---- a) tool-call latency -----------------------------------------------------------------------

def tool_kind(name: str) -> str | None:
    kind = name.split("_", 1)[0]
    return kind if kind in TOOL_MIX else None


def text_filters(tool: SqlTool) -> list[str]:
    """Free-text (LIKE) parameters of a search tool: strings without an enum."""
    return [p for p, spec in tool.parameters["properties"].items()
            if spec.get("type") == "string" and "enum" not in spec]


class ArgSampler:
    """Arguments for a tool, drawn from real rows of the pristine database."""

    def __init__(self, conn: sqlite3.Connection, schema: Schema, rng: random.Random):
        self.rng = rng
        self.rows = {name: self._rows(conn, t) for name, t in schema.tables.items()}
        self.schema = schema

    @staticmethod
    def _rows(conn: sqlite3.Connection, t: Table) -> list[dict]:
        cols = ", ".join(quote_ident(c.name) for c in t.columns)
        params = [c.param for c in t.columns]
        return [dict(zip(params, r)) for r in conn.execute(f"SELECT {cols} FROM {quote_ident(t.name)}")]

    def row(self, table: str) -> dict:
        return self.rng.choice(self.rows[table])

    def args(self, tool: SqlTool) -> dict:
        kind, props = tool_kind(tool.name), tool.parameters["properties"]
        required, row = tool.parameters["required"], self.row(tool.table)
        if kind in ("get", "list"):  # key / foreign-key lookups of an existing row
            return {p: row[p] for p in required}
        if kind == "search":  # a few characters out of a real (non-NULL) value
            param = self.rng.choice(text_filters(tool))
            while row[param] is None:
                row = self.row(tool.table)
            text = str(row[param])
            n = min(len(text), self.rng.randint(3, 6))
            start = self.rng.randint(0, len(text) - n)
            return {param: text[start:start + n]}
        if kind == "summarize":  # half the calls scoped to one parent, when the tool allows it
            return {p: row[p] for p in props} if props and self.rng.random() < 0.5 else {}
        if kind == "update":
            return {**{p: row[p] for p in required}, **self._new_value(tool)}
        raise ValueError(tool.name)

    def _new_value(self, tool: SqlTool) -> dict:
        """A status-like change when the table has an enum column, else another row's value of a plain column."""
        t = self.schema.tables[tool.table]
        props = tool.parameters["properties"]
        enums = [p for p, spec in props.items() if "enum" in spec]
        if enums:
            p = self.rng.choice(enums)
            return {p: self.rng.choice(props[p]["enum"])}
        fk = {c for f in t.foreign_keys for c in f.columns}
        plain = [c.param for c in t.columns if not (c.pk_index or c.unique or c.name in fk) and c.param in props]
        p = self.rng.choice(plain)
        return {p: self.row(tool.table)[p]}


def sample_calls(domain: Domain, n: int, rng: random.Random) -> list[tuple[str, str, dict]]:
    by_kind: dict[str, list[SqlTool]] = {k: [] for k in TOOL_MIX}
    for t in domain.tools:
        kind = tool_kind(t.name)
        if kind and (kind != "search" or text_filters(t)):
            by_kind[kind].append(t)
    conn = sqlite3.connect(f"file:{domain.db_path}?mode=ro", uri=True)
    try:
        sampler = ArgSampler(conn, domain.schema, rng)
        kinds = rng.choices(list(TOOL_MIX), weights=list(TOOL_MIX.values()), k=n)
        calls = []
        for kind in kinds:
            tool = rng.choice(by_kind[kind])
            calls.append((kind, tool.name, sampler.args(tool)))
        return calls
    finally:
        conn.close()


def bench_tool_calls(domain: Domain, n: int) -> dict:
    rng = random.Random(SEED)
    calls = sample_calls(domain, n, rng)
    sandbox = domain.env.open_sandbox()
    try:
        for _, name, args in calls[:200]:  # warm-up: statement cache, page cache
            sandbox.call(name, args)
        times: dict[str, list[float]] = {k: [] for k in TOOL_MIX}
        ok: dict[str, int] = {k: 0 for k in TOOL_MIX}
        for kind, name, args in calls:
            t0 = time.perf_counter_ns()
            result = sandbox.call(name, args)
            times[kind].append((time.perf_counter_ns() - t0) / 1000)
            ok[kind] += result.ok
    finally:
        sandbox.close()
    every = [x for v in times.values() for x in v]
    rows = [[kind, len(v), f"{100 * ok[kind] / len(v):.1f}", f"{statistics.median(v):.1f}",
             f"{percentile(v, 0.9):.1f}", f"{percentile(v, 0.99):.1f}"] for kind, v in times.items() if v]
    rows.append(["all", len(every), f"{100 * sum(ok.values()) / len(every):.1f}", f"{statistics.median(every):.1f}",
                 f"{percentile(every, 0.9):.1f}", f"{percentile(every, 0.99):.1f}"])
    notes = ["ok % < 100: an update that breaks a CHECK/UNIQUE constraint returns an error result, as it should."
             ] if sum(ok.values()) < len(every) else []
    print_table(f"a) tool-call latency, retail domain, one sandbox, {n} calls (microseconds)",
                ["kind", "calls", "ok %", "p50 us", "p90 us", "p99 us"], rows, notes)
    return {"tool_p50_us": statistics.median(every), "tool_p99_us": percentile(every, 0.99)}


# ---- b) per-dialogue isolation cost -------------------------------------------------------------

def clone_graph(conn: sqlite3.Connection, schema: Schema, k: int, offset: int) -> None:
    """Insert copy k of every original row: integer keys (and foreign keys to them) shifted by k*offset,
    unique text suffixed with -k, so the copy is a disjoint graph that satisfies every constraint."""
    for t in schema.tables.values():
        int_keys = {c.name for c in t.primary_key if c.affinity == "integer"}
        shifted_fks = {c for fk in t.foreign_keys for c in fk.columns
                       if all(schema.tables[fk.ref_table].column(r).affinity == "integer" for r in fk.ref_columns)}
        exprs = []
        for c in t.columns:
            q = quote_ident(c.name)
            if c.name in int_keys or c.name in shifted_fks:
                exprs.append(f"{q} + {k * offset}")
            elif c.affinity == "text" and (c.unique or c.pk_index):
                exprs.append(f"{q} || '-{k}'")
            else:
                exprs.append(q)
        originals = " AND ".join(f"{quote_ident(c)} < {offset}" for c in int_keys) or "1"
        cols = ", ".join(quote_ident(c.name) for c in t.columns)
        conn.execute(f"INSERT INTO {quote_ident(t.name)} ({cols}) SELECT {', '.join(exprs)} "
                     f"FROM {quote_ident(t.name)} WHERE {originals}")


def build_big_db(source: Path, dest: Path, target_bytes: int) -> Path:
    shutil.copyfile(source, dest)
    conn = sqlite3.connect(dest, isolation_level=None)
    try:
        schema = introspect(conn)
        max_key = max(conn.execute(f"SELECT max({quote_ident(c.name)}) FROM {quote_ident(t.name)}").fetchone()[0] or 0
                      for t in schema.tables.values() for c in t.primary_key if c.affinity == "integer")
        offset = 10 ** len(str(max_key))
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        k = 0
        while dest.stat().st_size < target_bytes:  # VACUUM shrinks the file a little: check after it
            conn.execute("BEGIN")
            while conn.execute("PRAGMA page_count").fetchone()[0] * page_size < target_bytes:
                k += 1
                clone_graph(conn, schema, k, offset)
            k += 1
            clone_graph(conn, schema, k, offset)
            conn.execute("COMMIT")
            conn.execute("VACUUM")
    finally:
        conn.close()
    return dest


def domain_over(db_path: Path) -> SqlDomain:
    """A SqlDomain over any SQLite file: all its tables, tools derived from its schema."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        schema = introspect(conn)
        tools, _ = derive_tools(conn, schema)
    finally:
        conn.close()
    return SqlDomain(db_path, tools, list(schema.tables))


def sandbox_memory(env: SqlDomain, held: int) -> float:
    """Resident MiB per open sandbox: RSS delta with `held` sandboxes open, divided by `held`."""
    gc.collect()
    before = rss_bytes()
    boxes = [env.open_sandbox() for _ in range(held)]
    after = rss_bytes()
    for box in boxes:
        box.close()
    return (after - before) / held / 2 ** 20


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_ms(fn, reps: int) -> tuple[list[float], float]:
    """Per-call milliseconds and minor page faults per call."""
    fn()  # warm-up
    out, faults = [], minor_faults()
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out, (minor_faults() - faults) / reps


@contextmanager
def malloc_keeps_freed_heap():
    """glibc only: stop free() from handing the top of the heap back to the OS, so the next sandbox
    reuses the pages of the last one instead of page-faulting in fresh ones. Yields False elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        yield False
        return
    m_trim_threshold, m_top_pad = -1, -2
    libc.mallopt(m_trim_threshold, 1 << 30)
    libc.mallopt(m_top_pad, 64 << 20)
    try:
        yield True
    finally:
        # the glibc defaults; only the dynamic mmap threshold stays off, which part c) does not notice
        libc.mallopt(m_trim_threshold, 128 << 10)
        libc.mallopt(m_top_pad, 0)
        libc.malloc_trim(0)


def open_close(env: SqlDomain):
    def run():
        env.open_sandbox().close()
    return run


def savepoint_write(env: SqlDomain, rng: random.Random):
    """The alternative design: one shared connection, a savepoint per dialogue, rolled back at its end."""
    shared = env.open_sandbox()
    tool = env.tools["update_customer"] if "update_customer" in env.tools else next(
        t for t in env.tools.values() if t.name.startswith("update_"))
    key = tool.parameters["required"][0]
    keys = [r[0] for r in shared.conn.execute(f"SELECT {quote_ident(key)} FROM {quote_ident(tool.table)}")]
    enum_param = next((p for p, s in tool.parameters["properties"].items() if "enum" in s), None)

    def run():
        args = {key: rng.choice(keys)}
        if enum_param:
            args[enum_param] = rng.choice(tool.parameters["properties"][enum_param]["enum"])
        shared.conn.execute("SAVEPOINT dialogue")
        shared.call(tool.name, args)
        shared.conn.execute("ROLLBACK TO dialogue")
        shared.conn.execute("RELEASE dialogue")
    return run, shared


def measure_isolation(path: Path, reps: int, held: int) -> dict:
    """Sandbox open+close (default malloc, then keeping the freed heap), its memory, and the savepoint design."""
    gc.collect()
    before = rss_bytes()
    env = domain_over(path)
    m = {"master_mib": (rss_bytes() - before) / 2 ** 20}
    try:
        m["per_box_mib"] = sandbox_memory(env, held)
        m["backup"] = time_ms(open_close(env), reps)
        with malloc_keeps_freed_heap() as available:
            if available:
                m["backup_kept"] = time_ms(open_close(env), reps)
        run, shared = savepoint_write(env, random.Random(SEED))
        try:
            m["savepoint"] = time_ms(run, reps)
        finally:
            shared.close()
    finally:
        env.close()
    return m


ISOLATION_NOTES = [
    "Savepoints nest as one stack per connection: with several dialogues in flight (concurrency > 1) a",
    "rollback of one dialogue would also undo writes other dialogues made after its savepoint, and reads",
    "would see other dialogues' uncommitted writes. The backup API gives each dialogue a private copy, at",
    "the copy time and memory above (paid once per dialogue, plus once for the task sampler).",
    "faults/op: minor page faults. By default glibc returns each closed copy to the OS and the next copy",
    "faults its pages in again; the second row (mallopt M_TRIM_THRESHOLD/M_TOP_PAD, the same as",
    "MALLOC_TRIM_THRESHOLD_/MALLOC_TOP_PAD_ in the environment) shows what that costs. Headline: row 1.",
    "MiB/dialogue: RSS delta with the sandboxes open; master: the shared in-memory copy, one per domain.",
    "n/a: a 0.2 MB database is below what RSS deltas resolve.",
]


def bench_isolation(small_db: Path, work: Path, reps: int, held: int) -> dict:
    big_db = build_big_db(small_db, work / "big.sqlite", BIG_DB_BYTES)
    rows = []
    for label, path in (("retail", small_db), ("retail x clones", big_db)):
        mb = path.stat().st_size / 1e6
        m = measure_isolation(path, reps, held)
        measurable = mb >= 1  # RSS deltas below ~1 MiB are allocator noise (freed heap gets reused)
        mem = [f"{m['per_box_mib']:.2f}", f"{m['master_mib']:.1f}"] if measurable else ["n/a", "n/a"]
        for design, key, memory in (("backup API: open_sandbox + close", "backup", mem),
                                    ("  same, malloc keeps the freed heap", "backup_kept", ["", ""]),
                                    ("shared conn: SAVEPOINT + 1 write + ROLLBACK", "savepoint", ["0", "-"])):
            if key in m:
                t, faults = m[key]
                rows.append([f"{label} ({mb:.1f} MB)", design, f"{statistics.median(t):.3f}",
                             f"{percentile(t, 0.99):.3f}", f"{faults:.0f}", *memory])
    # the loop ends on the ~10 MB database: its figures are the headline
    figures = {"db_mb": mb, "isolate_10mb_ms": statistics.median(m["backup"][0]), "isolate_10mb_mib": m["per_box_mib"],
               "savepoint_10mb_ms": statistics.median(m["savepoint"][0])}
    iso_ms, sp_ms = figures["isolate_10mb_ms"], figures["savepoint_10mb_ms"]
    faster = ("SAVEPOINT is faster" if sp_ms < iso_ms else "the backup API is faster") + \
        f" on the {mb:.1f} MB database, by x{max(iso_ms, sp_ms) / min(iso_ms, sp_ms):.0f}."
    print_table(f"b) per-dialogue isolation, {reps} repetitions, memory with {held} sandboxes open",
                ["database", "design", "p50 ms", "p99 ms", "faults/op", "MiB/dialogue", "master MiB"], rows,
                [faster, *ISOLATION_NOTES])
    return figures


# ---- c) throughput ------------------------------------------------------------------------------

class CountingFactory:
    """Counts every finished `make`: dropped dialogues and those finished past the target are work too."""

    def __init__(self, factory: DialogueFactory):
        self.factory, self.made = factory, 0

    async def make(self, index: int):
        out = await self.factory.make(index)
        self.made += 1
        return out


async def produce(factory, run_dir: Path, n: int, concurrency: int) -> int:
    """Keep n valid dialogues (indices 0, 1, ...) the way `toolturn-generate` does; returns how many it kept."""
    writer = ShardWriter(RunDir(run_dir), 0, 100_000)
    try:
        with tqdm(total=n, disable=True) as bar:
            await _produce(factory, writer, iter(range(10 ** 12)), n, concurrency, bar)
    finally:
        writer.close()
    return writer.valid


def bench_throughput(domain: Domain, cfg, work: Path, n: int, levels: tuple[int, ...], rounds: int = 3) -> dict:
    """Levels run interleaved in `rounds` rounds of n/rounds dialogues, so drifting background load hits
    them alike; the rate is every finished dialogue over the level's total wall time."""
    asyncio.run(produce(DialogueFactory(domain, cfg), work / "warmup", 5, 1))
    made = {c: 0 for c in levels}
    kept = {c: 0 for c in levels}
    wall = {c: 0.0 for c in levels}
    for r in range(rounds):
        for c in levels:
            factory = CountingFactory(DialogueFactory(domain, cfg))
            gc.collect()
            t0 = time.perf_counter()
            kept[c] += asyncio.run(produce(factory, work / f"c{c}-r{r}", n // rounds, c))
            wall[c] += time.perf_counter() - t0
            made[c] += factory.made
    rates = {c: made[c] / wall[c] for c in levels}
    rows = [[c, made[c], kept[c], f"{wall[c]:.2f}", f"{rates[c]:.1f}", f"{rates[c] / rates[levels[0]]:.2f}"]
            for c in levels]
    print_table(f"c) throughput, rule-based user-oriented pipeline, domain={domain.name}, "
                f"{rounds} x {n // rounds} kept dialogues per level",
                ["concurrency", "made", "kept", "wall s", "dialogues/s", f"vs c={levels[0]}"], rows,
                ["made: every finished DialogueFactory.make, kept or dropped. _produce finishes up to concurrency-1",
                 "dialogues past the target at the end of a run (a whole batch completes in one event-loop pass),",
                 "so dialogues/s counts made, not kept. Rule-based roles never wait on I/O: asyncio concurrency cannot",
                 "overlap work in one process; scale out with workers=W (a process or Slurm array task each)."])
    return {f"dlg_per_s@{c}": r for c, r in rates.items()}


# ---- main ---------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, repetitions and dialogues")
    opts = parser.parse_args()
    n_calls, n_dialogues, reps, held = (1000, 60, 20, 20) if opts.quick else (5000, 200, 50, 20)

    cfg = compose_cfg(["domain=retail", "pipeline=user_oriented", "roles=rule", f"seed={SEED}"])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="toolturn-bench-") as tmp:
        work = Path(tmp)
        domain = prepare_domain(cfg.domain, work / "run", SEED)
        print(f"toolturn SQL environment benchmark ({'quick' if opts.quick else 'full'}), "
              f"SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
        try:
            figures = bench_tool_calls(domain, n_calls)
            figures |= bench_isolation(domain.db_path, work, reps, held)
            figures |= bench_throughput(domain, cfg, work, n_dialogues, (1, 8, 64))
        finally:
            domain.env.close()
    print(f"\ntotal benchmark time {time.perf_counter() - started:.1f} s")
    print(" ".join(f"{k}={v:.{DECIMALS.get(k, 1)}f}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
