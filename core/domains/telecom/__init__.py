"""Built-in domain: a mobile telecom carrier (accounts, lines, plans, bills, usage, tickets)."""

from __future__ import annotations

from ..contract import BuiltinDomain
from .actions import ACTIONS
from .data import build
from .policy import DESCRIPTION, POLICY
from .tasks import SERVICE

DOMAIN = BuiltinDomain(name="telecom", description=DESCRIPTION, policy=POLICY, actions=tuple(ACTIONS), service=SERVICE,
                       build=build)
