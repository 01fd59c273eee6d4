"""LLM task generator: declarative goals with a rubric, grounded in the schema and a limited data view.

Follow-up tasks see the goals that came before, so they can extend earlier results (the paper's
high-density chaining). There is no gold plan: such tasks are judged by the LLM judge, and the user
simulator's guard checks the rubric's expected tool-use patterns against the tool calls made.
"""

from __future__ import annotations

import json
import random

from toolturn.core.prompts import load as load_prompt
from toolturn.core.role_model import RoleModel
from toolturn.core.sqlschema import Schema, quote_ident
from toolturn.core.tasks.types import Task

DIFFICULTY_HINTS = {"easy": "one lookup", "medium": "two or three dependent steps: a later step needs a value an "
                    "earlier one returns", "hard": "four or more steps including at least one change to a record"}
ROWS_PER_TABLE = 3
RESERVOIR = 64  # rows per table kept for data views


def sample_rows(conn, schema: Schema, rng: random.Random, per_table: int = RESERVOIR) -> dict[str, list[dict]]:
    """Up to `per_table` rows of each table, read once (LLM tasks are grounded in the initial state)."""
    out = {}
    for name, table in sorted(schema.tables.items()):
        if not table.row_count:
            continue
        offset = rng.randrange(max(1, table.row_count - per_table + 1))
        cur = conn.execute(f"SELECT {table.select_list} FROM {quote_ident(name)} LIMIT ? OFFSET ?", (per_table, offset))
        names = [d[0] for d in cur.description]
        out[table.slug] = [dict(zip(names, row)) for row in cur.fetchall()]
    return out


def row_texts(rows_by_table: dict[str, list[dict]]) -> dict[str, list[str]]:
    """Each row as its JSON text, encoded once for the data views drawn from it."""
    return {slug: [json.dumps(row, ensure_ascii=False, default=str) for row in items]
            for slug, items in rows_by_table.items()}


def data_view(texts_by_table: dict[str, list[str]], rng: random.Random, rows: int = ROWS_PER_TABLE) -> str:
    """A few sampled rows per table (`row_texts`): enough to ground goals, far from the whole database. Each
    table's sample is written as json.dumps writes the list of its rows (items joined by ", ")."""
    return "\n".join(f"{slug}: [{', '.join(rng.sample(items, min(rows, len(items))))}]"
                     for slug, items in texts_by_table.items())


def tool_lines(tools: list[dict]) -> str:
    return "\n".join(f"- {t['function']['name']}: {t['function']['description']}" for t in tools)


class LLMTaskGenerator:
    def __init__(self, domain, schema_sql: str, weights: dict[str, float], seed: int = 0):
        self.domain, self.schema_sql = domain, schema_sql
        self.difficulties = [d for d in ("easy", "medium", "hard") if weights.get(d, 0) > 0]
        self.weights = [float(weights[d]) for d in self.difficulties]
        self.rows: dict[str, list[str]] | None = None  # row_texts: every dialogue's data view samples them
        if domain.env is not None:
            sandbox = domain.env.open_sandbox()
            self.rows = row_texts(sample_rows(sandbox.conn, domain.schema, random.Random(seed)))
            sandbox.close()

    async def generate(self, model: RoleModel, rng: random.Random, task_id: str, tool_text: str,
                       previous: list[Task]) -> Task:
        """One task; `tool_text`: the tools it may use, as `tool_lines` writes them."""
        difficulty = rng.choices(self.difficulties, weights=self.weights)[0]
        earlier = ""
        if previous:
            earlier = ("The customer already pursued these goals earlier in the same conversation; write a "
                       "follow-up that extends their results or a related new objective:\n"
                       + "\n".join(f"- {t.goal}" for t in previous) + "\n")
        view = data_view(self.rows, rng) if self.rows is not None else \
            "(no database: the tools' results are simulated; invent plausible identifiers)"
        prompt = load_prompt("task_generator").format(
            description=self.domain.description, schema=self.schema_sql or "(tools only)",
            data_view=view, tools=tool_text, previous=earlier,
            difficulty=difficulty, difficulty_hint=DIFFICULTY_HINTS[difficulty])
        obj = await model.json([{"role": "user", "content": prompt}],
                               required={"goal": str, "known_facts": dict, "rubric": dict})
        rubric = {k: [str(x) for x in obj["rubric"].get(k, []) if x] if isinstance(obj["rubric"].get(k), list) else []
                  for k in ("success_criteria", "tool_patterns", "checkpoints")}
        facts = {str(k): v for k, v in obj["known_facts"].items() if isinstance(v, (str, int, float, bool))}
        return Task(id=task_id, domain=self.domain.name, difficulty=difficulty, template="llm", goal=obj["goal"],
                    steps=[], subtasks=[], facts=facts, rubric_spec=rubric)
