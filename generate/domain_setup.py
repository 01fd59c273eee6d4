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

from toolturn.core.errors import ToolturnError
from toolturn.core.sqlenv import SqlTool
from toolturn.core.sqlschema import slugify
from toolturn.generate.domains import GENERIC_POLICY, Domain, prepare_domain
from toolturn.generate.endpoints import Endpoints, sampling
from toolturn.generate.llm_tasks import data_view, sample_rows
from toolturn.generate.roles.llm_roles import Meter, RoleModel
from toolturn.generate.synthesis import predict_return_schemas, synthesize_schema, synthesize_toolset, write_sql_tools


def _cached(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _save(path: Path, value) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1, ensure_ascii=False))
    tmp.replace(path)


async def setup_domain(cfg, run_dir: Path, endpoints: Endpoints | None) -> Domain:
    kind, seed = cfg.domain.kind, int(cfg.seed)
    rejections: Counter = Counter()

    def writer() -> RoleModel:
        if endpoints is None or "task_generator" not in endpoints.needed_roles:
            raise ToolturnError(f"domain={kind} / llm_sql_tools need an LLM task generator (roles.task_generator.kind=llm)")
        return RoleModel("synthesis", endpoints.client(endpoints.role_endpoint("task_generator")),
                         sampling(cfg.roles.task_generator), Meter())

    if kind == "synthetic":
        name = slugify(cfg.domain.name) or "domain"
        out = run_dir / "domains" / name
        out.mkdir(parents=True, exist_ok=True)
        toolset = _cached(out / "toolset.json")
        if toolset is None:
            seed_tools = json.loads(Path(cfg.domain.seed_tools).read_text()) if cfg.domain.get("seed_tools") else []
            toolset, questions = await synthesize_toolset(writer(), cfg.domain.name, seed_tools,
                                                          int(cfg.domain.questions),
                                                          int(cfg.domain.max_questions_for_tools), rejections)
            _save(out / "questions.json", questions)
            _save(out / "toolset.json", toolset)
        domain = Domain(name=name, description=cfg.domain.get("description") or f"a {cfg.domain.name} service",
                        policy=GENERIC_POLICY, toolset=toolset)
    elif kind == "synthetic_sql":
        name = slugify(cfg.domain.name) or "domain"
        source = run_dir / "domains" / name / "source.sqlite"
        if not source.exists():
            source.parent.mkdir(parents=True, exist_ok=True)
            await synthesize_schema(writer(), cfg.domain.name, source, rejections)
        domain = prepare_domain(OmegaConf.create({"kind": "sqlite", "path": str(source), "name": name,
                                                  "description": cfg.domain.get("description")
                                                  or f"a {cfg.domain.name} service"}), run_dir, seed)
    else:
        domain = prepare_domain(cfg.domain, run_dir, seed)
    out = run_dir / "domains" / domain.name

    n_sql = int(cfg.tools.get("llm_sql_tools", 0) or 0)
    if n_sql and domain.env is not None:
        extra = _cached(out / "llm_tools.json")
        if extra is None:
            sandbox = domain.env.open_sandbox()
            view = data_view(sample_rows(sandbox.conn, domain.schema, random.Random(seed)), random.Random(seed))
            sandbox.close()
            admitted = await write_sql_tools(writer(), domain, domain.schema_sql, view, n_sql, rejections)
            extra = [t.to_dict() for t in admitted]
            _save(out / "llm_tools.json", extra)
        domain.add_tools([SqlTool.from_dict(t) for t in extra])
        (out / "tools.json").write_text(json.dumps([t.to_dict() for t in domain.tools], indent=1, ensure_ascii=False))

    if cfg.tools.mode == "simulated":
        schemas = _cached(out / "return_schemas.json")
        if schemas is None:
            model = RoleModel("return_schema", endpoints.client(endpoints.role_endpoint("tool_simulator")),
                              sampling(cfg.roles.tool_simulator), Meter())
            schemas = await predict_return_schemas(model, domain.toolset, rejections)
            _save(out / "return_schemas.json", schemas)
        domain.return_schemas = schemas

    if rejections:
        previous = Counter(_cached(out / "synthesis.json") or {})
        _save(out / "synthesis.json", dict(previous + rejections))
    return domain
