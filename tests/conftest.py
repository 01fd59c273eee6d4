from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

sys.path.insert(0, str(Path(__file__).parent))
from quirky_db import build_classic_sample_db, build_quirky_db  # noqa: E402

BIN = Path(sys.executable).parent

# `make test` runs two xdist workers on the two cores of a CI machine, so each test has about one core. A torch
# process with two threads on a core that another worker keeps busy waits on its own threads: the SmolLM2 LoRA
# train-and-serve test took 209 s that way and 149 s with one thread, beside a process that spins on the other
# core. Set before torch is imported here or in any process a test starts (they inherit it); a value already
# in the environment wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def make_cfg(*overrides: str):
    """The generation config; logger=none unless an override says otherwise (W&B start-up is not free)."""
    with initialize_config_module("toolturn.conf", version_base="1.3"):
        return compose("generate", overrides=["progress=false", "logger=none", *overrides])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli(name: str, *args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    exe = BIN / name if (BIN / name).exists() else shutil.which(name)
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kw)


@pytest.fixture(scope="session")
def sample_dbs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("dbs")
    build_quirky_db(d / "quirky.sqlite")
    build_classic_sample_db(d / "classic.sqlite")
    return {"quirky": d / "quirky.sqlite", "classic": d / "classic.sqlite"}


@pytest.fixture(scope="session")
def retail(tmp_path_factory):
    from toolturn.core.domains import prepare_domain
    run = tmp_path_factory.mktemp("retail")
    return prepare_domain(make_cfg("domain=retail").domain, run, seed=0)
