"""Episodes x samples x checkpoints: concurrency, per-sample seeds, infrastructure retries, resume.

Every (checkpoint, task, sample) is one row of `samples.jsonl`, appended as soon as it ends. A sample
whose endpoint failed (after the client's own retries) is tried `infra_retries` more times, then
written as an infrastructure error: counted per task, never scored. Re-running the same command
resumes: keys with a scored row are kept, infrastructure errors are tried again, and the latest row of
a key is the one that counts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

from toolturn.core.endpoints import EndpointConfig
from toolturn.core.files import Appender, read_jsonl
from toolturn.evaluate.assistants import InfraError, derive_seed

SAMPLE_KEYS = ("checkpoint", "task_id", "sample")
DO_NOTHING = "do_nothing"  # the checkpoint that always runs: its score is the floor


@dataclass(frozen=True)
class Checkpoint:
    name: str  # the label in every output
    kind: str  # model | oracle | do_nothing (DO_NOTHING)
    endpoint: EndpointConfig | None = None  # model: the endpoint that serves it (server, model, lora, ...)
    identity: dict = field(default_factory=dict)  # which model the label means (checkpoints.identity)
    trained_tools: int | None = None  # tools per dialogue in its training data, from its lineage file if any


def sample_seed(seed: int, task_id: str, sample: int) -> int:
    """The seed of sample `sample` of a task: distinct per sample, the same for every checkpoint."""
    return derive_seed(seed, task_id, sample)


def latest_rows(path: Path) -> dict[tuple, dict]:
    rows: dict[tuple, dict] = {}
    if path.exists():
        for row in read_jsonl(path, SAMPLE_KEYS, "sample row"):
            rows[tuple(row[k] for k in SAMPLE_KEYS)] = row
    return rows


async def run_checkpoint(suite, checkpoint: Checkpoint, make_assistant: Callable[[object, int], object], n: int, seed: int,
                         concurrency: int, infra_retries: int, out: Appender, done: set[tuple],
                         progress: Callable[[dict], None] | None = None) -> int:
    """Run the samples of `checkpoint` not yet in `done`; returns how many rows were written."""
    gate = asyncio.Semaphore(concurrency)

    async def one(item, k: int) -> None:
        s = sample_seed(seed, item.id, k)
        row: dict = {"checkpoint": checkpoint.name, "task_id": item.id, "sample": k, "seed": s}
        async with gate:
            for attempt in range(infra_retries + 1):
                assistant = make_assistant(item, s)
                try:
                    row.update(await suite.episode(item, assistant), infra_error=None)
                    row.update(events=dict(getattr(assistant, "events", {})),
                               prompt_tokens=getattr(assistant, "prompt_tokens", 0),
                               completion_tokens=getattr(assistant, "completion_tokens", 0))
                    break
                except InfraError as exc:
                    row.update(reward=None, infra_error=exc.reason, infra_detail=str(exc)[:500],
                               attempts=attempt + 1)
        out.write(row)
        if progress:
            progress(row)

    jobs: list[Awaitable] = [one(item, k) for item in suite.items for k in range(n)
                             if (checkpoint.name, item.id, k) not in done]
    await asyncio.gather(*jobs)
    return len(jobs)
