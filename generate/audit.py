"""`toolturn-audit RUN_DIR`: replay every tool call of every dialogue against a fresh copy of the
domain's pristine db.sqlite, in order, and compare each output with the recorded one byte for byte.
Also recomputes each record's content digest, which catches records edited by hand, fails on a record
id or dialogue index that occurs twice, and checks the shard logs against the shards: every record
logged as kept and every kept line's record present, each worker's indices without a gap (so the
records are the first valid indices)."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path

from toolturn.core.errors import ToolturnError
from toolturn.core.rundir import RunDir, record_digest
from toolturn.core.sqlenv import SqlDomain, SqlTool


@dataclass
class AuditReport:
    records: int = 0
    calls: int = 0
    simulated: int = 0  # records whose tools were simulated: digest checked, nothing to replay
    mismatches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def load_domain(run: RunDir, name: str) -> SqlDomain:
    d = run.domain(name)
    try:
        info = json.loads((d / "domain.json").read_text())
        tools = [SqlTool.from_dict(t) for t in json.loads((d / "tools.json").read_text())]
        if not (d / "db.sqlite").is_file():
            raise FileNotFoundError(f"no {d / 'db.sqlite'}")
        return SqlDomain(d / "db.sqlite", tools, info["tables"], info["enforce_foreign_keys"])
    except (OSError, ValueError, KeyError, TypeError, sqlite3.Error) as exc:
        raise ToolturnError(f"cannot load domain {name!r} of {run.root} to replay against "
                            f"({type(exc).__name__}: {exc})") from None


def audit_record(record: dict, domain: SqlDomain | None, report: AuditReport) -> None:
    rid, messages = record["id"], record["messages"]
    if record_digest(messages, record["tools"]) != record["meta"].get("digest"):
        report.mismatches.append(f"{rid}: content digest mismatch (record edited after generation)")
    report.records += 1
    if record["meta"].get("tool_mode") == "simulated":
        report.simulated += 1
        return
    start = record["meta"].get("prefix", {}).get("n_messages", 0)
    outputs = {m["tool_call_id"]: (i, m) for i, m in enumerate(messages) if m["role"] == "tool" and i >= start}
    sandbox = domain.open_sandbox()
    try:
        for i, m in enumerate(messages[start:], start=start):
            for call in m.get("tool_calls") or []:
                report.calls += 1
                result = sandbox.call(call["function"]["name"], call["function"]["arguments"])
                where, recorded = outputs.get(call["id"], (None, None))
                if recorded is None:
                    report.mismatches.append(f"{rid}: message {i}: tool call {call['id']} has no tool response")
                elif recorded["content"] != result.content:
                    report.mismatches.append(f"{rid}: message {where}: {call['function']['name']} replayed "
                                             f"{result.content[:80]!r}, recorded {recorded['content'][:80]!r}")
        gold = record["meta"].get("gold_end_state")
        if gold is not None and sandbox.state_hash() != gold:
            report.mismatches.append(f"{rid}: replayed end state differs from the gold end state")
    finally:
        sandbox.close()


def audit_logs(run: RunDir, kept: dict[int, str], report: AuditReport) -> None:
    """`kept`: dialogue index -> record id of the shards. The logs must name exactly those as kept, and each
    worker's logged indices must be its first ones, without a gap."""
    workers = run.workers()
    logged: dict[int, str | None] = {}  # index -> record id of a kept line
    for path in run.log_files():
        worker, indices = int(path.stem.split("-")[1]), set()
        for row in run.read_log(path):
            if row["index"] in indices:
                report.mismatches.append(f"{path.name}: index {row['index']} is logged twice")
            indices.add(row["index"])
            if row["drop_reason"] is None:
                logged[row["index"]] = row.get("id")
        if workers:
            gap = next((i for i in range(worker, worker + workers * len(indices), workers) if i not in indices), None)
            if gap is not None:
                report.mismatches.append(f"{path.name}: index {gap} was never finished although later ones were "
                                         f"(the records are not the first valid indices)")
    for index, rid in sorted(kept.items()):
        if logged.get(index) != rid:
            report.mismatches.append(f"{rid}: dialogue index {index} is not logged as kept; re-run the generation "
                                     f"command to repair the log")
    for index, rid in sorted(logged.items()):
        if index not in kept:
            report.mismatches.append(f"{run.log_file(index % (workers or 1)).name}: index {index} is logged as kept "
                                     f"(record {rid}) but no shard holds it; re-run the generation command to "
                                     f"generate it again")


def audit_run(run: RunDir) -> AuditReport:
    report, domains = AuditReport(), {}
    first_of: dict[int, str] = {}  # dialogue index -> the first record id seen for it
    ids: set[str] = set()
    for record in run.records():
        rid, index = record["id"], record["meta"]["index"]
        # two writers on one worker's shards, or shards copied between runs
        duplicate = "duplicate record id" if rid in ids else \
            f"dialogue index {index} also has record {first_of[index]}" if index in first_of else None
        if duplicate:
            report.records += 1
            report.mismatches.append(f"{rid}: {duplicate}")
            continue
        ids.add(rid)
        first_of[index] = rid
        name = record["meta"]["domain"]
        if name not in domains and record["meta"].get("tool_mode") != "simulated":
            domains[name] = load_domain(run, name)
        audit_record(record, domains.get(name), report)
    for d in domains.values():
        d.close()
    audit_logs(run, first_of, report)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Replay and verify every tool call of a generation run.")
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        report = audit_run(RunDir.existing(args.run_dir))
    except ToolturnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    for line in report.mismatches[:50]:
        print(f"MISMATCH {line}")
    simulated = f" ({report.simulated} with simulated tools: digest only)" if report.simulated else ""
    print(f"audited {report.records} dialogues{simulated}, {report.calls} tool calls: "
          f"{len(report.mismatches)} mismatches")
    sys.exit(0 if report.ok else 1)
