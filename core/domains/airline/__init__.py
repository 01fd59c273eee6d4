"""Built-in domain: an airline (network, schedule, passengers, bookings, bags)."""

from __future__ import annotations

from ..contract import BuiltinDomain
from .actions import ACTIONS
from .data import build
from .policy import DESCRIPTION, POLICY
from .tasks import SERVICE

DOMAIN = BuiltinDomain(name="airline", description=DESCRIPTION, policy=POLICY, actions=tuple(ACTIONS), service=SERVICE,
                       build=build)
