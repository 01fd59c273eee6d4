"""What every stage's command line shares: the config composed and checked before Hydra starts a job,
so that a typo'd key, an unknown option, a bad override, a key added with `+` that nothing reads, or a
bad value is one line naming it (exit 2), and no run dir is created.

Hydra has no public API for its command-line parser, so `get_args_parser` comes from `hydra._internal`:
hydra-core is pinned to 1.3.x (pyproject.toml) and tests/test_cli.py checks the flags read here."""

from __future__ import annotations

import difflib
import re
import sys
from typing import Callable

from importlib import resources

from hydra import compose, initialize_config_module
from hydra._internal.utils import get_args_parser  # private: pinned and tested (see the module docstring)
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from toolturn.core.errors import ToolturnError


def one_line(exc: HydraException, overrides: list[str], config_name: str) -> str:
    """Hydra's multi-line composition errors as one line that names the key or option."""
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and exc.options is not None:
        group, _, value = exc.missing_cfg_file.rpartition("/")
        return f"unknown {group} '{value}'{_did_you_mean(value, exc.options)}; choose one of {sorted(exc.options)}"
    unknown = re.match(r"Could not override '([^']+)'", str(exc))
    if unknown:
        key = unknown.group(1)
        others = [o for o in overrides if o.partition("=")[0].lstrip("+~") != key]
        return f"unknown config key '{key}'{_did_you_mean(key, _config_keys(config_name, others))}"
    if isinstance(exc, OverrideParseException):
        bad = next((o for o in overrides if not _parses(o)), "")
        detail = "; ".join(line for line in str(exc).splitlines() if not line.startswith(("See ", "Error parsing")))
        return f"cannot parse the override '{bad}': {detail}"
    return " ".join(line.strip() for line in str(exc).split("Config search path")[0].splitlines() if line.strip())


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _parses(override: str) -> bool:
    try:
        OverridesParser.create().parse_override(override)
        return True
    except HydraException:
        return False


def _config_keys(config_name: str, overrides: list[str]) -> list[str]:
    """Every dotted key of the config composed with `overrides` (none if that fails too)."""
    try:
        with initialize_config_module("toolturn.conf", version_base="1.3"):
            plain = OmegaConf.to_container(compose(config_name, overrides=overrides))
    except HydraException:
        return []

    def walk(node, prefix=""):
        for key, value in node.items():
            yield f"{prefix}{key}"
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")
    return list(walk(plain))


def _groups() -> set[str]:
    """The config groups of toolturn.conf (`+preset=x` adds a group option, not a key)."""
    return {entry.name for entry in resources.files("toolturn.conf").iterdir() if entry.is_dir()}


def _matches(key: str, pattern: str) -> bool:
    """`pattern` with `*` standing for any one level of a dotted key; a final `**` for any levels below."""
    if pattern.endswith(".**"):
        return key.startswith(pattern[:-2])
    parts, wanted = key.split("."), pattern.split(".")
    return len(parts) == len(wanted) and all(w in ("*", k) for k, w in zip(parts, wanted))


def _check_added(overrides: list[str], config_name: str, addable: tuple[str, ...]) -> None:
    """A key added with `+`/`++` must be one the stage reads: present in the composed config without it (then
    `++` only overrides it) or matching a pattern of `addable` (keys the code reads that config files may leave
    out; `*` matches one level, a final `**` any number). Anything else would be silently ignored: one line, with the closest key."""
    parsed = [(o, OverridesParser.create().parse_override(o)) for o in overrides if o.startswith("+")]
    added = [(o, p.key_or_group) for o, p in parsed if "/" not in p.key_or_group
             and p.key_or_group not in _groups() and p.key_or_group.split(".")[0] != "hydra"]
    if not added:
        return
    keys = _config_keys(config_name, [o for o in overrides if o not in {raw for raw, _ in added}])
    for _, key in added:
        if key in keys or any(_matches(key, pattern) for pattern in addable):
            continue
        parts = key.split(".")
        concrete = [".".join(k if w == "*" else w for k, w in zip(parts, pattern.split("."))) for pattern in addable
                    if not pattern.endswith(".**")]
        raise ToolturnError(f"unknown config key '{key}'{_did_you_mean(key, keys + concrete)}: nothing reads an added "
                            f"key of that name")


def precheck(argv: list[str], config_name: str, validate: Callable[[DictConfig], None] | None = None,
             addable: tuple[str, ...] | None = None) -> None:
    """Compose the config as Hydra will and `validate` it; on failure print one line and exit 2.
    `addable`: the stage's keys that `+key=value` may add (None: added keys are not checked).
    Multirun, help and custom config paths are left to Hydra (each job still validates its config)."""
    args, _ = get_args_parser().parse_known_args(argv)
    if (args.multirun or args.help or args.hydra_help or args.info or args.shell_completion or args.config_path
            or args.config_dir or args.cfg):
        return
    name = args.config_name or config_name
    try:
        with initialize_config_module("toolturn.conf", version_base="1.3"):
            cfg = compose(name, overrides=args.overrides)
        if addable is not None:
            _check_added(args.overrides, name, addable)
        if validate is not None:
            validate(cfg)
    except HydraException as exc:
        print(f"error: {one_line(exc, args.overrides, name)}", file=sys.stderr)
        sys.exit(2)
    except ToolturnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
