"""From sample rows to `metrics.json`, `report.md` and the pass^k plot.

Per checkpoint: which model it is (`identity`, evaluate/checkpoints.py), pass@k and pass^k for every
k <= n, the standard error of pass^1, pass^k per task kind (`per_kind`, where the rows carry one), how many
samples the suite's checker really evaluated and why the others were not (`evaluated`, `not_evaluated`), the
rate of each reward part over the samples where that check ran (`parts`, counted in `parts_n`), the behaviour
rates (`behaviour`, evaluate/behaviour.py), terminations, infrastructure errors per task (never scored), and
how many tasks had n samples that were all the same (a greedy server makes pass@k meaningless). The
do-nothing floor of the domain is printed beside every score: a model is only as good as its margin over it.

A row's `evaluated` (absent: true) is false when the suite scored it without running its checker (τ² scores a
simulation cut short at max_steps 0 without evaluating it); a part whose check did not run is None in its
`parts`, and no rate counts it.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from statistics import mean

from toolturn.core.files import atomic_write
from toolturn.evaluate.behaviour import RATES, behaviour
from toolturn.evaluate.checkpoints import describe
from toolturn.evaluate.metrics import summarise
from toolturn.evaluate.runner import DO_NOTHING
from toolturn.evaluate.tasks import KINDS

PLOT = "pass_hat_k.png"


def per_kind(counts: dict[str, tuple[int, int]], kind_of: dict[str, str], ks: list[int]) -> dict:
    """pass@k and pass^k over the tasks of each kind, in the draw's rotation order."""
    return {k: {"tasks": sum(kind_of.get(t) == k for t in counts),
                **summarise({t: c for t, c in counts.items() if kind_of.get(t) == k}, ks)}
            for k in KINDS if k in kind_of.values()}


def evaluated(row: dict) -> bool:
    """Whether the suite's checker ran on a scored row (see the module docstring)."""
    return row.get("infra_error") is None and row.get("evaluated", True) is not False


def checkpoint_metrics(rows: list[dict], n: int, parts: tuple[str, ...]) -> dict:
    scored = [r for r in rows if r.get("infra_error") is None]
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in scored:
        by_task[r["task_id"]].append(r)
    counts = {t: (len(rs), sum(r["reward"] == 1.0 for r in rs)) for t, rs in by_task.items()}
    out = summarise(counts, list(range(1, n + 1)))
    out["per_kind"] = per_kind(counts, {r["task_id"]: r["kind"] for r in scored if r.get("kind")},
                               list(range(1, n + 1)))
    infra = Counter(r["task_id"] for r in rows if r.get("infra_error") is not None)
    identical = [t for t, rs in by_task.items() if len(rs) > 1 and len({r["assistant_digest"] for r in rs}) == 1]
    checked = {p: [bool(r["parts"][p]) for r in scored if r["parts"].get(p) is not None] for p in parts}
    out.update({
        "samples": len(rows), "scored_samples": len(scored), "tasks": len(by_task),
        "evaluated": sum(evaluated(r) for r in scored),
        "not_evaluated": dict(Counter(r["termination"] for r in scored if not evaluated(r)).most_common()),
        "infra_errors": dict(sorted(infra.items())), "infra_error_samples": sum(infra.values()),
        "all_identical_tasks": len(identical),
        "parts": {p: mean(v) if v else None for p, v in checked.items()},
        "parts_n": {p: len(v) for p, v in checked.items()},
        "policy_violations": dict(Counter(v["rule"] for r in scored for v in r["parts"].get("policy_violations") or [])
                                  .most_common()),
        "terminations": dict(Counter(r["termination"] for r in scored).most_common()),
        "events": dict(sum((Counter(r.get("events") or {}) for r in scored), Counter())),
        "per_task": {t: {"n": c[0], "correct": c[1]} for t, c in sorted(counts.items())},
    })
    return out


