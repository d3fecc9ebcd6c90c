"""Bounded walks over nested containers. A small file can describe a huge tree (YAML aliases,
pickle memo references that repeat one list many times), so what walks one counts as it goes
and stops at a limit instead of trusting the file's size."""
from __future__ import annotations

from typing import Any


def more_nested_values_than(limit: int, *roots: Any) -> bool:
    """Whether `roots`, walked as a tree (dict keys and values; list, tuple and set members,
    each time they occur), hold more than `limit` values. Stops at the first value past it."""
    budget, todo = limit, list(roots)
    while todo:
        value = todo.pop()
        budget -= 1
        if budget < 0:
            return True
        if isinstance(value, dict):
            todo.extend(value.keys())
            todo.extend(value.values())
        elif isinstance(value, (list, tuple, set, frozenset)):
            todo.extend(value)
    return False
