"""Run statistics (the paper's Table 1, data quality (generate/quality.py) and more) and `toolturn-stats RUN_DIR`."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

from toolturn.core.errors import ToolturnError
from toolturn.core.rundir import RunDir
from toolturn.generate.quality import format_quality, quality


def _summary(values: list[float]) -> dict:
    if not values:
        return {"mean": 0.0, "max": 0}
    return {"mean": round(statistics.fmean(values), 3), "max": max(values)}


_SUMMED = ("calls", "retries", "failures", "prompt_tokens", "completion_tokens")


def endpoint_stats(sessions: list[dict]) -> dict:
    """The LLM clients' counters over every session, by endpoint: requests, tokens, retries, the response
    cache, the adaptive concurrency limit (lowest and last), and each replica (requests, failures, ejections,
    mean latency of its answers)."""
    out: dict[str, dict] = {}
    for session in sessions:
        for name, st in (session.get("endpoints") or {}).items():
            agg = out.setdefault(name, {**{k: 0 for k in _SUMMED}, "replicas": {}})
            for key in _SUMMED:
                agg[key] += st.get(key, 0)
            if "cache" in st:
                cache = agg.setdefault("cache", Counter())
                cache.update({k: v for k, v in st["cache"].items() if isinstance(v, int)})
            limit = st.get("concurrency")
            if limit:
                prev = agg.get("concurrency")
                agg["concurrency"] = {**limit, "lowest": min(limit["lowest"], prev["lowest"]) if prev else limit["lowest"],
                                      "decreases": limit["decreases"] + (prev["decreases"] if prev else 0),
                                      "increases": limit["increases"] + (prev["increases"] if prev else 0)}
            for url, rep in (st.get("replicas") or {}).items():
                r = agg["replicas"].setdefault(url, {"requests": 0, "answered": 0, "failures": 0, "ejections": 0,
                                                     "latency_s_total": 0.0})
                for key in ("requests", "answered", "failures", "ejections"):
                    r[key] += rep.get(key, 0)
                r["latency_s_total"] += (rep.get("mean_latency_s") or 0.0) * rep.get("answered", 0)
    for agg in out.values():
        if "cache" in agg:
            agg["cache"] = dict(agg["cache"])
        for r in agg["replicas"].values():
            total = r.pop("latency_s_total")
            r["mean_latency_s"] = round(total / r["answered"], 4) if r["answered"] else None
    return out


def paraphrase_stats(records: list[dict]) -> dict | None:
    """The verified paraphrase pass (generate/paraphrase.py), per role: turns tried, rewrites kept, replies equal to
    the original, rejections by reason, and the acceptance rate (kept / tried). None when no record went through it."""
    turns = [t for r in records for t in (r["meta"].get("paraphrase") or {}).get("turns", [])]
    if not any(r["meta"].get("paraphrase") for r in records):
        return None
    out = {}
    for role in sorted({t["role"] for t in turns}):
        outcomes = Counter(t["outcome"] for t in turns if t["role"] == role)
        tried, kept = sum(outcomes.values()), outcomes.pop("kept", 0)
        unchanged = outcomes.pop("unchanged", 0)
        out[role] = {"turns": tried, "kept": kept, "unchanged": unchanged, "rejected": dict(outcomes.most_common()),
                     "acceptance": round(kept / tried, 4) if tried else 0.0}
    return out


def format_paraphrase(stats: dict) -> list[str]:
    return [f"paraphrase {role}: {s['kept']}/{s['turns']} rewrites kept ({s['acceptance']:.1%}), {s['unchanged']} "
            f"unchanged, rejected {s['rejected'] or '{}'}" for role, s in stats.items()]


def compute_stats(run: RunDir, records: list[dict] | None = None) -> dict:
    records = run.records() if records is None else records
    counts = [r["meta"]["counts"] for r in records]
    drops, rejections = Counter(), Counter()
    attempts = [{"tasks": c["tasks"], "user_turns": c["user_turns"]} for c in counts]
    for row in run.log_rows():
        if row["drop_reason"]:
            drops[row["drop_reason"]] += 1
            if row.get("attempt"):
                attempts.append(row["attempt"])
        rejections.update(row.get("task_rejections") or {})
    attempted_tasks = sum(a["tasks"] for a in attempts)
    sessions = run.session_rows()
    wall = sum(s["wall_s"] for s in sessions)
    produced = sum(s["produced"] for s in sessions)
    tasks = sum(c["tasks"] for c in counts)
    events, tokens = Counter(), Counter()
    for r in records:
        events.update(r["meta"].get("llm_events") or {})
        tokens.update({k: r["meta"]["timing"].get(k, 0) for k in ("prompt_tokens", "completion_tokens", "llm_calls")})
    synthesis = Counter()
    for path in sorted(run.domains.glob("*/synthesis.json")):
        synthesis.update(json.loads(path.read_text()))
    difficulty = Counter(t["difficulty"] for r in records for t in r["meta"]["tasks"])
    # policy violations: the rule of each dropped dialogue (policy=enforce), every one of each kept one (report)
    violations = Counter({k[len("policy_"):]: n for k, n in drops.items() if k.startswith("policy_")})
    violations.update(v["rule"] for r in records for v in (r["meta"].get("policy") or {}).get("violations", []))
    refusals = sum(any(st["kind"] == "refuse" for st in t["gold"]["subtasks"]) for r in records for t in r["meta"]["tasks"])
    reasoning = [sum(m["role"] == "assistant" and bool(m.get("reasoning_content")) for m in r["messages"])
                 for r in records]
    first = records[0]["meta"] if records else {}
    return {
        "dialogues": len(records),
        "pipeline": first.get("pipeline"), "domain": sorted({r["meta"]["domain"] for r in records}),
        "tool_mode": first.get("tool_mode"),
        "steps": _summary([c["steps"] for c in counts]),
        "turns": _summary([c["turns"] for c in counts]),
        "tasks": _summary([c["tasks"] for c in counts]),
        "user_turns": _summary([c["user_turns"] for c in counts]),
        "user_turns_per_task": round(sum(c["user_turns"] for c in counts) / tasks, 3) if tasks else 0.0,
        "tool_calls": {**_summary([c["tool_calls"] for c in counts]), "total": sum(c["tool_calls"] for c in counts)},
        "tool_errors": {**_summary([c["tool_errors"] for c in counts]),
                        "total": sum(c["tool_errors"] for c in counts)},
        "difficulty": dict(sorted(difficulty.items())),
        "drops": {"total": sum(drops.values()), "reasons": dict(drops.most_common())},
        "policy": {"violations": dict(violations.most_common()),
                   "flagged_dialogues": sum(bool(r["meta"].get("policy")) for r in records),
                   "refusal_tasks": refusals, "refusal_share": round(refusals / tasks, 3) if tasks else 0.0},
        # every dialogue that ran, kept or dropped: interaction length does not depend on the judge
        "attempts": {"dialogues": len(attempts), "user_turns_per_task": round(
            sum(a["user_turns"] for a in attempts) / attempted_tasks, 3) if attempted_tasks else 0.0},
        "task_rejections": dict(rejections.most_common()),
        "throughput": {"wall_s": round(wall, 3), "dialogues": produced,
                       "dialogues_per_s": round(produced / wall, 3) if wall else None,
                       "sessions": len(sessions)},
        "latency_s": _summary([r["meta"]["timing"]["latency_s"] for r in records]),
        "llm": {**dict(tokens), "events": dict(events.most_common()), "endpoints": endpoint_stats(sessions)},
        "synthesis_rejections": dict(synthesis.most_common()),
        # assistant messages that carry the model's reasoning_content (thinking models only)
        "reasoning": {"dialogues": sum(n > 0 for n in reasoning), "assistant_messages": sum(reasoning)},
        "quality": quality(records),
        "paraphrase": paraphrase_stats(records),
    }


def format_table(stats: dict) -> str:
    def cell(key):
        return f"{stats[key]['mean']:.2f} ({stats[key]['max']})"
    lines = [
        f"{'paradigm':<16} {'tools':<9} {'step':>12} {'turn':>12} {'task':>10} {'user turns/task':>16} {'samples':>8}",
        f"{stats['pipeline'] or '-':<16} {stats['tool_mode'] or '-':<9} {cell('steps'):>12} {cell('turns'):>12} "
        f"{cell('tasks'):>10} {stats['user_turns_per_task']:>16.2f} {stats['dialogues']:>8}",
        "",
        f"tool calls: {stats['tool_calls']['total']} ({stats['tool_calls']['mean']:.2f}/dialogue), "
        f"tool errors: {stats['tool_errors']['total']}",
        f"dropped: {stats['drops']['total']} {stats['drops']['reasons'] or ''}",
        f"policy: {sum(stats['policy']['violations'].values())} violations {stats['policy']['violations'] or ''}, "
        f"{stats['policy']['flagged_dialogues']} kept dialogues flagged, "
        f"{stats['policy']['refusal_tasks']} refusal tasks ({stats['policy']['refusal_share']:.0%})",
        f"all attempts (kept or dropped): {stats['attempts']['dialogues']} dialogues, "
        f"{stats['attempts']['user_turns_per_task']:.2f} user turns/task",
        f"throughput: {stats['throughput']['dialogues_per_s']} dialogues/s over {stats['throughput']['wall_s']} s",
    ]
    if "quality" in stats:  # a stats.json written before the quality figures existed has none
        lines += format_quality(stats["quality"])
    if stats.get("paraphrase"):
        lines += format_paraphrase(stats["paraphrase"])
    reasoning = stats["reasoning"]
    if reasoning["assistant_messages"]:
        lines.append(f"reasoning: {reasoning['assistant_messages']} assistant messages in {reasoning['dialogues']} "
                     f"dialogues carry reasoning_content")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print the Table-1-style summary of a generation run.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--json", action="store_true", help="print the full stats as JSON")
    args = parser.parse_args(argv)
    try:
        stats = compute_stats(RunDir.existing(args.run_dir))
    except ToolturnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(stats, indent=1) if args.json else format_table(stats))
