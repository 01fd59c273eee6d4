"""The user's layout installs under one namespace (toolturn.*) and works outside the checkout."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import importlib.util, sys
import toolturn.generate, toolturn.core, toolturn.train, toolturn.evaluate, toolturn.conf
assert toolturn.generate.__file__.startswith(sys.argv[1]), toolturn.generate.__file__
spec = importlib.util.find_spec("evaluate")  # Hugging Face's package must not be shadowed by ours
assert spec is None or "toolturn" not in (spec.origin or ""), spec
from hydra import compose, initialize_config_module
with initialize_config_module("toolturn.conf", version_base="1.3"):
    cfg = compose("generate", overrides=["pipeline=task_oriented", "domain=airline"])
assert cfg.pipeline.name == "task_oriented"
from toolturn.generate.run import generate
cfg.out_dir = sys.argv[2]; cfg.num_dialogues = 3; cfg.progress = False
generate(cfg)
print("ok")
"""


@pytest.mark.slow
def test_wheel_installs_and_runs_from_any_directory(tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist),
                            str(ROOT)], check=True, capture_output=True, text=True, timeout=300)
    # setuptools' warnings (deprecations, undeclared packages); distutils' "byte-compiling is disabled" (when
    # PYTHONDONTWRITEBYTECODE is set) is about this environment, not the project
    warnings = [line for line in (build.stdout + build.stderr).splitlines()
                if "warning" in line.lower() and "byte-compiling is disabled" not in line]
    assert not warnings, warnings
    wheel = next(dist.glob("toolturn-*.whl"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    assert (target / "toolturn" / "conf" / "pipeline" / "user_oriented.yaml").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run([sys.executable, "-c", PROBE, str(target), str(tmp_path / "run")], cwd=elsewhere,
                          capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(target), "PATH": ""})
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_editable_install_imports_from_the_checkout():
    proc = subprocess.run([sys.executable, "-c", "import toolturn.generate as g; print(g.__file__)"],
                          cwd="/", capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == str(ROOT / "generate" / "__init__.py")


def test_every_folder_that_ships_files_is_a_declared_package():
    """A folder missing from `packages` would install as deprecated data (a setuptools warning) or not at all."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    roots = {ROOT / path: package for package, path in setuptools["package-dir"].items()}
    shipped = set()
    for root, package in roots.items():
        for folder in [root, *(d for d in root.rglob("*") if d.is_dir())]:
            if folder.name == "__pycache__" or (folder != root and folder in roots):
                continue
            if any(f.suffix in (".py", ".yaml", ".md") for f in folder.iterdir() if f.is_file()):
                shipped.add(".".join([package, *folder.relative_to(root).parts]))
    assert shipped - set(setuptools["packages"]) == set()
