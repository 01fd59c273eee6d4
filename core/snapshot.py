"""What a sweep runs, frozen when it is submitted.

A Slurm job starts minutes or days after its submission, and Hydra composes each job's config inside the job: code
or configs edited meanwhile would leak into a running sweep. So a submission copies the `toolturn` package as this
process imports it (code, configs, prompts: every file under each top-level package's directory) into a
snapshot dir and puts it first on the jobs' PYTHONPATH; every job, and every process a job starts, imports that
copy. The Python environment itself (torch, transformers, ...) is not copied: keep the venv of a sweep unchanged
while it runs.

    toolturn-run ... launcher=slurm            OUT/.slurm/code-<time>/
    <app> -m hydra/launcher=slurm_cpu ...      <sweep dir>/.code/      (the Snapshot callback of every app)
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

PACKAGES = ("core", "conf", "generate", "train", "evaluate", "experiment")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(name)
    return Path(list(spec.submodule_search_locations)[0])


def take(dest: Path) -> Path:
    """Copy the imported `toolturn` package into dest/toolturn; returns dest, the dir to put on PYTHONPATH.
    Written to a temporary dir and renamed, so that a snapshot that exists is whole."""
    if (dest / "toolturn").is_dir():
        return dest
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    root = tmp / "toolturn"
    root.mkdir(parents=True)
    shutil.copy2(package_dir("toolturn") / "__init__.py", root / "__init__.py")
    for name in PACKAGES:
        shutil.copytree(package_dir(f"toolturn.{name}"), root / name, ignore=IGNORE)
    taken = {"commit": code_version(), "source": str(package_dir("toolturn.core").parent),
             "taken": time.strftime("%Y-%m-%d %H:%M:%S")}
    (tmp / "SNAPSHOT.json").write_text(json.dumps(taken) + "\n")
    tmp.rename(dest)
    return dest


def code_version() -> str:
    """The git commit of the code running (marked when the checkout has uncommitted changes); in a snapshot, the
    commit it was taken at; else "unknown"."""
    here = package_dir("toolturn.core").parent
    taken = here.parent / "SNAPSHOT.json" if here.name == "toolturn" else None
    if taken is not None and taken.exists():
        return json.loads(taken.read_text())["commit"]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=here,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=here, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("+uncommitted" if dirty else "")) if sha else "unknown"


def python_path(snapshot: Path) -> str:
    """PYTHONPATH with the snapshot first (ahead of the installed package)."""
    return os.pathsep.join([str(snapshot), *filter(None, [os.environ.get("PYTHONPATH")])])


def _submitit(config: DictConfig) -> bool:
    return "submitit" in str(OmegaConf.select(config, "hydra.launcher._target_", default=""))


class Snapshot(Callback):
    """Hydra callback: a multirun through a submitit launcher runs a snapshot of the code taken at submission."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _submitit(config):
            return
        dest = take(Path(config.hydra.sweep.dir).resolve() / ".code")
        # the jobs inherit this process's environment (sbatch --export=ALL, Slurm's default; submitit_local)
        os.environ["PYTHONPATH"] = python_path(dest)
        print(f"sweep code snapshot: {dest} (the jobs import toolturn from it)", flush=True)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _submitit(config):  # in the job's log: which code it runs
            print(f"toolturn code: {package_dir('toolturn')}", flush=True)
