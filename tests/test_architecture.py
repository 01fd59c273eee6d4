"""The import rules of docs/architecture.md §2, checked on the source tree."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"core": "toolturn.core", "generate": "toolturn.generate", "train": "toolturn.train",
            "evaluate": "toolturn.evaluate", "experiment": "toolturn.experiment"}


def imports(folder: str) -> list[tuple[Path, str]]:
    """(file, imported module) for every absolute and relative import in a top-level folder."""
    out = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        package = PACKAGES[folder] + "." + ".".join(path.relative_to(ROOT / folder).with_suffix("").parts[:-1])
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                out += [(path, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.rstrip(".").split(".")
                    base = base[:len(base) - node.level + 1]
                    out.append((path, ".".join(base + ([node.module] if node.module else []))))
                else:
                    out.append((path, node.module or ""))
    return out


@pytest.mark.parametrize("folder", sorted(PACKAGES))
def test_stages_import_core_never_each_other(folder):
    foreign = [f"{path.relative_to(ROOT)} imports {module}" for path, module in imports(folder)
               if module.startswith("toolturn.") and module.split(".")[1] in PACKAGES
               and module.split(".")[1] not in (folder, "core")]
    assert not foreign


def test_the_scan_sees_a_foreign_import(tmp_path, monkeypatch):
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "bad.py").write_text("from toolturn.generate.run import main\nfrom ..generate import x\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert [m for _, m in imports("core")] == ["toolturn.generate.run", "toolturn.generate"]


def test_run_dir_readers_load_nothing_heavy():
    probe = ("import sys\n"
             "import toolturn.generate.audit, toolturn.generate.stats, toolturn.generate.export, toolturn.train.data\n"
             "heavy = ('torch', 'transformers', 'datasets', 'toolturn.core.llm', 'toolturn.core.servers',\n"
             "         'toolturn.core.roles', 'toolturn.core.endpoints', 'toolturn.generate.dialogue')\n"
             "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


ISOLATED = ("tau2", "bfcl_eval")  # the official benchmark packages, which live in venvs of their own (§10)


@pytest.mark.parametrize("folder", sorted(PACKAGES))
def test_benchmark_packages_are_imported_only_by_workers(folder):
    leaks = [f"{path.relative_to(ROOT)} imports {module}" for path, module in imports(folder)
             if module.split(".")[0] in ISOLATED and "workers" not in path.relative_to(ROOT).parts]
    assert not leaks


def test_workers_import_nothing_of_ours():
    """A worker runs under another venv's python, where toolturn is not installed."""
    ours = [f"{path.relative_to(ROOT)} imports {module}" for path, module in imports("evaluate")
            if "workers" in path.relative_to(ROOT).parts and module.startswith(("toolturn", "evaluate"))]
    assert not ours


CONCERNS = {"__init__.py", "policy.py", "schema.py", "data.py", "actions.py", "tasks.py", "phrasing.py"}


def test_a_builtin_domain_is_a_registered_folder_of_concerns():
    """docs/architecture.md §3: one folder per built-in domain, one file per concern, each registered."""
    from toolturn.core.domains.registry import REGISTRY
    folders = sorted(p.name for p in (ROOT / "core" / "domains").iterdir()
                     if p.is_dir() and (p / "__init__.py").is_file())
    assert folders == sorted(REGISTRY.names())
    for name in folders:
        assert {p.name for p in (ROOT / "core" / "domains" / name).glob("*.py")} == CONCERNS, name
        assert REGISTRY.domain(name).name == name


def test_the_tau2_converter_loads_only_for_tau2_domains():
    probe = ("import sys\n"
             "import toolturn.core.domains, toolturn.core.tasks.sources, toolturn.generate.domain_setup\n"
             "print('toolturn.core.domains.tau2_db' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
