"""A scripted LLM 'world' for the mock server: it plays every prompted role well enough for dialogues
to complete, so tests and benchmarks exercise the real LLM-role code paths without a model.

Roles are recognised from the prompts (the same prompt files the harness sends):
- task generator: returns a goal to look up one customer's email, with a rubric naming get_customer;
- user simulator: asks about the customer in its goal, then says thanks with is_task_complete=true;
- assistant (a request with tools): calls get_customer with the id in the last user message, then
  reports the email from the tool result;
- judge: valid. Anything else: a short text.
`faults` injects protocol failures per role, consumed in order (see tests/test_llm_pipeline.py).
"""

from __future__ import annotations

import itertools
import json
import re
from collections import defaultdict

from mock_openai import Fault, completion

DIGITS = re.compile(r"\b(\d+)\b")


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
    return "other"


class World:
    def __init__(self, faults: dict[str, list] | None = None, customers: int = 150):
        self.faults = {role: list(items) for role, items in (faults or {}).items()}
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
        answered = own and goal_id in own[-1]["content"] and view[-1]["role"] == "user" and "email" in view[-1]["content"]
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
            return completion(text)
        match = DIGITS.search(last.get("content") or "")
        return completion(None, tool_calls=[{"name": "get_customer", "arguments": {"id": int(match.group(1)) if match else 1}}])

    def judge(self, request: dict) -> dict:
        return completion(json.dumps({"judgment": "valid", "reasoning": "the email was retrieved and stated"}))

    def tool_simulator(self, request: dict) -> dict:
        args = json.loads(request["messages"][0]["content"].rsplit("Call: get_customer(", 1)[-1].split(")\n")[0] or "{}")
        return completion(json.dumps({"id": args.get("id", 1), "email": f"user{args.get('id', 1)}@example.com"}))

    def return_schema(self, request: dict) -> dict:
        return completion(json.dumps({"type": "object", "properties": {"id": {"type": "integer"},
                                                                        "email": {"type": "string"}}}))

    def other(self, request: dict) -> dict:
        return completion("[]")
