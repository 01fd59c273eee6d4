"""`toolturn-generate`: the generation stage (a Hydra app).

    toolturn-generate pipeline=user_oriented domain=retail roles=rule num_dialogues=50 seed=0 \
        concurrency=8 out_dir=runs/demo

Re-running the same command with the same out_dir resumes. `workers=W worker_index=I` makes this
process generate only indices i with i % W == I (one Slurm array task each); `processes=P` runs workers
I .. I+P-1 here, one child process each (`generate/processes.py`: one process drives dialogues from one core). The process that completes
the run dir exports it and logs it to W&B (`generate/tracking.py`; `logger=none` turns that off).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import sys
import threading
import time
import traceback
from collections import Counter, deque
from contextlib import contextmanager
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from toolturn.core.checks import plain_config
from toolturn.core.cli import precheck
from toolturn.core.endpoints import CACHE_DIR, Endpoints
from toolturn.core.errors import ToolturnError
from toolturn.core.files import WaitedLock, atomic_write, repair_tail
from toolturn.core.rundir import RunDir
from toolturn.generate.config import (
    ADDABLE_KEYS,
    IDENTITY_KEYS,
    endpoint_names,
    file_digests,
    identity_values,
    quota,
    validate,
)
from toolturn.generate.dialogue import DialogueFactory, Outcome
from toolturn.generate.domain_setup import setup_domain
from toolturn.generate.export import export_run
from toolturn.generate.prefix import load_prefixes
from toolturn.generate.processes import run_processes
from toolturn.generate.shards import ShardWriter
from toolturn.generate.stats import format_paraphrase
from toolturn.generate.tracking import log_generation
from tqdm import tqdm

log = logging.getLogger("toolturn.generate")

def _check_config(cfg: DictConfig, run: RunDir) -> None:
    """Refuse a resume whose settings or identity files differ from the run's config.yaml."""
    if not run.config.exists():
        return
    recorded = OmegaConf.to_container(OmegaConf.load(run.config), resolve=True)
    mine, theirs = identity_values(plain_config(cfg)), identity_values(recorded)
    diff = [k for k in IDENTITY_KEYS if theirs[k] != mine[k]]
    diff += [f"{k} content" for k, sha in file_digests(cfg).items() if (recorded.get("file_sha256") or {}).get(k) != sha]
    if diff:
        raise ToolturnError(f"{run.root} holds a run with a different {', '.join(diff)}; "
                            f"resume with the same settings or choose another out_dir")


def _write_config(cfg: DictConfig, run: RunDir) -> None:
    """config.yaml with the digests of the run's identity files; written once the domain and its policy are
    set up, so that a set-up that fails (a policy file naming an unknown table) binds nothing."""
    if not run.config.exists():
        written = {**OmegaConf.to_container(cfg, resolve=True), "file_sha256": file_digests(cfg)}
        atomic_write(run.config, OmegaConf.to_yaml(written))


