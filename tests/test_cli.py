"""Console scripts: bad input gets a one-line error naming the problem and no traceback."""

import json
import sqlite3

import pytest
from conftest import cli


def assert_one_line_error(proc, needle):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
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


# One bad value per kind of check, and each way Hydra itself can fail to parse or compose: one line naming the
# key, exit 2, and nothing created (the checks run before Hydra starts the job).
@pytest.mark.parametrize("args, needle", [
    (["seed=abc"], "seed must be a non-negative integer, got 'abc'"),
    (["seed=1.5"], "seed must be a non-negative integer, got 1.5"),
    (["tools_per_dialogue=-1"], "tools_per_dialogue must be a non-negative integer, got -1"),
    (["concurrency=0"], "concurrency must be a positive integer, got 0"),
    (["workers=2", "worker_index=2"], "worker_index must be in [0, 2), got 2"),
    (["workers=2", "processes=3"], "processes=3 from worker_index=0 runs workers past workers=2: set workers to at "
                                   "least 3"),
    (["processes=0"], "processes must be a positive integer, got 0"),
    (["roles.assistant.slip_rate=2"], "roles.assistant.slip_rate must be a probability in [0, 1], got 2"),
    (["pipeline.user.feedback=yes"], "pipeline.user.feedback must be true or false, got 'yes'"),
    (["pipeline.tasks_per_dialogue=[4,1]"], "pipeline.tasks_per_dialogue must be two integers [lo, hi] with 1 <= lo"),
    (["pipeline.user.reveal_per_turn=0"], "pipeline.user.reveal_per_turn must be 'all' or two integers"),
    (["tasks.difficulty={easy:0,medium:0,hard:0}"], "tasks.difficulty must be a mapping of easy/medium/hard"),
    (["roles=llm", "roles.user.temperature=5"], "roles.user.temperature must be a number in [0, 2], got 5"),
    (["roles=llm", "+roles.judge.top_p=0"], "roles.judge.top_p must be a number in (0, 1], got 0"),
    (["llm.endpoints.default.timeout_s=0"], "llm.endpoints.default.timeout_s must be a positive number, got 0"),
    (["tools.llm_sql_tools=-2"], "tools.llm_sql_tools must be a non-negative integer, got -2"),
    (["~max_messages"], "max_messages is missing from the config"),
    (["num_dialogue=5"], "unknown config key 'num_dialogue' (did you mean 'num_dialogues'?)"),
    (["pipeline.user.feedbak=false"], "unknown config key 'pipeline.user.feedbak' (did you mean "
                                      "'pipeline.user.feedback'?)"),
    (["domain=retial"], "unknown domain 'retial' (did you mean 'retail'?)"),
    (["hydra/launcher=nope"], "unknown hydra/launcher 'nope'"),
    (["seed=[1,"], "cannot parse the override 'seed=[1,'"),
    (["seed=0,1"], "Ambiguous value for argument 'seed=0,1'"),
    (["+policy.fil=x.yaml"], "unknown config key 'policy.fil' (did you mean 'policy.file'?): nothing reads"),
    (["++domain.descripton=x"], "unknown config key 'domain.descripton' (did you mean 'domain.description'?)"),
    (["+roles.judge.temprature=0.5"], "unknown config key 'roles.judge.temprature' (did you mean "),
    (["+llm.endpoints.default.max_reply_byts=9"], "(did you mean 'llm.endpoints.default.max_reply_bytes'?)"),
    (["llm=external", "roles=llm"], "llm.endpoints.default.model is not set; add llm.endpoints.default.model="),
    (["llm=external", "roles=llm", "llm.endpoints.default.model=m"], "llm.endpoints.default.base_url is not set"),
    (["roles=llm", "roles.user.endpoint=big"], "roles name endpoint(s) ['big'] that llm.endpoints does not define"),
    (["policy.file=123"], "policy.file must be null or the path of a YAML/JSON policy file, got 123"),
])
def test_config_errors_are_one_line(tmp_path, args, needle):
    proc = cli("toolturn-generate", "num_dialogues=2", f"out_dir={tmp_path / 'run'}", "progress=false", *args)
    assert_one_line_error(proc, needle)
    assert not (tmp_path / "run").exists()


def test_keys_a_stage_reads_may_be_added(tmp_path):
    """`+key` of a key the code reads but the config files leave out passes the check (and reaches the job)."""
    proc = cli("toolturn-generate", "num_dialogues=1", f"out_dir={tmp_path / 'run'}", "progress=false", "logger=none",
               "domain=sqlite", "domain.path=/nonexistent.db", "+domain.description=x", "+policy.file=/no/policy.yaml")
    assert_one_line_error(proc, "policy.file: cannot read /no/policy.yaml")  # the next check, not an unknown key


@pytest.mark.parametrize("args, needle", [
    (["+policy.fil=x"], "unknown config key 'policy.fil': nothing reads an added key of that name"),
    (["+experiment.titel=x"], "unknown key 'titel' in experiment (did you mean 'title'?)"),  # added: spec's check
])
def test_toolturn_run_refuses_added_keys_nothing_reads(args, needle, capsys):
    from toolturn.experiment.run import ADDABLE_KEYS, plan
    from toolturn.core.cli import precheck

    with pytest.raises(SystemExit) as stop:
        precheck([*args, "dry_run=true"], "run", plan, ADDABLE_KEYS)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and needle in err, err


def test_hydras_private_argument_parser_reads_what_precheck_needs():
    """core/cli.py takes Hydra's command-line parser from hydra._internal (no public API): hydra-core is pinned
    to 1.3.x, and this fails when an upgrade changes the flags precheck reads."""
    import hydra
    from hydra._internal.utils import get_args_parser

    assert hydra.__version__.startswith("1.3.")
    args, _ = get_args_parser().parse_known_args(["-m", "-cn", "train", "--cfg", "job", "a=1", "+b=2"])
    assert (args.multirun, args.config_name, args.cfg, args.overrides) == (True, "train", "job", ["a=1", "+b=2"])
    args, _ = get_args_parser().parse_known_args(["--info", "-sc", "-cp", "x", "-cd", "y", "--hydra-help", "-h"])
    assert (args.info, args.shell_completion, args.config_path, args.config_dir, args.hydra_help, args.help) == (
        "all", True, "x", "y", True, True)
    plain, _ = get_args_parser().parse_known_args(["seed=1"])
    assert not (plain.multirun or plain.help or plain.hydra_help or plain.info or plain.shell_completion
                or plain.config_path or plain.config_dir or plain.cfg or plain.config_name)


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
