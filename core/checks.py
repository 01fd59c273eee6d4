"""Type and range checks of config knobs, as a table: key pattern -> `Check`. Every stage validates its
config with one, before anything runs, so a bad value is one line naming the key and what it must be."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from toolturn.core.errors import ToolturnError
from toolturn.core.tasks.types import DIFFICULTIES


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Check:
    """One knob's rule: what it must be (in words) and the test. An optional knob may be absent (it is
    read with a default, or only some group options define it); a required one may not."""
    must_be: str
    ok: Callable[[Any], bool]
    optional: bool = False


def maybe(check: Check) -> Check:
    return replace(check, optional=True)


def integer(lo: int) -> Check:
    words = {0: "a non-negative integer", 1: "a positive integer"}.get(lo, f"an integer >= {lo}")
    return Check(words, lambda v: is_int(v) and v >= lo)


def _int_pair(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(is_int(x) for x in v) and 1 <= v[0] <= v[1]


PAIR = "two integers [lo, hi] with 1 <= lo <= hi"
INT_RANGE = Check(PAIR, _int_pair)
REVEAL = Check(f"'all' or {PAIR}", lambda v: v == "all" or _int_pair(v))
PROBABILITY = Check("a probability in [0, 1]", lambda v: is_number(v) and 0 <= v <= 1)
POSITIVE = Check("a positive number", lambda v: is_number(v) and v > 0)
BOOL = Check("true or false", lambda v: isinstance(v, bool))
KIND = Check("'rule' or 'llm'", lambda v: v in ("rule", "llm"))
WEIGHTS = Check(f"a mapping of {'/'.join(DIFFICULTIES)} to non-negative weights, not all zero",
                lambda v: isinstance(v, dict) and set(v) <= set(DIFFICULTIES)
                and all(is_number(w) and w >= 0 for w in v.values()) and sum(v.values()) > 0)
# the `logger` group the stages share (conf/logger/); logger=none has no mode
LOGGER = {"logger.name": Check("'wandb' or 'none'", lambda v: v in ("wandb", "none")),
          "logger.mode": maybe(Check("'offline', 'online' or 'disabled'",
                                     lambda v: v in ("offline", "online", "disabled")))}
LOGGER_ADDABLE = ("logger.mode", "logger.project", "logger.entity", "logger.group")  # `+logger.x=` (logger=none)
SAMPLING = {"temperature": Check("a number in [0, 2]", lambda v: is_number(v) and 0 <= v <= 2),
            "top_p": Check("a number in (0, 1]", lambda v: is_number(v) and 0 < v <= 1),
            "max_tokens": integer(1)}

_ABSENT = object()


def _values(node: dict, parts: list[str], check: Check, prefix: str = ""):
    """(dotted key, value) for every key of `node` that the pattern `parts` matches; _ABSENT for a
    required key that is not there."""
    head, rest = parts[0], parts[1:]
    if head != "*" and head not in node:
        if not check.optional:
            yield f"{prefix}{head}", _ABSENT
        return
    for key in list(node) if head == "*" else [head]:
        full, value = f"{prefix}{key}", node[key]
        if not rest:
            yield full, value
        elif isinstance(value, dict):
            yield from _values(value, rest, check, f"{full}.")
        else:
            raise ToolturnError(f"{full} must be a mapping, got {value!r}")


def plain_config(cfg: DictConfig) -> dict:
    """The config as plain values, interpolations resolved (a broken one is one line naming its key)."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise ToolturnError(f"{getattr(exc, 'full_key', None) or 'config'}: {str(exc).splitlines()[0]}") from None


def check_table(plain: dict, checks: dict[str, Check]) -> None:
    """Every key that a pattern of `checks` matches (`*`: any key at its level) must pass its check."""
    for pattern, check in checks.items():
        for key, value in _values(plain, pattern.split("."), check):
            if value is _ABSENT:
                raise ToolturnError(f"{key} is missing from the config")
            if not check.ok(value):
                raise ToolturnError(f"{key} must be {check.must_be}, got {value!r}")


def require_set(cfg: DictConfig, keys: list[str]) -> None:
    """Each dotted key must hold a value: a mandatory one left unset (`???`, null or absent) is one line naming it
    and how to set it, before anything runs, instead of a MissingMandatoryValue traceback from wherever it is first
    read."""
    for key in keys:
        parent, _, leaf = key.rpartition(".")
        node = OmegaConf.select(cfg, parent) if parent else cfg
        if node is None or leaf not in node or OmegaConf.is_missing(node, leaf) or node[leaf] is None:
            raise ToolturnError(f"{key} is not set; add {key}=VALUE to the command line")