class _Failures:
    """Dialogues that raised, by kind (exception type and the line that raised it). However often a kind
    recurs it is reported once, at the end, with its count; verbose mode adds its first traceback as it
    happens. Each one is a counted drop (`error:<type>`) in the shard log and stats.json."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.first: dict[str, str] = {}

    def add(self, index: int, exc: Exception) -> None:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
        kind = f"{type(exc).__name__}{where}"
        self.counts[kind] += 1
        if kind not in self.first:
            self.first[kind] = f"dialogue {index}: {str(exc)[:160]!r}"
            if log.isEnabledFor(logging.INFO):
                log.info("dialogue %d failed (%s); later failures of this kind are only counted", index, kind,
                         exc_info=exc)

    def report(self) -> None:
        for kind, n in self.counts.most_common():
            log.warning("%d dialogue(s) dropped by %s (first: %s)%s", n, kind, self.first[kind],
                        "" if log.isEnabledFor(logging.INFO) else "; verbose=true shows its traceback")


GC_YOUNG_THRESHOLD = 20_000  # allocations between young collections while dialogues run (CPython's default: 700)


@contextmanager
def _steady_gc():
    """While dialogues run, the cyclic garbage collector leaves alone what exists before them (modules, config, the
    domain and its tool schemas: frozen) and runs its young collections every GC_YOUNG_THRESHOLD allocations. With
    the defaults its collections took 5-8% of the loop's CPU at 256 dialogues in flight, walking live objects that
    are no garbage. Reference counting still frees everything as before; only garbage cycles wait a little longer."""
    threshold = gc.get_threshold()
    gc.collect()  # garbage of before (an earlier run's) is freed now, not pinned by the freeze until the run ends
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


async def _produce(factory: DialogueFactory, writer: ShardWriter, indices, target: int, concurrency: int,
                   bar: tqdm, max_drop_streak: int = 200) -> None:
    """Keep `concurrency` dialogues in flight; commit results in index order so that the records of a
    run are the first `target` valid indices whatever the timing, killed or not.

    A dialogue the endpoint rejected (`Outcome.provisional`: a 4xx that blames the request, an oversized
    reply) is logged only once a later index commits: if the run stops first (a streak of them, a fatal
    error, a signal), their indices stay open and the resume generates them again. An endpoint that
    rejects everything (a bad model setting) burns no dialogue index."""
    with _steady_gc():
        await _produce_all(factory, writer, indices, target, concurrency, bar, max_drop_streak)


async def _produce_all(factory: DialogueFactory, writer: ShardWriter, indices, target: int, concurrency: int,
                       bar: tqdm, max_drop_streak: int) -> None:
    pending: dict[int, asyncio.Task] = {}
    finished: dict[int, Outcome] = {}
    order: deque[int] = deque()
    held: list[Outcome] = []  # provisional drops not logged yet, in index order
    streak: Counter = Counter()  # reasons of the current run of consecutive drops
    failures = _Failures()
    # Each dialogue posts its outcome here. asyncio.wait over the pending tasks adds and removes a callback on
    # every one of them per finished dialogue: O(concurrency) each, 0.41 ms of CPU at 1,024 in flight (a queue:
    # under 1 us).
    outcomes: asyncio.Queue[Outcome | BaseException] = asyncio.Queue()

    async def one(i: int) -> None:
        try:
            out = await factory.make(i)
        except Exception as exc:  # a bug in one dialogue must not take the run down; it is counted
            failures.add(i, exc)
            out = Outcome(i, None, f"error:{type(exc).__name__}", str(exc)[:300])
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a signal's Interrupted raised in this task: the loop re-raises it
            out = exc
        outcomes.put_nowait(out)

    try:
        while writer.valid < target:
            while len(pending) < concurrency:
                i = next(indices)
                pending[i] = asyncio.create_task(one(i))
                order.append(i)
            done = [await outcomes.get()]
            while not outcomes.empty():
                done.append(outcomes.get_nowait())
            for out in done:
                if isinstance(out, BaseException):
                    raise out
                if out.fatal:
                    raise ToolturnError(f"{out.fatal}. The run stopped; finished dialogues are saved and re-running "
                                        f"the same command resumes")
                finished[out.index] = out
                del pending[out.index]
            while order and order[0] in finished and writer.valid < target:
                out = finished.pop(order.popleft())
                if out.provisional:
                    held.append(out)
                else:
                    for earlier in held:
                        writer.commit(earlier)
                    held.clear()
                    if writer.commit(out):
                        bar.update(1)
                        streak.clear()
                        continue
                bar.set_postfix_str(f"dropped {out.drop_reason}", refresh=False)
                streak[out.drop_reason] += 1
                if sum(streak.values()) >= max_drop_streak:
                    reason, n = streak.most_common(1)[0]
                    raise ToolturnError(f"{max_drop_streak} dialogues in a row were dropped (most often {reason}: "
                                        f"{n}; e.g. {out.detail[:160]!r}); check the model and config. The run "
                                        f"stopped; finished dialogues are saved and re-running resumes")
    finally:
        for task in pending.values():
            task.cancel()
        failures.report()


class Interrupted(BaseException):
    """SIGINT or SIGTERM: the run stopped cleanly (a BaseException, like KeyboardInterrupt, so that no
    `except Exception` of a dialogue swallows it)."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message)
        self.signum = signum


class _Signals:
    """SIGINT/SIGTERM while the event loop runs cancel its main task, so that the shard files are closed and
    the session logged by the normal `finally` blocks; at any other moment (or on a second signal) they
    raise `Interrupted` at once. Only the main thread can take signals."""

    def __init__(self):
        self.signum: int | None = None
        self.task: asyncio.Task | None = None
        self.previous: dict = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        first, self.signum = self.signum is None, signum
        if first and self.task is not None and not self.task.done():
            self.task.cancel()  # as asyncio.Runner does for SIGINT
            self.task.get_loop().call_soon_threadsafe(lambda: None)  # wake a loop blocked in select()
            return
        raise Interrupted(signum)


