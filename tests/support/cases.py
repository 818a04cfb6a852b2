"""Test cases kept as tables: for each key, the values that pass and those that fail."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def yes_no_cases(
    table: Mapping[str, tuple[Sequence[str], Sequence[str]]],
) -> list[tuple[str, str, bool]]:
    """``key -> (passing values, failing values)`` as ``(value, key, passes)`` cases, the
    passing ones first."""
    return [
        (value, key, passes)
        for key, (passing, failing) in table.items()
        for passes, values in ((True, passing), (False, failing))
        for value in values
    ]
