"""Versioned prompt files for the LLM roles, written in our own words after the paper's rules."""

from functools import cache
from importlib.resources import files


@cache
def load(name: str) -> str:
    return files(__package__).joinpath(f"{name}.md").read_text(encoding="utf-8")
