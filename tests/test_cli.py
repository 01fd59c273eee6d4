"""Console scripts: bad input gets a one-line error naming the problem and no traceback."""

import json
import sqlite3

import pytest
from conftest import cli


def assert_one_line_error(proc, needle):
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error:") and needle in err, err


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "corrupt.sqlite").write_bytes(b"garbage" * 1000)
    conn = sqlite3.connect(d / "empty.sqlite")
    conn.executescript("CREATE TABLE t(a); CREATE VIEW v AS SELECT a FROM t; DROP TABLE t;")
    conn.close()
    (d / "prefix.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n"
                                    + json.dumps({"messages": [{"role": "wizard", "content": "x"}]}) + "\n")
    return d


@pytest.mark.parametrize("args, needle", [
    (["domain=sqlite", "domain.path=/nonexistent/db.sqlite"], "database file not found"),
    (["domain=sqlite", "domain.path={d}/corrupt.sqlite"], "cannot read SQLite database"),
    (["domain=sqlite", "domain.path={d}/empty.sqlite"], "no usable table"),
    (["domain=atlantis"], "unknown domain 'atlantis'"),
    (["pipeline=magic"], "unknown pipeline 'magic'"),
    (["num_dialogues=0"], "num_dialogues must be a positive integer"),
    (["num_dialogues=-5"], "num_dialogues must be a positive integer"),
    (["prefix={d}/prefix.jsonl"], "prefix.jsonl line 2"),
    (["prefix={d}/missing.jsonl"], "prefix file not found"),
    (["tools=simulated"], "tools=simulated needs LLM-written tasks"),
    (["roles.user.kind=llm"], "come as a pair"),
    (["roles=llm", "roles.judge.kind=rule"], "cannot be rule-based"),
])
def test_generate_bad_input(bad_files, tmp_path, args, needle):
    args = [a.format(d=bad_files) for a in args]
    if not any(a.startswith("num_dialogues") for a in args):
        args.append("num_dialogues=2")
    proc = cli("toolturn-generate", *args, f"out_dir={tmp_path / 'run'}", "progress=false")
    assert_one_line_error(proc, needle)


def test_config_typo_is_named(tmp_path):
    proc = cli("toolturn-generate", "num_dialogue=5", f"out_dir={tmp_path}")
    assert proc.returncode != 0 and "num_dialogue" in proc.stderr and "Traceback" not in proc.stderr


def test_audit_and_stats_on_a_non_run(tmp_path):
    assert_one_line_error(cli("toolturn-audit", str(tmp_path)), "not a generation run dir")
    assert_one_line_error(cli("toolturn-stats", str(tmp_path)), "not a generation run dir")


def test_cli_round_trip(tmp_path):
    run = tmp_path / "run"
    proc = cli("toolturn-generate", "pipeline=user_oriented", "domain=telecom", "roles=rule", "num_dialogues=8",
               "seed=0", "concurrency=8", f"out_dir={run}", "progress=false")
    assert proc.returncode == 0, proc.stderr
    audit = cli("toolturn-audit", str(run))
    assert audit.returncode == 0 and "0 mismatches" in audit.stdout
    stats = cli("toolturn-stats", str(run))
    assert stats.returncode == 0 and "user_oriented" in stats.stdout and "user turns/task" in stats.stdout
