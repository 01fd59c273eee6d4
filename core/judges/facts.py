"""Whether a value was stated in text: the one test shared by the judges and the rule-based users.

A value counts as stated only as a whole token, never inside a longer one: an expected `1` is not
found in `10` or `ORD-1001`, `pending` not in `pendings`. Numbers are compared by value, so
`12.5` is stated by `12.50` and `1200` by `1,200`. Strings match case-insensitively. A list is
stated when every element is.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from toolturn.core.tasks.types import format_value

# A number standing alone: not glued to a word, an id like ORD-64 or another number's digits.
_NUMBER = re.compile(r"(?<![\w.,\-])-?\d+(?:,\d{3})*(?:\.\d+)?(?!\w|[.,]\d)")


def _number(text: str) -> Decimal | None:
    try:
        return Decimal(text.replace(",", ""))
    except InvalidOperation:
        return None


@lru_cache(maxsize=64)  # the judges test one text for several numbers
def numbers_in(text: str) -> frozenset[Decimal]:
    return frozenset(n for m in _NUMBER.finditer(text) if (n := _number(m.group())) is not None)


def mentions(text: str, value: Any) -> bool:
    if isinstance(value, list):
        return all(mentions(text, v) for v in value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _number(format_value(value)) in numbers_in(text)
    token = format_value(value)
    if not token.strip():
        return True
    if _folded(token) not in _folded_text(text):  # then the pattern cannot match: most values are not in the text
        return False
    return _whole_token(token).search(text) is not None


# Characters that re's IGNORECASE matches fold alike here (checked over all of Unicode): casefold, after İ and ı,
# which re matches with i and I and casefold does not
_DOTTED_I = {0x130: "i", 0x131: "i"}


def _folded(s: str) -> str:
    return s.translate(_DOTTED_I).casefold()


_folded_text = lru_cache(maxsize=256)(_folded)  # the judges test one text for many values


@lru_cache(maxsize=4096)  # the judges ask for the same values over every message; re's own cache holds 512
def _whole_token(token: str) -> re.Pattern:
    return re.compile(rf"(?<!\w){re.escape(token)}(?!\w)", re.IGNORECASE)


# the fields of a result row that name it to a customer (a product's name, an address's label)
NAMING_FIELDS = ("name", "product_name", "label", "title", "plan")


def rows(results) -> list[dict]:
    """Every result row of a task's tool results so far (a result is a row, a list of rows or None)."""
    out = []
    for r in results:
        out += [x for x in (r if isinstance(r, list) else [r]) if isinstance(x, dict)]
    return out


def keys_of(param: str) -> set[str]:
    """The result fields an argument's value can be found under: `new_sku` under `sku`, `address_id` under `id`."""
    return {param, param.removeprefix("new_")} | ({"id"} if param.endswith("_id") else set())
