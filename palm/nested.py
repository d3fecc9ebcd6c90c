"""Bounded walks over nested containers. A small file can describe a huge tree (YAML aliases,
pickle memo references that repeat one list many times), so what walks one counts as it goes
and stops at a limit instead of trusting the file's size."""
from __future__ import annotations

from typing import Any


def more_nested_values_than(limit: int, *roots: Any) -> bool:
    """Whether `roots`, walked as a tree (dict keys and values; list, tuple and set members,
    each time they occur), hold more than `limit` values. Stops at the first value past it."""
    return count_nested_values(limit, *roots) > limit


def count_nested_values(limit: int, *roots: Any) -> int:
    """How many values `roots` hold, walked as `more_nested_values_than` does; stops counting
    at `limit` + 1."""
    count, todo = 0, list(roots)
    while todo and count <= limit:
        value = todo.pop()
        count += 1
        if isinstance(value, dict):
            todo.extend(value.keys())
            todo.extend(value.values())
        elif isinstance(value, (list, tuple, set, frozenset)):
            todo.extend(value)
    return count
