"""A scripted LLM 'world' for the mock server: it plays every prompted role well enough for dialogues
to complete, so tests and benchmarks exercise the real LLM-role code paths without a model.

Roles are recognised from the prompts (the same prompt files the harness sends):
- task generator: returns a goal to look up one customer's email, with a rubric naming get_customer;
- user simulator: asks about the customer in its goal, then says thanks with is_task_complete=true;
- assistant (a request with tools): calls get_customer with the id in the last user message, then
  reports the email from the tool result;
- judge: valid. Anything else: a short text.
`faults` injects protocol failures per role, consumed in order (see tests/test_llm_pipeline.py).
`reasoning=True` makes the assistant a thinking model: each reply carries `reasoning_content` that holds
REASONING_MARK, so that a test can find where the reasoning went.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
from collections import defaultdict

from mock_openai import Fault, completion

DIGITS = re.compile(r"\b(\d+)\b")
REASONING_MARK = "private-chain-of-thought"


def role_of(request: dict) -> str:
    text = " ".join(str(m.get("content") or "") for m in request["messages"][:2])
    if request.get("tools"):
        return "assistant"
    if "role-playing a customer" in text:
        return "user"
    if "write realistic goals" in text:
        return "task_generator"
    if "review a conversation" in text:
        return "judge"
    if "simulate the backend" in text:
        return "tool_simulator"
    if "JSON Schema of its return value" in text:
        return "return_schema"
    for marker, role in (("planning a realistic tool-using assistant", "questions"),
                         ("Design the tools an assistant needs", "tool_generation"),
                         ("find what is missing", "tool_expansion"), ("You write SQL-backed tools", "sql_tools"),
                         ("Design a small but realistic SQLite database", "schema_synthesis")):
        if marker in text:
            return role
    return "other"


def tool(name: str, params: dict, required: list[str], description: str = "A tool.") -> dict:
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": params, "required": required}}}


GET_CUSTOMER = tool("get_customer", {"id": {"type": "integer", "description": "customer id"}}, ["id"],
                    "Get one customer by id.")


class World:
    def __init__(self, faults: dict[str, list] | None = None, customers: int = 150, reasoning: bool = False):
        self.faults = {role: list(items) for role, items in (faults or {}).items()}
        self.reasoning = reasoning
        self.ids = itertools.cycle(range(1, customers + 1))
        self.calls: dict[str, int] = defaultdict(int)

    def __call__(self, request: dict):
        role = role_of(request)
        self.calls[role] += 1
        if self.faults.get(role):
            fault = self.faults[role].pop(0)
            if fault is not None:
                return fault(request) if callable(fault) and not isinstance(fault, Fault) else fault
        return getattr(self, role)(request)

    def task_generator(self, request: dict) -> dict:
        cid = next(self.ids)
        return completion(json.dumps({
            "goal": f"You want to know the email address on customer account {cid}.",
            "known_facts": {"customer id": cid}, "difficulty": "easy",
            "rubric": {"success_criteria": ["the email is stated"], "tool_patterns": [f"get_customer(id={cid})"],
                       "checkpoints": ["the customer record was retrieved"]}}))

    def user(self, request: dict) -> dict:
        goal_id = DIGITS.search(request["messages"][0]["content"].split("Facts you know")[0]).group(1)
        view = request["messages"][1:]
        own = [m for m in view if m["role"] == "assistant"]
        answered = own and goal_id in own[-1]["content"] and view[-1]["role"] == "user" and "email on that account" in view[-1]["content"]
        if answered:
            return completion(json.dumps({"user_message": "Thanks, that's all I needed.", "is_task_complete": True}))
        return completion(json.dumps({"user_message": f"Hi, what is the email on customer account {goal_id}?",
                                      "is_task_complete": False}))

    def assistant(self, request: dict) -> dict:
        last = request["messages"][-1]
        if last["role"] == "tool":
            result = json.loads(last["content"])
            text = f"The email on that account is {result['email']}." if "email" in result else \
                f"Sorry, that failed: {result.get('error')}"
            return completion(text, reasoning_content=self._thought("the tool answered; report it"))
        match = DIGITS.search(last.get("content") or "")
        call = {"name": "get_customer", "arguments": {"id": int(match.group(1)) if match else 1}}
        return completion(None, tool_calls=[call], reasoning_content=self._thought("look the customer up first"))

    def _thought(self, text: str) -> str | None:
        return f"{REASONING_MARK}: {text}." if self.reasoning else None

    def judge(self, request: dict) -> dict:
        return completion(json.dumps({"judgment": "valid", "reasoning": "the email was retrieved and stated"}))

    def tool_simulator(self, request: dict) -> dict:
        args = json.loads(request["messages"][0]["content"].rsplit("Call: get_customer(", 1)[-1].split(")\n")[0] or "{}")
        return completion(json.dumps({"id": args.get("id", 1), "email": f"user{args.get('id', 1)}@example.com"}))

    def return_schema(self, request: dict) -> dict:
        return completion(json.dumps({"type": "object", "properties": {"id": {"type": "integer"},
                                                                        "email": {"type": "string"}}}))

    def questions(self, request: dict) -> dict:
        return completion("Here you go:\n" + json.dumps([f"What is the email of customer {i}?" for i in range(1, 6)]))

    def tool_generation(self, request: dict) -> dict:
        return completion(json.dumps([GET_CUSTOMER, tool("Bad Name!", {}, []),
                                      tool("search_customers", {"email": {"type": "string", "description": "e"}}, [])]))

    def tool_expansion(self, request: dict) -> dict:
        return completion(json.dumps([tool("list_orders", {"customer_id": {"type": "integer"}}, ["customer_id"]),
                                      tool("get_thing", {"x": {"type": "weird"}}, [])]))

    def sql_tools(self, request: dict) -> dict:
        one = {"type": "object", "properties": {"limit": {"type": "integer"}}, "required": ["limit"]}
        none = {"type": "object", "properties": {}}
        return completion(json.dumps([
            {"name": "top_customers_by_spend", "description": "Customers ranked by total order value.",
             "parameters": one, "sql": "SELECT c.id, c.email, SUM(o.total) AS spend FROM customers c JOIN orders o "
                                       "ON o.customer_id = c.id GROUP BY c.id ORDER BY spend DESC LIMIT :limit"},
            {"name": "drop_it", "description": "x", "parameters": none, "sql": "DROP TABLE orders"},
            {"name": "two_statements", "description": "x", "parameters": none, "sql": "SELECT 1; DELETE FROM orders"},
            {"name": "secret_table", "description": "x", "parameters": none, "sql": "SELECT * FROM secrets"},
            {"name": "bad_column", "description": "x", "parameters": none, "sql": "SELECT nope FROM orders"},
            {"name": "padded", "description": "x", "parameters": {"type": "object", "properties": {
                "n": {"type": "integer"}}, "required": ["n"]},  # the printf bomb: a width no time limit interrupts
             "sql": "SELECT id, printf('%.*c', :n, 'x') AS pad FROM customers LIMIT 1"}]))

    def schema_synthesis(self, request: dict) -> dict:
        ddl = ("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, status TEXT NOT NULL); "
               "CREATE TABLE visits (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id), "
               "reason TEXT, cost REAL)")
        rows = {"customers": [{"id": i, "email": f"pet{i}@example.com", "status": "active" if i % 3 else "closed"}
                              for i in range(1, 160)],
                "visits": [{"id": i, "customer_id": 1 + i % 150, "reason": "checkup", "cost": 40.0 + i}
                           for i in range(1, 40)]}
        return completion(json.dumps({"ddl": ddl, "rows": rows}))

    def other(self, request: dict) -> dict:
        return completion("[]")


class Gate:
    """A handler around `world` that answers until `open_for` judge requests were answered (each ends one
    dialogue), then holds every further request until `release()`. A run behind it cannot finish, so a test
    can stop it at a known point and wait on what it can see (`held`: requests held), never on the clock."""

    def __init__(self, world: World, open_for: int):
        self.world, self.open_for = world, open_for
        self.judged = self.held = 0
        self._released = threading.Event()

    async def __call__(self, request: dict):
        if self.judged >= self.open_for and not self._released.is_set():
            self.held += 1
            await asyncio.to_thread(self._released.wait)
        reply = self.world(request)
        self.judged += role_of(request) == "judge"
        return reply

    def release(self) -> None:
        self._released.set()
