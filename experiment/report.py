"""The experiment's report: did the data help? Read only from what the stages wrote on disk.

    data/<d>/stats.json, shards         Table-1 statistics beside the paper's, turns and tasks per dialogue
    train/<m>/metrics.json              tokens, time, memory, the loss curve
    evaluate/<e>/<m>/metrics.json       pass^k with its standard error beside the do-nothing floor, the
                                        behaviour the data teaches, pass^k per task kind
    evaluate/<e>/<m>/samples.jsonl      (through metrics.json's per_task) the paired comparison per task

Writes OUT/report/report.md, its PNG plots and summary.json (what the terminal table prints), and a W&B
run of the experiment's group with the comparison table.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path
from statistics import mean, stdev

from toolturn.core.files import atomic_write, atomic_write_json
from toolturn.core.rundir import RunDir
from toolturn.core.wandb_run import open_run
from toolturn.experiment.cache import StageCache, code_version
from toolturn.experiment.plan import Stage, dataset_dir
from toolturn.experiment.spec import Experiment

FLOOR = "do_nothing"
# Table 1 of the paper (means; steps, turns, tasks per dialogue), for the datasets' statistics
PAPER_TABLE1 = [("task-oriented, Nemotron seeds", 3.95, 12.84, 1.63),
                ("user-oriented, Nemotron seeds", 3.45, 21.79, 2.48),
                ("user-oriented + tool execution, SQL", 3.74, 30.85, 1.86)]
Z95 = 1.96


def _fmt(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


# ------------------------------------------------------------------------------------------------ data


def dataset_stats(exp: Experiment, out: Path) -> dict[str, dict]:
    """Table-1 statistics and per-dialogue counts of every generated dataset."""
    stats = {}
    for d in exp.datasets.values():
        run = dataset_dir(out, d.name)
        s = _load(run / "stats.json")
        if d.source != "generate" or s is None:
            continue
        counts = [r["meta"]["counts"] for r in RunDir.existing(run).iter_records()]
        stats[d.name] = {"pipeline": s.get("pipeline"), "domain": ",".join(s.get("domain") or []),
                         "dialogues": s["dialogues"], "steps": s["steps"]["mean"], "turns": s["turns"]["mean"],
                         "tasks": s["tasks"]["mean"], "user_turns_per_task": s.get("user_turns_per_task"),
                         "max": {k: s[k]["max"] for k in ("steps", "turns", "tasks")},
                         "turns_hist": [c["turns"] for c in counts], "tasks_hist": [c["tasks"] for c in counts]}
    return stats


def training(exp: Experiment, out: Path) -> dict[str, dict]:
    runs = {}
    for m in exp.models.values():
        metrics = _load(out / "train" / m.name / "metrics.json") if m.trained else None
        if metrics:
            runs[m.name] = metrics
    return runs


def evaluations(exp: Experiment, out: Path) -> dict[str, dict[str, dict]]:
    """{evaluation: {model arm: (its checkpoint's metrics, the eval's header, the floor's metrics)}}."""
    found: dict[str, dict[str, dict]] = {}
    for e in exp.evaluations.values():
        for name in e.models:
            metrics = _load(out / "evaluate" / e.name / name / "metrics.json")
            if metrics is None:
                continue
            label = next(k for k in metrics["checkpoints"] if k != FLOOR)
            found.setdefault(e.name, {})[name] = {"m": metrics["checkpoints"][label], "header": metrics,
                                                  "floor": metrics["checkpoints"].get(FLOOR)}
    return found


def paired(a: dict, b: dict) -> dict | None:
    """Per-task success rates of two checkpoints on the same tasks: the mean difference a - b, its standard
    error over tasks, and wins / losses / ties."""
    ta, tb = a["m"].get("per_task") or {}, b["m"].get("per_task") or {}
    common = sorted(set(ta) & set(tb))
    if not common:
        return None
    diffs = [ta[t]["correct"] / ta[t]["n"] - tb[t]["correct"] / tb[t]["n"] for t in common if ta[t]["n"] and tb[t]["n"]]
    if not diffs:
        return None
    se = stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None
    d = mean(diffs)
    return {"tasks": len(diffs), "diff": d, "se": se, "wins": sum(x > 0 for x in diffs),
            "losses": sum(x < 0 for x in diffs), "ties": sum(x == 0 for x in diffs), "verdict": verdict(d, se)}


def verdict(diff: float, se: float | None) -> str:
    if se is None:
        return "one task: no standard error"
    if se == 0:
        return "no difference on any task" if diff == 0 else "the same difference on every task"
    z = abs(diff) / se
    if z <= 1:
        return "within one standard error: no evidence of a difference"
    if z < Z95:
        return f"{z:.1f} standard errors: suggestive, not significant at 95%"
    return f"{z:.1f} standard errors: a difference at 95% confidence"


BEHAVIOUR_TITLES = {"tool_call_turns": "assistant turns with a well-formed tool call",
                    "valid_tool_calls": "tool calls to a tool that exists, with valid arguments",
                    "identified_first": "identification before the first owned record",
                    "confirmed_writes": "a confirmed proposal before every write"}


def behaviour_rows(entry: dict) -> dict[str, dict]:
    """{metric: {"rate", "n", "title"}} of a checkpoint (evaluate/behaviour.py), plus the reward parts."""
    m = entry["m"]
    rows = {k: {"rate": v.get("value"), "n": v.get("n"), "title": BEHAVIOUR_TITLES.get(k, k)}
            for k, v in (m.get("behaviour") or {}).items()}
    for part, rate in (m.get("parts") or {}).items():
        n = (m.get("parts_n") or {}).get(part, m.get("scored_samples"))
        rows.setdefault(f"part:{part}", {"rate": rate, "n": n, "title": f"reward part: {part}"})
    return rows


def moved(base: dict, tuned: dict) -> tuple[list[str], list[str]]:
    """Which rates changed between two checkpoints at 95% confidence: by more than Z95 pooled standard errors of
    the difference (the two-proportion test's: a rate of 0 or 1 on one side still has a spread under "no change").
    Turn-level rates count turns of the same episodes, which are not independent: read them as a screen."""
    up, still = [], []
    rb, rt = behaviour_rows(base), behaviour_rows(tuned)
    for key in sorted(set(rb) & set(rt)):
        a, b = rb[key], rt[key]
        if a.get("rate") is None or b.get("rate") is None or not a.get("n") or not b.get("n"):
            continue
        pooled = (a["rate"] * a["n"] + b["rate"] * b["n"]) / (a["n"] + b["n"])
        se = math.sqrt(pooled * (1 - pooled) * (1 / a["n"] + 1 / b["n"]))
        title = b.get("title") or key
        text = f"{title}: {_fmt(a['rate'])} (n={a['n']}) -> {_fmt(b['rate'])} (n={b['n']})"
        (up if abs(b["rate"] - a["rate"]) > max(Z95 * se, 1e-12) else still).append(text)
    return up, still


# ------------------------------------------------------------------------------------------------ plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_datasets(stats: dict[str, dict], path: Path) -> bool:
    if not stats:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key, title in ((axes[0], "turns_hist", "turns per dialogue"), (axes[1], "tasks_hist", "tasks per dialogue")):
        values = [v for s in stats.values() for v in s[key]]
        bins = range(0, max(values) + 2) if key == "tasks_hist" else 20
        for name, s in stats.items():
            ax.hist(s[key], bins=bins, alpha=0.55, label=f"{name} (mean {mean(s[key]):.2f})")
        ax.set_title(title)
        ax.set_ylabel("dialogues")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_loss(runs: dict[str, dict], path: Path) -> bool:
    if not runs:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, m in runs.items():
        hist = [h for h in m.get("history") or [] if h.get("loss") is not None]
        ax.plot([h["step"] for h in hist], [h["loss"] for h in hist], label=f"{name} train")
        ev = m.get("eval") or []
        if ev:
            ax.plot([e["step"] for e in ev], [e["eval_loss"] for e in ev], "o--", label=f"{name} validation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (assistant tokens)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_pass_hat_k(name: str, entries: dict[str, dict], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for arm, entry in entries.items():
        curve = {int(k): v for k, v in entry["m"]["pass_hat_k"].items() if v is not None}
        ax.plot(list(curve), list(curve.values()), marker="o", label=arm)
    floor = _floor(entries)
    if floor is not None:
        ax.axhline(floor, ls="--", color="grey", label="do-nothing floor")
    ax.set_xlabel("k")
    ax.set_ylabel("pass^k")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{name}: pass^k")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _floor(entries: dict[str, dict]) -> float | None:
    floors = [e["floor"]["pass_hat_k"]["1"] for e in entries.values() if e.get("floor")]
    return floors[0] if floors else None


# ------------------------------------------------------------------------------------------------ markdown


def _machine() -> str:
    try:
        mem_gb = int(open("/proc/meminfo").read().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        mem_gb = float("nan")
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {mem_gb:.0f} GiB RAM, {platform.python_version()}"


def _eval_table(name: str, entries: dict[str, dict]) -> list[str]:
    n = max(e["header"]["n"] for e in entries.values())
    head = entries[next(iter(entries))]["header"]
    ks = list(range(2, n + 1))
    lines = [f"### {name}: {head['suite']} on {head['domain']}", "",
             f"{head['num_tasks']} {head.get('tasks_are', 'held-out')} tasks, {n} samples each (seed {head['seed']}); "
             f"user: {head['user']}" + _tool_offer(head), "",
             "| model | scored samples | pass^1 ± se | " + "".join(f"pass^{k} | " for k in ks) +
             "".join(f"pass@{k} | " for k in ks) + "floor |",
             "|---|---|---|" + "---|" * (2 * len(ks) + 1)]
    for arm, e in entries.items():
        m = e["m"]
        cells = [arm, f"{m['scored_samples']} of {m['samples']}",
                 f"{_fmt(m['pass_hat_k'].get('1'))} ± {_fmt(m.get('pass_hat_1_stderr'))}"]
        cells += [_fmt(m["pass_hat_k"].get(str(k))) for k in ks] + [_fmt(m["pass_at_k"].get(str(k))) for k in ks]
        cells.append(_fmt(e["floor"]["pass_hat_k"]["1"]) if e.get("floor") else "-")
        lines.append("| " + " | ".join(cells) + " |")
    identity = [f"{arm}: {_identity_line(e['m'])}" for arm, e in entries.items() if e["m"].get("identity")]
    if identity:
        lines += ["", "Checkpoints scored: " + "; ".join(identity)]
    rows = {arm: behaviour_rows(e) for arm, e in entries.items()}
    keys = sorted({k for r in rows.values() for k in r})
    if keys:
        lines += ["", "Behaviour (rate, over the count in brackets; - where nothing applied):", "",
                  "| metric | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
        for k in keys:
            title = next((r[k].get("title") for r in rows.values() if k in r and r[k].get("title")), k)
            cells = [f"{_fmt(r[k]['rate'])} ({r[k].get('n')})" if k in r and r[k].get("rate") is not None else "-"
                     for r in rows.values()]
            lines.append(f"| {title} | " + " | ".join(cells) + " |")
    kinds = {arm: e["m"].get("per_kind") for arm, e in entries.items() if e["m"].get("per_kind")}
    if kinds:
        all_kinds = sorted({k for v in kinds.values() for k in v})
        lines += ["", "pass^1 per task kind (tasks):", "", "| model | " + " | ".join(all_kinds) + " |",
                  "|---|" + "---|" * len(all_kinds)]
        for arm, v in kinds.items():
            cells = [f"{_fmt(v[k]['pass_hat_k'].get('1'))} ({v[k].get('tasks')})" if k in v else "-" for k in all_kinds]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def _tool_offer(head: dict) -> str:
    offer = head.get("tool_offer")
    if not offer:
        return ""
    tools = "all" if offer["tools"] == 0 else offer["tools"]
    return f"; tools offered per episode: {tools} (from {offer['source']})"


def _identity_line(m: dict) -> str:
    ident = m["identity"]
    sha = ident.get("sha256")
    return f"{ident.get('model') or ident.get('name') or ident.get('path')}" + (f" (sha256 {sha[:12]})" if sha else "")


def write(exp: Experiment, stages: list[Stage], out: Path, logger_cfg, command: str) -> Path:
    rdir = out / "report"
    rdir.mkdir(parents=True, exist_ok=True)
    stats, runs, evals = dataset_stats(exp, out), training(exp, out), evaluations(exp, out)
    lines = [f"# {exp.title}", "", exp.description, "",
             f"- experiment: `{exp.name}`; made {time.strftime('%Y-%m-%d %H:%M %Z')} on {_machine()}; "
             f"commit {code_version()}",
             f"- reproduce: `{command}`", ""]

    summary: dict = {"experiment": exp.name, "evaluations": {}, "paired": [], "report": str(rdir / "report.md")}
    for name, entries in evals.items():
        lines += _eval_table(name, entries) + [""]
        plot_pass_hat_k(name, entries, rdir / f"pass_hat_k-{name}.png")
        lines += [f"![pass^k against k, {name}](pass_hat_k-{name}.png)", ""]
        summary["evaluations"][name] = {
            arm: {"pass_hat_1": e["m"]["pass_hat_k"].get("1"), "se": e["m"].get("pass_hat_1_stderr"),
                  "scored": e["m"]["scored_samples"], "samples": e["m"]["samples"],
                  "floor": e["floor"]["pass_hat_k"]["1"] if e.get("floor") else None,
                  "behaviour": {k: v.get("rate") for k, v in behaviour_rows(e).items()}}
            for arm, e in entries.items()}

    if exp.compare and evals:
        lines += ["## Paired comparison per task", "",
                  "The difference of per-task success rates (a - b) averaged over the tasks both faced, with its "
                  "standard error over tasks.", "",
                  "| evaluation | a | b | tasks | a - b ± se | a better / worse / same | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for name, entries in evals.items():
            for a, b in exp.compare:
                if a in entries and b in entries:
                    p = paired(entries[a], entries[b])
                    if p is None:
                        continue
                    summary["paired"].append({"evaluation": name, "a": a, "b": b, **p})
                    lines.append(f"| {name} | {a} | {b} | {p['tasks']} | {p['diff']:+.3f} ± {_fmt(p['se'])} | "
                                 f"{p['wins']} / {p['losses']} / {p['ties']} | {p['verdict']} |")
        lines += [""]
        for name, entries in evals.items():
            for a, b in exp.compare:
                if a in entries and b in entries:
                    up, still = moved(entries[b], entries[a])
                    lines += [f"What moved from {b} to {a} on {name} "
                              f"(at 95% confidence, a two-proportion test):", ""]
                    lines += [f"- {x}" for x in up] or ["- nothing"]
                    lines += ["", "What did not move:", ""] + ([f"- {x}" for x in still] or ["- (no other rate)"]) + [""]

    if runs:
        lines += ["## Training", "", "| model | data | steps | tokens trained through | tokens/s | peak RSS | "
                  "final train loss | best validation loss |", "|---|---|---|---|---|---|---|---|"]
        for name, m in runs.items():
            rss = m.get("peak_rss_mb")
            lines.append(f"| {name} | {'+'.join(exp.models[name].data)} | {m.get('steps')} | {m.get('train_tokens')} | "
                         f"{_fmt(m.get('tokens_per_s'), 1)} | {f'{rss:.0f} MB' if rss else '-'} | "
                         f"{_fmt(m.get('train_loss'))} | {_fmt((m.get('best') or {}).get('eval_loss'))} |")
        if plot_loss(runs, rdir / "loss.png"):
            lines += ["", "![training loss](loss.png)", ""]

    if stats:
        lines += ["## Datasets (Table 1 of the paper, measured here)", "",
                  "| dataset | pipeline | dialogues | steps | turns | tasks | user turns per task |",
                  "|---|---|---|---|---|---|---|"]
        for name, s in stats.items():
            lines.append(f"| {name} | {s['pipeline']} | {s['dialogues']} | {s['steps']:.2f} ({s['max']['steps']}) | "
                         f"{s['turns']:.2f} ({s['max']['turns']}) | {s['tasks']:.2f} ({s['max']['tasks']}) | "
                         f"{_fmt(s['user_turns_per_task'], 2)} |")
        for label, steps, turns, tasks in PAPER_TABLE1:
            lines.append(f"| paper: {label} | | | {steps} | {turns} | {tasks} | |")
        lines += ["", "Means with the maximum in brackets; the paper's rows are its Table 1 (GPT-OSS-120B, other seeds "
                  "and scale): the direction (user-oriented dialogues are longer and chain more tasks) is what "
                  "compares.", ""]
        if plot_datasets(stats, rdir / "datasets.png"):
            lines += ["![turns and tasks per dialogue](datasets.png)", ""]
        summary["datasets"] = {k: {kk: v[kk] for kk in ("dialogues", "steps", "turns", "tasks")} for k, v in stats.items()}

    if exp.paper:
        lines += _paper_table(exp.paper, evals)

    lines += _provenance(stages, out)
    path = rdir / "report.md"
    atomic_write(path, "\n".join(lines) + "\n")
    atomic_write_json(rdir / "summary.json", summary)
    _log_wandb(exp, logger_cfg, rdir, summary)
    return path


def _paper_table(paper: dict, evals: dict[str, dict[str, dict]]) -> list[str]:
    """The paper's table with ours beside it: `paper.evaluations` aligns each column with one of our evaluations
    (null where none is comparable); ours is pass^1 x 100 over the same kind of benchmark, not the same run."""
    columns, rows = paper.get("columns") or [], paper.get("rows") or {}
    ours_of = (paper.get("evaluations") or [None] * len(columns))
    lines = [f"## The paper's Table {paper.get('table', '')} beside ours", "",
             "Each cell: the paper's number / ours (pass^1 x 100; - not run yet or not comparable).", "",
             "| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for arm, values in rows.items():
        cells = []
        for value, name in zip(values, ours_of):
            entry = evals.get(name, {}).get(arm) if name else None
            ours = entry["m"]["pass_hat_k"].get("1") if entry else None
            cells.append(f"{value} / {'-' if ours is None else f'{100 * ours:.1f}'}")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines + [""]


def _provenance(stages: list[Stage], out: Path) -> list[str]:
    cache = StageCache(out)
    lines = ["## Stages", "", "| stage | finished | took | commit | command |", "|---|---|---|---|---|"]
    for s in stages:
        r = cache.record(s)
        if s.kind != "report" and r is not None:
            lines.append(f"| {s.name} | {r['finished']} | {r['elapsed_s']:.0f} s | {r.get('commit', '?')} | "
                         f"`{r['command']}` |")
    return lines + [""]


def _log_wandb(exp: Experiment, logger_cfg, rdir: Path, summary: dict) -> None:
    cfg = dict(logger_cfg or {})
    if cfg.get("name", "none") != "none":
        cfg["group"] = exp.name
    run = open_run(cfg, rdir, f"{exp.name}-report", {"experiment": exp.name}, job_type="report")
    rows = [[name, arm, v["pass_hat_1"], v["se"], v["floor"], v["scored"]]
            for name, arms in summary["evaluations"].items() for arm, v in arms.items()]
    run.table("comparison", ["evaluation", "model", "pass_hat_1", "se", "floor", "scored"], rows)
    for png in sorted(rdir.glob("*.png")):
        run.image(png.stem, png)
    run.finish()


def terminal_table(summary_path: Path) -> str:
    s = json.loads(summary_path.read_text())
    lines = []
    for name, arms in s["evaluations"].items():
        lines.append(f"{name}:")
        floor = next((v["floor"] for v in arms.values() if v["floor"] is not None), None)
        for arm, v in arms.items():
            calls = v["behaviour"].get("tool_call_turns")
            extra = f"  well-formed tool calls {_fmt(calls)}" if calls is not None else ""
            lines.append(f"  {arm:<16} pass^1 {_fmt(v['pass_hat_1'])} ± {_fmt(v['se'])}  "
                         f"({v['scored']}/{v['samples']} scored){extra}")
        lines.append(f"  {'floor':<16} pass^1 {_fmt(floor)}")
    for p in s["paired"]:
        lines.append(f"{p['evaluation']}: {p['a']} - {p['b']} = {p['diff']:+.3f} ± {_fmt(p['se'])} over {p['tasks']} "
                     f"tasks ({p['verdict']})")
    return "\n".join(lines)
