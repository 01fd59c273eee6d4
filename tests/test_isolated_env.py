"""Isolated venvs (core/isolated_env.py): built once from a spec, reused, rebuilt when the spec changes,
started over after a killed build, and a failing install is one line that leaves nothing behind.
Offline: the spec installs a wheel the test writes, with --no-deps."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from toolturn.core import isolated_env
from toolturn.core.errors import ToolturnError


def write_wheel(folder: Path, name: str, version: str, source: str) -> Path:
    """A minimal pure-Python wheel (PEP 427) holding one module."""
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}.py": source.encode(),
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
              f"{len(data)}" for path, data in files.items()] + [f"{dist}/RECORD,,"]
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, data in files.items():
            z.writestr(p, data)
    return path


@pytest.fixture
def specs(tmp_path, monkeypatch):
    folder = tmp_path / "specs"
    folder.mkdir()
    monkeypatch.setattr(isolated_env, "SPECS", folder)
    monkeypatch.setenv("TOOLTURN_CACHE", str(tmp_path / "cache"))
    return folder


def test_builds_once_reuses_and_rebuilds_on_a_new_spec(specs, tmp_path):
    wheel = write_wheel(tmp_path, "probe_pkg", "1.0", "VALUE = 'one'\n")
    (specs / "probe.txt").write_text(f"# a comment\n--no-deps {wheel}\n")
    python = isolated_env.ensure_env("probe")
    out = subprocess.run([str(python), "-I", "-c", "import probe_pkg, sys; print(probe_pkg.VALUE, sys.prefix)"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "one" and Path(out[1]) == isolated_env.env_dir("probe")
    ready = isolated_env.env_dir("probe") / isolated_env.READY
    stamp = ready.stat().st_mtime_ns
    assert isolated_env.ensure_env("probe") == python and ready.stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert isolated_env.site_packages("probe").joinpath("probe_pkg.py").exists()

    wheel2 = write_wheel(tmp_path, "probe_pkg", "2.0", "VALUE = 'two'\n")
    (specs / "probe.txt").write_text(f"--no-deps {wheel2}\n")
    python2 = isolated_env.ensure_env("probe")
    assert python2 != python  # the spec's digest names the dir
    out = subprocess.run([str(python2), "-I", "-c", "import probe_pkg; print(probe_pkg.VALUE)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "two"


def test_a_build_killed_before_its_marker_is_started_over(specs, tmp_path):
    wheel = write_wheel(tmp_path, "probe_pkg", "1.0", "VALUE = 1\n")
    (specs / "probe.txt").write_text(f"--no-deps {wheel}\n")
    half = isolated_env.env_dir("probe")
    half.mkdir(parents=True)
    (half / "junk").write_text("left by a killed build")
    python = isolated_env.ensure_env("probe")
    assert not (half / "junk").exists() and (half / isolated_env.READY).exists() and python.exists()


def test_a_failing_install_is_one_line_and_leaves_nothing(specs, tmp_path):
    (specs / "broken.txt").write_text(f"--no-deps {tmp_path / 'no-such-1.0-py3-none-any.whl'}\n")
    with pytest.raises(ToolturnError, match=r"pip install .* failed; see .*broken-.*\.log") as err:
        isolated_env.ensure_env("broken")
    assert "\n" not in str(err.value)
    assert not isolated_env.env_dir("broken").exists()


def test_unknown_environment_names_the_known_ones(specs):
    (specs / "probe.txt").write_text("")
    with pytest.raises(ToolturnError, match=r"unknown isolated environment 'nope'; known: \['probe'\]"):
        isolated_env.ensure_env("nope")


def test_shipped_specs_pin_every_package():
    """Each shipped spec is a lock: every requirement is name==version, so two machines build the same venv."""
    for spec in sorted(Path(isolated_env.__file__).parent.joinpath("envs").glob("*.txt")):
        with_deps, no_deps = isolated_env._requirements(spec.stem)
        assert with_deps or no_deps, spec
        for req in with_deps + no_deps:
            assert "==" in req and " " not in req, f"{spec.name}: {req!r} is not pinned"


def test_cli_builds_and_prints_the_python(specs, tmp_path):
    wheel = write_wheel(tmp_path, "probe_pkg", "1.0", "VALUE = 1\n")
    (specs / "probe.txt").write_text(f"--no-deps {wheel}\n")
    isolated_env.main(["probe"])  # in-process: SPECS is patched
    assert (isolated_env.env_dir("probe") / isolated_env.READY).exists()
    proc = subprocess.run([sys.executable, "-m", "toolturn.core.isolated_env", "nope"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: unknown isolated environment 'nope'")
    assert "Traceback" not in proc.stderr
