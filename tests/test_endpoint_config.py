"""One endpoint schema (core/endpoints.py: EndpointConfig) and one preset group (conf/endpoint/) for every stage and
role: generation's named endpoints, evaluation's model under test, its LLM user simulator and τ²'s user simulator.
Every shipped preset composes into every place to a valid node; a bad key anywhere is one line naming its full key."""

from dataclasses import asdict, fields
from pathlib import Path

import pytest
import toolturn.conf
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from toolturn.core import servers
from toolturn.core.cli import precheck
from toolturn.core.endpoints import SERVERS, EndpointConfig, parse_endpoint
from toolturn.core.errors import ToolturnError
from toolturn.evaluate import run as evaluate_run
from toolturn.evaluate.checkpoints import endpoint_spec
from toolturn.generate import config as generate_config

CONF = Path(toolturn.conf.__file__).parent
PRESETS = sorted(p.stem for p in (CONF / "endpoint").glob("[!_]*.yaml"))
# what each preset leaves for the user to say (`???`)
GIVEN = {"external": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}, "vllm": {"model": "/models/x"}}
# where each stage puts an endpoint: (config, the overrides that put preset P there, the node's key)
PLACES = {
    "generation": ("generate", ["roles=llm", "+endpoint@llm.endpoints.big=P", "roles.user.endpoint=big"],
                   "llm.endpoints.big"),
    "model under test": ("evaluate", ["endpoint=P"], "endpoint"),
    "user simulator": ("evaluate", ["user=llm", "endpoint@user.endpoint=P"], "user.endpoint"),
    "tau2 user simulator": ("evaluate", ["eval=tau2", "+endpoint@eval.user_simulator.endpoint=P"],
                            "eval.user_simulator.endpoint"),
}
VALIDATE = {"generate": generate_config.validate, "evaluate": evaluate_run.validate}
ADDABLE = {"generate": generate_config.ADDABLE_KEYS, "evaluate": evaluate_run.ADDABLE_KEYS}


def compose_at(place: str, preset: str, *more: str):
    name, overrides, key = PLACES[place]
    given = [f"{key}.{k}={v}" for k, v in GIVEN.get(preset, {}).items()]
    with initialize_config_module("toolturn.conf", version_base="1.3"):
        return compose(name, overrides=["logger=none", *(o.replace("=P", f"={preset}") for o in overrides), *given,
                                        *more]), key


def test_the_defaults_file_is_the_schemas_defaults():
    """conf/endpoint/_defaults.yaml gives every key of the schema, at the dataclass's default."""
    node = OmegaConf.load(CONF / "endpoint" / "_defaults.yaml")
    assert set(node) == {f.name for f in fields(EndpointConfig)}
    parsed = parse_endpoint({**OmegaConf.to_container(node), "server": "none"}, "endpoint")
    assert parsed == EndpointConfig(server="none")


def test_every_server_kind_has_one_line_in_the_validation_table():
    assert set(SERVERS) == set(servers.KINDS)
    assert not SERVERS["none"].managed and all(SERVERS[k].managed for k in servers.KINDS if k != "none")


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_to_a_valid_node_in_every_place(place, preset):
    cfg, key = compose_at(place, preset)
    node = OmegaConf.select(cfg, key)
    assert set(node) == {f.name for f in fields(EndpointConfig)}  # the same keys everywhere
    spec = parse_endpoint(node, key)
    assert spec.server == OmegaConf.load(CONF / "endpoint" / f"{preset}.yaml").server
    validate = VALIDATE[PLACES[place][0]]
    if place == "model under test":
        validate(cfg)
        assert endpoint_spec("base", cfg).model  # what base names: the preset's model, or the model group's weights
    elif spec.model is None:  # managed: the model under test's preset, whose model each checkpoint brings
        with pytest.raises(ToolturnError, match=f"^{key}.model is not set; add {key}.model=VALUE"):
            validate(cfg)
    else:
        validate(cfg)


def test_the_group_options_users_type_select_the_presets():
    """llm=<preset> (generation's default endpoint) and user=llm compose the endpoint group's presets."""
    with initialize_config_module("toolturn.conf", version_base="1.3"):
        for option in sorted(p.stem for p in (CONF / "llm").glob("*.yaml")):
            got = compose("generate", overrides=[f"llm={option}"]).llm.endpoints.default
            want = compose("evaluate", overrides=[f"endpoint={option}"]).endpoint
            assert got == want, option
        user = compose("evaluate", overrides=["user=llm"]).user.endpoint
        assert user == compose("evaluate", overrides=["endpoint=smollm2"]).endpoint


@pytest.mark.parametrize("place", PLACES)
def test_a_typo_in_an_endpoint_key_is_one_line_in_every_place(place, capsys):
    name, overrides, key = PLACES[place]
    args = [o.replace("=P", "=external") for o in overrides] + [f"{key}.{k}={v}" for k, v in GIVEN["external"].items()]
    with pytest.raises(SystemExit) as stop:  # on the command line
        precheck([*args, "logger=none", f"{key}.timout_s=5"], name, VALIDATE[name], ADDABLE[name])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1, err
    assert f"unknown config key '{key}.timout_s' (did you mean '{key}.timeout_s'?)" in err
    cfg, _ = compose_at(place, "external", f"++{key}.timout_s=5")  # in a config file or a mapping
    with pytest.raises(ToolturnError) as bad:
        VALIDATE[name](cfg)
    assert str(bad.value) == f"{key}.timout_s is not an endpoint key (did you mean 'timeout_s'?)"