def generate(cfg: DictConfig) -> Path:
    validate(cfg)
    run = RunDir(Path(cfg.out_dir).expanduser().resolve())
    run.root.mkdir(parents=True, exist_ok=True)
    with _Signals() as signals, run.writer_lock(cfg.worker_index):
        try:
            with run.setup_lock():
                _check_config(cfg, run)
            prefixes = load_prefixes(cfg.prefix) if cfg.prefix else None
            names = endpoint_names(cfg)
            with Endpoints(cfg.llm.endpoints, names, run.logs, cache_dir=run.root / CACHE_DIR) as endpoints, \
                    run.setup_lock() as setup:
                asyncio.run(_generate(cfg, run, prefixes, endpoints, signals, setup))
            total, wandb_dir, stats = run.count_records(), None, {}
            if total >= cfg.num_dialogues:
                with run.export_lock():
                    stats = export_run(run)
                    wandb_dir = log_generation(cfg, run, stats)
        except (Interrupted, asyncio.CancelledError) as exc:
            if signals.signum is None:
                raise
            raise Interrupted(signals.signum, f"{run.count_records()} dialogues saved in {run.root}; re-run the "
                                              f"same command to resume") from exc
    if total >= cfg.num_dialogues:
        logged = f"; W&B run in {wandb_dir}" if wandb_dir else ""
        print(f"done: {total} dialogues in {run.root} (stats.json, dataset/, README.md){logged}")
        for line in format_paraphrase(stats.get("paraphrase") or {}):
            print(line)
    else:
        print(f"worker {cfg.worker_index} done; {total}/{cfg.num_dialogues} records so far in {run.root}")
    return run.root


async def _generate(cfg: DictConfig, run: RunDir, prefixes, endpoints: Endpoints, signals: _Signals,
                    setup: WaitedLock) -> None:
    signals.task = asyncio.current_task()
    try:
        domain = await setup_domain(cfg, run, endpoints)
        atomic_write(run.domain(domain.name) / "domain.json", json.dumps(
            {"name": domain.name, "description": domain.description, "tables": domain.env.tables if domain.env else [],
             "enforce_foreign_keys": domain.env.enforce_foreign_keys if domain.env else False}, indent=1))
        factory = DialogueFactory(domain, cfg, prefixes, endpoints)  # checks the policy file against the domain
        _write_config(cfg, run)
        setup.release()
        writer = ShardWriter(run, cfg.worker_index, int(cfg.shard_size))
        target = quota(cfg.num_dialogues, cfg.workers, cfg.worker_index)
        start_valid, started = writer.valid, time.time()
        indices = (i for i in range(cfg.worker_index, 10 ** 12, cfg.workers) if i not in writer.done)
        with tqdm(total=target, initial=writer.valid, unit="dlg", disable=not cfg.progress,
                  desc=f"{cfg.pipeline.name}/{domain.name}", dynamic_ncols=True) as bar:
            try:
                await _produce(factory, writer, indices, target, int(cfg.concurrency), bar, int(cfg.max_drop_streak))
            finally:
                writer.close()
                if domain.env is not None:
                    domain.env.close()
                if run.sessions.exists():
                    repair_tail(run.sessions)
                with open(run.sessions, "a") as f:
                    f.write(json.dumps({"worker": cfg.worker_index, "started": started,
                                        "wall_s": round(time.time() - started, 3),
                                        "produced": writer.valid - start_valid,
                                        "endpoints": endpoints.stats()}) + "\n")
    finally:
        signals.task = None
        await endpoints.aclose()


@hydra.main(version_base="1.3", config_path="pkg://toolturn.conf", config_name="generate")
def _hydra_main(cfg: DictConfig) -> None:
    logging.getLogger("toolturn").setLevel(logging.INFO if cfg.verbose else logging.WARNING)
    try:
        if cfg.processes > 1:
            validate(cfg)
            sys.exit(run_processes(cfg, list(HydraConfig.get().overrides.task)))
        generate(cfg)
    except ToolturnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as exc:
        print(f"interrupted: {exc}" if str(exc) else "interrupted", file=sys.stderr)
        sys.exit(128 + exc.signum)


def main() -> None:
    precheck(sys.argv[1:], "generate", validate, ADDABLE_KEYS)
    _hydra_main()


if __name__ == "__main__":
    main()
