"""Set up the run's domain, including the parts an LLM writes (once per run, reused on resume).

- `domain=builtin|sqlite`: schema-derived tools (`domains.prepare_domain`).
- `domain=synthetic_sql`: an LLM-written schema with seed rows becomes a SQLite domain, then as above.
- `domain=synthetic`: an LLM-synthesized toolset only (questions -> tools -> expansion); tools=simulated.
- `tools.llm_sql_tools=N`: N LLM-written SQL tools are validated and added to an executed domain.
- `tools=simulated`: one return JSON Schema per tool is predicted.
Rejections are counted by reason in `domains/<name>/synthesis.json`, which `stats.json` includes.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from omegaconf import OmegaConf
from toolturn.core.domains import GENERIC_POLICY, Domain, prepare_domain
from toolturn.core.endpoints import Endpoints, sampling
from toolturn.core.errors import ToolturnError
from toolturn.core.files import atomic_write_json
from toolturn.core.role_model import Meter, RoleModel
from toolturn.core.rundir import RunDir
from toolturn.core.sqlenv import SqlTool
from toolturn.core.sqlschema import slugify
from toolturn.core.tasks.llm_goals import data_view, row_texts, sample_rows
from toolturn.generate.config import llm_roles
from toolturn.generate.synthesis import predict_return_schemas, synthesize_schema, synthesize_toolset, write_sql_tools


def _cached(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


async def setup_domain(cfg, run: RunDir, endpoints: Endpoints | None) -> Domain:
    kind, seed = cfg.domain.kind, int(cfg.seed)
    rejections: Counter = Counter()

    roles = llm_roles(cfg)

    def writer() -> RoleModel:
        if endpoints is None or "task_generator" not in roles:
            raise ToolturnError(f"domain={kind} / llm_sql_tools need an LLM task generator (roles.task_generator.kind=llm)")
        return RoleModel("synthesis", endpoints.client(roles["task_generator"].endpoint),
                         sampling(roles["task_generator"]), Meter())

    if kind == "synthetic":
        name = slugify(cfg.domain.name) or "domain"
        out = run.domain(name)
        out.mkdir(parents=True, exist_ok=True)
        toolset = _cached(out / "toolset.json")
        if toolset is None:
            seed_tools = json.loads(Path(cfg.domain.seed_tools).read_text()) if cfg.domain.get("seed_tools") else []
            toolset, questions = await synthesize_toolset(writer(), cfg.domain.name, seed_tools,
                                                          int(cfg.domain.questions),
                                                          int(cfg.domain.max_questions_for_tools), rejections)
            atomic_write_json(out / "questions.json", questions)
            atomic_write_json(out / "toolset.json", toolset)
        domain = Domain(name=name, description=cfg.domain.get("description") or f"a {cfg.domain.name} service",
                        policy=GENERIC_POLICY, toolset=toolset)
    elif kind == "synthetic_sql":
        name = slugify(cfg.domain.name) or "domain"
        source = run.domain(name) / "source.sqlite"
        if not source.exists():
            source.parent.mkdir(parents=True, exist_ok=True)
            await synthesize_schema(writer(), cfg.domain.name, source, rejections)
        domain = prepare_domain(OmegaConf.create({"kind": "sqlite", "path": str(source), "name": name,
                                                  "description": cfg.domain.get("description")
                                                  or f"a {cfg.domain.name} service"}), run.root, seed)
    else:
        domain = prepare_domain(cfg.domain, run.root, seed)
    out = run.domain(domain.name)

    n_sql = int(cfg.tools.get("llm_sql_tools", 0) or 0)
    if n_sql and domain.env is not None:
        extra = _cached(out / "llm_tools.json")
        if extra is None:
            sandbox = domain.env.open_sandbox()
            rows = row_texts(sample_rows(sandbox.conn, domain.schema, random.Random(seed)))
            view = data_view(rows, random.Random(seed))
            sandbox.close()
            admitted = await write_sql_tools(writer(), domain, domain.schema_sql, view, n_sql, rejections)
            extra = [t.to_dict() for t in admitted]
            atomic_write_json(out / "llm_tools.json", extra)
        domain.add_tools([SqlTool.from_dict(t) for t in extra])
        atomic_write_json(out / "tools.json", [t.to_dict() for t in domain.tools])

    if cfg.tools.mode == "simulated":
        schemas = _cached(out / "return_schemas.json")
        if schemas is None:
            model = RoleModel("return_schema", endpoints.client(roles["tool_simulator"].endpoint),
                              sampling(roles["tool_simulator"]), Meter())
            schemas = await predict_return_schemas(model, domain.toolset, rejections)
            atomic_write_json(out / "return_schemas.json", schemas)
        domain.return_schemas = schemas

    if rejections:
        previous = Counter(_cached(out / "synthesis.json") or {})
        atomic_write_json(out / "synthesis.json", dict(previous + rejections))
    return domain
