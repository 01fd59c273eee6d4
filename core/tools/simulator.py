"""`tools=simulated`: an LLM plays the tool backend (the paper's task-oriented pipeline).

Outputs must conform to the tool's return JSON Schema, predicted once per toolset with the paper's
consistency rules (see `synthesis.predict_return_schemas`). Within a dialogue, entity values seen in
earlier outputs are fed back so ids and names stay consistent, and a randomized reference time is kept
unless the user states one. An output that fails the schema is repaired once, then becomes a tool
error (counted), never an exception.
"""

from __future__ import annotations

import datetime as dt
import json
import random

import jsonschema
from toolturn.core.errors import ToolCallError
from toolturn.core.llm import extract_json_value
from toolturn.core.prompts import load as load_prompt
from toolturn.core.role_model import RoleModel
from toolturn.core.sqlenv import MAX_RESULT_BYTES, ToolResult, check_parameters, encode_result, error_result
from toolturn.core.transcript import render_transcript

ENTITY_KEYS = ("id", "name", "email", "number", "code", "date")
MAX_ENTITIES = 40


def random_reference_time(rng: random.Random) -> str:
    start = dt.datetime(2024, 1, 1)
    return (start + dt.timedelta(minutes=rng.randrange(3 * 365 * 24 * 60))).strftime("%Y-%m-%d %H:%M")


class ToolSimulator:
    def __init__(self, model: RoleModel, tools: list[dict], return_schemas: dict[str, dict],
                 rng: random.Random, messages: list[dict], max_result_bytes: int = MAX_RESULT_BYTES):
        self.model = model
        self.max_result_bytes = max_result_bytes
        self.specs = {t["function"]["name"]: t["function"] for t in tools}
        self.schemas = return_schemas
        self.messages = messages  # the live dialogue, for context
        self.reference_time = random_reference_time(rng)
        self.entities: dict[str, object] = {}

    def _remember(self, value) -> None:
        items = value if isinstance(value, list) else [value]
        for item in items[:5]:
            if isinstance(item, dict):
                for k, v in item.items():
                    if isinstance(v, (str, int, float)) and any(key in k for key in ENTITY_KEYS):
                        self.entities[k] = v
        while len(self.entities) > MAX_ENTITIES:
            self.entities.pop(next(iter(self.entities)))

    async def call(self, name, arguments) -> ToolResult:
        if not isinstance(name, str):
            return error_result(f"the tool name must be a string, got {type(name).__name__}")
        spec = self.specs.get(name)
        if spec is None:
            return error_result(f"unknown tool '{name}'; available tools: {sorted(self.specs)}")
        try:
            check_parameters(name, spec.get("parameters") or {}, arguments)
        except ToolCallError as exc:
            return error_result(str(exc))
        schema = self.schemas.get(name) or {"type": ["object", "array"]}
        prompt = load_prompt("tool_simulator").format(
            tool_name=name, tool_spec=json.dumps(spec, ensure_ascii=False), return_schema=json.dumps(schema),
            reference_time=self.reference_time, entities=json.dumps(self.entities, ensure_ascii=False) or "{}",
            transcript=render_transcript(self.messages, 0)[-4000:], arguments=json.dumps(arguments, ensure_ascii=False))
        messages = [{"role": "user", "content": prompt}]
        for attempt in range(2):
            reply = await self.model.chat(messages)
            value = extract_json_value(reply.content)
            problem = _schema_problem(value, schema)
            if problem is None:
                try:
                    content = encode_result(value, self.max_result_bytes)
                except ToolCallError as exc:  # NaN, a lone surrogate, or too long: not worth a repair
                    return error_result(f"the tool backend returned an unusable result: {exc}")
                if not (isinstance(value, dict) and set(value) == {"error"}):
                    self._remember(value)
                    return ToolResult(content, ok=True, value=value)
                return ToolResult(content, ok=False, value=None)
            self.model.meter.events["tool_simulator_repair" if attempt == 0 else "tool_simulator_failed"] += 1
            messages = [*messages, {"role": "assistant", "content": reply.content},
                        {"role": "user", "content": f"That output is not usable: {problem}. Reply with only the "
                                                    f"JSON value, conforming to the schema."}]
        return error_result(f"the tool backend returned an invalid result: {problem}")


def _schema_problem(value, schema: dict) -> str | None:
    if value is None:
        return "no JSON value found"
    if isinstance(value, dict) and set(value) == {"error"} and isinstance(value["error"], str):
        return None
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        return f"schema violation at {'/'.join(map(str, exc.absolute_path)) or 'top level'}: {exc.message[:160]}"
    except jsonschema.SchemaError:
        return None  # a broken predicted schema is not the output's fault
    return None
