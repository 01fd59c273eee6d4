"""The generation stage's W&B run (`logger=wandb`, offline under `<run>/wandb`; `logger=none`: nothing).

It is opened once the run dir is complete, by the process that exports it (under the export lock; with
`workers>1`, the worker that completes the run), and logs the whole run: stats.json's numbers as summary,
plots/ as images, a few dialogues as a table, and the dataset as an output artifact named by its content
(`core/lineage.py`), the artifact training declares as its input. The run id is kept in `<run>/wandb_run_id`,
so a re-run of a complete run dir (or a late worker) logs it again into the same W&B run (offline: into a dir
that replaces the earlier one).
"""

from __future__ import annotations

import heapq
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from toolturn.core.lineage import dataset_manifest
from toolturn.core.rundir import RunDir
from toolturn.core.wandb_run import open_run

TABLE_KEY = "sample_dialogues"  # not "dialogues": that is a summary number of stats.json
TABLE_DIALOGUES = 5  # the first dialogues of the run, by index
TABLE_COLUMNS = ["id", "domain", "pipeline", "tasks", "turns", "steps", "tool_calls", "judgment", "messages"]


def stats_numbers(stats: dict, prefix: str = "") -> dict[str, float]:
    """stats.json's numbers, nested keys joined by '/' (`turns/mean`); lists, strings and nulls are left out."""
    out: dict[str, float] = {}
    for key, value in stats.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(stats_numbers(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = value
    return out


def dialogue_row(record: dict) -> list:
    meta, counts = record["meta"], record["meta"]["counts"]
    return [record["id"], meta["domain"], meta["pipeline"], counts["tasks"], counts["turns"], counts["steps"],
            counts["tool_calls"], meta["judge"]["judgment"], json.dumps(record["messages"], ensure_ascii=False)]


def log_generation(cfg: DictConfig, run: RunDir, stats: dict) -> Path | None:
    """Log a complete, exported run; returns the W&B run's dir (None with logger=none)."""
    tracker = open_run(cfg.logger, run.root, f"generate-{cfg.pipeline.name}-{cfg.domain.name}-s{cfg.seed}",
                       OmegaConf.to_container(cfg, resolve=True), job_type="generate", run_id_file=run.wandb_run_id)
    try:
        tracker.summary(stats_numbers(stats))
        for plot in sorted(run.plots.glob("*.png")):
            tracker.image(f"plots/{plot.stem}", plot)
        first = heapq.nsmallest(TABLE_DIALOGUES, run.iter_records(), key=lambda r: r["meta"]["index"])
        tracker.table(TABLE_KEY, TABLE_COLUMNS, [dialogue_row(r) for r in first])
        tracker.artifact("dataset", dataset_manifest(run.root),
                         {"run_dir": str(run.root), "dialogues": stats["dialogues"], "pipeline": stats["pipeline"],
                          "domain": stats["domain"], "tool_mode": stats["tool_mode"], "seed": int(cfg.seed)},
                         use=False)
    finally:
        tracker.finish()
    return tracker.run_dir