def build_metrics(rows: list[dict], identities: dict[str, dict], n: int, header: dict, suite) -> dict:
    """`identities`: {checkpoint: identity}, in the order of the report."""
    grouped: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        grouped[r["checkpoint"]].append(r)
    world = getattr(suite, "world", None)  # the episodes' world: only our own suites have one
    checkpoints = {name: {"identity": identity,
                          **checkpoint_metrics(grouped[name], 1 if name == DO_NOTHING else n, suite.parts),
                          "behaviour": behaviour(grouped[name], world)}
                   for name, identity in identities.items()}
    floor_rows = [r for r in grouped[DO_NOTHING] if r.get("infra_error") is None]
    writes = [r for r in floor_rows if r.get("needs_write")]
    floor = {"domain": header["domain"], "assistant": DO_NOTHING,
             "pass_hat_1": checkpoints[DO_NOTHING]["pass_hat_k"]["1"] if DO_NOTHING in checkpoints else None,
             "tasks_needing_write": len(writes),
             "pass_hat_1_on_write_tasks": mean(r["reward"] for r in writes) if writes else None}
    for m in checkpoints.values():
        m["floor"] = floor["pass_hat_1"]
    out = {**header, "n": n, "parts": list(suite.parts), "floor": floor, "checkpoints": checkpoints}
    if hasattr(suite, "extra_metrics"):
        out["suite_metrics"] = suite.extra_metrics({name: grouped[name] for name in identities})
    return out


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def plot(metrics: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, m in metrics["checkpoints"].items():
        if name == DO_NOTHING:
            continue
        ks = [int(k) for k, v in m["pass_hat_k"].items() if v is not None]
        ax.plot(ks, [m["pass_hat_k"][str(k)] for k in ks], marker="o", label=name)
    if metrics["floor"]["pass_hat_1"] is not None:
        ax.axhline(metrics["floor"]["pass_hat_1"], ls="--", color="grey", label=f"do-nothing floor ({metrics['domain']})")
    ax.set_xlabel("k")
    ax.set_ylabel("pass^k")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xticks(range(1, metrics["n"] + 1))
    ax.set_title(f"{metrics['suite']} / {metrics['domain']}: pass^k")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


PART_TITLES = {"db_match": "DB end state = gold", "facts_communicated": "facts communicated",
               "refusals_explained": "refusals explained", "ended_by_user": "ended by the user",
               "policy_compliant": "policy followed (violations)",
               "db": "DB check (τ²)", "env_assertion": "env assertions (τ²)", "action": "actions (τ²)",
               "communicate": "communicated (τ²)", "made_call": "made a call (BFCL)", "valid": "valid (BFCL checker)"}


RATE_TITLES = {"tool_call_turns": "assistant turns with a well-formed tool call",
               "valid_tool_calls": "tool calls to a real tool with valid arguments",
               "identified_first": "identified before the first owned record",
               "confirmed_writes": "proposal + yes before every write"}


def _rate(r: dict) -> str:
    return "n/a" if r["value"] is None else f"{r['value']:.3f} (of {r['n']})"


def behaviour_table(metrics: dict) -> list[str]:
    """What each checkpoint did, beside whether it succeeded (evaluate/behaviour.py); n/a: nothing applied."""
    if all(r["n"] == 0 for m in metrics["checkpoints"].values() for r in m["behaviour"].values()):
        return ["", "Behaviour rates: n/a (the rows hold no episode of our own worlds; a suite's own checkers "
                    "score its transcripts)."]
    lines = ["", "Behaviour (each share over what it applies to, the count in brackets; n/a: nothing applied):", "",
             "| checkpoint | " + " | ".join(RATE_TITLES[r] for r in RATES) + " |", "|---|" + "---|" * len(RATES)]
    for name, m in metrics["checkpoints"].items():
        lines.append(f"| {name} | " + " | ".join(_rate(m["behaviour"][r]) for r in RATES) + " |")
    return lines


def kind_table(metrics: dict) -> list[str]:
    """pass^k per task kind and checkpoint (none where the rows carry no kind)."""
    ks = [str(k) for k in range(1, metrics["n"] + 1)]
    rows = [(name, kind, got) for name, m in metrics["checkpoints"].items() for kind, got in m["per_kind"].items()]
    if not rows:
        return []
    lines = ["", "pass^k per task kind:", "", "| checkpoint | kind | tasks | " + " | ".join(f"pass^{k}" for k in ks) +
             " |", "|---|---|---|" + "---|" * len(ks)]
    for name, kind, got in rows:
        lines.append(f"| {name} | {kind} | {got['tasks']} | " +
                     " | ".join(_fmt(got["pass_hat_k"].get(k)) for k in ks) + " |")
    return lines


def part_cell(m: dict, part: str) -> str:
    """A reward part's rate with the samples it is over, or "not run"."""
    n = m["parts_n"][part]
    return "not run" if n == 0 else f"{_fmt(m['parts'][part])} (of {n})"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def scoring_lines(metrics: dict) -> list[str]:
    """How many samples each checkpoint has, how many the suite's checker evaluated, and why the rest were not;
    a bold line for a checkpoint whose checker never ran."""
    checker = metrics.get("checker", "the suite's checker")
    lines = ["", f"What was measured (evaluated: the samples {checker} scored; the rest were scored without it, "
                 f"or not at all):", ""]
    for name, m in metrics["checkpoints"].items():
        why = []
        if m["not_evaluated"]:
            why.append(f"not evaluated: {_counts(m['not_evaluated'])}")
        if m["infra_error_samples"]:
            why.append(f"not scored (infrastructure errors): {m['infra_error_samples']}")
        lines.append(f"- {name}: {m['evaluated']} of {m['samples']} samples evaluated" +
                     (f"; {'; '.join(why)}" if why else ""))
    if any(m["not_evaluated"] for m in metrics["checkpoints"].values()) and metrics.get("not_evaluated_rule"):
        lines += ["", metrics["not_evaluated_rule"]]
    blind = [name for name, m in metrics["checkpoints"].items() if m["samples"] and m["evaluated"] == 0]
    if blind:
        lines += ["", f"**Nothing was evaluated for {', '.join(blind)}: {checker} never ran on a sample, so the "
                      f"pass^k there measures no task at all.**"]
    return lines


def report_md(metrics: dict, extra: list[str] = ()) -> str:
    n, floor = metrics["n"], metrics["floor"]
    ks = list(range(1, n + 1))
    s = metrics["sampling"]
    lines = [f"# Evaluation: {metrics['suite']} on {metrics['domain']}", "",
             f"- user simulator: **{metrics['user']}**",
             f"- tasks: {metrics['num_tasks']} {metrics.get('tasks_are', 'held-out')} (seed {metrics['seed']}), "
             f"{n} samples each",
             f"- sampling: temperature {s['temperature']}, top_p {s['top_p']}, max_tokens {s['max_tokens']}, "
             f"a seed per sample",
             f"- do-nothing floor ({floor['domain']}): pass^1 = {_fmt(floor['pass_hat_1'])}" +
             (f" ({floor_m['evaluated']} of {floor_m['samples']} samples evaluated)"
              if (floor_m := metrics["checkpoints"].get(DO_NOTHING)) else "") +
             (f"; on the {floor['tasks_needing_write']} tasks that need a write: "
              f"{_fmt(floor['pass_hat_1_on_write_tasks'])}" if floor["tasks_needing_write"] else ""),
             *[f"- {name}: {describe(m['identity'])}" for name, m in metrics["checkpoints"].items()],
             "", "| checkpoint | pass^1 ± se | " + " | ".join(f"pass^{k}" for k in ks[1:]) +
             (" | " if n > 1 else "") + " | ".join(f"pass@{k}" for k in ks[1:]) + (" | " if n > 1 else "") +
             "floor | evaluated | infra errors | tasks with identical samples |",
             "|" + "---|" * (5 + 2 * (n - 1) + 1)]
    for name, m in metrics["checkpoints"].items():
        se = m["pass_hat_1_stderr"]
        cells = [name, f"{_fmt(m['pass_hat_k']['1'])} ± {_fmt(se)}"]
        cells += [_fmt(m["pass_hat_k"].get(str(k))) for k in ks[1:]] + [_fmt(m["pass_at_k"].get(str(k))) for k in ks[1:]]
        cells += [_fmt(m["floor"]), f"{m['evaluated']} of {m['samples']}", str(m["infra_error_samples"]),
                  f"{m['all_identical_tasks']} of {m['tasks']}" if name != DO_NOTHING else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += scoring_lines(metrics)
    parts = metrics["parts"]
    lines += ["", "Reward parts, each over the samples where its check ran (the count in brackets; not run: the check "
              "never ran), and how episodes ended:", "",
              "| checkpoint | " + " | ".join(PART_TITLES.get(p, p) for p in parts) + " | terminations |",
              "|---|" + "---|" * (len(parts) + 1)]
    for name, m in metrics["checkpoints"].items():
        ends = ", ".join(f"{k} {v}" for k, v in m["terminations"].items())
        broken = ", ".join(f"{k} {v}" for k, v in m["policy_violations"].items())
        cells = [part_cell(m, p) + (f" ({broken})" if p == "policy_compliant" and broken else "") for p in parts]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ends} |")
    lines += behaviour_table(metrics) + kind_table(metrics) + list(extra)
    infra = {name: m["infra_errors"] for name, m in metrics["checkpoints"].items() if m["infra_errors"]}
    if infra:
        lines += ["", "Infrastructure errors (not scored), per task: " +
                  "; ".join(f"{name}: {json.dumps(v)}" for name, v in infra.items())]
    short = {name: m["short_tasks"] for name, m in metrics["checkpoints"].items() if m["short_tasks"]}
    if short:
        lines += ["", "Left out of the pass@k / pass^k means (fewer than n scored samples after infrastructure "
                  "errors; every k is averaged over the same tasks): " +
                  "; ".join(f"{name}: {', '.join(v)}" for name, v in short.items())]
    lines += ["", f"![pass^k against k]({PLOT})", "",
              "pass^k: the chance that all k attempts at a task succeed; pass@k: that at least one does "
              "(unbiased estimators from the n samples). The floor is the score of an assistant that does "
              "nothing: only a margin over it means anything.", ""]
    return "\n".join(lines)


def write_outputs(out_dir: Path, metrics: dict, suite) -> None:
    atomic_write(out_dir / "metrics.json", json.dumps(metrics, indent=1))
    plot(metrics, out_dir / PLOT)
    extra = suite.report_lines(metrics) if hasattr(suite, "report_lines") else []
    atomic_write(out_dir / "report.md", report_md(metrics, extra))
