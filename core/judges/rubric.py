"""The paper's rubric validator: an LLM judge returning {judgment, reasoning}."""

from __future__ import annotations

from toolturn.core.episode import EpisodeError
from toolturn.core.prompts import load as load_prompt
from toolturn.core.role_model import RoleModel
from toolturn.core.tasks.types import Task
from toolturn.core.transcript import render_transcript

JUDGE_SHOT_REPLY = '{"judgment": "invalid", "reasoning": "The order status was never looked up with a tool."}'



async def llm_judge(model: RoleModel, tasks: list[Task], messages: list[dict], start: int,
                    tools: list[dict]) -> tuple[bool, str]:
    """The paper's rubric validator: {judgment, reasoning}; only Critical rubric items are enforced."""
    goal = "\n".join(f"{i + 1}. {t.goal}" for i, t in enumerate(tasks))
    rubric = "\n".join(f"- {item}" for t in tasks for item in t.rubric())
    tool_names = ", ".join(t["function"]["name"] for t in tools)
    prompt = load_prompt("judge").format(goal=goal, rubric=rubric or "- (none)", tools=tool_names,
                                         transcript=render_transcript(messages, start))
    shot = load_prompt("judge").format(goal="1. You want the status of order 3.", rubric="- call get_order",
                                       tools="get_order", transcript="USER: What is the status of order 3?\n"
                                                                     "ASSISTANT: It is probably shipped.")
    obj = await model.json([{"role": "user", "content": shot}, {"role": "assistant", "content": JUDGE_SHOT_REPLY},
                            {"role": "user", "content": prompt}], required={"judgment": str, "reasoning": str})
    judgment = obj["judgment"].strip().lower()
    if judgment not in ("valid", "invalid"):
        raise EpisodeError("judge_json", f"judgment must be valid or invalid, got {obj['judgment'][:40]!r}")
    return judgment == "valid", obj["reasoning"]
