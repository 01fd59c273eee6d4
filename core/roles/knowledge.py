"""What a customer can check: the values of their own requests and what the assistant has told them.

A customer catches a wrong number only when it contradicts something they know (the refund of an order
whose total they were told a minute ago), never a stock count or a price they could not have seen. The
rule-based pair shares this one notion: the agenda user reviews a report only against such values, and
the oracle's deliberate slips touch only such values, so that every slip is caught the way a customer
would catch it. Values are compared by value: numbers numerically, anything else case-insensitively.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from toolturn.core.tasks.types import Task, format_value


def _key(value: Any) -> Decimal | str:
    text = format_value(value)
    try:
        number = Decimal(text.replace(",", ""))
    except InvalidOperation:
        return text.casefold()
    return number if number.is_finite() else text.casefold()


class Knowledge:
    def __init__(self, tasks: list[Task]):
        """A customer knows the facts of every task they came with (their email, order numbers, products)."""
        self.keys: set[Decimal | str] = set()
        for task in tasks:
            for value in task.facts.values():
                self.hear(value)

    def knows(self, value: Any) -> bool:
        if isinstance(value, list):
            return bool(value) and all(self.knows(v) for v in value)
        return _key(value) in self.keys

    def hear(self, value: Any) -> None:
        """`value` was stated to the customer (or by them): from now on they know it."""
        for v in value if isinstance(value, list) else [value]:
            self.keys.add(_key(v))
