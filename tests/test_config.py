"""Every config composes (lightning-hydra-template style), every group option is usable, and every knob is
type- and range-checked."""

import itertools
import re
from pathlib import Path

import pytest
import toolturn.conf
from conftest import make_cfg
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from toolturn.core.errors import ToolturnError
from toolturn.core import checks
from toolturn.generate import config

CONF = Path(toolturn.conf.__file__).parent


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


# values the user must give (??? in the yaml)
REQUIRED = {"sqlite": ["domain.path=/x.sqlite"], "synthetic": ["domain.name=pet clinic"],
            "synthetic_sql": ["domain.name=pet clinic"], "vllm": ["llm.endpoints.default.model=/models/x"],
            "external": ["llm.endpoints.default.model=m", "llm.endpoints.default.base_url=http://h:1/v1"]}


@pytest.mark.parametrize("pipeline, domain, roles, tools, llm", list(itertools.product(
    options("pipeline"), options("domain"), options("roles"), options("tools"), options("llm"))))
def test_every_combination_composes(pipeline, domain, roles, tools, llm):
    extra = REQUIRED.get(domain, []) + REQUIRED.get(llm, [])
    cfg = make_cfg(f"pipeline={pipeline}", f"domain={domain}", f"roles={roles}", f"tools={tools}", f"llm={llm}",
                   *extra)
    OmegaConf.resolve(cfg)
    assert cfg.pipeline.name == pipeline and cfg.tools.mode
    for role in ("task_generator", "user", "assistant", "judge"):
        assert cfg.roles[role].kind in ("rule", "llm")
        if cfg.roles[role].kind == "llm":
            assert cfg.roles[role].endpoint in cfg.llm.endpoints
    assert len(cfg.pipeline.tasks_per_dialogue) == 2


def test_every_group_option_is_documented():
    """docs/generate.md's knob table names every option of each group in that group's row: an option added to conf/
    without its documentation fails here."""
    rows = dict(re.findall(r"^\| `(\w+)=` \|(.*)$", (CONF.parent / "docs" / "generate.md").read_text(), re.M))
    for group in ("pipeline", "domain", "roles", "tools", "llm", "policy", "logger", "preset"):
        assert options(group) and [o for o in options(group) if f"`{o}`" not in rows[group]] == [], group


def test_typo_is_rejected():
    with pytest.raises(ConfigCompositionException):
        make_cfg("num_dialogue=3")


@pytest.mark.parametrize("preset", options("preset"))
def test_presets_compose(preset):
    cfg = make_cfg(f"preset={preset}")
    OmegaConf.resolve(cfg)
    assert cfg.roles.user.kind == "llm" and cfg.llm.endpoints.default.server == "batched"


def test_generation_has_presets_not_experiments():
    with pytest.raises(ConfigCompositionException, match="Could not override 'experiment'"):
        make_cfg("experiment=smollm2_cpu")


# Bad values for each kind of check (by what the key must be), and values at the edge that must pass.
BAD_VALUES = {
    "a positive integer": ["0", "-3", "1.5", "abc", "true", "null"],
    "a non-negative integer": ["-1", "2.0", "abc", "false"],
    "a probability in [0, 1]": ["2", "-0.1", "nan", "abc", "true"],
    "true or false": ["yes", "1", "null"],
    checks.PAIR: ["[4,1]", "[0,2]", "3", "[1,2,3]", "[1.5,2]", "abc"],
    checks.REVEAL.must_be: ["0", "[2,1]", "some", "[0,1]", "[1]"],
    checks.WEIGHTS.must_be: ["{easy:0,medium:0,hard:0}", "{easy:-1}", "{extreme:1}", "{easy:abc}", "3"],
    checks.KIND.must_be: ["LLM", "1"],
    "a number in [0, 2]": ["3", "-1", "inf", "abc"],
    "a number in (0, 1]": ["0", "1.5", "nan"],
    "a positive number": ["0", "-5", "abc", "inf"],
    "'enforce' or 'report'": ["strict", "1", "null"],
    "'wandb' or 'none'": ["tensorboard", "1", "null"],
    "'offline', 'online' or 'disabled'": ["cloud", "true", "null"],
    "null or the path of a YAML/JSON policy file": ["123", "true", "''", "[a.yaml]"],
}
GOOD_VALUES = {
    "a positive integer": ["1"], "a non-negative integer": ["0"], "a probability in [0, 1]": ["0", "1", "0.5"],
    "true or false": ["true", "false"], checks.PAIR: ["[2,2]", "[1,5]"], checks.REVEAL.must_be: ["all", "[1,3]"],
    checks.WEIGHTS.must_be: ["{easy:0,medium:0,hard:1}"], checks.KIND.must_be: [],
    "a number in [0, 2]": ["0", "2"], "a number in (0, 1]": ["1", "0.01"], "a positive number": ["0.5"],
    "'enforce' or 'report'": ["enforce", "report"],
    "'wandb' or 'none'": ["wandb", "none"], "'offline', 'online' or 'disabled'": ["offline", "online", "disabled"],
    "null or the path of a YAML/JSON policy file": ["null", "policy.yaml"],
}


def concrete(pattern: str) -> str:
    return pattern.replace("roles.*", "roles.user").replace("endpoints.*", "endpoints.default")


@pytest.mark.parametrize("pattern", list(config.CHECKS))
def test_every_knob_is_type_and_range_checked(pattern):
    check, key = config.CHECKS[pattern], concrete(pattern)
    assert BAD_VALUES[check.must_be], pattern  # every kind of check has bad examples
    for value in BAD_VALUES[check.must_be]:
        with pytest.raises(ToolturnError) as err:
            config.check_values(make_cfg(f"++{key}={value}"))
        message = str(err.value)
        assert message.startswith(f"{key} must be {check.must_be}, got ") and "\n" not in message, message
    for value in GOOD_VALUES[check.must_be]:
        config.check_values(make_cfg(f"++{key}={value}"))


@pytest.mark.parametrize("overrides, message", [
    (["worker_index=2", "workers=2"], "worker_index must be in [0, 2), got 2"),
    (["~max_messages"], "max_messages is missing from the config"),
    (["~roles.user"], "roles.user is missing from the config"),
    (["+llm.endpoints.big={server: none, max_concurrency: 0}"],
     "llm.endpoints.big.max_concurrency must be a positive integer, got 0"),
    (["pipeline.user=3"], "pipeline.user must be a mapping, got 3"),
    (["out_dir=${nope}"], "out_dir: Interpolation key 'nope' not found"),
])
def test_cross_key_and_shape_checks(overrides, message):
    with pytest.raises(ToolturnError, match=re.escape(message)):
        config.validate(make_cfg(*overrides))


def test_every_shipped_config_passes_the_checks():
    for combo in itertools.product(options("pipeline"), options("domain"), options("roles"), options("tools")):
        config.check_values(make_cfg(*(f"{g}={o}" for g, o in zip(("pipeline", "domain", "roles", "tools"), combo)),
                                     *REQUIRED.get(combo[1], [])))
    for name in options("llm") + [f"preset={p}" for p in options("preset")]:
        config.check_values(make_cfg(name if name.startswith("preset") else f"llm={name}", *REQUIRED.get(name, [])))