@pytest.mark.parametrize("node, message", [
    ({"server": "none", "api_key": "sk-x"}, "e.api_key is not an endpoint key; write api_key_env"),
    ({"server": "nne"}, f"e.server must be one of {'[|]'.join(SERVERS)}, got 'nne'"),
    ({"model": "m"}, f"e.server is not set; add e.server={'[|]'.join(SERVERS)}"),
    ({"server": "vllm", "base_url": "http://h/v1"}, "e.base_url is only for server: none"),
    ({"server": "transformers", "lora": "/a"}, "e.lora needs server: vllm, not transformers"),
    ({"server": "none", "extra_args": ["--x"]}, "e.extra_args is only for a managed server, not server: none"),
    ({"server": "vllm", "api_key_env": "K"}, "e.api_key_env is only for server: none, not server: vllm"),
    ({"server": "none", "timeout_s": 0}, "e.timeout_s must be a positive number, got 0"),
    ({"server": "none", "adaptive": "yes"}, "e.adaptive must be true or false, got 'yes'"),
    ({"server": "none", "extra_args": "--x"}, "e.extra_args must be a list of command-line arguments"),
    ({"server": "none", "replicas": 2}, "e.replicas is for a server the harness starts; with server: none list"),
    ({"server": "batched", "replicas": 0}, "e.replicas must be a positive integer, got 0"),
    ("none", "e must be an endpoint mapping"),
])
def test_bad_endpoint_nodes_are_one_line_errors(node, message):
    with pytest.raises(ToolturnError, match=f"^{message}") as bad:
        parse_endpoint(node, "e")
    assert "\n" not in str(bad.value)


def test_null_is_the_default_and_a_partial_node_gets_every_default():
    spec = parse_endpoint({"server": "none", "base_url": "http://h/v1", "model": "m", "timeout_s": None}, "e")
    assert spec == EndpointConfig(server="none", base_url=("http://h/v1",), model="m")
    assert asdict(spec)["timeout_s"] == 300.0 and spec.cache and spec.max_concurrency == 64


def test_a_tau2_user_simulator_given_as_a_mapping_gets_the_schemas_defaults_not_the_model_under_tests():
    """Same defaults everywhere: a partial user-simulator mapping is not filled from `endpoint` (managed: 600 s)."""
    with initialize_config_module("toolturn.conf", version_base="1.3"):
        cfg = compose("evaluate", overrides=["logger=none", "eval=tau2",
                                             "eval.user_simulator.endpoint={server: none, base_url: 'http://h/v1', "
                                             "model: usersim}"])
    evaluate_run.validate(cfg)
    spec = parse_endpoint(cfg.eval.user_simulator.endpoint, "eval.user_simulator.endpoint")
    assert (spec.timeout_s, spec.max_retries, spec.max_concurrency) == (300.0, 4, 64)
    assert (cfg.endpoint.timeout_s, cfg.endpoint.max_retries, cfg.endpoint.max_concurrency) == (600, 2, 4)


def test_the_model_under_test_is_special_only_in_what_base_means(tmp_path):
    """`endpoint.model` is what checkpoint base names (managed null: the model group's weights); a model dir in
    checkpoints brings its own; a LoRA is a checkpoint's, never the endpoint's."""
    (tmp_path / "config.json").write_text("{}")
    with initialize_config_module("toolturn.conf", version_base="1.3"):
        managed = compose("evaluate", overrides=["model=smollm2_135m"])
        named = compose("evaluate", overrides=["endpoint=smollm2", "endpoint.model=/models/other"])
        lora = compose("evaluate", overrides=["endpoint.server=vllm", "endpoint.lora=/a"])
    assert endpoint_spec("base", managed).model == "embedded:smollm2"
    assert endpoint_spec("base", named).model == "/models/other"
    assert endpoint_spec(str(tmp_path), named).model == str(tmp_path.resolve())
    with pytest.raises(ToolturnError, match="^endpoint.lora is decided by each checkpoint"):
        endpoint_spec("base", lora)


def test_a_role_may_still_name_an_existing_endpoint():
    """Generation's roles name an endpoint of llm.endpoints; an unknown name is one line with the choices."""
    with initialize_config_module("toolturn.conf", version_base="1.3"):
        cfg = compose("generate", overrides=["logger=none", "roles=llm", "roles.user.endpoint=big"])
    with pytest.raises(ToolturnError, match=r"roles name endpoint\(s\) \['big'\] that llm.endpoints does not define"):
        generate_config.validate(cfg)


@pytest.mark.parametrize("name, key", [("generate", "llm.endpoints.default.max_reply_bytes"),
                                       ("evaluate", "endpoint.max_reply_bytes")])
def test_adding_a_key_every_endpoint_now_has_says_what_to_write_instead(name, key, capsys):
    """Before the preset group, a preset lacked some keys and `+key=value` added them; now every node has every key,
    so the old command is one line saying to drop the `+`."""
    with pytest.raises(SystemExit) as stop:
        precheck([f"+{key}=9", "logger=none"], name, VALIDATE[name], ADDABLE[name])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1, err
    assert f"Either remove + prefix: '{key}=9'" in err
