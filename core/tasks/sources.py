"""What an episode of a domain is set up from, the same in generation and evaluation: the rule-based
task source (customer-phrased service tasks over the domain actions for a built-in domain, schema
CRUD tasks for any other database), the identification the oracle performs, and the assistant's
system prompt (the domain's policy text and description in the `assistant_system` prompt file).
"""

from __future__ import annotations

from collections.abc import Mapping

from toolturn.core.domains.registry import REGISTRY
from toolturn.core.errors import ToolturnError
from toolturn.core.policy import Policy
from toolturn.core.prompts import load as load_prompt
from toolturn.core.tasks.programmatic import TaskGenerator
from toolturn.core.tasks.service import ServiceTaskGenerator


def rule_task_generator(domain, domain_cfg, weights: dict[str, float], refusal_share: float):
    """Service tasks for a built-in domain (a share `refusal_share` of them forbidden by its policy),
    schema tasks otherwise. Both have `generate(sandbox, rng, task_id, rejects, prior)`."""
    service = REGISTRY.service(domain_cfg)
    mix = domain_cfg.get("task_mix")
    if service is None:
        if mix:
            raise ToolturnError("domain.task_mix applies to the built-in domains' service tasks; "
                                f"domain {domain_cfg.get('name') or domain_cfg.get('kind')} has schema tasks")
        return TaskGenerator(domain, dict(weights))
    if mix is not None and not isinstance(mix, Mapping):
        raise ToolturnError(f"domain.task_mix must be a mapping of task kind to weight, got {mix!r}")
    return ServiceTaskGenerator(domain, service, dict(weights), float(refusal_share), dict(mix or {}))


def oracle_identification(domain_cfg) -> tuple[str, str] | None:
    """(identification tool, the user's slot for it) of a built-in domain's customers; None otherwise."""
    service = REGISTRY.service(domain_cfg)
    return None if service is None else (service.identify[0], service.slot)


def assistant_system_prompt(domain, policy: Policy) -> str:
    return load_prompt("assistant_system").format(policy=policy.text(), description=domain.description)
